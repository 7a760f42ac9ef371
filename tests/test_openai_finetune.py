"""The ``openai-ft`` tuner against the fake OpenAI server: a hosted job from upload to the
candidate's model spec, its failures, 429s, event paging, and resuming instead of paying twice."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gatekeeper.builtin.tuners.openai_ft import OpenAIFineTuneTuner
from gatekeeper.testing import CLIResult, Project
from tests.fakes import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[1]
KEY = {"FT_KEY": "sk-fine-tune-test-0123456789"}
ROWS = [
    {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}],
     "source": "curated-v1"}
    for i in range(6)
]
SUITE = """
suite: smoke
prompt: {messages: [{role: user, content: "{{ input }}"}]}
cases:
  - {id: c1, input: Where is my order?}
evaluators:
  - {name: length, max_words: 80}
"""


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_keys={KEY["FT_KEY"]}) as fake:
        yield fake


@pytest.fixture
def project(tmp_path: Path) -> Project:
    project = Project(tmp_path)
    project.write_jsonl("train.jsonl", ROWS)
    return project


def tune(project: Project, server: FakeOpenAIServer, *params: str, out: str = "ft") -> CLIResult:
    base = f"openai:gpt-4o-mini?base_url={server.base_url}&api_key_env=FT_KEY"
    return project.run("tune", "--tuner", "openai-ft", "--base", base, "--data", "train.jsonl", "--out", out,
                       "--param", "poll_s=0.01", "--param", "max_poll_s=0.05", "--param", "seed=4", *params,
                       env=KEY)


def test_a_hosted_job_runs_to_a_candidate_that_gatekeeper_can_evaluate(
    project: Project, server: FakeOpenAIServer
) -> None:
    server.ft_throttle = 3  # the first requests are rate limited: retried after Retry-After
    result = tune(project, server, "--param", "n_epochs=2")
    assert result.exit_code == 0, result.output
    assert server.counters["429"] == 3
    assert server.counters["files_uploaded"] == 1 and server.counters["ft_jobs_created"] == 1
    provenance = project.read_json("ft/provenance.json")
    job = next(iter(server.ft_jobs.values()))["job"]
    assert provenance["candidate"]["model"] == job["fine_tuned_model"]
    assert provenance["job"]["id"] == job["id"] and provenance["job"]["status"] == "succeeded"
    assert job["method"]["supervised"]["hyperparameters"]["n_epochs"] == 2 and job["seed"] == 4
    assert provenance["modification"] == "hosted_finetune"
    assert provenance["data"]["rows"] == 6 and provenance["data"]["sources"] == ["curated-v1"]
    assert [c["step"] for c in provenance["training"]["checkpoints"]] == [3, 6]
    assert provenance["training"]["metrics_last"]["step"] == 6
    assert "Step 6/6: training loss=" in result.stderr
    assert KEY["FT_KEY"] not in result.output + json.dumps(provenance)
    assert list((project.path / ".gatekeeper" / "finetunes").iterdir()) == []  # state dropped when done

    project.write("suites/smoke.yaml", SUITE)
    run = project.run("run", "suites", "--model", provenance["candidate"]["spec"], "--out", "run", env=KEY)
    assert run.exit_code == 0, run.output
    assert server.requests[-1]["model"] == job["fine_tuned_model"]


def test_a_malformed_row_is_refused_before_anything_is_uploaded(project: Project, server: FakeOpenAIServer) -> None:
    project.write_jsonl("train.jsonl", [*ROWS[:2], {"messages": [{"role": "user", "content": 3}]}])
    result = tune(project, server)
    assert result.exit_code == 4
    assert f"{project.path / 'train.jsonl'}:3: messages[0].content" in result.stderr
    assert server.counters["files_uploaded"] == 0 and server.counters["ft_requests"] == 0


def test_a_file_the_service_rejects_fails_naming_the_job_and_the_file(
    project: Project, server: FakeOpenAIServer
) -> None:
    server.ft_fail = {"code": "invalid_training_file", "param": "training_file",
                      "message": "The job failed due to an invalid training file. Line 2: too few examples"}
    result = tune(project, server)
    assert result.exit_code == 4
    job_id = next(iter(server.ft_jobs))
    assert f"fine-tuning job {job_id} failed (invalid_training_file)" in result.stderr
    assert "train.jsonl" in result.stderr and "Line 2: too few examples" in result.stderr
    assert not (project.path / "ft").exists()
    assert list((project.path / ".gatekeeper" / "finetunes").iterdir()) == []  # a fixed file starts afresh


def test_a_job_that_fails_while_training_is_a_harness_error_naming_it(
    project: Project, server: FakeOpenAIServer
) -> None:
    server.ft_fail, server.ft_fail_stage = {"code": "server_error", "message": "internal failure"}, "running"
    result = tune(project, server)
    assert result.exit_code == 5
    assert "server_error" in result.stderr and "internal failure" in result.stderr
    assert next(iter(server.ft_jobs)) in result.stderr


def test_events_are_read_across_pages_each_reported_once(project: Project, server: FakeOpenAIServer) -> None:
    server.ft_steps, server.ft_events_per_poll = 45, 45  # one poll brings 45 events: three pages of 20
    result = tune(project, server)
    assert result.exit_code == 0, result.output
    steps = [line for line in result.stderr.splitlines() if ": Step " in line]
    assert len(steps) == 45 and steps[0].endswith("Step 1/45: training loss=1.3333")
    assert server.counters["ft_event_pages"] >= 3


def test_an_interrupted_run_resumes_the_same_job_instead_of_paying_for_a_second(
    project: Project, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.ft_polls_per_stage = 3
    calls = {"n": 0}

    def interrupted_sleep(seconds: float) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    asked: list[str] = []
    monkeypatch.setattr(OpenAIFineTuneTuner, "sleep", staticmethod(interrupted_sleep))
    monkeypatch.setattr(OpenAIFineTuneTuner, "ask", staticmethod(lambda q: asked.append(q) or False))
    first = tune(project, server)
    assert first.exit_code == 130
    job_id = next(iter(server.ft_jobs))
    assert asked and job_id in asked[0]
    assert "keeps running; run the same command again to resume polling" in first.stderr
    assert not (project.path / "ft").exists()

    monkeypatch.setattr(OpenAIFineTuneTuner, "sleep", staticmethod(lambda s: None))
    second = tune(project, server)
    assert second.exit_code == 0, second.output
    assert f"resuming job {job_id}" in second.stderr
    assert server.counters["ft_jobs_created"] == 1 and server.counters["files_uploaded"] == 1
    assert project.read_json("ft/provenance.json")["job"]["id"] == job_id


def test_ctrl_c_answered_yes_cancels_the_job(
    project: Project, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(OpenAIFineTuneTuner, "sleep", staticmethod(interrupt))
    monkeypatch.setattr(OpenAIFineTuneTuner, "ask", staticmethod(lambda q: True))
    result = tune(project, server)
    assert result.exit_code == 130
    assert server.counters["ft_cancelled"] == 1
    assert next(iter(server.ft_jobs.values()))["job"]["status"] == "cancelled"
    assert list((project.path / ".gatekeeper" / "finetunes").iterdir()) == []


def hosted_policy(project: Project) -> Path:
    """The demo's policy with its first modification a hosted fine-tune (epochs: {max: 5})."""
    policy = yaml.safe_load((REPO / "policies" / "support-assistant.yaml").read_text(encoding="utf-8"))
    first = policy["modifications"][0]
    first["type"] = "hosted_finetune"
    for adapter_only in ("max_adapter_rank", "allowed_target_modules"):
        first["bounds"].pop(adapter_only, None)
    shutil.copytree(REPO / "policies" / "keys", project.path / "keys")  # the approvers' public keys
    return project.write("hosted-policy.yaml", yaml.safe_dump(policy, sort_keys=False))


def test_epochs_outside_the_policy_bound_are_refused_before_any_request(
    project: Project, server: FakeOpenAIServer
) -> None:
    result = tune(project, server, "--param", "n_epochs=6", "--policy", str(hosted_policy(project)))
    assert result.exit_code == 4, result.output
    assert "n_epochs=6 is outside the policy bound: epochs.max = 5" in result.stderr
    assert server.counters["ft_requests"] == 0 and server.counters["files_uploaded"] == 0


def test_a_policy_that_allows_no_hosted_fine_tuning_refuses_the_tuner(
    project: Project, server: FakeOpenAIServer
) -> None:
    result = tune(project, server, "--param", "n_epochs=2", "--policy",
                  str(REPO / "policies" / "support-assistant.yaml"))
    assert result.exit_code == 4
    assert "the openai-ft tuner makes a 'hosted_finetune' change, which the policy does not allow" in result.stderr
    assert server.counters["ft_requests"] == 0 and server.counters["files_uploaded"] == 0
