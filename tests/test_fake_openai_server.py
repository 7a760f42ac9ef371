"""The fake OpenAI server speaks the real wire protocol: checked with the real openai SDK."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai
import pytest

from tests.fakes import FakeOpenAIServer

USER = [{"role": "user", "content": "hello there"}]


def client(server: FakeOpenAIServer, timeout: float = 5) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=timeout)


def test_chat_completion_round_trip_with_usage_and_logprobs(fake_openai: FakeOpenAIServer) -> None:
    reply = client(fake_openai).chat.completions.create(
        model="gpt-fake", messages=USER, logprobs=True, top_logprobs=3,  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content == "You said: hello there"
    assert reply.usage is not None and reply.usage.completion_tokens == 4
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 4
    first = reply.choices[0].logprobs.content[0]  # type: ignore[union-attr,index]
    assert first.token == "You" and len(first.top_logprobs) == 3
    assert fake_openai.requests[0]["messages"] == USER
    assert fake_openai.sends["hello there"] == fake_openai.paid["hello there"] == 1


def test_json_mode_and_scripted_replies_in_order_last_repeats(fake_openai: FakeOpenAIServer) -> None:
    c = client(fake_openai)
    assert json.loads(c.chat.completions.create(
        model="m", messages=USER, response_format={"type": "json_object"},  # type: ignore[arg-type]
    ).choices[0].message.content or "") == {"echo": "hello there"}
    logprobs = {"content": [{"token": "7", "logprob": -0.2, "bytes": [55], "top_logprobs": [
        {"token": "7", "logprob": -0.2, "bytes": [55]}, {"token": "8", "logprob": -1.8, "bytes": [56]}]}]}
    fake_openai.script(["one", {"content": "7", "logprobs": logprobs}, "last"])
    answers = [c.chat.completions.create(model="m", messages=USER, logprobs=True, top_logprobs=2)  # type: ignore[arg-type]
               for _ in range(4)]
    assert [a.choices[0].message.content for a in answers] == ["one", "7", "last", "last"]
    assert answers[1].choices[0].logprobs.content[0].top_logprobs[1].token == "8"  # type: ignore[union-attr,index]
    fake_openai.script(lambda body: body["messages"][-1]["content"].upper())
    assert c.chat.completions.create(model="m", messages=USER).choices[0].message.content == "HELLO THERE"  # type: ignore[arg-type]


def test_failures_in_openai_format(fake_openai: FakeOpenAIServer) -> None:
    c = client(fake_openai, timeout=0.5)
    fake_openai.script([{"status": 500}, {"status": 400, "message": "bad prompt"},
                        {"status": 429, "retry_after": 3}, {"drop": True}, {"malformed": True},
                        {"sleep": 2}])
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="bad prompt"):
        c.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as limited:
        c.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "3"
    assert limited.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    with pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(json.JSONDecodeError):
        c.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    assert fake_openai.counters["500"] == fake_openai.counters["429"] == fake_openai.counters["dropped"] == 1
    assert fake_openai.counters["slept"] == fake_openai.counters["malformed"] == 1
    assert fake_openai.sends["hello there"] == 6


def test_request_validation_and_api_keys() -> None:
    with FakeOpenAIServer(api_keys={"sk-good"}) as server:
        with pytest.raises(openai.AuthenticationError):
            client(server).chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
        good = openai.OpenAI(base_url=server.base_url, api_key="sk-good", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="messages"):
            good.chat.completions.create(model="m", messages=[])
        assert good.chat.completions.create(model="m", messages=USER).choices  # type: ignore[arg-type]


def test_token_bucket_answers_429_with_retry_after_and_rate_headers() -> None:
    with FakeOpenAIServer(rate_limit_rps=5, burst=2, retry_after_s=None) as server:
        c = client(server)
        raw = c.chat.completions.with_raw_response.create(model="m", messages=USER)  # type: ignore[arg-type]
        assert raw.headers["x-ratelimit-limit-requests"] == "300"
        c.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as limited:
            c.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
        wait_ms = int(limited.value.response.headers["retry-after-ms"])
        assert 0 < wait_ms <= 200
        time.sleep(wait_ms / 1000 + 0.01)
        assert c.chat.completions.create(model="m", messages=USER).choices  # type: ignore[arg-type]
        assert server.counters["429"] == 1 and server.counters["ok"] == 3


def test_error_rate_is_seeded_and_storms_answer_429() -> None:
    with FakeOpenAIServer(error_rate=0.5, seed=3) as a, FakeOpenAIServer(error_rate=0.5, seed=3) as b:
        for server in (a, b):
            c = client(server)
            for _ in range(20):
                try:
                    c.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
                except openai.InternalServerError:
                    pass
        assert a.counters["500"] == b.counters["500"] and 3 < a.counters["500"] < 17
    with FakeOpenAIServer(storm_every_s=0.3, storm_duration_s=0.2) as server:
        c = client(server)
        c.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
        time.sleep(0.32)
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]


def test_azure_route(fake_openai: FakeOpenAIServer) -> None:
    azure = openai.AzureOpenAI(azure_endpoint=fake_openai.endpoint, azure_deployment="prod-4o",
                               api_version="2024-10-21", api_key="azure-key", max_retries=0)
    reply = azure.chat.completions.create(model="prod-4o", messages=USER)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "You said: hello there"
    assert fake_openai.keys_seen["azure-key"] == 1


def test_files_and_batches_progress_to_completed(fake_openai: FakeOpenAIServer) -> None:
    c = client(fake_openai)
    lines = [
        {"custom_id": f"k{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}}
        for i in range(3)
    ]
    fake_openai.script(["a0", {"status": 500}, "a2"])
    uploaded = c.files.create(file=("in.jsonl", io.BytesIO("".join(json.dumps(x) + "\n" for x in lines).encode())),
                              purpose="batch")
    batch = c.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status == "validating"
    statuses = [c.batches.retrieve(batch.id).status for _ in range(2)]
    assert statuses == ["in_progress", "completed"]
    done = c.batches.retrieve(batch.id)
    assert done.request_counts is not None and done.request_counts.completed == 2
    out = [json.loads(x) for x in c.files.content(done.output_file_id or "").text.splitlines()]
    assert {(o["custom_id"], o["response"]["body"]["choices"][0]["message"]["content"]) for o in out} == {
        ("k0", "a0"), ("k2", "a2")}
    errors = [json.loads(x) for x in c.files.content(done.error_file_id or "").text.splitlines()]
    assert errors[0]["custom_id"] == "k1" and errors[0]["response"]["status_code"] == 500
    assert fake_openai.counters["batches_created"] == 1


def test_batch_with_invalid_line_fails_validation(fake_openai: FakeOpenAIServer) -> None:
    c = client(fake_openai)
    uploaded = c.files.create(file=("in.jsonl", io.BytesIO(b'{"method": "POST"}\n')), purpose="batch")
    batch = c.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    failed = c.batches.retrieve(batch.id)
    assert failed.status == "failed"
    assert "custom_id" in failed.errors.data[0].message  # type: ignore[union-attr,index,operator]


def test_served_in_its_own_process_with_counters_over_http() -> None:
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes", "--rate-limit-rps", "1", "--burst", "1"],
                            cwd=repo, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip().removeprefix("READY ")
        server_client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
        server_client.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError):
            server_client.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/_fake/counters") as response:
            seen = json.loads(response.read())
        assert seen["counters"] == {"requests": 2, "ok": 1, "429": 1}
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(30)
