"""The ``distill`` tuner through ``gatekeeper tune``: a teacher behind the fake OpenAI server
answers a suite's prompts through the runner (cached: a second run pays nothing), and the
tiny student learns the answers."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatekeeper.testing import Project

if os.environ.get("GATEKEEPER_ALL_EXTRAS") != "1":
    pytest.importorskip("trl")

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fakes import FakeOpenAIServer  # noqa: E402

PROMPTS = """
suite: prompts
prompt: {messages: [{role: user, content: "{{ input }}"}]}
cases:
  - {id: p1, input: How do I get a refund?}
  - {id: p2, input: Where is my order?}
  - {id: p3, input: How do I reset my password?}
evaluators:
  - {name: length, max_words: 60}
"""
ANSWER = "Please open Settings and choose Billing."


@pytest.fixture
def teacher() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(responder=lambda body: ANSWER) as server:
        yield server


def distill(project: Project, tiny_model: Path, teacher: FakeOpenAIServer, out: str) -> object:
    return project.run(
        "tune", "--tuner", "distill", "--base", f"hf:{tiny_model}", "--data", "prompts.yaml", "--out", out,
        "--param", f"teacher=openai:gpt-fake?base_url={teacher.base_url}", "--param", "max_steps=2",
        "--param", "batch_size=3", "--param", "epochs=2", "--param", "seed=2", "--param", "learning_rate=0.02",
    )


def test_distill_trains_on_the_teachers_answers_and_names_teacher_and_prompt_set(
    tmp_path: Path, tiny_model: Path, teacher: FakeOpenAIServer
) -> None:
    project = Project(tmp_path)
    project.write("prompts.yaml", PROMPTS)
    first = distill(project, tiny_model, teacher, "a")
    assert first.exit_code == 0, first.output  # type: ignore[attr-defined]
    assert teacher.counters["ok"] == 3
    provenance = project.read_json("a/provenance.json")
    assert provenance["modification"] == "distillation"
    assert provenance["teacher"]["spec"].startswith("openai:gpt-fake?base_url=")
    assert provenance["teacher"]["answers"] == 3 and provenance["teacher"]["failed"] == 0
    assert provenance["prompts"]["cases"] == 3
    assert provenance["data"]["sha256"] == provenance["prompts"]["sha256"]
    assert provenance["training"]["steps"] == 2
    assert provenance["training"]["loss_last"] < provenance["training"]["loss_first"]

    second = distill(project, tiny_model, teacher, "b")
    assert second.exit_code == 0, second.output  # type: ignore[attr-defined]
    assert teacher.counters["ok"] == 3  # every answer came from the runner's cache
    again = project.read_json("b/provenance.json")
    assert again["teacher"]["cached"] == 3
    assert again["adapter"]["digest"] == provenance["adapter"]["digest"]


def test_a_teacher_that_fails_stops_before_training(tmp_path: Path, tiny_model: Path) -> None:
    project = Project(tmp_path)
    project.write("prompts.yaml", PROMPTS)
    with FakeOpenAIServer(responder=lambda body: {"status": 400, "message": "model not found"}) as server:
        result = distill(project, tiny_model, server, "out")
    assert result.exit_code == 4, result.output  # type: ignore[attr-defined]
    assert "the teacher failed on 3 of 3 prompts" in result.stderr  # type: ignore[attr-defined]
    assert not (tmp_path / "out").exists()
    assert json.dumps(result.stderr).count("sk-") == 0  # type: ignore[attr-defined]


def test_on_policy_distillation_pulls_the_student_towards_an_hf_teacher(
    tmp_path: Path, tiny_model: Path, other_tiny_model: Path
) -> None:
    project = Project(tmp_path)
    project.write("prompt-set/support.yaml", PROMPTS)  # a directory of suites is a prompt set too
    result = project.run(
        "tune", "--tuner", "distill", "--base", f"hf:{tiny_model}", "--data", "prompt-set", "--out", "out",
        "--param", f"teacher=hf:{other_tiny_model}", "--param", "method=on_policy", "--param", "max_steps=1",
        "--param", "batch_size=3", "--param", "max_completion_length=6", "--param", "seed=2",
    )
    assert result.exit_code == 0, result.output
    provenance = project.read_json("out/provenance.json")
    assert provenance["teacher"]["method"] == "on_policy"
    assert provenance["teacher"]["spec"] == f"hf:{other_tiny_model}"
    assert len(provenance["teacher"]["digest"]) == 64
    assert provenance["training"]["method"] == "on_policy"
    assert provenance["training"]["losses"][0] > 0  # another model's distributions: a real divergence


def test_on_policy_distillation_needs_an_hf_teacher(tmp_path: Path, tiny_model: Path) -> None:
    project = Project(tmp_path)
    project.write("prompts.yaml", PROMPTS)
    result = project.run(
        "tune", "--tuner", "distill", "--base", f"hf:{tiny_model}", "--data", "prompts.yaml", "--out", "out",
        "--param", "teacher=openai:gpt-4o", "--param", "method=on_policy",
    )
    assert result.exit_code == 4
    assert "on-policy distillation needs the teacher's token distributions" in result.stderr
