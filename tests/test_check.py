"""`gatekeeper check`: decisions, exit codes, reasons, reports, scope, approvals, audit."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gatekeeper.testing import PAIRED_SUITE, Project, run_paired_check, write_paired_project

REPO = Path(__file__).resolve().parents[1]
N = 120

SUITE = PAIRED_SUITE

POLICY = """
metadata: {id: test-pccp, title: Test plan, version: "2", effective_date: 2026-01-01, owner: qa}
modifications:
  - id: M1
    type: lora_adapter_retrain
    description: adapter retrain
    bounds: {base_model: smollm2, max_adapter_rank: 16, allowed_data_sources: [curated-v1]}
    authorization: automatic
    evaluation: [facts]
  - id: M2
    type: prompt_template_change
    description: prompt change
    authorization: manual
    evaluation: [facts]
data_management:
  sources: [{id: curated-v1}]
performance_evaluation:
  suites: [paired]
  metrics:
    - name: facts
      metric: facts
      direction: higher
      hypothesis: non_inferiority
      margin: {margin}
      alpha: 0.05
      ci_method: tango
      critical: true
      slices: [topic]
      min_slice_n: 20
gate: {max_error_rate: 0.0}
update_procedures:
  approvals:
    - role: qa-lead
      meaning: approval
      public_keys: [keys/qa.pub]
      required_for: [M2]
impact_assessment:
  intended_use: tests
  risks: [{id: R1, description: loses facts, mitigation: gate, metrics: [facts]}]
traceability:
  - {modification: M1, evaluations: [facts], rationale: r}
  - {modification: M2, evaluations: [facts], rationale: r}
"""


IN_SCOPE = {"modification": "M1", "base_model": {"name": "smollm2"},
            "adapter": {"rank": 8, "alpha": 16, "target_modules": ["q_proj"]},
            "data": {"sources": ["curated-v1"], "rows": 100}}
"""What a tuner within M1's bounds declares (the recordings stand in for its adapter)."""


def paired_project(project: Project, *, improved: int, regressed: int, both_right: int,
                   margin: float = 0.05, n: int = N) -> Project:
    """Baseline right on ``both_right + regressed`` cases; the candidate flips some."""
    baseline = [i < both_right + regressed for i in range(n)]
    candidate = [i < both_right or both_right + regressed <= i < both_right + regressed + improved
                 for i in range(n)]
    write_paired_project(project, baseline=baseline, candidates={"candidate": candidate}, margin=margin,
                         policy=POLICY, provenance=IN_SCOPE)
    from gatekeeper.gate.approvals import new_keypair

    if not (project.path / "keys/qa.pub").exists():
        new_keypair(project.path / "keys/qa", signer="Quinn QA")
    return project


def check(project: Project, *extra: str) -> tuple[int, dict, str]:
    result = run_paired_check(project, "candidate", *extra)
    return result.exit_code, result.record, result.output


def test_better_candidate_is_promoted_with_reasons(project: Project) -> None:
    paired_project(project, improved=12, regressed=2, both_right=90)
    code, record, output = check(project)
    assert code == 0, output
    assert record["decision"] == "PROMOTE" and record["exit_code"] == 0
    overall = next(m for m in record["metrics"] if m["name"] == "facts" and m["slice"] is None)
    assert overall["n"] == N and overall["verdict"] == "PASS"
    assert overall["delta"] == pytest.approx(10 / N)
    assert overall["comparison"]["discordant"] == [12, 2]
    assert overall["ci_low"] > -0.05
    reason = next(r for r in record["reasons"] if r["clause"] == "performance_evaluation.metrics[facts]")
    assert reason["text"].startswith("facts: Δ +0.083 (candidate 0.850 vs baseline 0.767), 90% CI [")
    assert "tango" in reason["text"] and "→ PASS" in reason["text"]
    assert "decision: PROMOTE" in output
    slices = [m for m in record["metrics"] if m["slice"]]
    assert {m["slice"]["value"] for m in slices} == {"a", "b", "c"} and all(m["n"] == 40 for m in slices)


def test_worse_candidate_is_rejected_naming_clause_and_numbers(project: Project) -> None:
    paired_project(project, improved=2, regressed=20, both_right=80)
    code, record, output = check(project)
    assert code == 1, output
    assert record["decision"] == "REJECT"
    texts = [r["text"] for r in record["reasons"] if r["verdict"] == "FAIL"]
    assert any(t.startswith("facts: Δ -0.150 (candidate 0.683 vs baseline 0.833)") for t in texts), texts
    assert any("lies wholly beyond the non-inferiority bound Δ = -0.050" in t for t in texts)


