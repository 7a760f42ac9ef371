"""Asynchronous execution: cache first, then bounded adaptive concurrency with retries.

For every model and every case × epoch the runner looks the request up in the cache;
the rest it sends in batches (when the model batches) under an AIMD concurrency limit:
the limit grows by one after a window of successes and halves on a rate limit or a
timeout, and a ``Retry-After`` pauses every worker of that model. Each answer is cached
as it arrives (what arrives in one turn of the event loop shares one commit), then scored
by the suite's evaluators and detectors.

Scoring goes by batches, not by case: the cached answers (looked up in bulk) in chunks of
:data:`SCORE_CHUNK`, and each model batch as it returns. An evaluator with a
``score_batch(cases, generations)`` scores a whole batch in one call (the built-in string
and overlap metrics are vectorised); one that awaits a model (``ascore``) is called per
case, cases concurrently, as before. Results and their order are what per-case scoring gives.

A suite runs in chunks of :data:`RUN_CHUNK` cases; with a ``sink`` (the run record's writer)
each result is handed on in case order as soon as it and those before it are ready, and the
runner keeps nothing, so its memory does not grow with the suite.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from gatekeeper.engine.cache import Cache, generation_key
from gatekeeper.engine.suites import Suite
from gatekeeper.host.secrets import redact as redact_secrets
from gatekeeper.host.secrets import redactor
from gatekeeper.kinds import EvalContext, Evaluator, Model
from gatekeeper.types import (
    Case,
    CaseResult,
    Generation,
    GenerationRequest,
    ProviderError,
    RateLimited,
    RunnerConfig,
    Score,
)

SCORE_CHUNK = 512
"""Cached answers scored per batch (bounds the work between two progress updates)."""

RUN_CHUNK = 8192
"""Cases x epochs looked up, sent, scored and handed on together: what a run holds at once
(a million-case suite is run in chunks, each model's in case order; batches of prompts that
share a prefix form within a chunk)."""


def batchable(scorer: Evaluator) -> bool:
    """True when ``scorer`` scores without awaiting anything (its ``ascore`` is the default),
    so the runner may call its ``score_batch`` (or ``score``) on many cases at once."""
    return type(scorer).ascore is Evaluator.ascore


@dataclass
class RunStats:
    """Counters shown to the user and stored in the run record."""

    requests: int = 0
    cache_hits: int = 0
    model_calls: int = 0
    """Requests actually sent to a model (a batch of 16 counts 16)."""
    retries: int = 0
    rate_limited: int = 0
    timeouts: int = 0
    generation_errors: int = 0
    scorer_errors: int = 0
    wall_s: float = 0.0
    max_concurrency_reached: int = 0
    deduplicated: int = 0
    """Requests answered by an identical request already in flight (sent once, used twice)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    """Dollars spent on the calls of this run (cached answers cost nothing), from the
    providers' price tables; 0.0 when no provider knows its price."""


class AdaptiveLimiter:
    """AIMD limit on calls in flight, with a shared pause for ``Retry-After``.

    The limit halves at most once per round trip: a throttle answered to a call that left
    before the last decrease is the same congestion, already acted on (as in TCP), so a
    burst of 429s does not collapse the limit to one.
    """

    def __init__(self, initial: int, maximum: int, minimum: int = 1) -> None:
        self.limit = float(max(minimum, min(initial, maximum)))
        self.minimum = minimum
        self.maximum = maximum
        self.in_flight = 0
        self.paused_until = 0.0
        self._successes = 0
        self._cond = asyncio.Condition()
        self.peak = 0
        self._last_decrease = -1.0

    async def acquire(self) -> float:
        """Wait for a slot and for any pause; returns when the call may leave (monotonic)."""
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        while (delay := self.paused_until - time.monotonic()) > 0:
            await asyncio.sleep(delay)  # a pause may be extended while this one sleeps
        return time.monotonic()

    async def release(self, outcome: str, retry_after: float | None = None, sent: float | None = None) -> None:
        """``outcome`` is ``ok``, ``throttled`` (429/timeout) or ``failed``; ``sent`` is
        what :meth:`acquire` returned for this call."""
        async with self._cond:
            self.in_flight -= 1
            if outcome == "ok":
                self._successes += 1
                if self._successes >= int(self.limit):
                    self.limit = min(self.maximum, self.limit + 1)
                    self._successes = 0
            elif outcome == "throttled":
                if sent is None or sent >= self._last_decrease:
                    self.limit = max(self.minimum, self.limit / 2)
                    self._last_decrease = time.monotonic()
                self._successes = 0
                if retry_after:
                    self.paused_until = max(self.paused_until, time.monotonic() + retry_after)
            # Wake only as many waiters as there are free slots, not the thousands of cases
            # queued behind them (who would each wake to find none).
            self._cond.notify(max(0, int(self.limit) - self.in_flight))


