"""Change control an auditor can rely on (issue 16): the scope check finds the tuner's
provenance in its one documented place or says it did not run; provenance claims are
verified where they can be; a policy body cannot change under a version already used."""

from __future__ import annotations

import hashlib
import json

from gatekeeper.testing import Project, run_paired_check, write_paired_project

BOUNDED_POLICY = """
metadata: {id: scoped, title: Scoped plan, version: "1", effective_date: 2026-01-01, owner: qa}
modifications:
  - {id: M1, type: lora_adapter_retrain, description: retrain, authorization: automatic,
     bounds: {base_model: smollm2, max_adapter_rank: 16}, evaluation: [facts]}
performance_evaluation:
  suites: [paired]
  metrics:
    - {name: facts, metric: facts, direction: higher, hypothesis: non_inferiority, margin: {margin},
       alpha: 0.05, ci_method: tango, critical: true}
impact_assessment:
  intended_use: tests
  risks: [{id: R1, description: loses facts, mitigation: gate, metrics: [facts]}]
traceability:
  - {modification: M1, evaluations: [facts], rationale: r}
"""

N = 200
BETTER = [i < 190 for i in range(N)]
BASE = [i < 170 for i in range(N)]


def bounded(project: Project, candidate_dir: str = "cand") -> Project:
    write_paired_project(project, baseline=BASE, candidates={f"{candidate_dir}/answers": BETTER},
                         policy=BOUNDED_POLICY)
    return project


def test_the_scaffold_layout_provenance_is_found_and_an_out_of_scope_change_is_rejected(project: Project) -> None:
    # A tuner writes OUT/answers.jsonl and OUT/provenance.json (the scaffold's layout): the
    # gate used to look only for answers.provenance.json and promoted this rank-64 change.
    bounded(project)
    project.write("cand/provenance.json", json.dumps({
        "modification": "M1", "base_model": {"name": "smollm2"}, "adapter": {"rank": 64}}))
    result = run_paired_check(project, "cand/answers")
    assert result.exit_code == 1, result.output
    assert result.decision == "REJECT"
    assert result.record["scope"]["provenance_file"].endswith("cand/provenance.json")
    assert any("max_adapter_rank" in d for d in result.record["scope"]["deviations"])


def test_missing_provenance_blocks_a_plan_with_bounds_and_says_so(project: Project) -> None:
    bounded(project)
    result = run_paired_check(project, "cand/answers")
    assert result.exit_code == 1, result.output
    assert "gate.scope.require_provenance" in result.output
    assert "scope not checked: no provenance was found for the candidate" in result.output
    summary = (project.path / "out/summary.md").read_text(encoding="utf-8")
    assert "scope not checked" in summary

    # The plan may waive it explicitly; the record still says the scope was not checked.
    policy = (project.path / "policy.yaml").read_text(encoding="utf-8")
    project.write("policy.yaml", policy.replace('version: "1"', 'version: "2"')
                  + "gate: {scope: {require_provenance: false}}\n")
    waived = run_paired_check(project, "cand/answers", out="out2")
    assert waived.exit_code == 0, waived.output
    assert waived.record["scope"]["checked"] is False
    assert "scope not checked" in (project.path / "out2/summary.md").read_text(encoding="utf-8")


def test_verifiable_claims_are_verified_and_a_false_one_is_a_deviation(project: Project) -> None:
    bounded(project)
    data = project.write("train.jsonl", '{"messages": []}\n')
    true_hash = hashlib.sha256(data.read_bytes()).hexdigest()
    declared = {"modification": "M1", "base_model": {"name": "smollm2"}, "adapter": {"rank": 8},
                "data": {"path": "train.jsonl", "sha256": true_hash, "sources": ["curated-v1"]}}
    project.write("cand/provenance.json", json.dumps(declared))
    result = run_paired_check(project, "cand/answers")
    assert result.exit_code == 0, result.output
    claims = {c["field"]: c["status"] for c in result.record["scope"]["claims"]}
    assert claims["data.sha256"] == "verified"
    assert claims["modification"] == "declared" and claims["data.sources"] == "declared"
    assert "1 claim(s) verified" in result.record["scope"]["summary"]
    html = (project.path / "out/report.html").read_text(encoding="utf-8")
    assert "verified" in html and "declared" in html

    # The training file changed after the tuner recorded its hash: the claim is false.
    data.write_text('{"messages": [{"role": "user", "content": "x"}]}\n', encoding="utf-8")
    tampered = run_paired_check(project, "cand/answers", out="out2")
    assert tampered.exit_code == 1, tampered.output
    assert any(d.startswith("provenance.data.sha256: declared") for d in tampered.record["scope"]["deviations"])


