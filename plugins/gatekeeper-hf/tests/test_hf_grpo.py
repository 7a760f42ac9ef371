"""The ``grpo`` tuner through ``gatekeeper tune``: rewards from a reward suite's scorers, and the
guard that keeps the reward suite apart from the suites the gate decides with."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.testing import Project

if os.environ.get("GATEKEEPER_ALL_EXTRAS") != "1":
    pytest.importorskip("trl")

PROMPT = 'prompt: {messages: [{role: user, content: "{{ input }}"}]}'
GATE = f"""
suite: gate
{PROMPT}
cases:
  - {{id: g1, input: Where is my order?, expected: It ships today.}}
  - {{id: g2, input: How do I get a refund?, expected: Open Settings and choose Billing.}}
evaluators:
  - {{name: rouge_l}}
"""


def reward_suite(cases: str, scorers: str = "evaluators:\n  - {name: not_contains, values: [e]}") -> str:
    return f"suite: reward\n{PROMPT}\ncases:\n{cases}\n{scorers}\n"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    project = Project(tmp_path)
    project.write("gate/gate.yaml", GATE)
    return project


def tune(project: Project, tiny_model: Path, *params: str) -> Any:
    return project.run("tune", "--tuner", "grpo", "--base", f"hf:{tiny_model}", "--data", "reward.yaml",
                       "--out", "out", "--param", "gate_suites=gate", *params)


@pytest.mark.parametrize(
    ("cases", "what"),
    [
        ("  - {id: g1, input: Anything else?, expected: No.}", "g1 = gate::g1 (same id)"),
        ("  - {id: r9, input: Where is my order?, expected: It ships today.}", "r9 = gate::g1 (same content)"),
    ],
)
def test_a_reward_suite_that_overlaps_the_gate_is_refused_before_any_model_loads(
    project: Project, tiny_model: Path, cases: str, what: str
) -> None:
    project.write("reward.yaml", reward_suite("  - {id: r1, input: Reset my password?, expected: From login.}\n"
                                              + cases))
    result = tune(project, tiny_model)
    assert result.exit_code == 4, result.output
    assert "1 reward case(s) overlap the gate's suites" in result.stderr
    assert what in result.stderr
    assert "reward.yaml" in result.stderr
    assert not (project.path / "out").exists()


def test_a_reward_suite_inside_the_gate_directory_is_refused(project: Project, tiny_model: Path) -> None:
    project.write("gate/reward.yaml", reward_suite("  - {id: r1, input: Reset my password?, expected: x}"))
    result = project.run("tune", "--tuner", "grpo", "--base", f"hf:{tiny_model}", "--data", "gate/reward.yaml",
                         "--out", "out", "--param", "gate_suites=gate")
    assert result.exit_code == 4
    assert "the reward suite lies among the gate suites" in result.stderr


def test_a_reward_suite_without_scorers_is_refused(project: Project, tiny_model: Path) -> None:
    project.write("reward.yaml", reward_suite("  - {id: r1, input: Reset my password?}", scorers=""))
    result = tune(project, tiny_model)
    assert result.exit_code == 4
    assert "declares no evaluators or detectors" in result.stderr


def test_grpo_trains_on_rewards_from_the_suites_scorers_and_records_the_reward_suite(
    project: Project, tiny_model: Path
) -> None:
    data = project.write("reward.yaml", reward_suite(
        "  - {id: r1, input: How do I reset my password?, expected: From the login page.}\n"
        "  - {id: r2, input: What is the capital of France?, expected: Paris.}"))
    result = tune(project, tiny_model, "--param", "max_steps=2", "--param", "batch_size=2",
                  "--param", "num_generations=2", "--param", "max_completion_length=6", "--param", "seed=3",
                  "--param", "learning_rate=0.01", "--param", "target_modules=q_proj,v_proj")
    assert result.exit_code == 0, result.output
    provenance = project.read_json("out/provenance.json")
    assert provenance["modification"] == "rl_reward_tune"
    assert provenance["tuner"] == "grpo"
    assert provenance["reward_suite"]["name"] == "reward"
    assert provenance["reward_suite"]["hash"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert provenance["reward_suite"]["scorers"] == ["not_contains"]
    training = provenance["training"]
    assert training["steps"] == 2 and training["completions_scored"] == 8
    assert len(training["rewards"]) == 2 and all(0.0 <= r <= 1.0 for r in training["rewards"])
    assert (project.path / "out" / "adapter_model.safetensors").is_file()
    assert json.loads((project.path / "out" / "adapter_config.json").read_text())["r"] == 8


def test_a_policy_that_allows_no_reinforcement_learning_refuses_grpo_before_training(
    project: Project, tiny_model: Path
) -> None:
    project.write("reward.yaml", reward_suite("  - {id: r1, input: Reset my password?, expected: x}"))
    policy = Path(__file__).resolve().parents[3] / "policies" / "support-assistant.yaml"  # allows lora, not RL
    result = tune(project, tiny_model, "--policy", str(policy), "--param", "seed=1")
    assert result.exit_code == 4
    assert "the grpo tuner makes a 'rl_reward_tune' change, which the policy does not allow" in result.stderr
    assert "M1 (lora_adapter_retrain)" in result.stderr
    assert not (project.path / "out").exists()
