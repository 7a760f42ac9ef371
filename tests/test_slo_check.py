"""`gatekeeper check` with a load suite gates on service levels, end to end: the real CLI, the
load driver, the fake OpenAI server's capacity model (answers timed per model), the policy's
`slo` section, decision.json, report.html and summary.md. Delays are tens of milliseconds."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.testing import Project
from tests.fakes import FakeOpenAIServer
from tests.fakes.openai_server import ModelTiming

KEY_ENV = {"GK_TEST_OPENAI_KEY": "sk-test-slo-0123456789", "GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD": "1"}

# fast: ~20 + 10 ms per answer (2 streamed tokens); slow: ~1200 + 100 ms. The gap is wide, and the
# answers short (few event-loop wake-ups), because a busy 2-core host adds hundreds of ms to both.
TIMING = {"fast": ModelTiming(ttft_s=0.02, inter_token_s=0.01, output_tokens=2),
          "fast2": ModelTiming(ttft_s=0.02, inter_token_s=0.01, output_tokens=2),
          "slow": ModelTiming(ttft_s=1.2, inter_token_s=0.1, output_tokens=2)}

SUITE = """\
suite: chat
prompt: {messages: [{role: user, content: "{{ input }}"}]}
evaluators: [{name: contains, as: echo, field: expected}]
cases:
  - {id: a, input: where is my order, expected: order}
  - {id: b, input: reset my password, expected: password}
  - {id: c, input: cancel the plan, expected: plan}
"""

LOAD = """\
load: chat-load
prompts: {{suite: chat.yaml}}
arrival: {{process: constant, rate: {rate}}}
duration_s: {duration}
request: {{stream: true, max_tokens: 16, timeout_s: 5}}
seed: 1
caps: {{max_requests: 1000, max_duration_s: 30}}
"""

POLICY = """\
metadata: {id: slo-pccp, title: SLO plan, version: "1", effective_date: 2026-01-01, owner: sre}
modifications:
  - {id: M1, type: prompt_template_change, description: prompt, authorization: automatic,
     evaluation: [echo, p95, p95_vs_baseline, errors]}
gate: {scope: {require_provenance: false}}
performance_evaluation:
  suites: [chat]
  metrics:
    - {name: echo, metric: echo, direction: higher, margin: 0.1}
slo:
  guardrails:
    - {name: p95, measure: latency, quantile: p95, max: 800}
    - {name: p95_vs_baseline, measure: latency, quantile: p95, max_increase_pct: 50}
    - {name: ttft, measure: ttft, quantile: p95, max: 1000, critical: false}
    - {name: errors, measure: error_rate, max: 0.05}
impact_assessment: {intended_use: tests}
traceability:
  - {modification: M1, evaluations: [echo, p95, p95_vs_baseline, errors], rationale: latency matters}
