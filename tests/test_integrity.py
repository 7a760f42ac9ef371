"""Issue 14 items 1-4: the gate's evidence cannot be edited, and a failed run is never the last good one.

Each test reproduces a defect found on the main of 2026-12 through the real CLI: an edited
decision.json that `status`, `report` and `evidence` believed; an audit record without its
decision; a full disk that tore the audit trail for good; an emptied or truncated trail that
verified as OK.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from gatekeeper.gate.audit import AuditLog
from gatekeeper.testing import Project, run_paired_check, write_paired_project

N = 120
LOG = ".gatekeeper/audit.jsonl"


def right(n_right: int) -> list[bool]:
    return [i < n_right for i in range(N)]


@pytest.fixture
def gate(project: Project) -> Project:
    """A project whose ``worse`` candidate is rejected and whose ``better`` one is promoted."""
    return write_paired_project(project, baseline=right(90), candidates={"better": right(100), "worse": right(60)})


def rejected(project: Project, out: str = "out") -> dict:
    result = run_paired_check(project, "worse", out=out)
    assert result.exit_code == 1 and result.decision == "REJECT", result.output
    return result.record


def edit_to_promote(project: Project, out: str = "out") -> None:
    path = project.path / out / "decision.json"
    path.write_text(path.read_text(encoding="utf-8").replace('"decision": "REJECT"', '"decision": "PROMOTE"'))
    assert '"decision": "PROMOTE"' in path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- 1. every reader checks the hash


def test_status_refuses_an_edited_decision(gate: Project) -> None:
    rejected(gate)
    assert gate.run("status", "out").exit_code == 1  # intact: REJECT, exit 1
    edit_to_promote(gate)
    status = gate.run("status", "out")
    assert status.exit_code == 4, status.output
    assert "decision.json was changed after the check" in status.stderr
    assert "promotable" not in status.stdout


def test_report_marks_an_edited_decision_tampered_and_keeps_the_file(gate: Project) -> None:
    rejected(gate)
    edit_to_promote(gate)
    edited = (gate.path / "out/decision.json").read_bytes()
    result = gate.run("report", "out")
    assert result.exit_code == 4, result.output
    assert "TAMPERED" in result.stderr
    html = (gate.path / "out/report.html").read_text(encoding="utf-8")
    summary = (gate.path / "out/summary.md").read_text(encoding="utf-8")
    assert "TAMPERED" in html and "TAMPERED" in summary
    assert "changed after the check" in summary
    # The edited record is left as evidence, not re-written as if it were the check's own.
    assert (gate.path / "out/decision.json").read_bytes() == edited


def test_report_of_an_intact_record_is_not_marked(gate: Project) -> None:
    rejected(gate)
    result = gate.run("report", "out")
    assert result.exit_code == 0, result.output
    assert "TAMPERED" not in (gate.path / "out/summary.md").read_text(encoding="utf-8")


def test_evidence_refuses_to_pack_an_edited_decision(gate: Project) -> None:
    rejected(gate)
    edit_to_promote(gate)
    result = gate.run("evidence", "out", "--out", "bundle.zip")
    assert result.exit_code == 4, result.output
    assert "changed after the check" in result.stderr
    assert not (gate.path / "bundle.zip").exists()


def _repack_with_promote(src: Path, dst: Path) -> None:
    """What an attacker with a zip tool does: edit the decision, fix the manifest's hashes."""
    from gatekeeper.gate.approvals import record_hash

    with zipfile.ZipFile(src) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    record = json.loads(members["run/decision.json"])
    record["decision"] = "PROMOTE"
    members["run/decision.json"] = json.dumps(record, indent=1).encode("utf-8")
    manifest = json.loads(members["manifest.json"])
    manifest["decision"] = "PROMOTE"
    manifest["record_hash"] = record_hash(record)
    for entry in manifest["members"]:
        entry["sha256"] = hashlib.sha256(members[entry["path"]]).hexdigest()
        entry["bytes"] = len(members[entry["path"]]) if "bytes" in entry else entry.get("bytes")
    members["manifest.json"] = json.dumps(manifest, indent=1).encode("utf-8")
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_evidence_verify_finds_a_decision_edited_inside_a_repacked_bundle(gate: Project) -> None:
    rejected(gate)
    assert gate.run("evidence", "out", "--out", "bundle.zip").exit_code == 0
    assert gate.run("evidence", "verify", "bundle.zip").exit_code == 0
    _repack_with_promote(gate.path / "bundle.zip", gate.path / "forged.zip")
    result = gate.run("evidence", "verify", "forged.zip")
    assert result.exit_code == 1, result.output
    assert "evidence TAMPERED" in result.stdout
    assert "is not the one the bundled audit check record noted" in result.stdout
    assert "decision.json was changed after the check" in result.stdout  # and against this project's trail


