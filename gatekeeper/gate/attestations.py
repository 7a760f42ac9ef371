"""What the reports need besides the metric rows: the policy's content and the attestations.

:func:`policy_content` goes *into* the decision record at check time (the report then
needs no policy file to show the PCCP summary and traceability). :func:`attestations`
is gathered on every render and handed to reporters beside the record (never stored in
it): the signed approvals and the audit trail's state change after the decision is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.types import UsageError

if TYPE_CHECKING:
    from gatekeeper.gate.policy import Policy

AUDIT_RECORDS_SHOWN = 50


ATTESTATIONS_KEY = "attestations"
"""In-memory only: approvals and audit-trail status handed to reporters beside the record.

They come after the decision (a signature is made over the record), so they are never
written into ``decision.json``; ``gatekeeper report`` gathers them again on each render.
"""


def record_body(record: dict[str, Any]) -> dict[str, Any]:
    """The record as it is stored: without the in-memory attestations (and, in record format 2,
    without the views over its per-case files: gatekeeper.engine.record.stored_body)."""
    from gatekeeper.engine.record import stored_body

    return stored_body(record)


def policy_content(policy: Policy) -> dict[str, Any]:
    """The policy as plain JSON, for the decision record (a few kilobytes)."""
    return policy.model_dump(mode="json")


def approval_status(record: dict[str, Any], run_dir: Path | None) -> dict[str, Any]:
    """The required approvals and which signatures in ``RUN/approvals.jsonl`` satisfy them."""
    from gatekeeper.gate.approvals import APPROVALS_FILE, check_approvals, required_from_record

    required_entries = (record.get("approvals") or {}).get("required") or []
    status: dict[str, Any] = {"required": required_entries, "valid": [], "problems": [], "missing": [],
                              "checked": False}
    status["missing"] = [f"{a['role']} ({a['meaning']})" for a in required_entries]
    if run_dir is None or not (run_dir / "decision.json").is_file():
        return status
    if not (run_dir / APPROVALS_FILE).is_file():
        status["checked"] = True  # nothing signed yet: no need to re-hash the record
        return status
    required = required_from_record(record)
    try:
        result = check_approvals(run_dir, required)
    except UsageError as exc:
        status["problems"] = [f"approvals could not be checked: {exc}"]
        return status
    status.update(valid=[{k: a.get(k) for k in ("signer", "role", "meaning", "time", "key_id", "record_hash")}
                         for a in result.valid],
                  problems=result.problems, missing=result.missing, checked=True)
    return status


def audit_status(record: dict[str, Any], log_path: Path | None, digest: str | None = None) -> dict[str, Any]:
    """Whether the audit chain verifies, and the records about this run."""
    from gatekeeper.gate.audit import AuditLog

    if log_path is None or not log_path.is_file():
        return {"path": str(log_path) if log_path else None, "exists": False}
    log = AuditLog(log_path)
    result = log.verify()
    status: dict[str, Any] = {"path": str(log_path), "exists": True, "ok": result.ok, "count": result.count,
                              "head": result.head, "first_bad": result.first_bad, "reason": result.reason,
                              "records": []}
    if result.ok:
        about = run_audit_records(log, record, digest)
        status["records"] = about[-AUDIT_RECORDS_SHOWN:]
        status["records_total"] = len(about)
    return status


def run_audit_records(log: Any, record: dict[str, Any], digest: str | None = None) -> list[dict[str, Any]]:
    """The audit records that refer to this run: by run id, or by the decision record's hash."""
    from gatekeeper.gate.approvals import record_hash

    run_id = record.get("run_id")
    if digest is None and record.get("kind") == "check":
        digest = record_hash(record_body(record))
    return [
        r for r in log.records()
        if r.get("subject") == run_id or (r.get("data") or {}).get("run_id") == run_id
        or (digest is not None and (r.get("refs") or {}).get("decision") == digest)
    ]


def attestations(record: dict[str, Any], *, run_dir: Path | None, audit_log: Path | None) -> dict[str, Any]:
    from gatekeeper.gate.approvals import record_hash

    body = record_body(record)
    digest = record_hash(body)
    return {"record_hash": digest, "approvals": approval_status(body, run_dir),
            "audit": audit_status(body, audit_log, digest if body.get("kind") == "check" else None)}


def with_attestations(record: dict[str, Any], *, run_dir: Path | None, audit_log: Path | None) -> dict[str, Any]:
    """A shallow copy of ``record`` carrying its attestations for the reporters."""
    return {**record, ATTESTATIONS_KEY: attestations(record, run_dir=run_dir, audit_log=audit_log)}
