"""The runner: cache, resume after SIGKILL, retries, Retry-After, AIMD, timeouts, crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from gatekeeper.testing import Project

FLAKY_MODEL = '''
import json, os, time
from pathlib import Path

CALLS = Path(os.environ["CALLS_FILE"])

def answer(messages, params):
    with CALLS.open("a") as fh:
        fh.write(params["case_id"] + "\\n")
    time.sleep(float(os.environ.get("SLEEP", "0")))
    return "answer to " + messages[-1]["content"]
'''


def _suite(n: int) -> str:
    cases = "".join(f"  - {{id: c{i:03d}, input: question {i}}}\n" for i in range(n))
    return (
        "suite: many\nprompt: {messages: [{role: user, content: '{{ input }}'}]}\n"
        "evaluators: [{contains: {values: [answer]}}]\ncases:\n" + cases
    )


def test_second_identical_run_makes_zero_model_calls(mini: Project) -> None:
    first = mini.run("run", "--model", "replay:good.jsonl", "--out", "out1")
    second = mini.run("run", "--model", "replay:good.jsonl", "--out", "out2")
    assert first.exit_code == second.exit_code == 0, second.output
    assert "model calls: 3 (cache hits: 0" in first.stdout
    assert "model calls: 0 (cache hits: 3" in second.stdout
    assert mini.read_record("out2/results.json")["stats"]["model_calls"] == 0
    assert all(r["cached"] for r in mini.read_record("out2/results.json")["cases"])


def test_changed_recording_is_a_different_model(mini: Project) -> None:
    mini.run("run", "--model", "replay:good.jsonl", "--out", "out1")
    mini.write_jsonl("good.jsonl", [{"id": "refund-1", "output": "changed"}])
    again = mini.run("run", "--model", "replay:good.jsonl", "--out", "out2")
    assert "model calls: 3 (cache hits: 0" in again.stdout


def test_sigkilled_run_resumes_without_repeating_finished_calls(project: Project) -> None:
    project.write("suites/many.yaml", _suite(40))
    project.write("slowmodel.py", FLAKY_MODEL)
    project.write("gatekeeper.yaml", "runner: {concurrency: 2, max_concurrency: 2}\n")
    calls = project.path / "calls.txt"
    env = {**os.environ, "CALLS_FILE": str(calls), "SLEEP": "0.1"}
    cmd = [sys.executable, "-m", "gatekeeper.cli", "run", "--model", "python:slowmodel:answer",
           "--out", "out", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=project.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and (not calls.exists() or len(calls.read_text().split()) < 12):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    first = calls.read_text().split()
    assert 12 <= len(first) < 40, "killed mid-way"
    assert not (project.path / "out/results.json").exists()

    done = subprocess.run(cmd, cwd=project.path, env={**env, "SLEEP": "0"}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    allcalls = calls.read_text().split()
    # Every case was answered exactly once in total, apart from the (at most 2) calls that
    # were in flight when the process died.
    assert sorted(set(allcalls)) == [f"c{i:03d}" for i in range(40)]
    assert len(allcalls) - 40 <= 2
    record = project.read_record("out/results.json")
    assert record["stats"]["cache_hits"] >= len(first) - 2
    assert len(record["cases"]) == 40


RATE_LIMITED_MODEL = '''
import time
from gatekeeper import RateLimited, ProviderError

STATE = {"calls": 0, "in_flight": 0, "peak": 0}

async def answer(messages, params):
    import asyncio
    STATE["calls"] += 1
    STATE["in_flight"] += 1
    STATE["peak"] = max(STATE["peak"], STATE["in_flight"])
    try:
        await asyncio.sleep(0.01)
        if STATE["in_flight"] > 3:
            raise RateLimited("429 too many requests", retry_after=0.05)
        if params["case_id"] == "c005" and STATE.get("c005") is None:
            STATE["c005"] = 1
            raise ProviderError("502 bad gateway", retryable=True)
        return "answer"
    finally:
        STATE["in_flight"] -= 1
'''


def test_rate_limits_back_off_and_lose_no_case(project: Project) -> None:
    project.write("suites/many.yaml", _suite(60))
    project.write("rl_model.py", RATE_LIMITED_MODEL)
    project.write("gatekeeper.yaml", "runner: {concurrency: 8, max_concurrency: 16, backoff_s: 0.01}\n")
    sys.path.insert(0, str(project.path))
    try:
        result = project.run("run", "--model", "python:rl_model:answer", "--out", "out")
    finally:
        sys.path.remove(str(project.path))
        sys.modules.pop("rl_model", None)
    assert result.exit_code == 0, result.output
    stats = project.read_record("out/results.json")["stats"]
    assert stats["rate_limited"] > 0 and stats["retries"] >= stats["rate_limited"]
    assert stats["generation_errors"] == 0
    assert len(project.read_record("out/results.json")["cases"]) == 60


def test_limiter_halves_on_throttle_and_grows_on_success() -> None:
    from gatekeeper.engine.runner import AdaptiveLimiter

    async def scenario() -> list[float]:
        lim = AdaptiveLimiter(initial=8, maximum=10)
        seen = [lim.limit]
        await lim.acquire()
        await lim.release("throttled", retry_after=0.2)
        seen.append(lim.limit)
        start = time.monotonic()
        await lim.acquire()  # waits out Retry-After
        seen.append(time.monotonic() - start)
        await lim.release("ok")
        for _ in range(4):
            await lim.acquire()
            await lim.release("ok")
        seen.append(lim.limit)
        return seen

    initial, halved, waited, grown = asyncio.run(scenario())
    assert (initial, halved) == (8, 4)
    assert waited >= 0.15
    assert grown == 5


def test_limiter_halves_once_per_round_trip_not_once_per_429() -> None:
    from gatekeeper.engine.runner import AdaptiveLimiter

    async def scenario() -> list[float]:
        lim = AdaptiveLimiter(initial=16, maximum=16)
        burst = [await lim.acquire() for _ in range(4)]  # four calls out, then a 429 storm
        for sent in burst:
            await lim.release("throttled", sent=sent)
        after_storm = lim.limit
        later = await lim.acquire()  # sent after the decrease: a new round trip
        await lim.release("throttled", sent=later)
        return [after_storm, lim.limit]

    assert asyncio.run(scenario()) == [8, 4]


def test_timeouts_are_retried_then_reported_as_errors(project: Project) -> None:
    project.write("suites/many.yaml", _suite(2))
    project.write("hang.py", "import time\ndef answer(m, p):\n    time.sleep(1)\n    return 'late'\n")
    project.write("gatekeeper.yaml", "runner: {timeout_s: 0.2, retries: 1, backoff_s: 0.01}\n")
    sys.path.insert(0, str(project.path))
    try:
        result = project.run("run", "--model", "python:hang:answer", "--out", "out")
    finally:
        sys.path.remove(str(project.path))
        sys.modules.pop("hang", None)
    assert result.exit_code == 5
    record = project.read_record("out/results.json")
    assert record["stats"]["timeouts"] == 4 and record["stats"]["retries"] == 2
    score = record["cases"][0]["scores"]["contains"]
    assert score["status"] == "error" and "timed out after 0.2 s (after 2 attempts)" in score["reason"]


def test_a_crashing_evaluator_is_named_and_the_run_completes(mini: Project) -> None:
    mini.write("gatekeeper_plugins.py", """
        from gatekeeper import Evaluator, hookimpl
        class Broken(Evaluator):
            name = "broken"
            def score(self, case, generation):
                raise ZeroDivisionError("division by zero")
        @hookimpl
        def gatekeeper_register_evaluators(register):
            register(Broken)
    """)
    mini.write("suites/mini.yaml", (mini.path / "suites/mini.yaml").read_text() + "  - broken\n")
    result = mini.run("run", "--model", "replay:good.jsonl", "--out", "out")
    assert result.exit_code == 5
    row = mini.read_record("out/results.json")["cases"][0]
    assert row["scores"]["facts"]["value"] == 1.0
    assert row["scores"]["broken"]["reason"] == "Broken (broken) raised ZeroDivisionError: division by zero"


def test_missing_recording_is_an_error_score_not_a_zero(mini: Project) -> None:
    mini.write_jsonl("partial.jsonl", [{"id": "refund-1", "output": "30 days"}])
    result = mini.run("run", "--model", "replay:partial.jsonl", "--out", "out")
    assert result.exit_code == 5
    rows = {r["key"]: r for r in mini.read_record("out/results.json")["cases"]}
    assert rows["mini::ship-1"]["error"] == "no recorded output for case 'ship-1'"
    assert rows["mini::ship-1"]["scores"]["facts"]["status"] == "error"


def test_bad_recording_row_names_file_and_line(mini: Project) -> None:
    (mini.path / "bad.jsonl").write_text('{"id": "a", "output": "x"}\n{"output": "no id"}\n')
    result = mini.run("run", "--model", "replay:bad.jsonl")
    assert result.exit_code == 4
    assert result.stderr.strip() == "error: bad.jsonl:2: id: recording row has no 'id'"


def test_unknown_provider_and_bad_spec(mini: Project) -> None:
    result = mini.run("run", "--model", "nosuch:thing")
    assert result.exit_code == 4 and "unknown model provider 'nosuch'" in result.stderr
    result = mini.run("run", "--model", "just-a-name")
    assert result.exit_code == 4 and "is not PROVIDER:NAME" in result.stderr