@dataclass
class ModelRun:
    """One model in a run: its label (``candidate``/``baseline``/spec) and the loaded model."""

    label: str
    model: Model


@dataclass
class _Job:
    case: Case
    suite: Suite
    request: GenerationRequest


@dataclass
class Progress:
    """Rich progress bar on a terminal, a plain line every 10 % elsewhere."""

    total: int
    label: str = "cases"
    done: int = 0
    _bar: Any = None
    _task: Any = None
    _next_pct: int = 10
    plain: bool = True
    enabled: bool = True

    def __enter__(self) -> Progress:
        if self.enabled and not self.plain and self.total:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n)
        elif self.enabled and self.plain and self.total:
            pct = 100 * self.done // self.total
            if pct >= self._next_pct:
                print(f"  {self.label}: {self.done}/{self.total} ({pct}%)", file=sys.stderr)
                self._next_pct = (pct // 10 + 1) * 10

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _jobs(suites: Sequence[Suite]) -> Iterator[_Job]:
    for suite in suites:
        for case in suite.cases:
            for request in build_requests(suite, case):
                yield _Job(case, suite, request)


def _chunks(jobs: Iterator[_Job], size: int) -> Iterator[list[_Job]]:
    while chunk := list(itertools.islice(jobs, size)):
        yield chunk


def build_requests(suite: Suite, case: Case) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            case=case,
            messages=case.messages,
            max_tokens=suite.max_tokens,
            temperature=suite.temperature,
            seed=suite.seed + epoch if suite.temperature > 0 else suite.seed,
            stop=suite.stop,
            epoch=epoch,
        )
        for epoch in range(suite.epochs)
    ]


