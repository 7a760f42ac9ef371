"""Does the audit trail vouch for this decision record? The one check every reader makes.

A ``decision.json`` is an ordinary file: anyone who can write the out directory can turn
``"REJECT"`` into ``"PROMOTE"``. What they cannot do without also rewriting the audit
trail is change the SHA-256 the ``check`` record noted for it (``refs.decision``). So
every command that acts on a record — ``status``, ``report``, ``evidence`` (build and
verify), ``promote`` and the pytest plugin's check reader — calls :func:`check_record`
(or :func:`require_intact`) and refuses, or marks the re-rendered report TAMPERED, when
the trail does not vouch for the file.

The decision record also carries the audit head that existed just before its check was
recorded (``audit_anchor``): a log whose tail was cut off (or that was emptied) no longer
holds that head, and the reader says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeeper.types import UsageError

INTACT = "intact"
TAMPERED = "tampered"
UNRECORDED = "unrecorded"
NO_TRAIL = "no-trail"
TRAIL_BROKEN = "trail-broken"
NOT_A_CHECK = "not-a-check"

ANCHOR_KEY = "audit_anchor"
"""Decision-record field: ``{"seq", "head"}`` of the audit log just before the check record."""


class RecordTampered(UsageError):
    """The audit trail does not vouch for a decision record (exit 4, named file)."""


@dataclass(frozen=True)
class RecordCheck:
    """The verdict on one decision record.

    ``status`` is one of :data:`INTACT`, :data:`TAMPERED` (the trail recorded another hash
    for this run), :data:`UNRECORDED` (no check record of this run), :data:`NO_TRAIL` (no
    audit log at all), :data:`TRAIL_BROKEN` (the chain does not verify, or the record's
    anchor is missing) or :data:`NOT_A_CHECK` (a ``results.json`` of ``gatekeeper run``:
    nothing to check). ``audit`` is the vouching check record when intact.
    """

    status: str
    detail: str
    digest: str | None
    audit: dict[str, Any] | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.status in (INTACT, NOT_A_CHECK)


def stored_body(record: dict[str, Any]) -> dict[str, Any]:
    """The record as written to ``decision.json``: without in-memory keys (``attestations``,
    ``_written``) and the views over the per-case files (record format 2)."""
    from gatekeeper.engine.record import stored_body as body

    return body(record)


def check_record(record: dict[str, Any], log_path: Path | None, run_dir: Path | None = None) -> RecordCheck:
    """Compare ``record``'s hash with the ``check`` record the audit trail holds for its run.

    In record format 2 the per-case files (``cases.jsonl``, ``case_index.jsonl``, blobs) must
    also hash to what ``decision.json`` names: they are in ``run_dir``, or where the record
    was read from (:func:`gatekeeper.engine.record.load`).
    """
    from gatekeeper.gate.approvals import record_hash
    from gatekeeper.gate.audit import AuditLog

    if record.get("kind") != "check":
        return RecordCheck(NOT_A_CHECK, "a run record (no decision): nothing to vouch for", None)
    body = stored_body(record)
    digest = record_hash(body)
    run_id = body.get("run_id")
    if log_path is None or not Path(log_path).is_file():
        return RecordCheck(NO_TRAIL, f"no audit trail at {log_path}: the check of run {run_id} "
                           "cannot be confirmed (the log is missing or was removed)", digest)
    log = AuditLog(log_path)
    with log.lock:  # not while another command is appending its line
        verification = log.verify()
        records = log.records() if verification.ok else []
    if not verification.ok:
        return RecordCheck(TRAIL_BROKEN, f"the audit trail is broken at line {verification.first_bad} "
                           f"({verification.reason})", digest)
    anchor = body.get(ANCHOR_KEY) or {}
    head = anchor.get("head") if isinstance(anchor, dict) else None
    if head and head not in {r["hash"] for r in records}:
        return RecordCheck(TRAIL_BROKEN, f"the audit head {str(head)[:12]}… (seq {anchor.get('seq')}) that "
                           "existed before this check is no longer in the trail: records were removed "
                           "or the chain was rewritten", digest)
    checks = [r for r in records if r["action"] == "check" and r["subject"] == run_id]
    match = next((r for r in checks if r["refs"].get("decision") == digest), None)
    if match is not None:
        from gatekeeper.engine.record import record_dir, verify_files

        where = run_dir or record_dir(record)  # unknown (a record handed over in memory): the caller checks
        problems = verify_files(body, where) if where is not None else []
        if problems:
            return RecordCheck(TAMPERED, "the per-case files do not match decision.json: " + "; ".join(problems[:3])
                               + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""), digest)
        return RecordCheck(INTACT, f"audit record {match['seq']} vouches for this record", digest, match)
    if checks:
        noted = str(checks[-1]["refs"].get("decision"))
        return RecordCheck(TAMPERED, f"decision.json was changed after the check: it hashes to {digest[:12]}…, "
                           f"the audit trail recorded {noted[:12]}… (record {checks[-1]['seq']})", digest)
    return RecordCheck(UNRECORDED, f"run {run_id!r} has no check record in the audit trail {log_path}: the "
                       "record was not made by a check recorded here, or the trail's tail was removed", digest)


def require_intact(record: dict[str, Any], log_path: Path | None, *, where: Path | str,
                   run_dir: Path | None = None) -> RecordCheck:
    """:func:`check_record`, raising :class:`RecordTampered` (exit 4, naming ``where``) unless ok."""
    result = check_record(record, log_path, run_dir)
    if not result.ok:
        raise RecordTampered(f"refusing the decision record: {result.detail}", file=str(where))
    return result


def marked_tampered(record: dict[str, Any], detail: str) -> dict[str, Any]:
    """A copy of ``record`` for re-rendering whose decision reads ``TAMPERED`` and says why.

    The original decision is kept as ``claimed_decision`` so the reader sees what the
    edited file asserts; the copy is never written back as ``decision.json``.
    """
    reason = {"clause": "integrity", "verdict": "TAMPERED", "text": f"TAMPERED: {detail}"}
    return {**record, "decision": "TAMPERED", "claimed_decision": record.get("decision"),
            "reasons": [reason, *(record.get("reasons") or [])]}
