"""`gatekeeper promote` and `rollback`: refusals, stages, the audit trail, SIGKILL and races."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gatekeeper.builtin.local_registry import STATE_FILE, LocalRegistry, consistency_problems
from gatekeeper.gate.audit import AuditLog
from gatekeeper.testing import Project, run_paired_check, write_paired_project
from gatekeeper.types import Config

N = 120
MODEL = "paired-model"
TO_CANARY = ("--stage", "canary", "--force", "--reason", "the test starts at canary")  # skipping shadow is audited

POLICY = """
metadata: {id: deploy-pccp, title: Deploy plan, version: "3", effective_date: 2026-01-01, owner: qa}
modifications:
  - {id: M1, type: lora_adapter_retrain, description: retrain, bounds: {base_model: smollm2},
     authorization: automatic, evaluation: [facts]}
  - {id: M2, type: prompt_template_change, description: prompt, authorization: manual, evaluation: [facts]}
performance_evaluation:
  suites: [paired]
  comparators: {last_authorized: paired-model@production}
  metrics:
    - {name: facts, metric: facts, direction: higher, hypothesis: non_inferiority, margin: MARGIN,
       alpha: 0.05, ci_method: tango, critical: true}
update_procedures:
  approvals:
    - {role: qa-lead, meaning: approval, public_keys: [keys/qa.pub], required_for: [M2]}
  stages:
    - {name: shadow, traffic: 0.0, min_duration_hours: 24, min_signals: 200}
    - {name: canary, traffic: 0.1, min_duration_hours: 48, min_signals: 300}
    - {name: full, traffic: 1.0}
  monitoring:
    metrics: [{name: acceptance, signal: acceptance_rate, margin: 0.05}]
  rollback_criteria: [{metric: acceptance, condition: fails}]
impact_assessment:
  intended_use: tests
  risks: [{id: R1, description: loses facts, mitigation: gate, metrics: [facts]}]
traceability:
  - {modification: M1, evaluations: [facts], rationale: r}
  - {modification: M2, evaluations: [facts], rationale: r}
