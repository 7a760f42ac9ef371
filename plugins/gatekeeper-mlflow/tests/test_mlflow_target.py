"""The ``mlflow`` deploy target against a real MLflow tracking server (SQLite backend)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from gatekeeper.gate.audit import AuditLog
from gatekeeper.kinds import RegistryConflict
from gatekeeper.testing import Project
from gatekeeper.types import Config, UsageError
from gatekeeper_mlflow import MlflowRegistry

N = 120
SUITE = """
suite: paired
prompt: {messages: [{role: user, content: "{{ input }}"}]}
dataset: cases.jsonl
evaluators:
  - {name: contains, as: facts, field: facts, mode: all}
"""
POLICY = """
metadata: {id: mlflow-pccp, title: MLflow plan, version: "1", effective_date: 2026-01-01, owner: qa}
modifications:
  - {id: M1, type: lora_adapter_retrain, description: retrain, authorization: automatic, evaluation: [facts]}
performance_evaluation:
  suites: [paired]
  comparators: {last_authorized: MODEL@production}
  metrics:
    - {name: facts, metric: facts, direction: higher, hypothesis: non_inferiority, margin: 0.05, ci_method: tango}
update_procedures:
  stages:
    - {name: canary, traffic: 0.1}
    - {name: full, traffic: 1.0}
  monitoring:
    metrics: [{name: acceptance, signal: acceptance_rate, margin: 0.05}]
impact_assessment:
  intended_use: tests
traceability:
  - {modification: M1, evaluations: [facts], rationale: r}
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def target(mlflow_server: str, tmp_path: Path) -> MlflowRegistry:
    return MlflowRegistry(Config(root=tmp_path), mlflow_server)


def test_versions_aliases_traffic_and_history(target: MlflowRegistry) -> None:
    model = unique("assistant")
    prov = {"decision": "ab" * 32, "policy": {"id": "p", "version": "2", "sha256": "cd" * 32},
            "identity": {"digest": "ef" * 32, "spec": "hf:smollm2?adapter=a"}, "change": {"big": "x" * 9000}}
    v1 = target.register_version(model, "hf:smollm2", {"identity": {"digest": "11" * 32}})
    v2 = target.register_version(model, "hf:smollm2?adapter=a", prov)
    assert (v1, v2) == ("1", "2")
    target.set_alias(model, "production", v1, stage="full", expected=None)
    target.set_alias(model, "candidate", v2, traffic=0.1, stage="canary", expected=None, reason="gate PROMOTE")

    assert target.get_alias(model, "candidate") == "2"
    aliases = target.aliases(model)
    assert {k: (v["version"], v["traffic"], v["stage"]) for k, v in aliases.items()} == {
        "production": ("1", 1.0, "full"), "candidate": ("2", 0.1, "canary")}
    versions = target.versions(model)
    assert versions["2"]["spec"] == "hf:smollm2?adapter=a"
    assert versions["2"]["provenance"] == {"decision": "ab" * 32, "identity": {"digest": "ef" * 32},
                                           "policy": {"id": "p", "version": "2", "sha256": "cd" * 32}}
    assert target.provenance(model, "2") == prov  # the whole provenance, from the run's artifact
    history = target.history(model)
    assert [(e["seq"], e["action"], e.get("alias")) for e in history] == [
        (1, "register", None), (2, "register", None), (3, "alias", "production"), (4, "alias", "candidate")]
    assert history[-1]["reason"] == "gate PROMOTE"

    # The MLflow side, as its UI shows it: aliases and tags on the model version.
    from mlflow import MlflowClient

    client = MlflowClient(target.uri)
    mv = client.get_model_version_by_alias(model, "candidate")
    assert mv.version == "2"
    assert mv.tags["gatekeeper.stage"] == "canary" and mv.tags["gatekeeper.traffic"] == "0.1"
    assert mv.tags["gatekeeper.decision"] == "ab" * 32 and mv.tags["gatekeeper.policy_id"] == "p"


def test_stale_expectation_conflicts_and_rollback(target: MlflowRegistry) -> None:
    model = unique("assistant")
    for spec in ("replay:1.jsonl", "replay:2.jsonl", "replay:3.jsonl"):
        target.register_version(model, spec, {})
    target.set_alias(model, "production", "1", stage="full")
    target.set_alias(model, "candidate", "2", traffic=0.1, stage="canary", expected=None)
    with pytest.raises(RegistryConflict, match="it was unset, it is now version 2"):
        target.set_alias(model, "candidate", "3", traffic=0.1, expected=None)
    assert target.rollback(model, "candidate", reason="acceptance fell") is None
    assert "candidate" not in target.aliases(model)
    target.set_alias(model, "production", "3", stage="full")
    assert target.rollback(model, "production", reason="complaints") == "1"
    assert target.get_alias(model, "production") == "1"
    last = target.history(model)[-1]
    assert (last["action"], last["previous"], last["version"], last["reason"]) == ("rollback", "3", "1", "complaints")
    with pytest.raises(UsageError, match="no earlier version to roll back to"):
        target.rollback(model, "production", reason="again")
    with pytest.raises(UsageError, match="no registered model 'ghost'"):
        target.set_alias("ghost", "production", "1")


