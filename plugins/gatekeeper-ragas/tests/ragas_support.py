"""What the gatekeeper-ragas tests share: a RAG suite, recordings, a policy, readers."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes import FakeOpenAIServer

from gatekeeper.testing import CLIResult, Project

KEY_ENV = "GK_RAGAS_JUDGE_KEY"
KEY = "sk-ragas-judge-7c1d2e9f0a"
ENV = {KEY_ENV: KEY}
CONFIG = "runner: {retries: 1, backoff_s: 0.0, max_backoff_s: 0.0, timeout_s: 10}\n"

# (id, question, context, reference)
def make_cases(n: int) -> list[tuple[str, str, str, str]]:
    return [(f"item{i}", f"How much does item {i} cost?", f"Item {i} costs ${10 + i} and ships in {i % 5 + 1} days.",
             f"Item {i} costs ${10 + i}.") for i in range(n)]


def grounded(cases: list[tuple[str, str, str, str]]) -> dict[str, str]:
    return {cid: ref for cid, _, _, ref in cases}


def invented(cases: list[tuple[str, str, str, str]]) -> dict[str, str]:
    """Every other answer invents a price and a gift the context does not mention."""
    return {cid: (f"Item {i} costs ${99 + i} and comes with a free gift." if i % 2 else ref)
            for i, (cid, _, _, ref) in enumerate(cases)}


CASES = make_cases(12)
GROUNDED = grounded(CASES)
INVENTED = invented(CASES)

def judge_spec(server: FakeOpenAIServer) -> str:
    return f"openai:gpt-fake?base_url={server.base_url}&api_key_env={KEY_ENV}"


def suite(evaluators: str, detectors: str = "", cases: list[tuple[str, str, str, str]] = CASES) -> str:
    rows = "\n".join(
        f"  - {{id: {i}, input: {json.dumps(q)}, context: {json.dumps(c)}, expected: {json.dumps(e)}, "
        f"reference_contexts: [{json.dumps(c)}]}}"
        for i, q, c, e in cases
    )
    text = f"""\
suite: rag
prompt:
  messages:
    - role: user
      content: "{{{{ context }}}} {{{{ input }}}}"
cases:
{rows}
evaluators:
{evaluators}
"""
    return text + (f"detectors:\n{detectors}\n" if detectors else "")


def policy(metrics: str, names: str) -> str:
    return f"""\
metadata: {{id: ragas-pccp, title: RAG answers, version: "1", effective_date: 2026-01-01, owner: qa}}
modifications:
  - {{id: M1, type: prompt_template_change, description: new prompt, authorization: automatic,
     evaluation: [{names}]}}
performance_evaluation:
  suites: [rag]
  metrics:
{metrics}
impact_assessment:
  intended_use: tests
  risks: [{{id: R1, description: invented facts, mitigation: gate, metrics: [{names}]}}]
traceability:
  - {{modification: M1, evaluations: [{names}], rationale: grounded answers}}
"""


def setup(project: Project, suite_text: str, outputs: dict[str, dict[str, str]], config: str = CONFIG) -> None:
    project.write("gatekeeper.yaml", config)
    project.write("suites/rag.yaml", suite_text)
    for name, answers in outputs.items():
        project.write_jsonl(f"{name}.jsonl", [{"id": k, "output": v} for k, v in answers.items()])


def run(project: Project, model: str = "candidate") -> tuple[CLIResult, dict[str, Any]]:
    result = project.run("run", "suites", "--model", f"replay:{model}.jsonl", "--out", "out", "--no-progress",
                         env=ENV)
    record = project.read_record("out/results.json") if (project.path / "out/results.json").exists() else {}
    return result, record


def scores(record: dict[str, Any], metric: str, model: str | None = None) -> dict[str, dict[str, Any]]:
    """case id → the score of ``metric`` (of ``model``'s rows when given)."""
    return {
        record["case_index"][row["key"]]["id"]: row["scores"][metric]
        for row in record["cases"] if model is None or row["model"] == model
    }


def assert_no_secret(project: Project) -> None:
    for path in project.path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
