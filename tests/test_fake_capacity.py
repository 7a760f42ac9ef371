"""The fake OpenAI server's capacity model: servers and a queue, a tokens-per-minute budget,
streaming in the real wire format, answer timing per model. Delays are a few ms."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai

from tests.fakes import FakeOpenAIServer
from tests.fakes.openai_server import ModelTiming

USER = [{"role": "user", "content": "hello there"}]


def post(server: FakeOpenAIServer, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"{server.base_url}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer sk-t"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_streaming_is_server_sent_chat_completion_chunks_ending_in_done() -> None:
    with FakeOpenAIServer() as server:
        status, headers, raw = post(server, {"model": "m", "messages": USER, "stream": True,
                                             "stream_options": {"include_usage": True}})
        _, _, whole = post(server, {"model": "m", "messages": USER})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in raw.decode().split("\n\n") if line]
    assert all(line.startswith("data: ") for line in raw.decode().split("\n\n") if line)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == json.loads(whole)["choices"][0]["message"]["content"] == "You said: hello there"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    # Without include_usage there is no usage chunk, as OpenAI does.
    with FakeOpenAIServer() as server:
        _, _, raw = post(server, {"model": "m", "messages": USER, "stream": True})
    assert all(json.loads(e.removeprefix("data: "))["choices"] for e in raw.decode().split("\n\n")
               if e and "[DONE]" not in e)


def test_the_sdk_streams_with_the_configured_first_token_time_and_gap() -> None:
    # 30 ms to the first token, then 150 ms between tokens (4 tokens): the SDK sees the first
    # content no earlier than 30 ms (and before the second is due), the last no earlier than
    # 30 + 3 × 150 ms.
    with FakeOpenAIServer(ttft_s=0.03, inter_token_s=0.15) as server:
        async def go() -> tuple[float, float, list[str]]:
            client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-t", max_retries=0)
            await client.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]  # warm-up
            start = time.perf_counter()
            first = 0.0
            pieces: list[str] = []
            stream = await client.chat.completions.create(model="m", messages=USER, stream=True)  # type: ignore[arg-type]
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or time.perf_counter() - start
                    pieces.append(chunk.choices[0].delta.content)
            total = time.perf_counter() - start
            await client.close()
            return first, total, pieces

        first, total, pieces = asyncio.run(go())
    assert pieces == ["You", " said:", " hello", " there"]
    assert 0.03 <= first < 0.03 + 0.15
    assert total >= 0.03 + 3 * 0.15


def test_two_servers_queue_the_rest_first_in_first_out() -> None:
    # Each answer holds a server 100 ms; 6 at once on 2 servers take 3 rounds, and the last
    # two wait about 200 ms for a server (at least 100 ms, however the 6 threads are staggered).
    with FakeOpenAIServer(servers=2, ttft_s=0.1) as server:
        started = time.perf_counter()
        with ThreadPoolExecutor(6) as pool:
            statuses = [r[0] for r in pool.map(lambda _: post(server, {"model": "m", "messages": USER}), range(6))]
        wall = time.perf_counter() - started
    assert statuses == [200] * 6
    assert server.peak_in_flight == 6 and server.peak_queued >= 3
    assert wall >= 3 * 0.1
    waits = sorted(server.queue_waits)
    assert waits[:2] < [0.08, 0.08] and waits[-1] >= 0.1
    assert server.counters["queued"] >= 3


def test_tokens_per_minute_budget_answers_429_with_the_exact_retry_after() -> None:
    # 6,000 TPM = 100 tokens/s, a bucket of one second. Each request costs its prompt
    # (2 words + 3) and max_tokens 45 = 50 tokens: two pass at once, the third is refused
    # until 50 tokens have refilled (0.5 s).
    with FakeOpenAIServer(tpm=6000) as server:
        body = {"model": "m", "messages": USER, "max_tokens": 45}
        assert server.tokens_counted(body) == 50
        first = [post(server, body) for _ in range(3)]
        assert [s for s, _, _ in first] == [200, 200, 429]
        _, headers, raw = first[2]
        wait_ms = int(headers["retry-after-ms"])
        assert 400 <= wait_ms <= 500 and headers["retry-after"] == "1"
        assert "tokens per minute" in json.loads(raw)["error"]["message"]
        time.sleep(wait_ms / 1000 + 0.02)
        assert post(server, body)[0] == 200
    assert server.counters["429_tpm"] == 1 and server.counters["429"] == 1


def test_per_model_timing_serves_a_slower_candidate_with_a_fixed_answer_length() -> None:
    timing = {"slow": ModelTiming(ttft_s=0.06, inter_token_s=0.01, output_tokens=5)}
    with FakeOpenAIServer(model_timing=timing) as server:
        c = openai.OpenAI(base_url=server.base_url, api_key="sk-t", max_retries=0)
        c.chat.completions.create(model="fast", messages=USER)  # type: ignore[arg-type]  # warm-up
        t = time.perf_counter()
        fast = c.chat.completions.create(model="fast", messages=USER)  # type: ignore[arg-type]
        fast_s = time.perf_counter() - t
        t = time.perf_counter()
        slow = c.chat.completions.create(model="slow", messages=USER, max_tokens=3)  # type: ignore[arg-type]
        slow_s = time.perf_counter() - t
    assert fast.choices[0].message.content == "You said: hello there"
    assert slow.choices[0].message.content == "w0 w1 w2" and slow.choices[0].finish_reason == "length"
    assert slow.usage is not None and slow.usage.completion_tokens == 3
    assert slow_s >= 0.06 + 2 * 0.01 > fast_s
