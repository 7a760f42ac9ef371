"""What the azure-ai-evaluation tests share: a suite over two support questions, good and bad answers,
and readers for the run record."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes import FakeOpenAIServer

from gatekeeper.testing import CLIResult, Project

KEY_ENV = "GK_TEST_AZURE_KEY"
ENV = {KEY_ENV: "sk-azure-test-4c2e19"}

CASES = [
    ("returns", "How long do I have to return boots?", "Returns are accepted within 30 days with a receipt.",
     "You have 30 days to return them."),
    ("express", "How much is express shipping?", "Express shipping costs $15 and takes 2 days.",
     "Express shipping costs $15."),
]
GOOD = {"returns": "You can return them within 30 days.", "express": "Express shipping costs $15."}
BAD = {"returns": "You can return them within 90 days.",
       "express": "Only idiots pay for express shipping. It costs $25."}


def judge_spec(server: FakeOpenAIServer) -> str:
    return f"openai:gpt-fake?base_url={server.base_url}&api_key_env={KEY_ENV}"


def suite(evaluators: str, detectors: str = "") -> str:
    rows = "\n".join(f"  - {{id: {i}, input: {json.dumps(q)}, context: {json.dumps(c)}, expected: {json.dumps(e)}}}"
                     for i, q, c, e in CASES)
    text = f"""\
suite: support
prompt:
  messages:
    - role: user
      content: "{{{{ input }}}}"
cases:
{rows}
evaluators:
{evaluators}
"""
    return text + (f"detectors:\n{detectors}\n" if detectors else "")


def setup(project: Project, server: FakeOpenAIServer | None, evaluators: str, detectors: str = "") -> None:
    judge = f"judge: '{judge_spec(server)}'\n" if server is not None else ""
    runner = "runner: {retries: 1, backoff_s: 0.0, max_backoff_s: 0.0, timeout_s: 20}\n"
    project.write("gatekeeper.yaml", judge + runner)
    project.write("suites/support.yaml", suite(evaluators, detectors))
    project.write_jsonl("good.jsonl", [{"id": k, "output": v} for k, v in GOOD.items()])
    project.write_jsonl("bad.jsonl", [{"id": k, "output": v} for k, v in BAD.items()])


def run(project: Project, model: str, out: str | None = None,
        codes: tuple[int, ...] = (0, 1)) -> tuple[CLIResult, dict[str, Any]]:
    out = out or f"out-{model}"
    result = project.run("run", "suites", "--model", f"replay:{model}.jsonl", "--out", out, "--no-progress", env=ENV)
    assert result.exit_code in codes, result.output
    return result, project.read_record(f"{out}/results.json")


def scores(record: dict[str, Any], metric: str) -> dict[str, dict[str, Any]]:
    """case id -> the score of ``metric``."""
    return {record["case_index"][row["key"]]["id"]: row["scores"][metric] for row in record["cases"]}


def values(record: dict[str, Any], metric: str) -> dict[str, float | None]:
    return {case: score["value"] for case, score in scores(record, metric).items()}
