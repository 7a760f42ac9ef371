"""A local fake of the OpenAI HTTP API: real HTTP on 127.0.0.1, in a background thread.

It speaks the wire protocol the ``openai`` SDK speaks — chat completions (OpenAI and
Azure routes), files and batches — and misbehaves on request, so that providers, judges
and the runner are tested against the failures a paid endpoint really has::

    with FakeOpenAIServer(latency_s=0.2, rate_limit_rps=20) as server:
        server.script(["first answer", {"status": 500}, {"drop": True}, "last repeats"])
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
        ...
        assert server.counters["429"] == 0

Replies, in order of precedence: the script (a list consumed in order whose last item
repeats, or a callable ``body -> str | dict``), then ``responder``, then a deterministic
echo of the last user message. A reply is the content string or a dict with any of:

``content``          the assistant message text
``logprobs``         the choice's ``logprobs`` object, returned when the request asks
``finish_reason``    default ``stop``
``usage``            override the usage block
``status``           answer this HTTP status with an OpenAI error body (``message``,
                     ``type``, ``code``, ``retry_after`` for 429s)
``drop``             close the connection without answering
``malformed``        answer 200 with a truncated JSON body
``garbage``          answer 200 with JSON that is not a chat completion
``sleep``            wait this many seconds first (to make the client time out)
``response``         the whole response body, sent as is

A capacity model, for load tests (all off by default): ``servers`` requests are served at
once and the rest wait in a FIFO queue; ``tpm`` is a tokens-per-minute budget (prompt
tokens + the request's ``max_tokens``, as provisioned-throughput deployments count them)
in a bucket holding ``tpm_burst_s`` seconds of it, answered 429 with the exact
``Retry-After`` when exceeded; ``ttft_s`` and ``inter_token_s`` time the answer (streamed
as server-sent events when the request says ``stream: true``, else sent whole after the
same time); ``model_timing`` overrides them per model name (a slower candidate), with
``output_tokens`` making the answer that many words (at most ``max_tokens``).

The server keeps what a test asserts on: ``requests`` (every chat completion body, in
order; ``received_at`` their arrival times), ``counters`` (``requests``, ``ok``, ``429``,
``500``, ``dropped``, ...), ``sends``
and ``paid`` (per prompt — the last user message — how many times it was sent, and how
many times it was answered 200, i.e. paid for).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import math
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gatekeeper.devtools.fake_openai_finetuning import FineTuningRoutes

Reply = str | dict[str, Any]
Responder = Callable[[dict[str, Any]], Reply]


def _words(text: str) -> int:
    return len(text.split())


def last_user_message(body: dict[str, Any]) -> str:
    """The prompt key the server counts sends by: the last user message's text."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content)
    return ""


def echo_reply(body: dict[str, Any]) -> Reply:
    """The default answer: the last user message, echoed (JSON when JSON mode is asked)."""
    prompt = last_user_message(body)
    fmt = (body.get("response_format") or {}).get("type")
    if fmt in ("json_object", "json_schema"):
        return json.dumps({"echo": prompt})
    return f"You said: {prompt}"


def _token_logprobs(content: str, top: int) -> dict[str, Any]:
    """Logprobs for a content nobody scripted logprobs for: every word near-certain."""
    entries = []
    for word in content.split(" "):
        token = {"token": word, "logprob": -0.01, "bytes": list(word.encode())}
        alternatives = [dict(token)] + [
            {"token": f"{word}~{i}", "logprob": -5.0 - i, "bytes": list(f"{word}~{i}".encode())}
            for i in range(1, top)
        ]
        entries.append({**token, "top_logprobs": alternatives[:top]})
    return {"content": entries, "refusal": None}


class TokenBucket:
    """``rate`` tokens a second, at most ``capacity`` saved up (the server's limiter)."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = time.monotonic()

    def take(self, amount: float = 1.0) -> float:
        """0.0 when ``amount`` tokens were taken, else the seconds until they are available."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= amount:
            self.tokens -= amount
            return 0.0
        return (amount - self.tokens) / self.rate