def test_promote_and_status_share_the_one_check(gate: Project) -> None:
    """`promote` refused before issue 14 too; now through the same function as the others."""
    import inspect

    from gatekeeper.deploy import promotion

    assert "check_record(" in inspect.getsource(promotion.verified_decision)
    rejected(gate)
    edit_to_promote(gate)
    result = gate.run("promote", "out", "--model", "m")
    assert result.exit_code == 4, result.output
    assert "changed after the check" in result.output


# --------------------------------------------------------------------------- 2. order of writes


def test_an_unwritable_out_dir_is_refused_before_any_model_call(gate: Project) -> None:
    (gate.path / "blocker").write_text("a file, not a directory")
    result = run_paired_check(gate, "better", out="blocker/out")
    assert result.exit_code == 4, result.output
    assert "not writable" in result.output and "nothing was run" in result.output
    assert not (gate.path / LOG).exists(), "no audit record for a check that could not be written"


def test_a_failure_after_the_audit_record_leaves_a_marked_out_dir_and_no_reuse(
    gate: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from gatekeeper.gate import outdir

    first = run_paired_check(gate, "better")
    assert first.exit_code == 0 and (gate.path / "out/report.html").is_file()

    def disk_full(*args: object, **kwargs: object) -> list[Path]:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outdir, "publish", disk_full)
    failed = run_paired_check(gate, "worse")
    monkeypatch.undo()
    assert failed.exit_code == 5, failed.output
    out = gate.path / "out"
    # Nothing from the earlier PROMOTE run can be mistaken for this run's result.
    assert not (out / "decision.json").exists() and not (out / "report.html").exists()
    marker = json.loads((out / outdir.MARKER).read_text(encoding="utf-8"))
    assert marker["state"] == "failed" and "No space left" in marker["error"]
    status = gate.run("status", "out")
    assert status.exit_code == 4 and "no decision.json" in status.stderr and "CHECK_INCOMPLETE" in status.stderr
    # The orphaned check record was voided and does not count as a use of the test set.
    log = AuditLog(gate.path / LOG)
    assert log.verify().ok
    actions = [r["action"] for r in log.records()]
    assert actions == ["check", "check", "check.void"]
    again = run_paired_check(gate, "better")
    assert again.exit_code == 0, again.output
    assert again.record["test_sets"]["paired"]["previous_uses"] == 1  # the first check only
    assert not (out / outdir.MARKER).exists()


def test_a_kill_after_the_audit_record_is_voided_by_the_next_check(gate: Project) -> None:
    """A SIGKILL cannot void its own record: the next check into the directory does."""
    from gatekeeper.gate import outdir

    assert run_paired_check(gate, "better").exit_code == 0
    log = AuditLog(gate.path / LOG)
    run_id = log.records()[-1]["subject"]
    # What a kill between the audit append and the rename leaves: the marker, no decision.json.
    out = gate.path / "out"
    (out / outdir.MARKER).write_text(json.dumps({"run_id": run_id, "state": "running"}))
    (out / "decision.json").unlink()
    again = run_paired_check(gate, "better")
    assert again.exit_code == 0, again.output
    records = log.records()
    assert [r["action"] for r in records] == ["check", "check.void", "check"]
    assert records[1]["subject"] == run_id and again.record["test_sets"]["paired"]["previous_uses"] == 0


def test_the_decision_record_anchors_the_audit_head_before_its_check(gate: Project) -> None:
    first = run_paired_check(gate, "better")
    assert first.record["audit_anchor"] == {"seq": 0, "head": None}
    second = run_paired_check(gate, "worse", out="out2")
    head = AuditLog(gate.path / LOG).records()[0]
    assert second.record["audit_anchor"] == {"seq": 1, "head": head["hash"]}


