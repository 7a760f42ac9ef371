"""The built-in ``openai`` provider, through the real CLI, against the local fake server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest

from gatekeeper.testing import Project
from tests.fakes import FakeOpenAIServer

# The provider is built in: other installed plugins play no part in these tests.
KEY_ENV = {"GK_TEST_OPENAI_KEY": "sk-test-provider-0123456789", "GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD": "1"}


def suite(n: int, *, epochs: int = 1) -> str:
    cases = "".join(f"  - {{id: q{i:02d}, input: question {i}, expected: question {i}}}\n" for i in range(n))
    return (
        f"suite: remote\nepochs: {epochs}\ngeneration: {{temperature: 0}}\n"
        "prompt: {messages: [{role: user, content: '{{ input }}'}]}\n"
        "evaluators: [{name: contains, field: expected}]\ncases:\n" + cases
    )


def spec(server: FakeOpenAIServer, **params: str) -> str:
    query = "".join(f"&{k}={v}" for k, v in params.items())
    return f"openai:gpt-fake?base_url={server.base_url}&api_key_env=GK_TEST_OPENAI_KEY{query}"


def run(project: Project, model: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    result = project.run("run", "suites", "--model", model, "--out", "out", "--no-progress", *extra, env=KEY_ENV)
    path = project.path / "out/results.json"
    record = project.read_record("out/results.json") if path.exists() else {}
    return result.exit_code, record, result.output


def fast_runner(project: Project, extra: str = "") -> None:
    project.write("gatekeeper.yaml", "runner: {backoff_s: 0.01, max_backoff_s: 0.05, retries: 8, timeout_s: 5}\n"
                  + extra)


def test_chat_round_trip_with_usage_and_cost(project: Project, fake_openai: FakeOpenAIServer) -> None:
    project.write("suites/remote.yaml", suite(3))
    fast_runner(project, "providers:\n  openai:\n    prices:\n      gpt-fake: {input: 2.0, output: 10.0}\n")
    code, record, output = run(project, spec(fake_openai))
    assert code == 0, output
    outputs = {row["key"]: row["output"] for row in record["cases"]}
    assert outputs == {f"remote::q{i:02d}": f"You said: question {i}" for i in range(3)}
    body = fake_openai.requests[0]
    assert body["model"] == "gpt-fake" and body["temperature"] == 0.0 and body["max_tokens"] == 256
    assert fake_openai.keys_seen == Counter({"sk-test-provider-0123456789": 3})
    row = record["cases"][0]
    assert row["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert row["cost"] == pytest.approx((5 * 2.0 + 4 * 10.0) / 1e6)
    stats = record["stats"]
    assert (stats["prompt_tokens"], stats["completion_tokens"]) == (15, 12)
    assert stats["cost"] == pytest.approx(3 * 50 / 1e6)
    assert "tokens: 15 prompt + 12 completion, cost $0.000150" in output
    identity = record["models"][next(iter(record["models"]))]["identity"]
    assert identity["provider"] == "openai" and identity["version"] == "gpt-fake"
    assert identity["details"]["endpoints"] == [fake_openai.base_url]

    again_code, again, _ = run(project, spec(fake_openai))
    assert again_code == 0 and again["stats"]["model_calls"] == 0 and again["stats"]["cost"] == 0.0
    assert fake_openai.counters["requests"] == 3


def test_429_retry_after_is_honoured_and_no_case_is_lost(project: Project, fake_openai: FakeOpenAIServer) -> None:
    project.write("suites/remote.yaml", suite(4))
    fast_runner(project)
    state = {"n": 0}

    def first_is_limited(body: dict[str, Any]) -> Any:
        state["n"] += 1
        return {"status": 429, "retry_after": 1} if state["n"] == 1 else "You said: " + body["messages"][-1]["content"]

    fake_openai.script(first_is_limited)
    code, record, output = run(project, spec(fake_openai, concurrency="1"))
    assert code == 0, output
    assert record["stats"]["rate_limited"] == 1 and record["stats"]["generation_errors"] == 0
    assert fake_openai.received_at[1] - fake_openai.received_at[0] >= 0.95  # waited out Retry-After: 1
    assert all(fake_openai.paid[f"question {i}"] == 1 for i in range(4))


def test_500s_are_retried_no_case_lost_and_nothing_paid_twice(project: Project) -> None:
    project.write("suites/remote.yaml", suite(40))
    fast_runner(project)
    with FakeOpenAIServer(error_rate=0.3, seed=7, latency_s=0.01) as server:
        code, record, output = run(project, spec(server))
    assert code == 0, output
    assert len(record["cases"]) == 40 and not any(row["error"] for row in record["cases"])
    assert server.counters["500"] > 5
    # Every prompt was answered (paid) exactly once; it was re-sent only after a 500.
    assert set(server.paid.values()) == {1} and len(server.paid) == 40
    assert sum(server.sends.values()) == 40 + server.counters["500"]
    assert record["stats"]["retries"] == server.counters["500"]


def test_timeouts_and_dropped_connections_are_retried(project: Project, fake_openai: FakeOpenAIServer) -> None:
    project.write("suites/remote.yaml", suite(3))
    project.write("gatekeeper.yaml", "runner: {backoff_s: 0.01, retries: 3, timeout_s: 0.5}\n")
    seen: Counter[str] = Counter()

    def first_hangs_second_drops(body: dict[str, Any]) -> Any:
        prompt = body["messages"][-1]["content"]
        seen[prompt] += 1
        if prompt == "question 0" and seen[prompt] == 1:
            return {"sleep": 3}
        if prompt == "question 1" and seen[prompt] == 1:
            return {"drop": True}
        return "You said: " + prompt

    fake_openai.script(first_hangs_second_drops)
    code, record, output = run(project, spec(fake_openai))
    assert code == 0, output
    assert record["stats"]["timeouts"] == 1 and record["stats"]["retries"] == 2
    assert {row["output"] for row in record["cases"]} == {f"You said: question {i}" for i in range(3)}
    assert fake_openai.counters["dropped"] == 1


def test_malformed_json_is_a_clear_error_naming_the_endpoint(project: Project, fake_openai: FakeOpenAIServer) -> None:
    project.write("suites/remote.yaml", suite(2))
    fast_runner(project)
    fake_openai.script([{"malformed": True}])
    code, _, output = run(project, spec(fake_openai))
    assert code == 5
    assert f"error (2 cases): endpoint {fake_openai.base_url}: returned malformed JSON" in output
    assert fake_openai.counters["requests"] == 2  # not retried: garbage is not transient
    fake_openai.script([{"garbage": True}])
    code, _, output = run(project, spec(fake_openai))
    assert code == 5 and "is not a chat completion (no 'choices')" in output


def test_bad_request_fails_that_case_only_without_retry(project: Project, fake_openai: FakeOpenAIServer) -> None:
    project.write("suites/remote.yaml", suite(2))
    fast_runner(project)
    fake_openai.script(lambda body: {"status": 400, "message": "context too long"}
                       if body["messages"][-1]["content"] == "question 1" else "fine: question 0")
    code, record, _ = run(project, spec(fake_openai))
    assert code == 5
    errors = {row["key"]: row["error"] for row in record["cases"]}
    assert errors["remote::q00"] is None
    assert errors["remote::q01"].startswith(f"endpoint {fake_openai.base_url}: HTTP 400: context too long")
    assert fake_openai.sends["question 1"] == 1


def test_failing_endpoint_is_rested_and_healthy_ones_rotate(project: Project) -> None:
    project.write("suites/remote.yaml", suite(12))
    with FakeOpenAIServer(error_rate=1.0) as bad, FakeOpenAIServer() as good_a, FakeOpenAIServer() as good_b:
        fast_runner(project, f"""