def test_every_report_shows_the_policy_version_and_its_short_hash(project: Project) -> None:
    bounded(project)
    project.write("cand/provenance.json", json.dumps({"modification": "M1", "base_model": {"name": "smollm2"},
                                                      "adapter": {"rank": 8}}))
    result = run_paired_check(project, "cand/answers")
    short = result.record["policy"]["sha256"][:12]
    assert f"v1 sha256 {short}" in result.output
    assert short in (project.path / "out/summary.md").read_text(encoding="utf-8")
    assert short in (project.path / "out/report.html").read_text(encoding="utf-8")


def test_a_policy_edited_under_a_version_already_used_is_refused(project: Project) -> None:
    bounded(project)
    project.write("cand/provenance.json", json.dumps({"modification": "M1", "base_model": {"name": "smollm2"},
                                                      "adapter": {"rank": 8}}))
    assert run_paired_check(project, "cand/answers").exit_code == 0
    policy = project.path / "policy.yaml"
    policy.write_text(policy.read_text(encoding="utf-8").replace("margin: 0.05", "margin: 0.2"), encoding="utf-8")
    refused = run_paired_check(project, "cand/answers", out="out2")
    assert refused.exit_code == 4
    assert "policy scoped v1 was used by check" in refused.output and "metadata.version" in refused.output
    assert not (project.path / "out2/decision.json").exists()

    accepted = run_paired_check(project, "cand/answers", "--accept-policy-change", "widened after review QA-12",
                                out="out3")
    assert accepted.exit_code == 0, accepted.output
    trail = [json.loads(line) for line in (project.path / ".gatekeeper/audit.jsonl").read_text().splitlines()]
    last = [r for r in trail if r["action"] == "check"][-1]
    assert last["data"]["policy_change"]["reason"] == "widened after review QA-12"
    assert last["data"]["policy_version"] == "1"


def test_canary_evidence_recorded_before_the_canary_does_not_count(project: Project) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.test_promote import TO_CANARY, deploy_project

    deploy_project(project)
    assert run_paired_check(project, "better").exit_code == 0
    assert project.run("promote", "out", *TO_CANARY).exit_code == 0
    old = datetime.now(UTC) - timedelta(days=3)
    rows = [{"id": f"s{i}", "conversation_id": f"c{i}", "time": (old + timedelta(minutes=i)).isoformat(),
             "model": "paired-model",
             "model_version": "2" if i % 2 else "1", "messages": [{"role": "user", "content": "q"}],
             "answer": "a", "feedback": {"verdict": "accepted"}} for i in range(800)]
    project.write_jsonl("signals.jsonl", rows)
    result = project.run("monitor", "--signals", "signals.jsonl", "--policy", "policy.yaml")
    assert "excluded 800 signal(s): recorded before version 2 entered stage 'canary'" in result.stdout
    assert result.exit_code == 3, result.output  # no evidence of its own: INCONCLUSIVE, never OK
    promoted = project.run("promote", "out")
    assert promoted.exit_code == 3
    assert "the last monitoring of version 2 at 'canary' was INCONCLUSIVE" in promoted.stdout


def _hold_project(project: Project) -> Project:
    from tests.test_check import paired_project

    paired_project(project, improved=12, regressed=2, both_right=90)
    project.write("candidate.provenance.json", json.dumps({"modification": "M2"}))  # manual: HOLD
    assert run_paired_check(project, "candidate").exit_code == 2
    assert project.run("keys", "new", "keys/mallory", "--signer", "Mallory").exit_code == 0
    return project