def test_insufficient_evidence_is_inconclusive_with_n_needed(project: Project) -> None:
    paired_project(project, improved=5, regressed=5, both_right=90, margin=0.03)
    code, record, output = check(project)
    assert code == 3, output
    assert record["decision"] == "INCONCLUSIVE"
    overall = next(m for m in record["metrics"] if m["slice"] is None)
    assert overall["verdict"] == "INCONCLUSIVE"
    assert overall["power"]["n_needed"] > N
    assert f"about {overall['power']['n_needed']} cases needed" in overall["reason"]


def test_out_of_scope_modification_is_rejected_as_deviation(project: Project) -> None:
    paired_project(project, improved=12, regressed=2, both_right=90)
    (project.path / "candidate.provenance.json").write_text(json.dumps({
        "modification": "lora_adapter_retrain",
        "base_model": {"name": "smollm2", "digest": "ab" * 32},
        "adapter": {"rank": 64, "alpha": 16, "target_modules": ["q_proj"]},
        "data": {"sources": ["curated-v1"], "rows": 100, "sha256": "cd" * 32},
    }))
    code, record, output = check(project)
    assert code == 1, output
    assert record["decision"] == "REJECT"
    assert record["scope"]["provenance_file"].endswith("candidate.provenance.json")
    deviation = [r for r in record["reasons"] if r["verdict"] == "DEVIATION"]
    assert deviation and "max_adapter_rank" in deviation[0]["clause"] and "64" in deviation[0]["text"]
    junit = ET.parse(project.path / "out/junit.xml").getroot()
    assert junit.find(".//testcase[@name='scope']/failure") is not None


def test_manual_modification_holds_until_a_valid_signature(project: Project) -> None:
    paired_project(project, improved=12, regressed=2, both_right=90)
    (project.path / "candidate.provenance.json").write_text(json.dumps({"modification": "M2"}))
    code, record, output = check(project)
    assert code == 2, output
    assert record["decision"] == "HOLD"
    assert "signed approval required from: qa-lead (approval)" in output
    status = project.run("status", "out")
    assert status.exit_code == 2 and "missing approval(s) qa-lead (approval)" in status.stdout

    # A key the policy does not list is refused.
    from gatekeeper.gate.approvals import new_keypair

    new_keypair(project.path / "mallory", signer="Mallory")
    bad = project.run("approve", "out", "--key", "mallory.key", "--signer", "Mallory",
                      "--meaning", "approval", "--role", "qa-lead")
    assert bad.exit_code == 4 and "not one of the keys allowed to sign for role 'qa-lead'" in bad.output
    assert not (project.path / "out/approvals.jsonl").exists()  # refused before anything is written
    assert project.run("status", "out").exit_code == 2

    good = project.run("approve", "out", "--key", "keys/qa.key", "--signer", "Quinn QA",
                       "--meaning", "approval", "--role", "qa-lead")
    assert good.exit_code == 0, good.output
    status = project.run("status", "out")
    assert status.exit_code == 0, status.output
    assert "promotable: yes" in status.stdout

    # Editing the decision after signing: the audit trail no longer vouches for it (issue 14).
    record["decision"] = "PROMOTE"
    record["reasons"] = []
    (project.path / "out/decision.json").write_text(json.dumps(record))
    record["decision"] = "HOLD"
    (project.path / "out/decision.json").write_text(json.dumps(record))
    edited = project.run("status", "out")
    assert edited.exit_code == 4 and "decision.json was changed after the check" in edited.stderr, edited.output


def test_decision_record_reports_and_audit_trail(project: Project) -> None:
    paired_project(project, improved=12, regressed=2, both_right=90)
    project.write("gatekeeper_plugins.py", """
        from gatekeeper import hookimpl
        @hookimpl
        def gatekeeper_decision_made(record):
            print("notified:", record["decision"], len(record["metrics"]))
    """)
    code, record, output = check(project)
    assert code == 0
    assert "notified: PROMOTE 4" in output
    assert record["schema"] == "gatekeeper.decision/1"
    assert record["policy"]["id"] == "test-pccp" and len(record["policy"]["sha256"]) == 64
    assert set(record["models"]) == {"candidate", "baseline"}
    assert record["test_sets"]["paired"]["previous_uses"] == 0
    junit = ET.parse(project.path / "out/junit.xml").getroot()
    policy_suite = junit.find("testsuite[@name='policy test-pccp']")
    assert policy_suite is not None
    names = [tc.get("name") for tc in policy_suite.iter("testcase")]
    assert names == ["facts", "facts[topic=a]", "facts[topic=b]", "facts[topic=c]"]
    # Then the candidate's failing cases (failures) and the most-regressed ones (issue 17, item 3).
    failing = junit.find("testsuite[@name='failing cases (candidate)']")
    assert failing is not None and all(tc.find("failure") is not None for tc in failing.iter("testcase"))
    summary = (project.path / "out/summary.md").read_text()
    assert summary.startswith("# ✅ gatekeeper: **PROMOTE**")
    assert "| **facts** | 120 | 0.767 | 0.850 | +0.083 [" in summary

    verify = project.run("audit", "verify")
    assert verify.exit_code == 0 and "audit trail OK: 1 records" in verify.stdout
    from gatekeeper.gate.approvals import record_hash
    from gatekeeper.gate.audit import AuditLog

    (entry,) = AuditLog(project.path / ".gatekeeper/audit.jsonl").records()
    assert entry["action"] == "check" and entry["subject"] == record["run_id"]
    assert entry["refs"]["decision"] == record_hash(project.read_json("out/decision.json"))  # the file as stored
    assert entry["refs"]["policy"] == record["policy"]["sha256"]

    # The second check reuses every cached output and counts the test-set reuse.
    code, record, output = check(project)
    assert code == 0 and "model calls: 0 (cache hits: 240)" in output
    assert record["test_sets"]["paired"]["previous_uses"] == 1