"""


def right(n_right: int, n: int = N) -> list[bool]:
    return [i < n_right for i in range(n)]


def deploy_project(project: Project, margin: float = 0.05) -> Project:
    write_paired_project(project, baseline=right(90), margin=margin, policy=POLICY.replace("MARGIN", "{margin}"),
                         candidates={"better": right(100), "better2": right(101), "worse": right(60)},
                         provenance={"modification": "M1", "base_model": {"name": "smollm2"}})
    project.write("baseline.provenance.json", json.dumps({"modification": "M1", "base_model": {"name": "smollm2"}}))
    from gatekeeper.gate.approvals import new_keypair

    new_keypair(project.path / "keys/qa", signer="Quinn QA")
    registered = project.run("registry", "register", "replay:baseline.jsonl", "--model", MODEL,
                             "--alias", "production")
    assert registered.exit_code == 0, registered.output
    return project


def check(project: Project, candidate: str, out: str, expect: int = 0) -> Path:
    result = run_paired_check(project, candidate.removesuffix(".jsonl"), out=out)
    assert result.exit_code == expect, result.output
    return project.path / out


@pytest.fixture
def deploy(project: Project) -> Project:
    return deploy_project(project)


def registry(project: Project) -> LocalRegistry:
    return LocalRegistry(Config(root=project.path))


def audit_actions(project: Project) -> list[str]:
    return [r["action"] for r in AuditLog(project.path / ".gatekeeper/audit.jsonl").records()]


def test_promote_walks_the_policy_stages_and_records_each_step(deploy: Project) -> None:
    check(deploy, "better.jsonl", "out")
    first = deploy.run("promote", "out")
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == ("registered and promoted: paired-model version 2 -> candidate at stage shadow "
                                    "(0% of traffic)")
    version = registry(deploy).versions(MODEL)["2"]
    assert version["spec"] == "replay:better.jsonl"
    prov = version["provenance"]
    assert prov["verdict"] == "PROMOTE" and prov["policy"]["id"] == "deploy-pccp" and prov["policy"]["version"] == "3"
    assert prov["identity"]["provider"] == "replay" and len(prov["identity"]["digest"]) == 64
    from gatekeeper.gate.approvals import load_decision, record_hash

    assert prov["decision"] == record_hash(load_decision(deploy.path / "out"))

    # Leaving shadow needs an OK monitoring result over its minimum window.
    stuck = deploy.run("promote", "out")
    assert stuck.exit_code == 3
    assert "stage 'shadow' needs an OK `gatekeeper monitor` over 24 h and 200 signals; none recorded" in stuck.stdout
    assert deploy.run("promote", "out", "--force").exit_code == 4  # --force needs --reason
    canary = deploy.run("promote", "out", "--force", "--reason", "shadow reviewed by hand")
    assert canary.exit_code == 0, canary.output
    assert "-> candidate at stage canary (10% of traffic)" in canary.stdout
    deploy.run("registry", "show", "--model", MODEL).fnmatch_lines([
        "  @candidate   -> version 2    stage canary   traffic 10%*",
        "  @production  -> version 1    stage full     traffic 90%*",
    ])
    full = deploy.run("promote", "out", "--stage", "full", "--force", "--reason", "canary reviewed")
    assert full.exit_code == 0, full.output
    assert registry(deploy).aliases(MODEL).keys() == {"production"}
    assert registry(deploy).get_alias(MODEL, "production") == "2"
    again = deploy.run("promote", "out")
    assert again.exit_code == 0 and "already production" in again.stdout

    records = [r for r in AuditLog(deploy.path / ".gatekeeper/audit.jsonl").records() if r["action"] == "promote"]
    assert [(r["data"]["stage"], r["data"]["traffic"], r["data"].get("forced", False)) for r in records] == [
        ("shadow", 0.0, False), ("canary", 0.1, True), ("full", 1.0, True)]
    assert all(r["refs"]["decision"] == prov["decision"] for r in records)
    assert records[1]["data"]["reason"] == "shadow reviewed by hand"
    assert deploy.run("audit", "verify").exit_code == 0
    assert consistency_problems(registry(deploy).load()) == []


def test_stage_skip_needs_an_audited_override_and_is_recorded(deploy: Project) -> None:
    check(deploy, "better.jsonl", "out")
    refused = deploy.run("promote", "out", "--stage", "canary")
    assert refused.exit_code == 3
    assert "skips 'shadow' and their minimums (or --force --reason TEXT" in refused.stdout
    result = deploy.run("promote", "out", "--stage", "canary", "--force", "--reason", "shadow run elsewhere")
    assert result.exit_code == 0, result.output
    promote = [r for r in AuditLog(deploy.path / ".gatekeeper/audit.jsonl").records() if r["action"] == "promote"]
    assert promote[-1]["data"]["skipped_stages"] == ["shadow"]
    assert promote[-1]["data"]["skip_reason"] == "shadow run elsewhere"
    assert result.stdout.strip().endswith("(10% of traffic); skipped shadow")
    back = deploy.run("promote", "out", "--stage", "shadow")
    assert back.exit_code == 4 and "'shadow' is not ahead of it" in back.stdout
    unknown = deploy.run("promote", "out", "--stage", "everywhere")
    assert unknown.exit_code == 4 and "unknown stage 'everywhere' (the policy's stages: shadow, canary, full)" \
        in unknown.stdout


def test_a_monitoring_ok_over_the_minimum_opens_the_next_stage(deploy: Project) -> None:
    check(deploy, "better.jsonl", "out")
    assert deploy.run("promote", "out", *TO_CANARY).exit_code == 0
    reg = registry(deploy)
    reg.record_event(MODEL, "monitor", version="2", stage="canary", verdict="OK", signals_new=120, window_hours=50)
    short = deploy.run("promote", "out")
    assert short.exit_code == 3
    assert "covered 120 signals over 50.0 h; stage 'canary' needs 48 h and 300 signals" in short.stdout
    reg.record_event(MODEL, "monitor", version="2", stage="canary", verdict="OK", signals_new=400, window_hours=50)
    assert deploy.run("promote", "out").exit_code == 0
    assert reg.get_alias(MODEL, "production") == "2"


@pytest.mark.parametrize(("candidate", "margin", "code", "text"), [
    ("worse.jsonl", 0.05, 1, "not promoted: the decision is REJECT; only PROMOTE or an approved HOLD may be promoted"),
    ("baseline.jsonl", 0.01, 3, "not promoted: the decision is INCONCLUSIVE"),
])
def test_only_what_the_gate_promoted_is_promoted(
    project: Project, candidate: str, margin: float, code: int, text: str
) -> None:
    deploy_project(project, margin=margin)
    check(project, candidate, "out", expect=code)
    before = registry(project).load()
    result = project.run("promote", "out")
    assert result.exit_code == code
    assert text in result.stdout
    assert registry(project).load() == before
    assert "promote" not in audit_actions(project)


def test_a_hold_is_promoted_only_with_its_signatures(deploy: Project) -> None:
    (deploy.path / "better.provenance.json").write_text(json.dumps({"modification": "M2"}))
    check(deploy, "better.jsonl", "out", expect=2)
    held = deploy.run("promote", "out")
    assert held.exit_code == 2
    assert "not promoted: HOLD: missing approval(s) qa-lead (approval)" in held.stdout
    signed = deploy.run("approve", "out", "--key", "keys/qa.key", "--signer", "Quinn QA", "--meaning", "approval",
                        "--role", "qa-lead")
    assert signed.exit_code == 0, signed.output
    promoted = deploy.run("promote", "out")
    assert promoted.exit_code == 0, promoted.output
    assert registry(deploy).versions(MODEL)["2"]["provenance"]["verdict"] == "HOLD"


def test_an_edited_decision_record_is_refused(deploy: Project) -> None:
    out = check(deploy, "worse.jsonl", "out", expect=1)
    record = json.loads((out / "decision.json").read_text())
    record["decision"] = "PROMOTE"
    (out / "decision.json").write_text(json.dumps(record))
    result = deploy.run("promote", "out")
    assert result.exit_code == 4
    assert "out: decision.json was changed after the check: it hashes to" in result.stdout


def test_a_decision_unknown_to_the_audit_trail_or_a_broken_trail_is_refused(deploy: Project) -> None:
    check(deploy, "better.jsonl", "out")
    log = deploy.path / ".gatekeeper/audit.jsonl"
    lines = log.read_text().splitlines()
    tampered = json.loads(lines[0])
    tampered["actor"] = "mallory"
    log.write_text("\n".join([json.dumps(tampered), *lines[1:]]) + "\n")
    broken = deploy.run("promote", "out")
    assert broken.exit_code == 4 and "the audit trail is broken at line 1" in broken.stdout
    log.write_text(lines[0] + "\n")  # only the registration: the check is not in it
    unknown = deploy.run("promote", "out")
    assert unknown.exit_code == 4 and "has no check record in the audit trail" in unknown.stdout


def test_a_check_against_an_older_production_is_refused(deploy: Project) -> None:
    check(deploy, "better.jsonl", "out")
    deploy.write_jsonl("other.jsonl", [{"id": f"c{i:03d}", "output": "yes" if ok else "no"}
                                       for i, ok in enumerate(right(95))])
    assert deploy.run("registry", "register", "replay:other.jsonl", "--model", MODEL,
                      "--alias", "production").exit_code == 0
    result = deploy.run("promote", "out")
    assert result.exit_code == 4
    assert "but paired-model@production is now version 2" in result.stdout
    assert "run the check again against the current production version" in result.stdout


def test_a_second_candidate_waits_for_the_staged_one(deploy: Project) -> None:
    check(deploy, "better.jsonl", "out1")
    check(deploy, "better2.jsonl", "out2")
    assert deploy.run("promote", "out1").exit_code == 0
    second = deploy.run("promote", "out2")
    assert second.exit_code == 4
    assert "paired-model@candidate holds version 2 at stage 'shadow'" in second.stdout


def test_rollback_command_restores_and_records_why(deploy: Project) -> None:
    check(deploy, "better.jsonl", "out")
    straight = ("--stage", "full", "--force", "--reason", "the test goes straight to full")
    assert deploy.run("promote", "out", *straight).exit_code == 0
    result = deploy.run("rollback", "production", "--model", MODEL, "--reason", "complaints from the field")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "rolled back paired-model@production: version 2 -> version 1"
    record = AuditLog(deploy.path / ".gatekeeper/audit.jsonl").records()[-1]
    assert record["action"] == "rollback" and record["subject"] == "production"
    assert record["data"] | {"target": None} == {"model": MODEL, "alias": "production", "from": "2", "to": "1",
                                                 "reason": "complaints from the field", "automatic": False,
                                                 "target": None}
    nothing = deploy.run("rollback", "candidate", "--model", MODEL, "--reason", "x")
    assert nothing.exit_code == 4 and "has no alias 'candidate'" in nothing.output
    assert deploy.run("rollback", "production", "--model", MODEL).exit_code == 4  # --reason is required
    history = deploy.run("audit", "show", "production")
    assert history.exit_code == 0 and "rollback" in history.stdout


# --------------------------------------------------------------------------- kill and race


def gatekeeper_process(project: Project, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gatekeeper.cli", *args], cwd=project.path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD": "1"})


def assert_registry_sound(project: Project) -> dict:
    reg = registry(project)
    state = reg.load()  # never raises: readable after any kill
    assert consistency_problems(state) == [], state
    assert [p.name for p in reg.root.iterdir() if not p.name.endswith(".tmp")] in (
        [STATE_FILE, ".lock"], [".lock", STATE_FILE], [".lock"])
    assert AuditLog(project.path / ".gatekeeper/audit.jsonl").verify().ok
    return state


def test_promote_killed_at_random_points_leaves_a_readable_consistent_registry(deploy: Project) -> None:
    check(deploy, "better.jsonl", "out")
    started = time.perf_counter()
    finished = gatekeeper_process(deploy, "promote", "out", *TO_CANARY)
    assert finished.wait(120) == 0, finished.stdout.read() if finished.stdout else ""
    duration = time.perf_counter() - started
    rng = random.Random(6)
    outcomes = {"killed": 0, "finished": 0}
    for _ in range(40):
        if registry(deploy).get_alias(MODEL, "candidate") is not None:
            registry(deploy).rollback(MODEL, "candidate", reason="reset for the next kill")
        proc = gatekeeper_process(deploy, "promote", "out", *TO_CANARY)
        time.sleep(rng.uniform(0.5, 1.05) * duration)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            outcomes["killed"] += 1
        else:
            outcomes["finished"] += 1
        proc.wait(60)
        state = assert_registry_sound(deploy)
        candidate = state["models"][MODEL]["aliases"].get("candidate")
        assert candidate is None or (candidate["version"] == "2" and candidate["traffic"] == 0.1)
        assert list(state["models"][MODEL]["versions"]) == ["1", "2"]  # the version is registered once
    print("kill outcomes:", outcomes, "one promote took", round(duration, 2), "s")
    assert outcomes["killed"] > 0, outcomes
    # After all that, a promotion still works from wherever the registry is.
    final = deploy.run("promote", "out", *TO_CANARY)
    assert final.exit_code in (0, 4), final.output
    assert registry(deploy).get_alias(MODEL, "candidate") == "2"


def test_two_concurrent_promotions_never_both_win(deploy: Project) -> None:
    check(deploy, "better.jsonl", "out1")
    check(deploy, "better2.jsonl", "out2")
    for round_ in range(4):
        procs = [gatekeeper_process(deploy, "promote", out, *TO_CANARY) for out in ("out1", "out2")]
        results = [(p.wait(120), p.stdout.read() if p.stdout else "") for p in procs]
        codes = sorted(code for code, _ in results)
        assert codes == [0, 4], results
        loser = next(text for code, text in results if code == 4)
        assert ("changed while this command ran" in loser or "holds version" in loser), loser
        winner = next(text for code, text in results if code == 0)
        staged = registry(deploy).get_alias(MODEL, "candidate")
        assert f"version {staged} -> candidate at stage canary" in winner, (round_, results)
        assert_registry_sound(deploy)
        registry(deploy).rollback(MODEL, "candidate", reason="next round")