def test_one_signature_rule_for_approve_status_and_evidence_verify(project: Project) -> None:
    _hold_project(project)
    # approve refuses a key the policy does not list for the role, before writing anything
    refused = project.run("approve", "out", "--key", "keys/mallory.key", "--signer", "Mallory",
                          "--meaning", "approval", "--role", "qa-lead")
    assert refused.exit_code == 4
    assert "not one of the keys allowed to sign for role 'qa-lead'" in refused.output
    assert not (project.path / "out/approvals.jsonl").exists()

    # a signature appended by other means is refused by evidence verify exactly as by status
    from gatekeeper.gate.approvals import sign

    sign(project.path / "out", key_file=project.path / "keys/mallory.key", signer="Mallory",
         meaning="approval", role="qa-lead")
    status = project.run("status", "out")
    assert status.exit_code == 2 and "not one of the keys allowed" in status.stdout
    assert project.run("evidence", "out", "--out", "bundle.zip").exit_code in (0, 2)
    verify = project.run("evidence", "verify", "bundle.zip")
    assert "signature valid" not in verify.stdout
    assert "not one of the keys allowed to sign for role 'qa-lead'" in verify.output


def test_a_run_stays_verifiable_after_the_key_files_move(project: Project) -> None:
    _hold_project(project)
    signed = project.run("approve", "out", "--key", "keys/qa.key", "--signer", "Quinn QA",
                         "--meaning", "approval", "--role", "qa-lead")
    assert signed.exit_code == 0, signed.output
    required = project.read_record("out/decision.json")["approvals"]["required"][0]
    assert required["key_ids"] and required["public_key_pems"][0].startswith("-----BEGIN PUBLIC KEY-----")
    (project.path / "keys").rename(project.path / "moved-keys")
    status = project.run("status", "out")
    assert status.exit_code == 0, status.output
    assert "promotable: yes" in status.stdout


def test_the_bundled_report_shows_the_signatures_at_bundling_time(project: Project) -> None:
    import zipfile

    _hold_project(project)
    assert project.run("approve", "out", "--key", "keys/qa.key", "--signer", "Quinn QA",
                       "--meaning", "approval", "--role", "qa-lead").exit_code == 0
    stale = (project.path / "out/report.html").read_text(encoding="utf-8")
    assert "Quinn QA" not in stale  # rendered at check time, before anyone signed
    assert project.run("evidence", "out", "--out", "bundle.zip").exit_code == 0
    with zipfile.ZipFile(project.path / "bundle.zip") as zf:
        bundled = zf.read("run/report.html").decode("utf-8")
    assert "Quinn QA" in bundled and "No signature yet" not in bundled
    assert project.run("evidence", "verify", "bundle.zip").exit_code == 0


def test_the_bundled_loop_policy_has_absolute_floors_and_blocks_a_diverged_run(project: Project) -> None:
    # A candidate as bad as the one the loop once promoted (facts 0.09, hallucinations 0.61)
    # fails the floors even when it is no worse than a bad baseline.
    from pathlib import Path

    from gatekeeper.gate.policy import load_policy

    loop = load_policy(Path(__file__).resolve().parents[1] / "policies/support-assistant-loop.yaml")
    floors = {m.name: m.guardrail for m in loop.performance_evaluation.metrics if m.guardrail is not None}
    assert set(floors) >= {"facts", "grounding"}
    assert loop.gate.scope.block_training_divergence is True

    bounded(project)
    policy = (project.path / "policy.yaml").read_text(encoding="utf-8")
    project.write("policy.yaml", policy + "gate: {scope: {block_training_divergence: true}}\n")
    project.write("cand/provenance.json", json.dumps({
        "modification": "M1", "base_model": {"name": "smollm2"}, "adapter": {"rank": 8},
        "training": {"loss_first": 1.53, "loss_last": 2.02, "losses": [1.53, 1.7, 2.02]}}))
    result = run_paired_check(project, "cand/answers")
    assert result.exit_code == 1, result.output
    assert "training loss rose from 1.530 to 2.020" in result.output
    assert any("gate.scope.block_training_divergence" in d for d in result.record["scope"]["deviations"])