"""


@pytest.fixture(scope="module")
def server() -> Any:
    with FakeOpenAIServer(servers=64, model_timing=TIMING) as fake:
        yield fake


def spec(server: FakeOpenAIServer, model: str) -> str:
    return f"openai:{model}?base_url={server.base_url}&api_key_env=GK_TEST_OPENAI_KEY"


def slo_project(tmp_path: Path, server: FakeOpenAIServer, *, rate: float = 10, duration: float = 8,
                policy: str = POLICY) -> Project:
    project = Project(tmp_path)
    project.write("gatekeeper.yaml", f"""\
        suites: [suites]
        runner: {{backoff_s: 0.01, max_backoff_s: 0.05, retries: 2, timeout_s: 5}}
        load: {{max_rate: 40, targets: ["{server.base_url}"]}}
        """)
    project.write("suites/chat.yaml", SUITE)
    project.write("suites/chat-load.yaml", LOAD.format(rate=rate, duration=duration))
    project.write("policies/slo.yaml", policy)
    return project


def check(project: Project, server: FakeOpenAIServer, candidate: str, baseline: str = "fast",
          *extra: str) -> tuple[int, dict[str, Any], str]:
    result = project.run("check", "--candidate", spec(server, candidate), "--baseline", spec(server, baseline),
                         "--policy", "policies/slo.yaml", "--out", "out", "--no-progress", *extra, env=KEY_ENV)
    path = project.path / "out/decision.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    return result.exit_code, record, result.output


def rows(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in record["slo"]["rows"]}


def test_a_candidate_slower_at_p95_is_rejected(tmp_path: Path, server: FakeOpenAIServer) -> None:
    code, record, output = check(slo_project(tmp_path, server), server, "slow")
    assert code == 1, output
    assert record["decision"] == "REJECT"
    slo = rows(record)
    assert slo["p95"]["verdict"] == "FAIL" and slo["p95"]["ci_low"] > 800
    assert slo["p95_vs_baseline"]["verdict"] == "FAIL" and slo["p95_vs_baseline"]["ci_low"] > 1.5
    assert slo["errors"]["verdict"] == "PASS"
    clauses = {r["clause"]: r["text"] for r in record["reasons"]}
    assert "slo.guardrails[p95]" in clauses and "the SLO is breached" in clauses["slo.guardrails[p95]"]
    assert "slo.guardrails[p95_vs_baseline]" in clauses
    # both models were measured in the same window, and every request is on file
    assert record["slo"]["requests"]["candidate"] >= 70 and record["slo"]["requests"]["baseline"] >= 70
    lines = (project_out := tmp_path / "out" / "load-chat-load.jsonl").read_text().splitlines()
    assert {json.loads(line)["model"] for line in lines} == {"candidate", "baseline"}
    assert record["slo"]["runs"]["chat-load"]["measurements_file"]["path"] == project_out.name
    # the reports show it
    summary = (tmp_path / "out/summary.md").read_text()
    assert "### Service levels (load)" in summary
    assert re.search(r"\| \*\*p95\*\* \| latency p95 ≤ 800 ms \| \d+ \| .* ❌ FAIL \|", summary)
    html = (tmp_path / "out/report.html").read_text()
    assert 'id="slo"' in html and 'id="slo-cdf-latency"' in html and "<polyline" in html
    assert "slo.guardrails[p95]" in html


def test_a_candidate_within_the_slo_passes(tmp_path: Path, server: FakeOpenAIServer) -> None:
    code, record, output = check(slo_project(tmp_path, server), server, "fast2")
    slo = rows(record)
    assert code == 0, output + json.dumps(slo, indent=1)[:3000]
    assert record["decision"] == "PROMOTE"
    assert {n: r["verdict"] for n, r in slo.items() if r["critical"]} == {
        "p95": "PASS", "p95_vs_baseline": "PASS", "errors": "PASS"}
    assert [c["p"] for c in record["slo"]["comparisons"] if c["measure"] == "latency"] == [0.5, 0.95, 0.99]
    assert "slo p95" in output


def test_a_run_too_short_is_inconclusive_with_the_requests_it_needs(tmp_path: Path, server: FakeOpenAIServer) -> None:
    code, record, output = check(slo_project(tmp_path, server, rate=10, duration=2), server, "fast2")
    assert code == 3, output
    assert record["decision"] == "INCONCLUSIVE"
    p95 = rows(record)["p95"]
    assert p95["verdict"] == "INCONCLUSIVE" and p95["ci_high"] is None and p95["n"] < 59
    assert p95["requests_needed"] >= 59
    reason = next(r["text"] for r in record["reasons"] if r["clause"] == "slo.guardrails[p95]")
    assert f"cannot bound the p95 from above; about {p95['requests_needed']} candidate requests needed" in reason


def test_a_load_rate_above_the_ceiling_is_refused_before_any_call(tmp_path: Path,
                                                                  server: FakeOpenAIServer) -> None:
    project = slo_project(tmp_path, server, rate=25)
    before = server.counters["requests"]
    code, record, output = check(project, server, "fast2")
    assert code == 4 and not record, output
    assert "--confirm-load-rate" in output and server.counters["requests"] == before


def test_a_bad_slo_section_names_file_line_and_field(tmp_path: Path, server: FakeOpenAIServer) -> None:
    bad = POLICY.replace("{name: errors, measure: error_rate, max: 0.05}",
                         "{name: errors, measure: error_rate, max: 5}")
    code, _, output = check(slo_project(tmp_path, server, policy=bad), server, "fast2")
    assert code == 4
    assert "policies/slo.yaml:15: slo.guardrails[3].max: error_rate is a share of requests from 0 to 1" in output


RAMP = """\
load: chat-ramp
prompts: {suite: chat.yaml}
arrival: {process: ramp, rates: [1, 6], step_s: 8}
request: {stream: true, max_tokens: 16, timeout_s: 5}
seed: 1
caps: {max_requests: 1000, max_duration_s: 40}
"""


def test_a_ramp_finds_the_knee_and_refuses_a_candidate_below_the_throughput_floor(tmp_path: Path) -> None:
    """One server answering in ~130 ms serves ~7.7 requests/s: 6 req/s to each model (12 in all)
    saturates it, the queue grows for 8 s, and that step breaks the latency SLO with confidence."""
    timing = {"one": ModelTiming(ttft_s=0.12, inter_token_s=0.01, output_tokens=2)}
    policy = POLICY.replace("    - {name: errors, measure: error_rate, max: 0.05}\n",
                            "    - {name: errors, measure: error_rate, max: 0.05}\n"
                            "    - {name: capacity, measure: throughput, min: 6}\n")
    with FakeOpenAIServer(servers=1, model_timing=timing) as one:
        project = slo_project(tmp_path, one, policy=policy)
        (project.path / "suites/chat-load.yaml").unlink()
        project.write("suites/chat-ramp.yaml", RAMP)
        code, record, output = check(project, one, "one", "one")
    assert code == 1, output
    cap = rows(record)["capacity"]
    assert cap["verdict"] == "FAIL" and cap["ci_high"] == 6, cap["reason"]
    steps = record["slo"]["capacity"]["candidate"]["steps"]
    assert [s["offered_rps"] for s in steps] == [1, 6] and steps[-1]["state"] == "breaks"
    assert "broke the SLO with confidence, at or below 6 req/s" in cap["reason"]
    html = (tmp_path / "out/report.html").read_text()
    assert html.count('<svg class="slo load"') == 2 and 'class="knee-band"' in html
