"""One suite mixing built-in metrics with ragas', deepeval's and azure-ai-evaluation's, through
``gatekeeper check`` to one decision and one report (docs/ecosystem.md).

The three libraries' judge calls all go through gatekeeper's runner to the fake OpenAI server,
answered by one scripted judge (tests/fakes/ecosystem_judge.py). A candidate that invents
prices in half its answers is rejected, with every library's judged metric failing and
the hallucination detectors of all four sources flagging the same cases; a grounded candidate
is promoted; a re-run of the check asks the judge nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from gatekeeper.testing import Project
from tests.fakes import FakeOpenAIServer

if os.environ.get("GATEKEEPER_ALL_EXTRAS") != "1":
    # The plugins first: they switch telemetry (and deepeval's .env and ./.deepeval) off,
    # which the libraries read when they are imported.
    for library in ("gatekeeper_ragas", "gatekeeper_deepeval._library", "ragas", "deepeval", "azure.ai.evaluation"):
        pytest.importorskip(library)

from tests.fakes.ecosystem_judge import ecosystem_judge

KEY_ENV = "GK_ECOSYSTEM_JUDGE_KEY"
ENV = {KEY_ENV: "sk-ecosystem-judge-5a8d"}
CASES = [(f"item{i}", f"How much does item {i} cost?", f"Item {i} costs ${10 + i} and ships in {i + 1} days.",
          f"Item {i} costs ${10 + i}.") for i in range(12)]
GROUNDED = {cid: ref for cid, _, _, ref in CASES}
INVENTED = {cid: (f"Item {i} costs ${90 + i}." if i % 2 else GROUNDED[cid]) for i, (cid, *_) in enumerate(CASES)}

EVALUATORS = """\
  - rouge_l
  - token_f1
  - {name: ragas_faithfulness, judge: '%(judge)s'}
  - {name: deepeval_geval, as: correctness, judge: '%(judge)s', criteria: 'The answer states the price the
     expected output states.', evaluation_params: [input, actual_output, expected_output]}
  - {name: azure_groundedness, judge: '%(judge)s'}
"""
DETECTORS = """\
  - grounding
  - {name: ragas_hallucination, judge: '%(judge)s'}
  - {name: deepeval_faithfulness, as: deepeval_hallucination, judge: '%(judge)s'}
  - {name: azure_groundedness, as: azure_hallucination, judge: '%(judge)s'}
"""
METRICS = [
    ("rouge", "rouge_l", "higher", "non_inferiority", "margin: 0.2"),
    ("ragas_faith", "ragas_faithfulness", "higher", "non_inferiority", "margin: 0.2"),
    ("correctness", "correctness", "higher", "non_inferiority", "margin: 0.1"),
    ("azure_grounded", "azure_groundedness", "higher", "non_inferiority", "margin: 0.2"),
    ("ragas_halluc", "ragas_hallucination", "lower", "guardrail_only", "guardrail: {max: 0.2}"),
    ("deepeval_halluc", "deepeval_hallucination", "lower", "guardrail_only", "guardrail: {max: 0.2}"),
    ("azure_halluc", "azure_hallucination", "lower", "guardrail_only", "guardrail: {max: 0.2}"),
]


def policy() -> str:
    names = ", ".join(m[0] for m in METRICS)
    rows = "\n".join(f"    - {{name: {n}, metric: {m}, direction: {d}, hypothesis: {h}, {extra}, ci_method: t, "
                     f"min_n: 12, critical: true}}" for n, m, d, h, extra in METRICS)
    return f"""\
metadata: {{id: eco-pccp, title: Mixed metrics, version: "1", effective_date: 2026-01-01, owner: qa}}
modifications:
  - {{id: M1, type: prompt_template_change, description: new prompt, authorization: automatic,
     evaluation: [{names}]}}
performance_evaluation:
  suites: [mixed]
  metrics:
{rows}
impact_assessment:
  intended_use: tests
  risks: [{{id: R1, description: invented prices, mitigation: gate, metrics: [{names}]}}]
traceability:
  - {{modification: M1, evaluations: [{names}], rationale: grounded answers}}
"""


@pytest.fixture
def judge_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(responder=ecosystem_judge) as server:
        yield server


def setup(project: Project, server: FakeOpenAIServer, candidate: dict[str, str]) -> None:
    judge = f"openai:gpt-fake?base_url={server.base_url}&api_key_env={KEY_ENV}"
    rows = "\n".join(f"  - {{id: {i}, input: '{q}', context: '{c}', expected: '{e}'}}" for i, q, c, e in CASES)
    project.write("gatekeeper.yaml", "runner: {retries: 1, backoff_s: 0.0, max_backoff_s: 0.0, timeout_s: 20}\n")
    project.write("suites/mixed.yaml", f"""\
suite: mixed
prompt:
  messages: [{{role: user, content: "{{{{ context }}}} {{{{ input }}}}"}}]
cases:
{rows}
evaluators:
{EVALUATORS % {"judge": judge}}
detectors:
{DETECTORS % {"judge": judge}}
""")
    project.write("policy.yaml", policy())
    project.write_jsonl("candidate.jsonl", [{"id": k, "output": v} for k, v in candidate.items()])
    project.write_jsonl("baseline.jsonl", [{"id": k, "output": v} for k, v in GROUNDED.items()])


def check(project: Project) -> tuple[int, dict[str, Any], str]:
    result = project.run("check", "--candidate", "replay:candidate.jsonl", "--baseline", "replay:baseline.jsonl",
                         "--policy", "policy.yaml", "--out", "out", "--no-progress", env=ENV)
    return result.exit_code, project.read_record("out/decision.json"), result.output


def case_values(record: dict[str, Any], metric: str, model: str) -> dict[str, float | None]:
    return {record["case_index"][row["key"]]["id"]: row["scores"][metric]["value"]
            for row in record["cases"] if row["model"] == model}


def test_one_suite_three_libraries_one_decision(project: Project, judge_server: FakeOpenAIServer) -> None:
    setup(project, judge_server, INVENTED)
    code, record, output = check(project)

    assert (record["decision"], code) == ("REJECT", 1), output
    verdicts = {m["name"]: m["verdict"] for m in record["metrics"]}
    # A lexical metric barely sees a changed price (ROUGE-L 0.875, within its margin); the
    # three libraries' judges and their hallucination detectors all do.
    assert verdicts == {"rouge": "PASS", "ragas_faith": "FAIL", "correctness": "FAIL", "azure_grounded": "FAIL",
                        "ragas_halluc": "FAIL", "deepeval_halluc": "FAIL", "azure_halluc": "FAIL"}, output
    invented = {cid for i, (cid, *_) in enumerate(CASES) if i % 2}
    for detector in ("ragas_hallucination", "deepeval_hallucination", "azure_hallucination"):
        flagged = {c for c, v in case_values(record, detector, "candidate").items() if v == 1.0}
        assert flagged == invented, detector
    for metric, low in (("ragas_faithfulness", 0.0), ("correctness", 0.2), ("azure_groundedness", 0.0)):
        values = case_values(record, metric, "candidate")
        assert {values[c] for c in invented} == {low}, metric
        assert {values[c] for c in GROUNDED if c not in invented} == {1.0 if metric != "correctness" else 0.9}
    # One record carries every library's version and judge exchanges.
    row = next(r for r in record["cases"] if r["model"] == "candidate")
    assert row["scores"]["ragas_faithfulness"]["details"]["ragas_version"]
    assert row["scores"]["correctness"]["details"]["library"] == "deepeval"
    assert row["scores"]["azure_groundedness"]["details"]["library"] == "azure-ai-evaluation"
    report = (project.path / "out" / "report.html").read_text(encoding="utf-8")
    for name in ("ragas_faith", "correctness", "azure_grounded", "deepeval_halluc"):
        assert name in report

    sent = judge_server.counters["requests"]
    code_again, again, _ = check(project)
    assert (again["decision"], code_again) == ("REJECT", 1)
    assert judge_server.counters["requests"] == sent  # every library's judge calls replayed from the cache


def test_grounded_candidate_is_promoted(project: Project, judge_server: FakeOpenAIServer) -> None:
    setup(project, judge_server, dict(GROUNDED))
    code, record, output = check(project)
    assert (record["decision"], code) == ("PROMOTE", 0), output
    assert {m["verdict"] for m in record["metrics"]} == {"PASS"}