providers:
  openai:
    rest_after_failures: 2
    rest_s: 60
    models:
      gpt-fake:
        endpoints:
          - {{name: broken, base_url: "{bad.base_url}", api_key_env: GK_TEST_OPENAI_KEY}}
          - {{name: east, base_url: "{good_a.base_url}", api_key_env: GK_TEST_OPENAI_KEY}}
          - {{name: west, base_url: "{good_b.base_url}", api_key_env: GK_TEST_OPENAI_KEY}}
""")
        project.write("gatekeeper.yaml", (project.path / "gatekeeper.yaml").read_text().replace(
            "retries: 8", "retries: 8, concurrency: 1, max_concurrency: 1"))
        code, record, output = run(project, "openai:gpt-fake")
    assert code == 0, output
    assert bad.counters["requests"] == 2  # two failures in a row, then rested for the rest of the run
    assert "openai: endpoint broken failed 2 times in a row; resting it 60 s" in output
    assert good_a.counters["ok"] + good_b.counters["ok"] == 12
    assert min(good_a.counters["ok"], good_b.counters["ok"]) >= 5  # rotation between the healthy ones
    identity = record["models"]["openai:gpt-fake"]["identity"]
    assert identity["details"]["endpoints"] == ["broken", "east", "west"]


def test_identical_requests_in_flight_are_sent_once(project: Project, fake_openai: FakeOpenAIServer) -> None:
    project.write("suites/remote.yaml", suite(3, epochs=3))  # temperature 0: three epochs, one answer
    fast_runner(project)
    code, record, output = run(project, spec(fake_openai))
    assert code == 0, output
    assert len(record["cases"]) == 9
    assert fake_openai.counters["requests"] == 3 and record["stats"]["deduplicated"] == 6


def test_azure_openai_deployment(project: Project, fake_openai: FakeOpenAIServer) -> None:
    project.write("suites/remote.yaml", suite(1))
    fast_runner(project)
    model = (f"openai:gpt-4o?azure_endpoint={fake_openai.endpoint}&deployment=prod-4o"
             "&api_version=2024-10-21&api_key_env=GK_TEST_OPENAI_KEY")
    code, record, output = run(project, model)
    assert code == 0, output
    assert record["cases"][0]["output"] == "You said: question 0"
    assert fake_openai.keys_seen == Counter({"sk-test-provider-0123456789": 1})
    assert record["models"][model]["identity"]["details"]["endpoints"] == [
        f"{fake_openai.endpoint}/openai/deployments/prod-4o"]


def test_azure_entra_id_token_and_yaml_mapping_spec(project: Project, fake_openai: FakeOpenAIServer) -> None:
    project.write("suites/remote.yaml", suite(1))
    project.write("gatekeeper.yaml", f"""
