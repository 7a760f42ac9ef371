"""Small helpers every reporter shares: number formats, labels, the decision's look."""

from __future__ import annotations

from typing import Any

from gatekeeper.gate.attestations import ATTESTATIONS_KEY, record_body

__all__ = ["ATTESTATIONS_KEY", "record_body"]  # shared by the reporters

"""In-memory only: approvals and audit-trail status handed to reporters beside the record.

They come after the decision (a signature is made over the record), so they are never
written into ``decision.json``; ``gatekeeper report`` gathers them again on each render.
"""

DECISION_ICONS = {"PROMOTE": "✅", "HOLD": "✋", "INCONCLUSIVE": "❔", "REJECT": "❌", "ROLLBACK": "⏪"}


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell; ``—`` for a missing one."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def signed(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def slice_label(row: dict[str, Any]) -> str:
    """``topic=returns`` for a slice row, ``all`` for the overall one."""
    sl = row.get("slice")
    return f"{sl['field']}={sl['value']}" if sl else "all"


def ci_level(row: dict[str, Any]) -> float:
    """The interval's coverage in percent (a one-sided bound at alpha is a 1 − 2·alpha interval)."""
    alpha = float(row.get("alpha") or 0.05)
    return round(100 * (1 - (2 * alpha if row.get("sides") == "one" else alpha)), 1)




REQUIRED_FIELDS = {
    "run": ("run_id", "models", "suites", "summary", "stats", "case_index", "cases"),
    "check": ("run_id", "models", "suites", "summary", "stats", "case_index", "cases", "decision", "reasons",
              "metrics", "policy"),
}


def missing_fields(record: dict[str, Any]) -> list[str]:
    """The top-level fields every reporter relies on that ``record`` lacks."""
    return [name for name in REQUIRED_FIELDS.get(str(record.get("kind")), ()) if name not in record]
