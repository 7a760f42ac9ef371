"""Issue 14 items 10 and 11: suite paths stay in the project; configured secrets are scrubbed everywhere."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from gatekeeper.testing import Project
from tests.fakes import FakeOpenAIServer

SUITE = """
suite: s
prompt: {messages: [{role: user, content: "{{ input }}"}]}
dataset: DATASET
evaluators: [{name: contains, field: expected}]
"""

PROMPTY_SUITE = """
suite: s
prompt: {prompty: PROMPTY}
cases: [{id: a, input: hi, expected: hi}]
evaluators: [{name: contains, field: expected}]
"""


def credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    outside = tmp_path_factory.mktemp("home") / "credentials.jsonl"
    outside.write_text('{"id": "x", "input": "aws_secret_access_key=AKIAOUTSIDE", "expected": "x"}\n')
    return outside


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_a_dataset_outside_the_project_is_refused(project: Project, tmp_path_factory: pytest.TempPathFactory,
                                                  how: str) -> None:
    outside = credentials(tmp_path_factory)
    if how == "dotdot":
        value = os.path.relpath(outside, project.path / "suites")
    elif how == "absolute":
        value = str(outside)
    else:
        (project.path / "suites").mkdir(parents=True, exist_ok=True)
        (project.path / "suites/cases.jsonl").symlink_to(outside)
        value = "cases.jsonl"
    project.write("suites/s.yaml", SUITE.replace("DATASET", value))
    result = project.run("run", "suites", "--model", "replay:r.jsonl", "--out", "out", "--no-progress")
    assert result.exit_code == 4, result.output
    assert "suites/s.yaml:3: dataset: " in result.stderr, result.stderr
    assert "outside the project root" in result.stderr and "--allow-path" in result.stderr
    expected = {"dotdot": "a '..' path", "absolute": "an absolute path", "symlink": "a symlink pointing out of it"}
    assert expected[how] in result.stderr
    assert "AKIAOUTSIDE" not in result.output
    assert not (project.path / "out/results.json").exists()


def test_a_prompty_outside_the_project_is_refused(project: Project, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "p.prompty"
    outside.write_text("---\nname: p\n---\nuser:\n{{ input }}\n")
    project.write("suites/s.yaml", PROMPTY_SUITE.replace("PROMPTY", str(outside)))
    result = project.run("run", "suites", "--model", "replay:r.jsonl", "--out", "out", "--no-progress")
    assert result.exit_code == 4, result.output
    assert "suites/s.yaml:2: prompt.prompty: " in result.stderr and "an absolute path" in result.stderr


def test_the_user_may_allow_a_directory(project: Project, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = credentials(tmp_path_factory)
    project.write("suites/s.yaml", SUITE.replace("DATASET", str(outside)))
    project.write_jsonl("r.jsonl", [{"id": "x", "output": "x"}])
    refused = project.run("run", "suites", "--model", "replay:r.jsonl", "--out", "out", "--no-progress")
    assert refused.exit_code == 4
    flag = project.run("--allow-path", str(outside.parent), "run", "suites", "--model", "replay:r.jsonl",
                       "--out", "out", "--no-progress")
    assert flag.exit_code == 0, flag.output
    project.write("gatekeeper.yaml", f"allow_paths: [{outside.parent}]\n")
    configured = project.run("run", "suites", "--model", "replay:r.jsonl", "--out", "out", "--no-progress")
    assert configured.exit_code == 0, configured.output


def test_a_dataset_inside_the_project_through_a_symlink_is_fine(project: Project) -> None:
    project.write_jsonl("data/real.jsonl", [{"id": "x", "input": "q", "expected": "x"}])
    (project.path / "suites").mkdir()
    (project.path / "suites/cases.jsonl").symlink_to(project.path / "data/real.jsonl")
    project.write("suites/s.yaml", SUITE.replace("DATASET", "cases.jsonl"))
    project.write_jsonl("r.jsonl", [{"id": "x", "output": "x"}])
    result = project.run("run", "suites", "--model", "replay:r.jsonl", "--out", "out", "--no-progress")
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- 11. secrets

USED = f"sk-test-USED-{secrets.token_hex(12)}"
OTHER = f"sk-test-OTHER-{secrets.token_hex(12)}"
ENV = {"GK_USED_KEY": USED, "GK_OTHER_KEY": OTHER, "GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD": "1"}


def everything_written(root: Path, output: str) -> str:
    blobs = [output]
    for path in root.rglob("*"):
        if path.is_file():
            blobs.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(blobs)


def test_outputs_and_errors_echoing_any_configured_key_are_redacted(project: Project) -> None:
    cases = "".join(f"  - {{id: q{i}, input: question {i}, expected: key}}\n" for i in range(4))
    project.write("suites/s.yaml", "suite: s\nprompt: {messages: [{role: user, content: '{{ input }}'}]}\n"
                  "evaluators: [{name: contains, field: expected}]\ncases:\n" + cases)
    replies = {
        # A model that repeats a key it saw (in a prompt, a tool result, its training data).
        "question 0": f"the key is {OTHER}",
        "question 1": f"mine is {USED}",
        # A server error echoing *another* endpoint's key (not the one this request used).
        "question 2": {"status": 400, "message": f"invalid organisation for key {OTHER}"},
        "question 3": "fine",
    }
    with FakeOpenAIServer(api_keys={USED}, responder=lambda body: replies[body["messages"][-1]["content"]]) as server:
        project.write("gatekeeper.yaml", f"""
runner: {{retries: 0, backoff_s: 0.01}}
providers:
  openai:
    models:
      other-model: {{endpoints: [{{base_url: "{server.base_url}", api_key_env: GK_OTHER_KEY}}]}}
""")
        model = f"openai:gpt-fake?base_url={server.base_url}&api_key_env=GK_USED_KEY"
        result = project.run("run", "suites", "--model", model, "--out", "out", "--no-progress", env=ENV)
    assert result.exit_code == 5, result.output  # one case's generation failed (the HTTP 400)
    assert "HTTP 400: invalid organisation for key [redacted:GK_OTHER_KEY]" in result.output
    record = project.read_record("out/results.json")
    outputs = {row["id"] if "id" in row else row["key"]: (row["output"], row["error"]) for row in record["cases"]}
    texts = " ".join(f"{o} {e}" for o, e in outputs.values())
    assert "[redacted:GK_OTHER_KEY]" in texts and "[redacted:GK_USED_KEY]" in texts
    written = everything_written(project.path, result.output)
    assert OTHER not in written and USED not in written
