"""`gatekeeper evidence`: a zip an auditor can check, and `evidence verify` that catches tampering."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from gatekeeper.testing import Project

REPO = Path(__file__).resolve().parents[1]


def demo_run(project: Project, *, hold: bool = False) -> None:
    shutil.copytree(REPO / "suites", project.path / "suites")
    shutil.copytree(REPO / "policies", project.path / "policies")
    if hold:  # a manual modification: HOLD until the product owner signs
        (project.path / "suites/recordings/candidate-better.provenance.json").write_text(
            json.dumps({"modification": "M2", "base_model": {"name": "smollm2"}}))
    result = project.run(
        "check", "suites", "--baseline", "replay:suites/recordings/baseline.jsonl",
        "--candidate", "replay:suites/recordings/candidate-better.jsonl",
        "--policy", "policies/support-assistant.yaml", "--out", "out", "--no-progress",
    )
    assert result.exit_code == (2 if hold else 0), result.output


def rewrite(bundle: Path, target: Path, *, change: dict[str, bytes] | None = None,
            drop: tuple[str, ...] = (), add: dict[str, bytes] | None = None) -> Path:
    """A copy of ``bundle`` with members changed, dropped or added (what a tamperer does)."""
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            if info.filename in drop:
                continue
            dst.writestr(info.filename, (change or {}).get(info.filename, src.read(info.filename)))
        for name, data in (add or {}).items():
            dst.writestr(name, data)
    return target


def test_bundle_holds_the_evidence_and_verifies(project: Project) -> None:
    demo_run(project, hold=True)
    signed = project.run("approve", "out", "--key", str(REPO / "tests/fixtures/keys/support-owner.key"),
                         "--signer", "Sam Support", "--meaning", "approval", "--role", "support-product-owner")
    assert signed.exit_code == 0, signed.output
    assert project.run("report", "out").exit_code == 0

    result = project.run("evidence", "out", "--out", "bundle.zip")
    assert result.exit_code == 0, result.output
    bundle = project.path / "bundle.zip"
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        manifest_bytes = zf.read("manifest.json")
        manifest = json.loads(manifest_bytes)
        for m in manifest["members"]:
            assert hashlib.sha256(zf.read(m["path"])).hexdigest() == m["sha256"]
        audit_lines = zf.read("audit/records.jsonl").decode().splitlines()
    assert {
        "manifest.json", "run/decision.json", "run/report.html", "run/summary.md", "run/junit.xml",
        "run/approvals.jsonl", "project/policies/support-assistant.yaml", "project/policies/keys/support-owner.pub",
        "project/suites/support_assistant.yaml", "project/suites/data/support_cases.jsonl", "audit/records.jsonl",
    } <= names
    assert not any(n.endswith(".lock") for n in names)
    assert manifest["decision"] == "HOLD" and manifest["audit"]["chain_ok"] is True
    assert [json.loads(line)["action"] for line in audit_lines] == ["check", "approve"]
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    assert f"manifest SHA-256 {manifest_sha}" in result.stdout

    # The manifest's hash is in the audit trail, and the trail is still intact.
    audit = [json.loads(x) for x in (project.path / ".gatekeeper/audit.jsonl").read_text().splitlines()]
    assert audit[-1]["action"] == "evidence" and audit[-1]["refs"]["manifest"] == manifest_sha
    assert project.run("audit", "verify").exit_code == 0

    verify = project.run("evidence", "verify", "bundle.zip")
    assert verify.exit_code == 0, verify.output
    assert f"evidence OK: {len(manifest['members'])} members match the manifest" in verify.stdout
    assert "manifest recorded in the audit trail: record 3" in verify.stdout
    assert "  signature valid: Sam Support as support-product-owner (approval) at " in verify.stdout

    # A forged signature line (the signer's name changed) is caught inside the bundle.
    with zipfile.ZipFile(bundle) as zf:
        approvals = zf.read("run/approvals.jsonl")
    forged = approvals.replace(b'"signer":"Sam Support"', b'"signer":"Mallory"')
    assert forged != approvals
    manifest_forged = {**manifest, "members": [
        {**m, "sha256": hashlib.sha256(forged).hexdigest()} if m["path"] == "run/approvals.jsonl" else m
        for m in manifest["members"]]}
    rewrite(bundle, project.path / "forged.zip", change={
        "run/approvals.jsonl": forged, "manifest.json": json.dumps(manifest_forged).encode()})
    bad = project.run("evidence", "verify", "forged.zip")
    assert bad.exit_code == 1
    assert "problem: run/approvals.jsonl:1: the signature does not verify" in bad.stdout
    assert project.run("evidence", "verify", "bundle.zip", "--expect", manifest_sha).exit_code == 0
    outcome = json.loads(project.run("evidence", "verify", "bundle.zip", "--json").stdout)
    assert outcome["ok"] is True and outcome["audit_record"]["seq"] == 3
    assert outcome["signatures"] and outcome["checked"] == len(manifest["members"])


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("how", ["change", "drop", "add", "duplicate"])
def test_verify_finds_tampered_members(project: Project, how: str) -> None:
    demo_run(project)
    assert project.run("evidence", "out", "--out", "bundle.zip").exit_code == 0
    bundle, tampered = project.path / "bundle.zip", project.path / "tampered.zip"
    with zipfile.ZipFile(bundle) as zf:
        record = json.loads(zf.read("run/decision.json"))
    edited = json.dumps({**record, "decision": "PROMOTE", "reasons": []}).encode()
    if how == "change":
        rewrite(bundle, tampered, change={"project/suites/data/support_cases.jsonl": b'{"id": "x"}\n'})
        expected = "  changed: project/suites/data/support_cases.jsonl (SHA-256"
    elif how == "drop":
        rewrite(bundle, tampered, drop=("project/policies/support-assistant.yaml",))
        expected = "  missing: project/policies/support-assistant.yaml"
    elif how == "add":
        rewrite(bundle, tampered, add={"run/extra-proof.txt": b"trust me"})
        expected = "  extra:   run/extra-proof.txt"
    else:
        rewrite(bundle, tampered, add={"run/decision.json": edited})
        expected = "  problem: run/decision.json: stored 2 times (a second copy was added)"
    result = project.run("evidence", "verify", "tampered.zip")
    assert result.exit_code == 1, result.output
    assert expected in result.stdout
    assert result.stdout.rstrip().endswith("evidence TAMPERED")
    as_json = project.run("evidence", "verify", "tampered.zip", "--json")
    assert as_json.exit_code == 1
    outcome = json.loads(as_json.stdout)
    assert outcome["ok"] is False and outcome["decision"] == "PROMOTE"
    assert outcome[{"change": "changed", "drop": "missing", "add": "extra", "duplicate": "problems"}[how]]


def test_a_consistently_rewritten_manifest_is_caught_by_its_recorded_hash(project: Project) -> None:
    demo_run(project)
    first = project.run("evidence", "out", "--out", "bundle.zip")
    original_sha = next(line.split()[-1] for line in first.stdout.splitlines() if line.startswith("manifest SHA-256"))
    bundle = project.path / "bundle.zip"
    with zipfile.ZipFile(bundle) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        policy = zf.read("project/policies/support-assistant.yaml")
    forged_policy = policy.replace(b"margin: 0.05", b"margin: 0.50")
    for m in manifest["members"]:
        if m["path"] == "project/policies/support-assistant.yaml":
            m["sha256"] = hashlib.sha256(forged_policy).hexdigest()
    rewrite(bundle, project.path / "forged.zip", change={
        "project/policies/support-assistant.yaml": forged_policy, "manifest.json": json.dumps(manifest).encode()})

    plain = project.run("evidence", "verify", "forged.zip")
    assert "manifest not found in this project's audit trail" in plain.stdout
    pinned = project.run("evidence", "verify", "forged.zip", "--expect", original_sha)
    assert pinned.exit_code == 1
    assert f"is not the expected {original_sha}: the manifest was rewritten" in pinned.stdout


def test_files_changed_since_the_run_are_refused(project: Project) -> None:
    demo_run(project)
    policy = project.path / "policies/support-assistant.yaml"
    policy.write_text(policy.read_text().replace("max_reuse: 50", "max_reuse: 500"))
    result = project.run("evidence", "out", "--out", "bundle.zip")
    assert result.exit_code == 4
    assert "policies/support-assistant.yaml: policy file changed since the run" in result.stderr
    assert not (project.path / "bundle.zip").exists()


def test_not_a_bundle_exits_4(project: Project) -> None:
    project.write("notes.txt", "hello")
    with zipfile.ZipFile(project.path / "plain.zip", "w") as zf:
        zf.writestr("readme.txt", "no manifest")
    for name, message in (("notes.txt", "not a zip file"), ("plain.zip", "no manifest.json"),
                          ("absent.zip", "bundle not found")):
        result = project.run("evidence", "verify", name)
        assert result.exit_code == 4, result.output
        assert message in result.stderr
    assert project.run("evidence", "nowhere").exit_code == 4


def test_a_plain_run_can_be_bundled_too(mini: Project) -> None:
    assert mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out").exit_code == 0
    run_id = mini.read_record("out/results.json")["run_id"]
    result = mini.run("evidence", "out")
    assert result.exit_code == 0, result.output
    bundle = mini.path / f"evidence-{run_id}.zip"
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
    assert {"run/results.json", "run/report.html", "project/suites/mini.yaml"} <= names
    assert manifest["kind"] == "run" and manifest["record_hash"] is None
    verify = mini.run("evidence", "verify", bundle.name)
    assert verify.exit_code == 0 and "evidence OK" in verify.stdout