# --------------------------------------------------------------------------- 3. a full disk, repair


def test_a_failed_append_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    log = AuditLog(tmp_path / "audit.jsonl")
    log.append("check", subject="r1")
    before = log.path.read_bytes()
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        monkeypatch.setattr(os, "write", failing)
        return real_write(fd, bytes(data[: len(data) // 2]))  # a short write, as on a nearly full disk

    def failing(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    from gatekeeper.gate.audit import AuditWriteError

    with pytest.raises(AuditWriteError, match="rolled back"):
        log.append("check", subject="r2")
    monkeypatch.undo()
    assert log.path.read_bytes() == before
    assert log.verify().ok
    assert log.append("check", subject="r3")["seq"] == 2  # the next append works


def test_audit_repair_cuts_only_a_torn_tail_and_records_it(gate: Project) -> None:
    log_path = gate.path / LOG
    log = AuditLog(log_path)
    for i in range(3):
        log.append("check", subject=f"r{i}")
    complete = log_path.read_bytes()
    with log_path.open("ab") as handle:
        handle.write(b'{"action":"check","actor":"ci","da')  # the write a full disk cut off
    assert gate.run("audit", "verify").exit_code == 1
    blocked = gate.run("approve", "nowhere", "--key", "k", "--signer", "s", "--meaning", "approval")
    assert blocked.exit_code == 4
    repaired = gate.run("audit", "repair")
    assert repaired.exit_code == 0, repaired.output
    assert "cut 34 bytes of a torn last line after record 3" in repaired.stdout
    text = log_path.read_bytes()
    assert text.startswith(complete)  # no complete record rewritten
    records = log.records()
    assert records[-1]["action"] == "audit.repair" and records[-1]["data"]["removed_bytes"] == 34
    assert gate.run("audit", "verify").exit_code == 0
    assert list(log_path.parent.glob("audit.jsonl.torn-*"))


def test_audit_repair_refuses_tampering(gate: Project) -> None:
    log_path = gate.path / LOG
    log = AuditLog(log_path)
    for i in range(3):
        log.append("check", subject=f"r{i}")
    lines = log_path.read_text().splitlines()
    lines[1] = lines[1].replace('"r1"', '"rX"')
    log_path.write_text("\n".join(lines) + "\n")
    before = log_path.read_bytes()
    result = gate.run("audit", "repair")
    assert result.exit_code == 4 and "not a torn tail: line 2" in result.stderr
    assert log_path.read_bytes() == before


# --------------------------------------------------------------------------- 4. truncation, anchors


def test_an_emptied_log_is_not_ok(gate: Project) -> None:
    rejected(gate)
    (gate.path / LOG).write_text("")
    verify = gate.run("audit", "verify")
    assert verify.exit_code == 1 and "EMPTY" in verify.stdout
    status = gate.run("status", "out")
    assert status.exit_code == 4 and "no check record" in status.stderr


def test_a_truncated_tail_is_caught_by_the_next_decision_record(gate: Project) -> None:
    rejected(gate)
    assert run_paired_check(gate, "better", out="out2").exit_code == 0
    log_path = gate.path / LOG
    lines = log_path.read_text().splitlines(keepends=True)
    log_path.write_text("".join(lines[:-1]))  # drop the last check: a valid, shorter chain
    assert gate.run("audit", "verify").exit_code == 0  # the chain alone cannot tell
    status = gate.run("status", "out2")
    assert status.exit_code == 4 and "no check record" in status.stderr
    # Rewriting the whole chain with recomputed hashes: out2's anchor no longer matches.
    log_path.unlink()
    forged = AuditLog(log_path)
    old = json.loads(lines[0])
    forged.append("check", subject=old["subject"], refs=old["refs"], data=old["data"])
    status = gate.run("status", "out")
    assert status.exit_code == 0 or status.exit_code == 1  # out's own record is vouched for again...
    status2 = gate.run("status", "out2")
    assert status2.exit_code == 4 and "is no longer in the trail" in status2.stderr  # ...out2's anchor is not


def test_external_anchor_signed_and_timestamped(gate: Project) -> None:
    from gatekeeper.gate.approvals import new_keypair

    rejected(gate)
    new_keypair(gate.path / "keys/auditor", signer="Ada Auditor")
    made = gate.run("audit", "anchor", "--out", "anchor.json", "--key", "keys/auditor.key")
    assert made.exit_code == 0, made.output
    anchor = json.loads((gate.path / "anchor.json").read_text())
    assert anchor["head"] == AuditLog(gate.path / LOG).records()[-1]["hash"]
    # An RFC 3161 token names the SHA-256 of the stamped file in its messageImprint.
    digest = hashlib.sha256((gate.path / "anchor.json").read_bytes()).digest()
    (gate.path / "anchor.tsr").write_bytes(b"\x30\x82\x01\x00" + b"\x04\x20" + digest + b"\x00" * 8)
    ok = gate.run("audit", "verify", "--anchor-file", "anchor.json", "--timestamp-token", "anchor.tsr")
    assert ok.exit_code == 0, ok.output
    assert "signed by Ada Auditor" in ok.stdout and "covers the anchor" in ok.stdout
    (gate.path / "other.tsr").write_bytes(b"\x30\x82" + b"\x00" * 40)
    wrong = gate.run("audit", "verify", "--anchor-file", "anchor.json", "--timestamp-token", "other.tsr")
    assert wrong.exit_code == 1 and "does not cover" in wrong.stdout
    # Truncate the log below the anchored head: the anchor says so.
    log_path = gate.path / LOG
    log_path.write_text("")
    gone = gate.run("audit", "verify", "--anchor-file", "anchor.json")
    assert gone.exit_code == 1 and "is not in the log" in gone.stdout
    # An edited anchor file no longer verifies.
    anchor["seq"] = 99
    (gate.path / "anchor.json").write_text(json.dumps(anchor))
    edited = gate.run("audit", "verify", "--anchor-file", "anchor.json")
    assert edited.exit_code == 4 and "signature does not verify" in edited.stderr


# --------------------------------------------------------------------------- 4. registry against the audit trail


def test_registry_check_cross_checks_the_audit_trail(project: Project) -> None:
    from tests.test_promote import MODEL, check, deploy_project

    deploy = deploy_project(project)
    check(deploy, "better.jsonl", "out")
    assert deploy.run("promote", "out").exit_code == 0
    clean = deploy.run("registry", "check", "--model", MODEL)
    assert clean.exit_code == 0 and clean.stdout.endswith("OK\n"), clean.output
    state_path = deploy.path / ".gatekeeper/registry/registry.json"
    state = json.loads(state_path.read_text())
    assert all(e["audit_head"]["hash"] for e in state["history"] if e["seq"] > 2)  # anchored

    # A spec swapped in registry.json.
    swapped = json.loads(json.dumps(state))
    swapped["models"][MODEL]["versions"]["2"]["spec"] = "replay:worse.jsonl"
    state_path.write_text(json.dumps(swapped))
    result = deploy.run("registry", "check", "--model", MODEL)
    assert result.exit_code == 1 and "the spec was swapped" in result.stdout, result.output

    # A promotion in the registry that the audit trail never saw.
    forged = json.loads(json.dumps(state))
    forged["history"].append({**forged["history"][-1], "seq": len(forged["history"]) + 1, "version": "9"})
    forged["seq"] += 1
    forged["models"][MODEL]["versions"]["9"] = forged["models"][MODEL]["versions"]["2"]
    state_path.write_text(json.dumps(forged))
    result = deploy.run("registry", "check", "--model", MODEL)
    assert result.exit_code == 1 and "has no promote/register/rollback audit record" in result.stdout

    # The audit trail's tail (the promotion) cut off: both the anchor and the promotion disagree.
    state_path.write_text(json.dumps(state))
    log_path = deploy.path / LOG
    lines = log_path.read_text().splitlines(keepends=True)
    log_path.write_text("".join(lines[:-1]))
    result = deploy.run("registry", "check", "--model", MODEL)
    assert result.exit_code == 1, result.output
    assert "has no promote/register/rollback audit record" in result.stdout