runner: {{retries: 0}}
model:
  provider: openai
  model: gpt-4o
  azure_endpoint: "{fake_openai.endpoint}"
  deployment: prod-4o
  azure_ad_token_env: GK_TEST_AZURE_TOKEN
""")
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJnYXRla2VlcGVyIn0.c2lnbmF0dXJl"
    result = project.run("run", "suites", "--out", "out", env={**KEY_ENV, "GK_TEST_AZURE_TOKEN": token})
    assert result.exit_code == 0, result.output
    assert fake_openai.keys_seen == Counter({token: 1})  # sent as the bearer token
    assert project.read_record("out/results.json")["cases"][0]["output"] == "You said: question 0"


def test_config_and_spec_errors_are_usage_errors(project: Project, fake_openai: FakeOpenAIServer) -> None:
    project.write("suites/remote.yaml", suite(1))
    project.write("gatekeeper.yaml", """
providers:
  openai:
    models:
      gpt-fake:
        endpoints:
          - base_url: http://localhost:1/v1
            api_key: sk-live-DO-NOT-ECHO
""")
    result = project.run("run", "suites", "--model", "openai:gpt-fake", env=KEY_ENV)
    assert result.exit_code == 4
    assert ("gatekeeper.yaml:6: providers.openai.models.gpt-fake.endpoints[0]: 'api_key' is not accepted"
            in result.output)
    assert "DO-NOT-ECHO" not in result.output

    project.write("gatekeeper.yaml", "runner: {retries: 0}\n")
    missing = project.run("run", "suites", "--model",
                          f"openai:m?base_url={fake_openai.base_url}&api_key_env=GK_UNSET_X", env=KEY_ENV)
    assert missing.exit_code == 4
    assert "environment variable GK_UNSET_X is not set" in missing.output
    secret = project.run("run", "suites", "--model", "openai:m?api_key=sk-live-DO-NOT-ECHO", env=KEY_ENV)
    assert secret.exit_code == 4 and "must not carry a secret" in secret.output
    unknown = project.run("run", "suites", "--model", "openai:m?temprature=1", env=KEY_ENV)
    assert unknown.exit_code == 4 and "unknown parameter(s) temprature" in unknown.output
    assert fake_openai.counters["requests"] == 0


def test_batch_mode_end_to_end_at_half_price(project: Project, fake_openai: FakeOpenAIServer) -> None:
    project.write("suites/remote.yaml", suite(4))
    fast_runner(project, "providers:\n  openai:\n    prices:\n      gpt-fake: {input: 2.0, output: 10.0}\n")
    code, record, output = run(project, spec(fake_openai, batch="true", poll_s="0.05"))
    assert code == 0, output
    assert fake_openai.counters["batches_created"] == 1 and fake_openai.counters["requests"] == 0
    assert {row["output"] for row in record["cases"]} == {f"You said: question {i}" for i in range(4)}
    assert record["stats"]["cost"] == pytest.approx(4 * 50 / 1e6 * 0.5)
    assert not list((project.path / ".gatekeeper/batches").glob("*.json"))  # collected, state dropped
    code, again, _ = run(project, spec(fake_openai, batch="true", poll_s="0.05"))
    assert code == 0 and again["stats"]["cache_hits"] == 4 and fake_openai.counters["batches_created"] == 1


def test_batch_line_errors_fail_only_those_cases(project: Project, fake_openai: FakeOpenAIServer) -> None:
    project.write("suites/remote.yaml", suite(2))
    fast_runner(project)
    fake_openai.script(lambda body: {"status": 500} if body["messages"][-1]["content"] == "question 1"
                       else "You said: question 0")
    code, record, _ = run(project, spec(fake_openai, batch="true", poll_s="0.05"))
    assert code == 5
    errors = {row["key"]: row["error"] for row in record["cases"]}
    assert errors["remote::q00"] is None and "HTTP 500" in errors["remote::q01"]
    assert "batch_" in errors["remote::q01"]


@pytest.mark.parametrize("lose_state_file", [False, True])
def test_killed_run_resumes_the_same_batch(project: Project, lose_state_file: bool) -> None:
    project.write("suites/remote.yaml", suite(5))
    fast_runner(project)
    with FakeOpenAIServer(hold_batches=True) as server:
        model = spec(server, batch="true", poll_s="0.05")
        cmd = [sys.executable, "-m", "gatekeeper.cli", "run", "suites", "--model", model, "--out", "out",
               "--no-progress"]
        env = {**os.environ, **KEY_ENV}
        proc = subprocess.Popen(cmd, cwd=project.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and server.counters["batch_polls"] < 3:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert server.counters["batches_created"] == 1
        states = list((project.path / ".gatekeeper/batches").glob("*.json"))
        assert len(states) == 1 and json.loads(states[0].read_text())["batch_id"] in server.batches
        if lose_state_file:
            states[0].unlink()  # found again through the batch's metadata on the endpoint
        server.complete_batches()
        code, record, output = run(project, model)
    assert code == 0, output
    assert server.counters["batches_created"] == 1 and server.counters["files_uploaded"] == 1
    assert len(record["cases"]) == 5 and not any(row["error"] for row in record["cases"])


@pytest.mark.parametrize("limit", ["rpm=600", "tpm=157200"])  # both: 10 requests a second
def test_configured_limits_space_the_requests(project: Project, fake_openai: FakeOpenAIServer, limit: str) -> None:
    project.write("suites/remote.yaml", suite(6))
    fast_runner(project)
    name, value = limit.split("=")
    code, _, output = run(project, spec(fake_openai, **{name: value}))
    assert code == 0, output
    # Scheduled 0.1 s apart (tpm: 262 estimated tokens each), the sixth leaves 0.5 s after
    # the first (unpaced, all six leave at once); a late first arrival shortens the span.
    assert fake_openai.received_at[-1] - fake_openai.received_at[0] >= 0.35


def test_announced_limit_is_learned_so_429s_stop(project: Project) -> None:
    project.write("suites/remote.yaml", suite(30))
    fast_runner(project)
    with FakeOpenAIServer(rate_limit_rps=10, burst=3, retry_after_s=None) as server:
        code, record, output = run(project, spec(server))
    assert code == 0, output
    assert not any(row["error"] for row in record["cases"])
    # Only the first wave (8 at once, 3 admitted), sent before any answer announced the
    # limit, meets 429s; after that the requests leave at the announced 10 a second.
    assert server.counters["429"] <= 10 and server.counters["ok"] == 30
