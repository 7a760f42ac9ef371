"""Load runs: arrival processes give the requested rates, the driver keeps its schedule and
its caps, measures TTFT and latency against the fake server's configured timing, saturates
a fake with two servers and a TPM budget, and refuses what it is not allowed to send."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from gatekeeper.engine.load import LoadRun, load_load_suite, run_load
from gatekeeper.engine.load.arrivals import open_loop_arrivals, plan_steps
from gatekeeper.kinds import Model
from gatekeeper.testing import Project
from gatekeeper.types import Config, Generation, GenerationRequest, ModelIdentity, ModelSpec, UsageError
from tests.fakes import FakeOpenAIServer
from tests.fakes.openai_server import ModelTiming

Z = 4.42
"""Two-sided 1e-5 normal quantile: a count further than Z standard deviations from its
expectation means the process does not have the requested rate (not bad luck)."""

SUITE = """
suite: mix
prompt: {messages: [{role: user, content: "{{ input }}"}]}
cases:
  - {id: a, input: hello one}
  - {id: b, input: hello two}
  - {id: c, input: hello three}
"""


class LocalModel(Model):
    """An in-process model (no network: it names no endpoint) that answers after ``delay_s``."""

    def __init__(self, name: str, delay_s: float = 0.0) -> None:
        self.identity = ModelIdentity(provider="test", name=name, digest=name)
        self.delay_s = delay_s
        self.in_flight = 0
        self.peak = 0
        self.calls = 0

    def target_urls(self) -> list[str]:
        return []

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        return [Generation(text="w w w", usage={"completion_tokens": 3})]


def write_load(tmp_path: Path, body: str, name: str = "load.yaml") -> Path:
    (tmp_path / "mix.yaml").write_text(SUITE.lstrip())
    path = tmp_path / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def local_run(tmp_path: Path, body: str, models: dict[str, Model], **config: Any) -> LoadRun:
    suite = load_load_suite(write_load(tmp_path, body))
    assert suite is not None
    cfg = Config(root=tmp_path)
    cfg.load.max_rate = 1000  # the tests of the ceiling set their own
    for key, value in config.items():
        setattr(cfg.load, key, value)
    return run_load(suite, models, cfg)


def openai_model(server: FakeOpenAIServer, name: str, tmp_path: Path) -> Model:
    from gatekeeper.builtin.providers.openai.provider import OpenAIProvider

    return OpenAIProvider().load(ModelSpec.parse(f"openai:{name}?base_url={server.base_url}"), Config(root=tmp_path))


# --------------------------------------------------------------------------- arrival processes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poisson_arrivals_have_the_requested_rate_and_exponential_gaps(seed: int) -> None:
    steps = plan_steps("poisson", rate=50, rates=[], concurrency=[], duration_s=20, step_s=None)
    arrivals = list(open_loop_arrivals(steps, spacing="poisson", labels=["candidate", "baseline"],
                                       assignment="alternate", seed=seed))
    expected = 2 * 50 * 20  # both models
    assert abs(len(arrivals) - expected) <= Z * math.sqrt(expected)
    gaps = np.diff([a.t for a in arrivals])
    assert stats.kstest(gaps, "expon", args=(0, 1 / 100)).pvalue > 1e-4
    per_model = {m: sum(a.model == m for a in arrivals) for m in ("candidate", "baseline")}
    assert abs(per_model["candidate"] - per_model["baseline"]) <= 1  # alternate: one of each per pair


def test_constant_arrivals_are_evenly_spaced_and_random_assignment_is_a_fair_coin() -> None:
    steps = plan_steps("constant", rate=25, rates=[], concurrency=[], duration_s=40, step_s=None)
    arrivals = list(open_loop_arrivals(steps, spacing="constant", labels=["candidate", "baseline"],
                                       assignment="random", seed=3))
    assert len(arrivals) == 2000
    assert np.allclose(np.diff([a.t for a in arrivals]), 1 / 50)
    n_candidate = sum(a.model == "candidate" for a in arrivals)
    assert abs(n_candidate - 1000) <= Z * math.sqrt(2000 * 0.25)  # Binomial(2000, 1/2)
    owners = [a.model for a in arrivals]
    assert any(x == y for x, y in itertools.pairwise(owners))  # not simply alternating


def test_a_ramp_offers_each_steps_rate_in_its_own_window() -> None:
    steps = plan_steps("ramp", rate=None, rates=[5, 10, 20], concurrency=[], duration_s=None, step_s=30)
    arrivals = list(open_loop_arrivals(steps, spacing="poisson", labels=["candidate", "baseline"],
                                       assignment="alternate", seed=0))
    for step, rate in zip(steps, (5, 10, 20), strict=True):
        inside = [a for a in arrivals if a.step == step.index]
        assert all(step.start_s <= a.t < step.start_s + 30 for a in inside)
        expected = 2 * rate * 30
        assert abs(len(inside) - expected) <= Z * math.sqrt(expected), (rate, len(inside))


# --------------------------------------------------------------------------- the driver


def test_the_driver_sends_every_planned_arrival_on_time_interleaving_both_models(tmp_path: Path) -> None:
    # Each answer takes 100 ms: a driver that waited for answers would fall seconds behind.
    candidate, baseline = LocalModel("cand", 0.1), LocalModel("base", 0.1)
    run = local_run(tmp_path, """
        load: steady
        prompts: {suite: mix.yaml}
        arrival: {process: constant, rate: 40}
        duration_s: 2
        warmup: 0
        request: {stream: false}
    """, {"candidate": candidate, "baseline": baseline})
    assert run.stopped_by is None and [m.status for m in run.measurements] == ["ok"] * 160
    sent = np.array([m.t_sent for m in run.measurements])
    achieved = (len(sent) - 1) / (sent[-1] - sent[0])
    assert achieved == pytest.approx(80, rel=0.05)  # requested: 40/s to each of two models
    lag = np.array([m.lag_ms for m in run.measurements])
    assert np.median(lag) < 25 and lag.min() >= 0
    assert candidate.peak >= 3  # answers overlapped: the next request did not wait for the last
    for label in ("candidate", "baseline"):
        mine = run.of(label)
        assert len(mine) == 80
        assert mine[0].t_sent < 0.1 and mine[-1].t_sent > 1.9  # both across the whole window
    # The k-th request of each model asks the same prompt (paired prompt sequences).
    assert [m.case_id for m in run.of("candidate")] == [m.case_id for m in run.of("baseline")]
    assert {m.case_id for m in run.measurements} == {"mix/a", "mix/b", "mix/c"}
    assert run.of("candidate")[0].tokens_per_s is not None and run.of("candidate")[0].ttft_ms is None


def test_closed_loop_keeps_exactly_the_concurrency_in_flight_per_step(tmp_path: Path) -> None:
    model = LocalModel("cand", 0.02)
    run = local_run(tmp_path, """
        load: closed
        prompts: {suite: mix.yaml, order: cycle}
        arrival: {process: closed, concurrency: [1, 4], step_s: 0.6}
        warmup: 0
    """, {"candidate": model})
    first, second = run.of("candidate", step=0), run.of("candidate", step=1)
    assert {m.concurrency for m in first} == {1} and {m.concurrency for m in second} == {4}
    assert {m.offered_rate for m in run.measurements} == {None}
    assert model.peak <= 4 + 1  # a step-1 request may still finish while step 2 starts
    # One worker: back to back; four: about four times as many (each request takes ≥ 20 ms).
    assert len(first) <= 0.6 / 0.02 + 1 and len(second) <= 4 * (0.6 / 0.02 + 1)
    assert len(second) >= 2.5 * len(first)
    assert [m.case_id for m in first[:4]] == ["mix/a", "mix/b", "mix/c", "mix/a"]


def test_the_run_stops_at_max_requests_by_itself(tmp_path: Path) -> None:
    run = local_run(tmp_path, """
        load: capped
        prompts: {suite: mix.yaml}
        arrival: {process: constant, rate: 50}
        duration_s: 60
        warmup: 0
        caps: {max_requests: 25}
    """, {"candidate": LocalModel("cand")})
    assert len(run.measurements) == 25 and run.stopped_by == "max_requests"
    assert run.wall_s < 10  # 0.5 s of arrivals, not the 60 s planned


def test_the_run_stops_at_max_duration_and_records_what_was_in_flight_as_cancelled(tmp_path: Path) -> None:
    slow = LocalModel("cand", 30.0)
    run = local_run(tmp_path, """
        load: hung-endpoint
        prompts: {suite: mix.yaml}
        arrival: {process: constant, rate: 10}
        duration_s: 20
        warmup: 0
        request: {timeout_s: 60}
        caps: {max_duration_s: 0.5}
    """, {"candidate": slow})
    assert run.wall_s < 3  # the hard stop at 0.5 s, not the 30 s answers or the 20 s planned
    assert run.stopped_by == "max_duration_s"
    assert {m.status for m in run.measurements} == {"cancelled"} and len(run.measurements) == 5
    assert all(m.latency_ms is not None and m.latency_ms > 0 for m in run.measurements)


def test_timeouts_and_arrivals_beyond_max_in_flight_are_measured_not_waited_for(tmp_path: Path) -> None:
    run = local_run(tmp_path, """
        load: overloaded
        prompts: {suite: mix.yaml}
        arrival: {process: constant, rate: 20}
        duration_s: 0.5
        warmup: 0
        request: {timeout_s: 0.2}
        caps: {max_in_flight: 2}
    """, {"candidate": LocalModel("cand", 1.0)})
    statuses = [m.status for m in run.measurements]
    assert len(statuses) == 10 and statuses.count("timeout") >= 2 and statuses.count("shed") >= 4
    shed = [m for m in run.measurements if m.status == "shed"]
    assert all(m.latency_ms is None or m.latency_ms >= 0 for m in shed)
    assert run.wall_s < 2


# --------------------------------------------------------------------------- against the fake server


def test_streaming_ttft_is_the_first_content_delta_as_the_fake_is_configured(tmp_path: Path) -> None:
    # 40 ms to the first token, then 100 ms per token, 3 tokens: the first token can arrive no
    # earlier than 40 ms and, if TTFT is timed from the first *content* delta (not the role
    # chunk, not the end), well before the second token is due at 140 ms; the answer takes ≥ 240 ms.
    timing = {"m": ModelTiming(ttft_s=0.04, inter_token_s=0.1, output_tokens=3)}
    with FakeOpenAIServer(model_timing=timing) as server:
        body = f"""
            load: ttft
            prompts: {{suite: mix.yaml}}
            arrival: {{process: constant, rate: 8}}
            duration_s: 1
            request: {{stream: STREAM, max_tokens: 16}}
            targets: ["{server.base_url}"]
        """
        model = openai_model(server, "m", tmp_path)
        streamed = local_run(tmp_path, body.replace("STREAM", "true"), {"candidate": model})
        whole = local_run(tmp_path, body.replace("STREAM", "false"), {"candidate": model})
    ok = [m for m in streamed.measurements if m.status == "ok"]
    assert len(ok) == 8
    ttft = np.array([m.ttft_ms for m in ok])
    assert ttft.min() >= 40 and np.median(ttft) < 140
    assert all(m.latency_ms >= 40 + 2 * 100 and m.output_tokens == 3 for m in ok)  # type: ignore[operator]
    assert all(m.tokens_per_s == pytest.approx(3 / (m.latency_ms / 1000), rel=1e-3) for m in ok)  # type: ignore[operator]
    assert [m.status for m in whole.measurements] == ["ok"] * 8
    assert {m.ttft_ms for m in whole.measurements} == {None}
    assert min(m.latency_ms for m in whole.measurements) >= 240  # type: ignore[type-var]


def test_two_servers_and_a_tpm_budget_saturate_with_queuing_and_429s(tmp_path: Path) -> None:
    # Each answer holds a server ~55 ms (30 ms + 10 tokens × 2.5 ms): two servers serve ~36/s.
    # The TPM budget admits 60 requests/s (21 tokens each), 0.2 s of burst. Offered 45/s to
    # each of two models = 90/s: the budget refuses some (429) and what it admits queues.
    timing = ModelTiming(ttft_s=0.03, inter_token_s=0.0025, output_tokens=10)
    with FakeOpenAIServer(servers=2, tpm=60 * 21 * 60, tpm_burst_s=0.2,
                          model_timing={"cand": timing, "base": timing}) as server:
        def run(rate: float) -> LoadRun:
            body = f"""
                load: saturation
                prompts: {{suite: mix.yaml}}
                arrival: {{process: poisson, rate: {rate}}}
                duration_s: 1
                request: {{stream: true, max_tokens: 16, timeout_s: 10}}
                targets: ["{server.endpoint}"]
            """
            return local_run(tmp_path, body, {"candidate": openai_model(server, "cand", tmp_path),
                                              "baseline": openai_model(server, "base", tmp_path)})

        light = run(3)
        assert server.counters["429"] == 0 and server.peak_queued <= 2
        heavy = run(45)
    counts = heavy.counts()
    assert counts["candidate"]["429"] > 0 and counts["baseline"]["429"] > 0
    assert server.peak_queued >= 5
    light_p50 = np.median([m.latency_ms for m in light.measurements if m.status == "ok"])
    heavy_p90 = np.quantile([m.latency_ms for m in heavy.measurements if m.status == "ok"], 0.9)
    assert light_p50 >= 30 + 9 * 2.5  # the fake's service time is a floor
    assert heavy_p90 > 2 * light_p50 and max(server.queue_waits) > 0.1
    # A 429 is a measurement: nothing was retried (one request per measurement, plus warm-ups).
    assert server.counters["requests"] == len(light.measurements) + len(heavy.measurements) + 4
    four29 = next(m for m in heavy.measurements if m.status == "429")
    assert "429" in (four29.error or "") and four29.ttft_ms is None


# --------------------------------------------------------------------------- safety


def test_a_rate_above_the_ceiling_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        project = Project(tmp_path)
        project.write("gatekeeper.yaml", f"""
            load: {{max_rate: 10, targets: ["{server.endpoint}"]}}
        """)
        project.write("suites/mix.yaml", SUITE)
        project.write("suites/load.yaml", """
            load: too-fast
            prompts: {suite: mix.yaml}
            arrival:
              process: ramp
              rates: [2, 6]
              step_s: 0.5
              within_step: constant
        """)
        # "." finds gatekeeper.yaml too: its `load:` mapping is settings, not a load suite.
        args = ("load", ".", "--candidate", f"openai:cand?base_url={server.base_url}",
                "--baseline", f"openai:base?base_url={server.base_url}", "--out", "out")
        refused = project.run(*args)
        assert server.counters["requests"] == 0
        confirmed = project.run(*args, "--confirm-load-rate")
    assert refused.exit_code == 4, refused.output
    assert "suites/load.yaml:5: arrival.rates: the suite offers up to 12 requests/s in total (6/s to each of 2 " \
           "models), above load.max_rate 10; pass --confirm-load-rate" in refused.output
    assert "Traceback" not in refused.output
    assert confirmed.exit_code == 0, confirmed.output
    rows = [json.loads(line) for line in (tmp_path / "out/load-too-fast.jsonl").read_text().splitlines()]
    assert {r["offered_rate"] for r in rows} == {2.0, 6.0} and {r["model"] for r in rows} == {"candidate", "baseline"}
    summary = json.loads((tmp_path / "out/load-too-fast.json").read_text())
    assert summary["counts"]["candidate"]["ok"] == sum(r["model"] == "candidate" for r in rows)
    confirmed.fnmatch_lines(["load too-fast: ramp, 2 step(s), 1 s planned*",
                             "  load step 1/2: 2 req/s per model for 0.5 s",
                             "  load step 2/2: 6 req/s per model for 0.5 s",
                             "  load step 1/2 (2 req/s): candidate 1 ok / 0 failed, p50 * ms; "
                             "baseline 1 ok / 0 failed*",
                             "  load step 2/2 (6 req/s): candidate 3 ok / 0 failed, p50 * ms; "
                             "baseline 3 ok / 0 failed*",
                             "  model  * n    ok   429  5xx  t/o  err   p50 ms   p95 ms  ttft p50   ok/s",
                             "  candidate *", "  baseline *", "wrote *load-too-fast.jsonl, *load-too-fast.json"])


def test_an_endpoint_nobody_named_is_refused(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        project = Project(tmp_path)
        project.write("suites/mix.yaml", SUITE)
        project.write("suites/load.yaml", """
            load: unnamed
            prompts: {suite: mix.yaml}
            arrival: {process: constant, rate: 1}
            duration_s: 1
            targets: ["https://staging.example.com/v1"]
        """)
        result = project.run("load", "suites", "--candidate", f"openai:cand?base_url={server.base_url}")
        assert server.counters["requests"] == 0
    assert result.exit_code == 4
    assert (f"suites/load.yaml:5: targets: the candidate (openai:cand) sends to {server.base_url}, which is not "
            "named in this suite's 'targets' or in load.targets of gatekeeper.yaml") in result.output
    with pytest.raises(UsageError, match="cannot say which endpoints"):
        suite = load_load_suite(tmp_path / "suites/load.yaml")
        assert suite is not None

        class Opaque(LocalModel):
            target_urls = None  # type: ignore[assignment]

        run_load(suite, {"candidate": Opaque("x")}, Config(root=tmp_path))


@pytest.mark.parametrize(("body", "message"), [
    ("arrival: {process: poisson}\nduration_s: 5\n", "load.yaml:3: arrival: process 'poisson' needs 'rate'"),
    ("arrival: {process: ramp, rates: [1, 2], step_s: 1}\nduration_s: 5\n",
     "load.yaml:4: duration_s: 'duration_s' does not apply to a stepped run"),
    ("arrival: {process: constant, rate: 1}\nduration_s: 5\ncaps: {max_request: 5}\n",
     "load.yaml:5: caps.max_request: unknown field"),
    ("arrival: {process: closed, concurrency: 2, rate: 3}\nduration_s: 5\n",
     "load.yaml:3: arrival: 'rate' does not apply to process 'closed'"),
])
def test_a_bad_load_suite_names_file_line_and_field(tmp_path: Path, body: str, message: str) -> None:
    project = Project(tmp_path)
    project.write("suites/mix.yaml", SUITE)
    (tmp_path / "suites/load.yaml").write_text("load: bad\nprompts: {suite: mix.yaml}\n" + body)
    result = project.run("load", "suites", "--candidate", "openai:x?base_url=http://127.0.0.1:9/v1")
    assert result.exit_code == 4 and message in result.output, result.output


def test_signal_prompts_are_only_those_whose_users_consented_to_evaluation(tmp_path: Path) -> None:
    def signal(i: int, consent: bool) -> dict[str, Any]:
        return {"id": f"s{i}", "conversation_id": f"c{i}", "time": "2026-01-01T00:00:00Z", "model": "m",
                "model_version": "1", "messages": [{"role": "user", "content": f"question {i}"}],
                "answer": "a", "consent": {"evaluation": consent, "training": False}}

    with FakeOpenAIServer() as server:
        project = Project(tmp_path)
        project.write_jsonl("signals.jsonl", [signal(1, True), signal(2, False), signal(3, True)])
        project.write("load.yaml", f"""
            load: from-production
            prompts: {{signals: signals.jsonl, order: cycle}}
            arrival: {{process: constant, rate: 4}}
            duration_s: 1
            targets: ["{server.endpoint}"]
        """)
        result = project.run("load", "load.yaml", "--candidate", f"openai:cand?base_url={server.base_url}")
        sent = {m["messages"][-1]["content"] for m in server.requests}
    assert result.exit_code == 0, result.output
    assert sent == {"question 1", "question 3"}
    out = tmp_path / "gatekeeper-out/load-from-production.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["case_id"] for r in rows] == ["s1", "s3", "s1", "s3"]
