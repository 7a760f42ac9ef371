"""Synthetic and real cases apart, in the reports: the decision record's ``data_origin``
(gate/check.py, from each case's ``origin``/``synthetic`` marks) as Markdown lines; the HTML
report shows the same table in its data section (templates/report.html.j2). Nothing is shown
for a check whose cases are all real."""

from __future__ import annotations

from typing import Any

from gatekeeper.reports.escaping import md_inline


def _share(value: Any) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def markdown_lines(record: dict[str, Any]) -> list[str]:
    origin = record.get("data_origin") or {}
    if not origin.get("synthetic"):
        return []
    lines = ["", "### Synthetic and real cases", "",
             "| slice | cases | real | synthetic | synthetic share |", "|---|---:|---:|---:|---:|",
             f"| all | {origin['rows']} | {origin['real']} | {origin['synthetic']} | {_share(origin['share'])} |"]
    for field, values in sorted((origin.get("by_slice") or {}).items()):
        for value, c in sorted(values.items()):
            lines.append(f"| {md_inline(f'{field}={value}')} | {c['rows']} | {c['real']} | {c['synthetic']} | "
                         f"{_share(c['share'])} |")
    return lines