def test_test_set_reuse_limit_rejects(project: Project) -> None:
    paired_project(project, improved=12, regressed=2, both_right=90)
    policy = (project.path / "policy.yaml").read_text().replace(
        "  sources: [{id: curated-v1}]", "  sources: [{id: curated-v1}]\n"
        "  sequestered_test_sets: [{suite: paired, max_reuse: 1}]", 1)
    (project.path / "policy.yaml").write_text(policy)
    assert check(project)[0] == 0
    code, record, _ = check(project)
    assert code == 1
    assert any("max_reuse" in r["clause"] for r in record["reasons"])


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda p: p.replace("owner: qa}", "owner: qa, colour: red}"), ":1: metadata.colour: unknown field"),
        (lambda p: p.replace("margin: 0.05", "margin: -0.05"), ":23: performance_evaluation.metrics[0].margin:"),
        (lambda p: p.replace("ci_method: tango", "ci_method: jackknife"),
         ":25: performance_evaluation.metrics[0].ci_method:"),
        (lambda p: p.replace("suites: [paired]", "suites: [paired, nowhere]"),
         ":17: performance_evaluation.suites[1]:"),
    ],
)
def test_malformed_policy_exits_4_with_file_line_field(project: Project, edit, expected: str) -> None:  # type: ignore[no-untyped-def]
    paired_project(project, improved=12, regressed=2, both_right=90)
    (project.path / "policy.yaml").write_text(edit((project.path / "policy.yaml").read_text()))
    code, _, output = check(project)
    assert code == 4, output
    line = output.strip().splitlines()[-1]
    assert line.startswith("error: policy.yaml:") and expected in line, line


def test_cluster_robust_interval_uses_the_suite_cluster_key(project: Project) -> None:
    paired_project(project, improved=12, regressed=2, both_right=90)
    rows = [json.loads(line) for line in (project.path / "suites/cases.jsonl").read_text().splitlines()]
    for row in rows:
        row["doc"] = f"doc-{int(row['id'][1:]) // 4}"
    project.write_jsonl("suites/cases.jsonl", rows)
    project.write("suites/paired.yaml", SUITE + "cluster: doc\n")
    policy = (project.path / "policy.yaml").read_text().replace("ci_method: tango", "ci_method: cluster")
    (project.path / "policy.yaml").write_text(policy)
    code, record, output = check(project)
    overall = next(m for m in record["metrics"] if m["slice"] is None)
    assert overall["comparison"]["method"] == "cluster"
    assert overall["comparison"]["n_clusters"] == 30
    assert code == 0, output


def test_epochs_are_averaged_within_case_before_comparing(project: Project) -> None:
    paired_project(project, improved=6, regressed=1, both_right=45, n=60)
    project.write("suites/paired.yaml", SUITE + "epochs: 2\n")
    for name in ("baseline", "candidate"):
        rows = [json.loads(line) for line in (project.path / f"{name}.jsonl").read_text().splitlines()]
        # epoch 1 repeats epoch 0 except on the first case, where it flips
        extra = [{**r, "epoch": 1, "output": ("no" if r["output"] == "yes" else "yes") if i == 0 else r["output"]}
                 for i, r in enumerate(rows)]
        project.write_jsonl(f"{name}.jsonl", rows + extra)
    policy = (project.path / "policy.yaml").read_text().replace("ci_method: tango", "ci_method: bootstrap_bca")
    (project.path / "policy.yaml").write_text(policy)
    _, record, _ = check(project)
    assert len(record["cases"]) == 240  # 60 cases x 2 epochs x 2 models
    overall = next(m for m in record["metrics"] if m["slice"] is None)
    assert overall["n"] == 60
    assert overall["baseline"] == pytest.approx((46 - 0.5) / 60)  # case 0 averages to 0.5
    assert overall["candidate"] == pytest.approx((51 - 0.5) / 60)
