"""What the judge, classifier and judge_grounding tests share: a project whose judge is the
local fake OpenAI server (tests/fakes/openai_server.py), and readers for the run record."""

from __future__ import annotations

import json
import re
from typing import Any

from gatekeeper.testing import CLIResult, Project
from tests.fakes import FakeOpenAIServer

JUDGE_KEY_ENV = "GK_TEST_JUDGE_KEY"
JUDGE_KEY = "sk-judge-test-5e1f0c2d9a7b4e63"
ENV = {JUDGE_KEY_ENV: JUDGE_KEY}

CONFIG = """\
runner: {retries: 1, backoff_s: 0.0, max_backoff_s: 0.0, timeout_s: 10}
"""


def policy(metrics: str, names: str) -> str:
    """A PCCP policy for suite ``judged`` with the given ``metrics`` entries (YAML list
    items, indented 4) whose names are ``names`` (comma-separated)."""
    return f"""\
metadata: {{id: judge-pccp, title: Judged plan, version: "1", effective_date: 2026-01-01, owner: qa}}
modifications:
  - {{id: M1, type: prompt_template_change, description: new prompt, authorization: automatic,
     evaluation: [{names}]}}
performance_evaluation:
  suites: [judged]
  metrics:
{metrics}
impact_assessment:
  intended_use: tests
  risks: [{{id: R1, description: worse answers, mitigation: gate, metrics: [{names}]}}]
traceability:
  - {{modification: M1, evaluations: [{names}], rationale: judged}}
"""


def judge_spec(server: FakeOpenAIServer) -> str:
    return f"openai:gpt-fake?base_url={server.base_url}&api_key_env={JUDGE_KEY_ENV}"


def setup(project: Project, suite: str, outputs: dict[str, dict[str, str]]) -> None:
    """gatekeeper.yaml, suites/judged.yaml and one recording per model (``NAME.jsonl``)."""
    project.write("gatekeeper.yaml", CONFIG)
    project.write("suites/judged.yaml", suite)
    for name, answers in outputs.items():
        project.write_jsonl(f"{name}.jsonl", [{"id": k, "output": v} for k, v in answers.items()])


def run(project: Project, model: str = "candidate") -> tuple[CLIResult, dict[str, Any]]:
    result = project.run("run", "suites", "--model", f"replay:{model}.jsonl", "--out", "out", "--no-progress",
                         env=ENV)
    return result, project.read_record("out/results.json")


def scores(record: dict[str, Any], metric: str, model: str | None = None) -> dict[str, dict[str, Any]]:
    """case id → the score of ``metric`` (of ``model``'s rows when given)."""
    return {
        record["case_index"][row["key"]]["id"]: row["scores"][metric]
        for row in record["cases"] if model is None or row["model"] == model
    }


def user_text(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


def answer(body: dict[str, Any], which: str) -> str:
    """The text of ``[Answer A]`` or ``[Answer B]`` in a pairwise prompt."""
    match = re.search(rf"\[Answer {which}\]\n(.*?)\n\[End of answer {which}\]", user_text(body), re.S)
    assert match, user_text(body)
    return match.group(1)


def reply(**fields: Any) -> str:
    return json.dumps({"reasoning": "checked", **fields})


def assert_no_secret(project: Project) -> None:
    """The judge's API key is in no file the run wrote (reports, cache, audit trail)."""
    for path in project.path.rglob("*"):
        if path.is_file():
            assert JUDGE_KEY.encode() not in path.read_bytes(), path