def test_an_unreachable_server_is_a_plugin_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    project = Project(tmp_path)
    project.write_jsonl("base.jsonl", [{"id": "a", "output": "x"}])
    result = project.run("registry", "register", "replay:base.jsonl", "--model", "m", "--target", "mlflow",
                         "--registry", f"http://127.0.0.1:{port}")
    assert result.exit_code == 5
    assert result.stderr.startswith("error: plugin 'mlflow': ")
    assert f"127.0.0.1:{port}" in result.stderr
    missing = project.run("registry", "show", "--model", "m", "--target", "mlflow")
    assert missing.exit_code == 4 and "needs a tracking URI" in missing.stderr


def test_promote_and_rollback_through_the_cli(mlflow_server: str, tmp_path: Path) -> None:
    model = unique("paired")
    project = Project(tmp_path)
    project.write("suites/paired.yaml", SUITE)
    project.write_jsonl("suites/cases.jsonl", [{"id": f"c{i:03d}", "input": f"q{i}", "facts": ["yes"]}
                                               for i in range(N)])
    project.write_jsonl("baseline.jsonl", [{"id": f"c{i:03d}", "output": "yes" if i < 90 else "no"}
                                           for i in range(N)])
    project.write_jsonl("better.jsonl", [{"id": f"c{i:03d}", "output": "yes" if i < 110 else "no"}
                                         for i in range(N)])
    project.write("policy.yaml", POLICY.replace("MODEL", model))
    on = ["--target", "mlflow", "--registry", mlflow_server]

    registered = project.run("registry", "register", "replay:baseline.jsonl", "--model", model,
                             "--alias", "production", *on)
    assert registered.exit_code == 0, registered.output
    checked = project.run("check", "--baseline", "replay:baseline.jsonl", "--candidate", "replay:better.jsonl",
                          "--policy", "policy.yaml", "--out", "out", "--no-progress")
    assert checked.exit_code == 0, checked.output

    canary = project.run("promote", "out", *on)
    assert canary.exit_code == 0, canary.output
    assert canary.stdout.strip() == (f"registered and promoted: {model} version 2 -> candidate at stage canary "
                                     "(10% of traffic)")
    project.run("registry", "show", "--model", model, *on).fnmatch_lines([
        f"{model} (mlflow)", "  @candidate   -> version 2    stage canary   traffic 10%*",
        "  @production  -> version 1    stage full     traffic 90%*"])
    # Production says the canary is worse: monitor rolls it back on the MLflow registry. (The
    # signals come after the canary began: a stage counts only its own.)
    from datetime import UTC, datetime, timedelta

    TOMORROW = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    project.write_jsonl("signals.jsonl", [
        {"id": f"s{version}-{i}", "conversation_id": f"c{version}-{i}", "model": model, "model_version": version,
         "time": f"{TOMORROW}T{i % 24:02d}:00:00Z", "messages": [{"role": "user", "content": f"q{i}"}],
         "answer": "an answer", "feedback": {"verdict": "accepted" if i % 100 < rate else "rejected"}}
        for version, rate, n in (("1", 70, 1000), ("2", 40, 400)) for i in range(n)])
    watched = project.run("monitor", "--signals", "signals.jsonl", "--policy", "policy.yaml", *on)
    assert watched.exit_code == 1, watched.output
    assert "monitor: ROLLBACK" in watched.stdout
    assert f"rolled back {model}@candidate: version 2 -> removed" in watched.stdout
    target = MlflowRegistry(Config(root=tmp_path), mlflow_server)
    assert target.aliases(model).keys() == {"production"}
    assert [e["action"] for e in target.history(model)][-2:] == ["monitor", "rollback"]

    again = project.run("promote", "out", "--stage", "canary", *on)
    assert again.exit_code == 0, again.output
    full = project.run("promote", "out", *on)
    assert full.exit_code == 0, full.output
    assert target.aliases(model).keys() == {"production"} and target.get_alias(model, "production") == "2"
    assert target.versions(model)["2"]["provenance"]["verdict"] == "PROMOTE"

    rolled = project.run("rollback", "production", "--model", model, "--reason", "field reports", *on)
    assert rolled.exit_code == 0, rolled.output
    assert rolled.stdout.strip() == f"rolled back {model}@production: version 2 -> version 1"
    assert project.run("registry", "check", "--model", model, *on).stdout.endswith("OK\n")
    actions = [r["action"] for r in AuditLog(tmp_path / ".gatekeeper/audit.jsonl").records()]
    assert actions == ["register", "check", "promote", "monitor", "rollback", "promote", "promote", "rollback"]
    history = json.loads(project.run("registry", "history", "--model", model, "--json", *on).stdout)
    assert [e["action"] for e in history] == ["register", "alias", "register", "alias", "monitor", "rollback",
                                              "alias", "alias", "remove_alias", "rollback"]