class Runner:
    """Runs models over suites. One instance per command invocation."""

    def __init__(
        self,
        *,
        config: RunnerConfig,
        cache: Cache | None,
        scorers: dict[str, list[Evaluator]],
        eval_context: EvalContext,
        on_result: Callable[[CaseResult], None] | None = None,
        progress: bool = True,
        sink: Callable[[CaseResult], None] | None = None,
    ) -> None:
        self.config = config
        self.cache = cache
        self.scorers = scorers
        self.eval_context = eval_context
        self.on_result = on_result
        self.progress = progress
        self.sink = sink
        """With a sink, each model's results go to it in case order as they are ready (the run
        record's writer), and the runner keeps none: a million cases are not held in memory."""
        self.stats = RunStats()
        self._limiters: dict[int, AdaptiveLimiter] = {}
        self._peers: dict[str, Model] = {}
        self._in_flight: dict[str, asyncio.Future[Generation]] = {}
        self._called: dict[int, Model] = {}
        self._flush_scheduled = False
        self._keys: dict[tuple[int, int], str] = {}
        """(model, request) -> cache key, for the requests of the model running now: a key is
        a SHA-256 of canonical JSON (~10 us), needed for the look-up, the send and the write."""
        eval_context.generate = self.generate_one

    # ----------------------------------------------------------------- public

    def run(self, models: Sequence[ModelRun], suites: Sequence[Suite]) -> list[CaseResult]:
        return asyncio.run(self.arun(models, suites))

    async def arun(self, models: Sequence[ModelRun], suites: Sequence[Suite]) -> list[CaseResult]:
        started = time.perf_counter()
        total = sum(len(suite.cases) * suite.epochs for suite in suites)
        results: list[CaseResult] = []
        self._peers = {m.label: m.model for m in models}
        plain = not sys.stderr.isatty() or bool(os.environ.get("CI"))
        try:
            with Progress(total=total * len(models), plain=plain, enabled=self.progress) as bar:
                for mrun in models:
                    for chunk in _chunks(_jobs(suites), RUN_CHUNK):
                        results.extend(await self._run_model(mrun, chunk, bar))
        finally:
            if self.cache is not None:
                self.cache.flush()
            for model in self._called.values():
                await model.end_run()
        self.stats.wall_s = round(time.perf_counter() - started, 3)
        self.stats.max_concurrency_reached = max(
            (lim.peak for lim in self._limiters.values()), default=0
        )
        return results

    async def generate_one(self, model: Model, request: GenerationRequest) -> Generation:
        """Run one request through cache, limiter and retries (judges use this too)."""
        cached = self._lookup(model, request)
        if cached is not None:
            return cached
        (generation,) = await self._send(model, [request])
        return generation

    # ----------------------------------------------------------------- internals

    def _limiter(self, model: Model) -> AdaptiveLimiter:
        key = id(model)
        self._called[key] = model
        if key not in self._limiters:
            maximum = min(self.config.max_concurrency, model.max_concurrency or self.config.max_concurrency)
            self._limiters[key] = AdaptiveLimiter(self.config.concurrency, maximum)
        return self._limiters[key]

    def _lookup(self, model: Model, request: GenerationRequest) -> Generation | None:
        self.stats.requests += 1
        if self.cache is None:
            return None
        hit = self.cache.get_generation(model.identity, request)
        if hit is not None:
            self.stats.cache_hits += 1
        return hit

    def _lookup_many(self, model: Model, requests: list[GenerationRequest]) -> list[Generation | None]:
        """:meth:`_lookup` for many requests: one bulk read of the cache."""
        self.stats.requests += len(requests)
        if self.cache is None:
            return [None] * len(requests)
        keys = [self._key(model, request) for request in requests]
        hits = self.cache.get_generations(model.identity, requests, keys)
        self.stats.cache_hits += sum(1 for hit in hits if hit is not None)
        return hits

    def _key(self, model: Model, request: GenerationRequest) -> str:
        memo = (id(model), id(request))
        key = self._keys.get(memo)
        return key if key is not None else generation_key(model.identity, request)

    def _schedule_flush(self) -> None:
        """Commit the cache writes of this turn of the event loop at the start of the next."""
        if self._flush_scheduled or self.cache is None:
            return
        self._flush_scheduled = True

        def flush() -> None:
            self._flush_scheduled = False
            if self.cache is not None:
                self.cache.flush()

        asyncio.get_running_loop().call_soon(flush)

    async def _run_model(self, mrun: ModelRun, jobs: list[_Job], bar: Progress) -> list[CaseResult]:
        ctx = EvalContext(
            config=self.eval_context.config, cache=self.cache, model=mrun.model,
            generate=self.generate_one, load_model=self.eval_context.load_model,
            extra=self.eval_context.extra, label=mrun.label, peers=self._peers,
        )
        slots: list[CaseResult | None] = [None] * len(jobs)
        self._next_out = 0
        self._keys = {(id(mrun.model), id(job.request)): generation_key(mrun.model.identity, job.request)
                      for job in jobs}
        hits = self._lookup_many(mrun.model, [job.request for job in jobs])
        pending = [index for index, hit in enumerate(hits) if hit is None]
        cached = [(index, hit) for index, hit in enumerate(hits) if hit is not None]
        del hits
        scoring: list[asyncio.Task[None]] = [
            asyncio.create_task(self._score_many(mrun, jobs, cached[i : i + SCORE_CHUNK], ctx, bar, slots))
            for i in range(0, len(cached), SCORE_CHUNK)
        ]

        # Prompts in text order: those sharing a prefix (system prompt, retrieved passage) land
        # in one batch, where a batching model computes the prefix once (gatekeeper-hf does).
        pending.sort(key=lambda i: [(m["role"], m["content"]) for m in jobs[i].request.messages])
        size = max(1, mrun.model.max_batch_size)
        batches = [pending[i : i + size] for i in range(0, len(pending), size)]

        async def run_batch(batch: list[int]) -> None:
            generations = await self._send(mrun.model, [jobs[i].request for i in batch])
            scoring.append(asyncio.create_task(
                self._score_many(mrun, jobs, list(zip(batch, generations, strict=True)), ctx, bar, slots)
            ))

        await asyncio.gather(*(run_batch(b) for b in batches))
        await asyncio.gather(*scoring)
        self._keys = {}
        return [r for r in slots if r is not None]

    def _drain(self, slots: list[CaseResult | None]) -> None:
        """Hand the results ready in case order to the sink, and let them go."""
        if self.sink is None:
            return
        i = self._next_out
        while i < len(slots) and (result := slots[i]) is not None:
            self.sink(result)
            slots[i] = None
            i += 1
        self._next_out = i

    async def _send(self, model: Model, requests: list[GenerationRequest]) -> list[Generation]:
        """Send what is not already in flight; share the answer of what is.

        Two identical requests (epochs at temperature 0, a judge asking for an output the
        run is generating) are paid for once: the second waits for the first's answer.
        """
        keys = [self._key(model, r) for r in requests]
        loop = asyncio.get_running_loop()
        mine: dict[str, int] = {}
        waits: dict[int, asyncio.Future[Generation]] = {}
        for index, key in enumerate(keys):
            if key in self._in_flight:
                waits[index] = self._in_flight[key]
            elif key not in mine:
                mine[key] = index
                self._in_flight[key] = loop.create_future()
        results: list[Generation | None] = [None] * len(requests)
        try:
            if mine:
                sent = list(mine.values())
                answers = await self._call_with_retries(model, [requests[i] for i in sent])
                for index, gen in zip(sent, answers, strict=True):
                    results[index] = gen
                    self._in_flight[keys[index]].set_result(gen)
        finally:
            for key in mine:
                future = self._in_flight.pop(key)
                if not future.done():
                    future.cancel()
        for index, key in enumerate(keys):
            if results[index] is None:
                shared = await waits[index] if index in waits else results[mine[key]]
                assert shared is not None
                self.stats.deduplicated += 1
                results[index] = dataclasses.replace(shared, cached=shared.error is None,
                                                     metadata=dict(shared.metadata))
        return [r for r in results if r is not None]

    async def _call_with_retries(self, model: Model, requests: list[GenerationRequest]) -> list[Generation]:
        """Call the model until it answers, a permanent error, or the retries run out.

        A rate limit (429) is not a failure of the request: it was not processed, so it is
        retried after ``Retry-After`` without using up ``retries``, for up to
        ``rate_limit_patience_s``. Only a call that failed is ever sent again.
        """
        limiter = self._limiter(model)
        attempt = 0
        throttled_s = 0.0
        throttles = 0
        while True:
            sent = await limiter.acquire()
            self.stats.model_calls += len(requests)
            started = time.perf_counter()
            try:
                limit = model.timeout_s if model.timeout_s is not None else self.config.timeout_s
                generations = await asyncio.wait_for(
                    model.generate(requests), None if limit == float("inf") else limit
                )
            except (TimeoutError, ProviderError) as exc:
                retryable = isinstance(exc, asyncio.TimeoutError) or exc.retryable
                retry_after = getattr(exc, "retry_after", None)
                throttled = isinstance(exc, asyncio.TimeoutError) or retry_after is not None or (
                    type(exc).__name__ == "RateLimited"
                )
                if type(exc).__name__ == "RateLimited":
                    self.stats.rate_limited += 1
                if isinstance(exc, asyncio.TimeoutError):
                    self.stats.timeouts += 1
                await limiter.release("throttled" if throttled else "failed", retry_after, sent)
                if isinstance(exc, RateLimited) and throttled_s < self.config.rate_limit_patience_s:
                    throttles += 1
                    self.stats.retries += 1
                    backoff = min(self.config.max_backoff_s, self.config.backoff_s * 2 ** min(throttles - 1, 10))
                    wait = retry_after if retry_after is not None else backoff * (0.5 + random.random())
                    throttled_s += wait + (time.monotonic() - sent)
                    await asyncio.sleep(wait)
                    continue
                if retryable and attempt < self.config.retries:
                    attempt += 1
                    self.stats.retries += 1
                    backoff = min(self.config.max_backoff_s, self.config.backoff_s * 2 ** (attempt - 1))
                    await asyncio.sleep(retry_after if retry_after else backoff * (0.5 + random.random()))
                    continue
                message = (
                    f"timed out after {self.config.timeout_s:g} s"
                    if isinstance(exc, asyncio.TimeoutError) else str(exc)
                )
                return self._failed(requests, f"{message} (after {attempt + 1} attempts)")
            except Exception as exc:
                await limiter.release("failed")
                provider = model.identity.provider
                return self._failed(requests, f"provider {provider!r} raised {type(exc).__name__}: {exc}")
            await limiter.release("ok", sent=sent)
            elapsed_ms = (time.perf_counter() - started) * 1000
            if len(generations) != len(requests):
                return self._failed(
                    requests, f"provider {model.identity.provider!r} returned {len(generations)} "
                    f"outputs for {len(requests)} requests",
                )
            scrub = redactor()
            for gen in generations:
                # A model (or a server error) echoing a configured key: scrubbed before the cache and the record.
                gen.text = scrub(gen.text)
                if gen.error:
                    gen.error = scrub(gen.error)
                if gen.latency_ms is None:
                    gen.latency_ms = round(elapsed_ms / len(requests), 3)
                if gen.error is not None:
                    self.stats.generation_errors += 1
                self.stats.prompt_tokens += int(gen.usage.get("prompt_tokens", 0))
                self.stats.completion_tokens += int(gen.usage.get("completion_tokens", 0))
                self.stats.cost = round(self.stats.cost + (gen.cost or 0.0), 8)
            if self.cache is not None:
                self.cache.put_generations(
                    model.identity, list(zip(requests, generations, strict=True)), defer=True,
                    keys=[self._key(model, r) for r in requests],
                )
                self._schedule_flush()
            return generations

    def _failed(self, requests: list[GenerationRequest], message: str) -> list[Generation]:
        self.stats.generation_errors += len(requests)
        message = redact_secrets(message)
        return [Generation(text="", error=message) for _ in requests]

    def _scorer_error(self, scorer: Evaluator, exc: Exception) -> Score:
        self.stats.scorer_errors += 1
        return Score(
            scorer.metric, None, status="error",
            reason=f"{type(scorer).__name__} ({scorer.name}) raised {type(exc).__name__}: {exc}",
        )

    def _score_batch(self, scorer: Evaluator, cases: list[Case], gens: list[Generation]) -> list[Score]:
        """``scorer.score_batch`` when it has one; a batch that raises (or answers the wrong
        number of scores) is scored again case by case, so an error names its own case."""
        batch = getattr(scorer, "score_batch", None)
        if batch is not None and cases:
            try:
                scores = list(batch(cases, gens))
            except Exception:
                scores = []
            if len(scores) == len(cases):
                return scores
        out = []
        for case, gen in zip(cases, gens, strict=True):
            try:
                out.append(scorer.score(case, gen))
            except Exception as exc:
                out.append(self._scorer_error(scorer, exc))
        return out

    async def _score_many(
        self, mrun: ModelRun, jobs: list[_Job], items: list[tuple[int, Generation]], ctx: EvalContext,
        bar: Progress, slots: list[CaseResult | None],
    ) -> None:
        """Score ``items`` (job index, answer): each synchronous scorer over all of them at
        once, the others (judges) per case with the cases concurrent; then one result each."""
        table: list[list[Score | None]] = []
        by_suite: dict[str, list[int]] = {}
        for pos, (index, _) in enumerate(items):
            suite = jobs[index].suite.name
            table.append([None] * len(self.scorers.get(suite, [])))
            by_suite.setdefault(suite, []).append(pos)
        awaited: list[tuple[int, int, Evaluator]] = []
        for suite, positions in by_suite.items():
            for j, scorer in enumerate(self.scorers.get(suite, [])):
                ok = []
                for pos in positions:
                    gen = items[pos][1]
                    if gen.error is not None:
                        table[pos][j] = Score(scorer.metric, None, status="error", reason=f"no output: {gen.error}")
                    elif batchable(scorer):
                        ok.append(pos)
                    else:
                        awaited.append((pos, j, scorer))
                if ok:
                    scores = self._score_batch(
                        scorer, [jobs[items[p][0]].case for p in ok], [items[p][1] for p in ok]
                    )
                    for pos, score in zip(ok, scores, strict=True):
                        table[pos][j] = score
        if awaited:
            per_case: dict[int, list[tuple[int, Evaluator]]] = {}
            for pos, j, scorer in awaited:
                per_case.setdefault(pos, []).append((j, scorer))

            async def score_case(pos: int, scorers: list[tuple[int, Evaluator]]) -> None:
                index, gen = items[pos]
                job = jobs[index]
                case_ctx = dataclasses.replace(ctx, request=job.request)
                for j, scorer in scorers:
                    try:
                        table[pos][j] = await scorer.ascore(job.case, gen, case_ctx)
                    except Exception as exc:
                        table[pos][j] = self._scorer_error(scorer, exc)

            await asyncio.gather(*(score_case(pos, scorers) for pos, scorers in per_case.items()))
        for pos, (index, gen) in enumerate(items):
            job = jobs[index]
            scores = [s for s in table[pos] if s is not None]
            result = CaseResult(job.case, mrun.label, job.request.epoch, gen, scores)
            slots[index] = result
            if self.on_result is not None:
                self.on_result(result)
        bar.advance(len(items))
        self._drain(slots)