@dataclasses.dataclass(frozen=True)
class ModelTiming:
    """How one model name answers under the capacity model (see the module docstring)."""

    ttft_s: float = 0.0
    inter_token_s: float = 0.0
    output_tokens: int | None = None
    jitter: float = 0.0
    """Each answer's times are multiplied by a log-normal factor with this sigma (seeded by
    the server's ``seed``): latencies with a realistic right tail, reproducible run to run."""


class FakeOpenAIServer(FineTuningRoutes):
    """See the module docstring. All times are in seconds."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        rate_limit_rps: float | None = None,
        retry_after_s: float | None = 1.0,
        error_rate: float = 0.0,
        seed: int = 0,
        responder: Responder | None = None,
        burst: float | None = None,
        storm_every_s: float | None = None,
        storm_duration_s: float = 2.0,
        api_keys: set[str] | None = None,
        batch_polls_per_stage: int = 1,
        hold_batches: bool = False,
        model: str = "gpt-fake",
        limit_header_window_s: float = 60.0,
        host: str = "127.0.0.1",
        port: int = 0,
        servers: int | None = None,
        tpm: float | None = None,
        tpm_burst_s: float = 1.0,
        ttft_s: float = 0.0,
        inter_token_s: float = 0.0,
        model_timing: dict[str, ModelTiming] | None = None,
    ) -> None:
        self.host = host
        self._listen_port = port
        self.latency_s = latency_s
        self.rate_limit_rps = rate_limit_rps
        self.retry_after_s = retry_after_s
        self.error_rate = error_rate
        self.responder = responder
        self.storm_every_s = storm_every_s
        self.storm_duration_s = storm_duration_s
        self.api_keys = api_keys
        self.batch_polls_per_stage = batch_polls_per_stage
        self.hold_batches = hold_batches
        self.model = model
        self.limit_header_window_s = limit_header_window_s
        """The window ``x-ratelimit-limit-requests`` counts in: 60 (per minute, as OpenAI's),
        or 1 to imitate a server that announces its per-second limit there."""
        self._bucket = (
            TokenBucket(rate_limit_rps, burst if burst is not None else max(1.0, rate_limit_rps))
            if rate_limit_rps else None
        )
        self._rng = random.Random(seed)
        # The capacity model (load tests): servers, a TPM bucket, answer timing per model.
        self.servers = servers
        self.tpm = tpm
        self._tpm_bucket = TokenBucket(tpm / 60.0, tpm / 60.0 * tpm_burst_s) if tpm else None
        self.timing = ModelTiming(ttft_s=ttft_s, inter_token_s=inter_token_s)
        self.model_timing = dict(model_timing or {})
        self._slots: asyncio.Semaphore | None = None
        self.queued = 0
        """Requests waiting for a server now (``servers`` set)."""
        self.peak_queued = 0
        self.queue_waits: list[float] = []
        """Seconds each served request waited for a server, in order of service."""
        self._script: list[Reply] | Responder | None = None
        self._script_pos = 0
        self.requests: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        """``time.monotonic()`` at which each of ``requests`` arrived."""
        self.counters: collections.Counter[str] = collections.Counter()
        self.sends: collections.Counter[str] = collections.Counter()
        self.paid: collections.Counter[str] = collections.Counter()
        self.keys_seen: collections.Counter[str] = collections.Counter()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._started_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ----------------------------------------------------------------- control

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("the fake server is not started")
        return f"{self.endpoint}/v1"

    @property
    def endpoint(self) -> str:
        """The server root, as an Azure OpenAI ``azure_endpoint``."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def script(self, replies: list[Reply] | Responder | None) -> None:
        """Replies to give next (see the module docstring); ``None`` goes back to echo."""
        self._script = list(replies) if isinstance(replies, list | tuple) else replies
        self._script_pos = 0

    def complete_batches(self) -> None:
        """Let held batches (``hold_batches=True``) finish at their next poll."""
        self.hold_batches = False

    def start(self) -> FakeOpenAIServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as exc:  # pragma: no cover - reported to the caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop_site())
            leftover = asyncio.all_tasks(loop)  # handlers still sleeping (scripted timeouts)
            for task in leftover:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-openai", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        self._started_at = time.monotonic()
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._loop = None
        self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _start_site(self) -> None:
        if self.servers:
            self._slots = asyncio.Semaphore(self.servers)
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        app.router.add_post("/v1/files", self._upload_file)
        app.router.add_get("/v1/files/{file_id}", self._get_file)
        app.router.add_get("/v1/files/{file_id}/content", self._get_file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches", self._list_batches)
        app.router.add_get("/v1/batches/{batch_id}", self._get_batch)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self._cancel_batch)
        app.router.add_get("/v1/models", self._models)
        self.add_finetuning_routes(app)  # fake_openai_finetuning.py
        app.router.add_get("/_fake/counters", self._counters)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._listen_port, backlog=4096, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _stop_site(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ----------------------------------------------------------------- helpers

    @staticmethod
    def error(status: int, message: str, *, type_: str = "invalid_request_error",
              code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
        """An error in OpenAI's format: ``{"error": {"message", "type", "param", "code"}}``."""
        body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
        return web.json_response(body, status=status, headers=headers)

    @staticmethod
    def _key_of(request: web.Request) -> str:
        auth = request.headers.get("Authorization", "")
        return auth.removeprefix("Bearer ").strip() if auth else request.headers.get("api-key", "")

    def _authorized(self, request: web.Request) -> bool:
        key = self._key_of(request)
        self.keys_seen[key] += 1
        return self.api_keys is None or key in self.api_keys

    def _unauthorized(self, request: web.Request) -> web.Response:
        self.counters["401"] += 1
        # Like some servers do, the message echoes the key: clients must scrub it.
        return self.error(401, f"Incorrect API key provided: {self._key_of(request)}.", code="invalid_api_key")

    def _storm_left(self) -> float:
        """Seconds left of the current 429 storm, 0.0 outside one."""
        if not self.storm_every_s:
            return 0.0
        elapsed = time.monotonic() - self._started_at
        into = elapsed % self.storm_every_s
        if elapsed >= self.storm_every_s and into < self.storm_duration_s:
            return self.storm_duration_s - into
        return 0.0

    def _rate_headers(self) -> dict[str, str]:
        if self._bucket is None:
            return {}
        per_window = int(self._bucket.rate * self.limit_header_window_s)
        used = self._bucket.capacity - self._bucket.tokens
        return {
            "x-ratelimit-limit-requests": str(per_window),
            # As OpenAI's: what is left of the announced limit, and the time until it is full again.
            "x-ratelimit-remaining-requests": str(max(0, per_window - int(used))),
            "x-ratelimit-reset-requests": f"{used / self._bucket.rate:.3f}s",
        }

    def _too_many(self, wait: float, message: str, *, retry_after: float | None = None) -> web.Response:
        """429 with ``Retry-After``: ``retry_after``, else the configured value, else ``wait``."""
        self.counters["429"] += 1
        if retry_after is None:
            retry_after = self.retry_after_s if self.retry_after_s is not None else wait
        headers = {
            "retry-after": str(max(1, math.ceil(retry_after))),
            "retry-after-ms": str(max(1, round(retry_after * 1000))),
            **self._rate_headers(),
        }
        return self.error(429, message, type_="requests", code="rate_limit_exceeded", headers=headers)

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        script = self._script
        if callable(script):
            return script(body)
        if script:
            reply = script[min(self._script_pos, len(script) - 1)]
            self._script_pos += 1
            return reply
        if self.responder is not None:
            return self.responder(body)
        return echo_reply(body)

    def completion(self, body: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
        """A chat.completion object for ``body`` answered with ``reply``."""
        content = str(reply.get("content", ""))
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": None},
            "finish_reason": reply.get("finish_reason", "stop"),
            "logprobs": None,
        }
        if body.get("logprobs"):
            top = int(body.get("top_logprobs") or 1)
            choice["logprobs"] = reply.get("logprobs") or _token_logprobs(content, top)
        prompt_tokens = sum(
            _words(str(m.get("content", ""))) + 3 for m in body.get("messages", []) if isinstance(m, dict)
        )
        completion_tokens = _words(content)
        usage = reply.get("usage") or {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        n = max(1, int(body.get("n") or 1))
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "system_fingerprint": "fp_fake",
            "choices": [{**choice, "index": i} for i in range(n)],
            "usage": usage,
        }

    @staticmethod
    def _as_dict(reply: Reply) -> dict[str, Any]:
        return {"content": reply} if isinstance(reply, str) else dict(reply)

    def _check_body(self, body: Any, azure: bool) -> str | None:
        if not isinstance(body, dict):
            return "the body must be a JSON object"
        if not azure and not body.get("model"):
            return "you must provide a model parameter"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "'messages' must be a non-empty array"
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer", "tool"):
                return f"messages[{i}]: invalid message"
        return None

    # ----------------------------------------------------------------- chat

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.counters["requests"] += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._answer_chat(request)
        finally:
            self.in_flight -= 1

    async def _answer_chat(self, request: web.Request) -> web.StreamResponse:
        azure = "deployment" in request.match_info
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.counters["400"] += 1
            return self.error(400, "We could not parse the JSON body of your request.")
        self.requests.append(body)
        self.received_at.append(time.monotonic())
        prompt = last_user_message(body) if isinstance(body, dict) else ""
        self.sends[prompt] += 1
        if not self._authorized(request):
            return self._unauthorized(request)
        problem = self._check_body(body, azure)
        if problem:
            self.counters["400"] += 1
            return self.error(400, problem)
        storm = self._storm_left()
        if storm:
            return self._too_many(storm, "Rate limit reached (storm). Please try again later.")
        if self._bucket is not None:
            wait = self._bucket.take()
            if wait:
                return self._too_many(wait, f"Rate limit reached: {self._bucket.rate * 60:.0f} requests per minute.")
        if self._tpm_bucket is not None:
            wait = self._tpm_bucket.take(self.tokens_counted(body))
            if wait:
                self.counters["429_tpm"] += 1
                return self._too_many(wait, f"Rate limit reached: {self.tpm:.0f} tokens per minute.", retry_after=wait)
        async with self._server_slot():
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            if self.error_rate and self._rng.random() < self.error_rate:
                self.counters["500"] += 1
                return self.error(500, "The server had an error while processing your request.", type_="server_error")
            reply = self._as_dict(self._next_reply(body))
            return await self._deliver(request, body, prompt, reply)

    async def _deliver(
        self, request: web.Request, body: dict[str, Any], prompt: str, reply: dict[str, Any]
    ) -> web.StreamResponse:
        if reply.get("sleep"):
            self.counters["slept"] += 1
            await asyncio.sleep(float(reply["sleep"]))
        if reply.get("drop"):
            self.counters["dropped"] += 1
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # aiohttp: the handler ends without a response
        status = int(reply.get("status", 200))
        if status == 429:
            retry_after = reply.get("retry_after")
            return self._too_many(1.0, str(reply.get("message", "Rate limit reached.")),
                                  retry_after=None if retry_after is None else float(retry_after))
        if status != 200:
            self.counters[str(status)] += 1
            default_type = "server_error" if status >= 500 else "invalid_request_error"
            return self.error(status, str(reply.get("message", f"scripted error {status}")),
                              type_=str(reply.get("type", default_type)), code=reply.get("code"))
        headers = {**self._rate_headers(), "x-request-id": f"req_{uuid.uuid4().hex[:16]}",
                   "openai-processing-ms": str(round(self.latency_s * 1000))}
        if reply.get("malformed"):
            self.counters["malformed"] += 1
            return web.Response(text='{"id": "chatcmpl-x", "object": "chat.completion", "choices": [{"mess',
                                content_type="application/json", headers=headers)
        if reply.get("garbage"):
            self.counters["garbage"] += 1
            return web.json_response({"unexpected": "shape", "data": [1, 2, 3]}, headers=headers)
        reply = self._timed_reply(body, reply)
        self.counters["ok"] += 1
        self.paid[prompt] += 1
        payload = reply["response"] if "response" in reply else self.completion(body, reply)
        if body.get("stream"):
            return await self._stream(request, body, payload, headers)
        timing = self.timing_of(body)
        if timing.ttft_s or timing.inter_token_s:
            await asyncio.sleep(timing.ttft_s + timing.inter_token_s * max(0, self._tokens_of(payload) - 1))
        return web.json_response(payload, headers=headers)

    # ----------------------------------------------------------------- capacity

    def timing_of(self, body: dict[str, Any]) -> ModelTiming:
        """The timing of the model ``body`` names (``model_timing``), else the server's; with
        ``jitter``, scaled by this answer's draw."""
        timing = self.model_timing.get(str(body.get("model") or ""), self.timing)
        if not timing.jitter:
            return timing
        factor = math.exp(self._rng.gauss(0.0, timing.jitter))
        return dataclasses.replace(timing, ttft_s=timing.ttft_s * factor,
                                   inter_token_s=timing.inter_token_s * factor, jitter=0.0)

    @staticmethod
    def tokens_counted(body: dict[str, Any]) -> float:
        """What a request costs against ``tpm``: its prompt tokens and its ``max_tokens``."""
        prompt = sum(_words(str(m.get("content", ""))) + 3 for m in body.get("messages", []) if isinstance(m, dict))
        budget = body.get("max_tokens") or body.get("max_completion_tokens") or 16
        return float(prompt + int(budget))

    @contextlib.asynccontextmanager
    async def _server_slot(self) -> Any:
        """Hold one of ``servers`` for the whole answer; wait in FIFO order for one."""
        if self._slots is None:
            yield
            return
        arrived = time.monotonic()
        if self._slots.locked():  # every server busy: this request waits in the queue
            self.queued += 1
            self.peak_queued = max(self.peak_queued, self.queued)
            try:
                await self._slots.acquire()
            finally:
                self.queued -= 1
        else:
            await self._slots.acquire()
        waited = time.monotonic() - arrived
        self.queue_waits.append(waited)
        if waited > 0.001:
            self.counters["queued"] += 1
        try:
            yield
        finally:
            self._slots.release()

    def _timed_reply(self, body: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
        """``output_tokens`` words (at most ``max_tokens``) when the model's timing asks for them."""
        wanted = self.model_timing.get(str(body.get("model") or ""), self.timing).output_tokens
        if wanted is None or "response" in reply or "content" not in reply:
            return reply
        budget = int(body.get("max_tokens") or body.get("max_completion_tokens") or wanted)
        n = max(0, min(wanted, budget))
        return {**reply, "content": " ".join(f"w{i}" for i in range(n)),
                "finish_reason": "length" if wanted > budget else reply.get("finish_reason", "stop")}

    @staticmethod
    def _tokens_of(payload: dict[str, Any]) -> int:
        usage = payload.get("usage") if isinstance(payload, dict) else None
        return int(usage.get("completion_tokens", 0)) if isinstance(usage, dict) else 0

    async def _stream(
        self, request: web.Request, body: dict[str, Any], payload: dict[str, Any], headers: dict[str, str]
    ) -> web.StreamResponse:
        """The completion as server-sent events, as OpenAI streams it: a role delta, one
        ``chat.completion.chunk`` per token (a word) after ``ttft_s`` then every
        ``inter_token_s``, the finish reason, the usage chunk when
        ``stream_options.include_usage``, then ``data: [DONE]``."""
        timing = self.timing_of(body)
        response = web.StreamResponse(status=200, headers={
            **headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        base = {"id": payload.get("id"), "object": "chat.completion.chunk", "created": payload.get("created"),
                "model": payload.get("model"), "system_fingerprint": payload.get("system_fingerprint")}
        choice = (payload.get("choices") or [{}])[0]
        content = str((choice.get("message") or {}).get("content") or "")

        async def send(chunk: dict[str, Any]) -> None:
            await response.write(b"data: " + json.dumps({**base, **chunk}).encode() + b"\n\n")

        await send({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "logprobs": None, "finish_reason": None}]})
        pieces = [w if i == 0 else " " + w for i, w in enumerate(content.split(" "))] if content else []
        for i, piece in enumerate(pieces):
            await asyncio.sleep(timing.ttft_s if i == 0 else timing.inter_token_s)
            await send({"choices": [{"index": 0, "delta": {"content": piece}, "logprobs": None,
                                     "finish_reason": None}]})
        if not pieces and timing.ttft_s:
            await asyncio.sleep(timing.ttft_s)
        await send({"choices": [{"index": 0, "delta": {}, "logprobs": None,
                                 "finish_reason": choice.get("finish_reason", "stop")}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({"choices": [], "usage": payload.get("usage")})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self.counters["streamed"] += 1
        return response

    async def _counters(self, request: web.Request) -> web.Response:
        """What a test in another process asserts on (the server run by :func:`main`)."""
        return web.json_response({"counters": dict(self.counters), "peak_in_flight": self.peak_in_flight,
                                  "first_request": self.received_at[0] if self.received_at else None,
                                  "last_request": self.received_at[-1] if self.received_at else None})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]})

    # ----------------------------------------------------------------- files

    def _file_object(self, entry: dict[str, Any]) -> dict[str, Any]:
        return {k: entry[k] for k in ("id", "object", "bytes", "created_at", "filename", "purpose", "status")}

    def _add_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        entry = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                 "filename": filename, "purpose": purpose, "status": "processed", "data": data}
        self.files[file_id] = entry
        return entry

    async def _upload_file(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        try:
            form = await request.post()
        except Exception:
            return self.error(400, "the body must be multipart/form-data")
        purpose = form.get("purpose")
        upload = form.get("file")
        if not isinstance(purpose, str) or purpose not in ("batch", "fine-tune", "assistants", "evals"):
            return self.error(400, f"invalid purpose {purpose!r}")
        if not isinstance(upload, web.FileField):
            return self.error(400, "a 'file' part is required")
        data = upload.file.read()
        self.counters["files_uploaded"] += 1
        return web.json_response(self._file_object(self._add_file(data, upload.filename, purpose)))

    async def _get_file(self, request: web.Request) -> web.Response:
        entry = self.files.get(request.match_info["file_id"])
        if entry is None:
            return self.error(404, "No such File object", code="not_found")
        return web.json_response(self._file_object(entry))

    async def _get_file_content(self, request: web.Request) -> web.Response:
        entry = self.files.get(request.match_info["file_id"])
        if entry is None:
            return self.error(404, "No such File object", code="not_found")
        return web.Response(body=entry["data"], content_type="application/octet-stream")

    # ----------------------------------------------------------------- batches

    def _parse_batch_input(self, data: bytes, endpoint: str) -> tuple[list[dict[str, Any]], str | None]:
        lines: list[dict[str, Any]] = []
        seen: set[str] = set()
        for lineno, raw in enumerate(data.decode("utf-8").splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                return [], f"line {lineno}: invalid JSON"
            custom_id = line.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                return [], f"line {lineno}: missing custom_id"
            if custom_id in seen:
                return [], f"line {lineno}: duplicate custom_id {custom_id!r}"
            seen.add(custom_id)
            if line.get("method") != "POST" or line.get("url") != endpoint:
                return [], f"line {lineno}: method must be POST and url {endpoint}"
            problem = self._check_body(line.get("body"), azure=False)
            if problem:
                return [], f"line {lineno}: {problem}"
            lines.append(line)
        if not lines:
            return [], "the input file has no requests"
        return lines, None

    async def _create_batch(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        body = await request.json()
        entry = self.files.get(body.get("input_file_id", ""))
        if entry is None or entry["purpose"] != "batch":
            return self.error(400, "input_file_id must be a file uploaded with purpose 'batch'")
        endpoint = body.get("endpoint")
        if endpoint != "/v1/chat/completions":
            return self.error(400, f"unsupported endpoint {endpoint!r}")
        if body.get("completion_window") != "24h":
            return self.error(400, "completion_window must be '24h'")
        lines, problem = self._parse_batch_input(entry["data"], endpoint)
        now = int(time.time())
        batch = {
            "id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": endpoint,
            "errors": None, "input_file_id": entry["id"], "completion_window": "24h",
            "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": now, "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None,
            "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
            "cancelled_at": None, "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        self.batches[batch["id"]] = {"batch": batch, "lines": lines, "polls": 0, "problem": problem}
        self.counters["batches_created"] += 1
        return web.json_response(batch)

    async def _list_batches(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        data = [state["batch"] for state in reversed(self.batches.values())][:limit]
        return web.json_response({"object": "list", "data": data, "has_more": len(self.batches) > limit,
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})

    async def _get_batch(self, request: web.Request) -> web.Response:
        state = self.batches.get(request.match_info["batch_id"])
        if state is None:
            return self.error(404, "No such Batch object", code="not_found")
        self.counters["batch_polls"] += 1
        state["polls"] += 1
        self._advance_batch(state)
        return web.json_response(state["batch"])

    async def _cancel_batch(self, request: web.Request) -> web.Response:
        state = self.batches.get(request.match_info["batch_id"])
        if state is None:
            return self.error(404, "No such Batch object", code="not_found")
        batch = state["batch"]
        if batch["status"] in ("validating", "in_progress"):
            batch["status"] = "cancelled"
            batch["cancelled_at"] = int(time.time())
        return web.json_response(batch)

    def _advance_batch(self, state: dict[str, Any]) -> None:
        batch = state["batch"]
        step = self.batch_polls_per_stage
        now = int(time.time())
        if batch["status"] == "validating" and state["polls"] >= step:
            if state["problem"]:
                batch["status"] = "failed"
                batch["failed_at"] = now
                batch["errors"] = {"object": "list", "data": [
                    {"code": "invalid_request", "message": state["problem"], "param": None, "line": None}]}
                return
            batch["status"] = "in_progress"
            batch["in_progress_at"] = now
        elif batch["status"] == "in_progress" and state["polls"] >= 2 * step and not self.hold_batches:
            self._finish_batch(state)

    def _finish_batch(self, state: dict[str, Any]) -> None:
        batch = state["batch"]
        outputs, errors = [], []
        for line in state["lines"]:
            body = line["body"]
            prompt = last_user_message(body)
            self.sends[prompt] += 1
            reply = self._as_dict(self._next_reply(body))
            status = int(reply.get("status", 200))
            request_id = f"req_{uuid.uuid4().hex[:16]}"
            record: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": line["custom_id"]}
            if status == 200 and not reply.get("drop"):
                self.paid[prompt] += 1
                record["response"] = {"status_code": 200, "request_id": request_id,
                                      "body": self.completion(body, reply)}
                record["error"] = None
                outputs.append(record)
            else:
                record["response"] = {"status_code": status, "request_id": request_id, "body": {"error": {
                    "message": str(reply.get("message", f"scripted error {status}")),
                    "type": "server_error" if status >= 500 else "invalid_request_error",
                    "param": None, "code": None}}}
                record["error"] = None
                errors.append(record)
        now = int(time.time())

        def jsonl(rows: list[dict[str, Any]]) -> bytes:
            return "".join(json.dumps(r) + "\n" for r in rows).encode()

        if outputs:
            batch["output_file_id"] = self._add_file(jsonl(outputs), "batch_output.jsonl", "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self._add_file(jsonl(errors), "batch_errors.jsonl", "batch_output")["id"]
        batch["request_counts"] = {"total": len(state["lines"]), "completed": len(outputs), "failed": len(errors)}
        batch["status"] = "completed"
        batch["finalizing_at"] = batch["completed_at"] = now
        self.counters["batches_completed"] += 1


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fakes`` (the tests' entry): prints ``READY <base_url>``, stops when stdin closes.

    Users run ``gatekeeper serve-fake`` instead (builtin/commands/devtools.py), which answers
    per model name and stops on SIGINT/SIGTERM.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m tests.fakes")
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--rate-limit-rps", type=float)
    parser.add_argument("--burst", type=float)
    parser.add_argument("--retry-after-s", type=float, help="fixed Retry-After (default: the exact wait)")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--storm-every-s", type=float)
    parser.add_argument("--storm-duration-s", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--servers", type=int, help="capacity model: requests served at once (the rest queue)")
    parser.add_argument("--tpm", type=float, help="capacity model: tokens per minute before 429s")
    parser.add_argument("--ttft-s", type=float, default=0.0, help="seconds to the first token")
    parser.add_argument("--inter-token-s", type=float, default=0.0, help="seconds between tokens")
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(
        latency_s=args.latency_s, rate_limit_rps=args.rate_limit_rps, burst=args.burst,
        retry_after_s=args.retry_after_s, error_rate=args.error_rate, seed=args.seed,
        storm_every_s=args.storm_every_s, storm_duration_s=args.storm_duration_s,
        servers=args.servers, tpm=args.tpm, ttft_s=args.ttft_s, inter_token_s=args.inter_token_s,
    )
    with server:
        print(f"READY {server.base_url}", flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
