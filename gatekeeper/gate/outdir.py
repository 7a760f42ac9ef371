"""The check's out directory: written so that a failed run is never mistaken for the last good one.

Order of a check's writes (see :func:`gatekeeper.gate.check.run_check`):

1. before any model is called, the out directory must be writable (exit 4 otherwise);
2. the previous run's record and reports are removed and ``CHECK_INCOMPLETE`` names the
   run in progress: from here until step 5 the directory says "this run did not finish";
3. the decision record is written to a staging directory inside ``out``;
4. the audit ``check`` record is appended (the commit point);
5. the other reports are rendered into staging, every file is renamed into ``out``
   (the per-case files ``cases.jsonl``, ``case_index.jsonl``, ``blobs/`` first,
   ``decision.json`` last) and the marker is removed.

A kill, a read-only directory or a full disk before step 4 leaves no audit record; after
it, the marker stays, the staged record is kept for inspection, and the next check into
the same directory appends a ``check.void`` record for the orphan, so it does not count
as a use of the held-out test sets (:func:`voided_runs`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gatekeeper.engine.record import PER_CASE_NAMES
from gatekeeper.files import fsync_directory, write_atomic
from gatekeeper.types import GatekeeperError, UsageError, utc_now

MARKER = "CHECK_INCOMPLETE"
STAGING_PREFIX = ".staging-"
RECORD_FILES = ("decision.json", "results.json")
PER_CASE_FILES = PER_CASE_NAMES
"""A format-2 record's per-case files beside it (gatekeeper.engine.record)."""
BUILTIN_REPORT_FILES = ("report.html", "report.pdf", "summary.md", "junit.xml")
"""Removed with the previous record even when a reporter does not declare its ``filename``."""
VOID_ACTION = "check.void"


def require_writable(out: Path) -> None:
    """Create ``out`` and prove a file can be written and removed there, before any generation."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".writable-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"the out directory is not writable ({exc.strerror or exc}); nothing was run",
                         file=str(out), field="--out") from None


def read_marker(out: Path) -> dict[str, Any] | None:
    """The ``CHECK_INCOMPLETE`` marker of ``out`` (``{"run_id", "started", "state"}``), if any."""
    path = out / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"run_id": None, "state": "unreadable marker"}
    return data if isinstance(data, dict) else {"run_id": None, "state": "unreadable marker"}


def begin(out: Path, run_id: str, report_names: Iterable[str]) -> None:
    """Mark ``out`` incomplete for ``run_id`` and remove the previous run's record and reports.

    :raises GatekeeperError: the marker cannot be written (a full disk): nothing was removed.
    """
    try:
        _claim(out, run_id, report_names)
    except OSError as exc:
        raise GatekeeperError(f"{out}: cannot mark the out directory for this check "
                              f"({exc.strerror or exc}); nothing was run") from None


def _claim(out: Path, run_id: str, report_names: Iterable[str]) -> None:
    write_atomic(out / MARKER, json.dumps({
        "run_id": run_id, "started": utc_now(), "state": "running",
        "note": "this check did not finish: the reports here are not a decision; run the check again",
    }, indent=1) + "\n")
    for name in {*RECORD_FILES, *BUILTIN_REPORT_FILES, *report_names}:
        (out / name).unlink(missing_ok=True)
    for name in PER_CASE_FILES:  # the previous record's cases.jsonl, case_index.jsonl and blobs/
        stale_path = out / name
        if stale_path.is_dir():
            shutil.rmtree(stale_path, ignore_errors=True)
        else:
            stale_path.unlink(missing_ok=True)
    for stale in out.glob(STAGING_PREFIX + "*"):
        if stale.is_dir() and stale.name != STAGING_PREFIX + run_id:
            shutil.rmtree(stale, ignore_errors=True)
    fsync_directory(out)


def staging_dir(out: Path, run_id: str) -> Path:
    path = out / (STAGING_PREFIX + run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fail(out: Path, run_id: str, why: str) -> None:
    """Say in the marker why the run failed (best effort: the disk may be full)."""
    try:
        write_atomic(out / MARKER, json.dumps({"run_id": run_id, "state": "failed", "error": why,
                                               "time": utc_now()}, indent=1) + "\n")
    except OSError:
        pass


def publish(out: Path, run_id: str, staged: list[Path]) -> list[Path]:
    """Rename the staged files into ``out`` (the per-case files first, the record last), then
    drop the marker. A staged file keeps its path below the staging directory (``blobs/…``)."""
    staging = out / (STAGING_PREFIX + run_id)
    ordered = sorted(staged, key=lambda p: p.name in RECORD_FILES)
    final = []
    for path in ordered:
        target = out / _below(path, staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        final.append(target)
    fsync_directory(out)
    shutil.rmtree(out / (STAGING_PREFIX + run_id), ignore_errors=True)
    (out / MARKER).unlink(missing_ok=True)
    fsync_directory(out)
    by_name = {_below(p, out): p for p in final}
    return [by_name[_below(p, staging)] for p in staged]


def _below(path: Path, directory: Path) -> Path:
    try:
        return path.relative_to(directory)
    except ValueError:
        return Path(path.name)


def void_orphan(out: Path, audit: Any) -> dict[str, Any] | None:
    """Append ``check.void`` for the run an earlier, interrupted check left in ``out`` after its audit record.

    Returns the void record, or ``None`` when there is no such orphan.
    """
    marker = read_marker(out)
    run_id = marker.get("run_id") if marker else None
    if not run_id or not audit.path.is_file():
        return None
    records = audit.records()
    checks = [r for r in records if r["action"] == "check" and r["subject"] == run_id]
    if not checks or any(r["action"] == VOID_ACTION and r["subject"] == run_id for r in records):
        return None
    return void(audit, run_id, checks[-1]["hash"], out,
                "the check was recorded but its reports were never published (interrupted)")


def void(audit: Any, run_id: str, check_hash: str, out: Path, reason: str) -> dict[str, Any]:
    """Cancel a check record whose reports were never published: it will not count as a use."""
    return dict(audit.append(VOID_ACTION, subject=run_id, refs={"check": check_hash},
                             data={"run_id": run_id, "out": str(out), "reason": reason}))


def voided_runs(records: list[dict[str, Any]]) -> set[str]:
    """Run ids whose check record an ``check.void`` record cancelled."""
    return {str(r["subject"]) for r in records if r["action"] == VOID_ACTION}
