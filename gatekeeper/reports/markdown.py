"""The Markdown reporter: ``summary.md``, fit for a pull-request comment and ``$GITHUB_STEP_SUMMARY``.

A check's summary is the decision, its reasons, one compact row per metric (Δ with its
interval, margin, verdict), the slices folded away, and a link to the HTML report. It
never exceeds :data:`GITHUB_COMMENT_LIMIT` characters: what does not fit is cut at a row
boundary and a note says how much was left out and where to find it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gatekeeper.kinds import Reporter
from gatekeeper.reports.common import DECISION_ICONS, ci_level, fmt, signed, slice_label

GITHUB_COMMENT_LIMIT = 65_536
"""GitHub refuses issue and pull-request comments longer than this many characters."""
REPORT_URL_ENV = "GATEKEEPER_REPORT_URL"
"""Where the HTML report is published (a CI artifact URL); default: ``report.html`` beside the summary."""
MAX_REASON_CHARS = 600
VERDICT_ICONS = {"PASS": "✅", "FAIL": "❌", "INCONCLUSIVE": "❔", "NODATA": "∅", "ERROR": "⚠️"}
METRIC_HEADER = (
    "| metric | n | baseline | candidate | Δ [CI] | margin | verdict |\n"
    "|---|---:|---:|---:|---|---:|---|"
)
SLICE_HEADER = (
    "| metric | slice | n | baseline | candidate | Δ [CI] | verdict |\n"
    "|---|---|---:|---:|---:|---|---|"
)


def _stats_line(stats: dict[str, Any]) -> str:
    return (
        f"model calls: {stats['model_calls']} · cache hits: {stats['cache_hits']} · "
        f"retries: {stats['retries']} · generation errors: {stats['generation_errors']} · "
        f"wall time: {stats['wall_s']:.1f} s"
    )


def _cell(text: Any) -> str:
    """Table-safe text: a ``|`` or a newline would break the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _delta_ci(m: dict[str, Any]) -> str:
    if m.get("delta") is None:
        return "—"
    if m.get("ci_low") is None:
        return signed(m["delta"])
    return f"{signed(m['delta'])} [{signed(m['ci_low'])}, {signed(m['ci_high'])}] {ci_level(m):g}%"


def _margin(m: dict[str, Any], spec: dict[str, Any]) -> str:
    """``NI 0.050`` (non-inferiority margin), plus the policy's guardrail when it has one."""
    hyp = {"non_inferiority": "NI", "superiority": "sup", "equivalence": "eq"}.get(m.get("hypothesis") or "")
    guard = spec.get("guardrail") or {}
    text = f"{hyp} {m['margin']:.3f}" if hyp and m.get("margin") is not None else "—"
    if guard.get("max") is not None:
        text += f", ≤ {guard['max']:g}"
    if guard.get("min") is not None:
        text += f", ≥ {guard['min']:g}"
    return text


def _verdict(m: dict[str, Any]) -> str:
    return f"{VERDICT_ICONS.get(m['verdict'], '')} {m['verdict']}".strip()


def metric_row(m: dict[str, Any], spec: dict[str, Any]) -> str:
    name = f"**{_cell(m['name'])}**" if m.get("critical") else _cell(m["name"])
    return (
        f"| {name} | {m['n']} | {fmt(m['baseline'])} | {fmt(m['candidate'])} | {_delta_ci(m)} | "
        f"{_margin(m, spec)} | {_verdict(m)} |"
    )


def slice_row(m: dict[str, Any]) -> str:
    return (
        f"| {_cell(m['name'])} | {_cell(slice_label(m))} | {m['n']} | {fmt(m['baseline'])} | "
        f"{fmt(m['candidate'])} | {_delta_ci(m)} | {_verdict(m)} |"
    )


class _Budget:
    """Appends lines while they fit in ``limit`` characters, keeping room for the ending."""

    def __init__(self, limit: int, reserve: int) -> None:
        self.lines: list[str] = []
        self.left = limit - reserve

    def add(self, line: str) -> bool:
        if len(line) + 1 > self.left:
            return False
        self.lines.append(line)
        self.left -= len(line) + 1
        return True

    def force(self, line: str) -> None:
        """A closing line that must appear (the reserve keeps room for it)."""
        self.lines.append(line)
        self.left -= len(line) + 1

    def add_rows(self, rows: list[str], what: str) -> None:
        """Rows until one does not fit, then a note saying how many were left out."""
        for i, row in enumerate(rows):
            if not self.add(row):
                self.lines.append(
                    f"\n*{len(rows) - i} more {what} not shown (comment size limit): "
                    "see report.html or decision.json.*"
                )
                self.left -= 120
                return


def _truncate(text: str, limit: int = MAX_REASON_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _report_link() -> str:
    url = os.environ.get(REPORT_URL_ENV, "").strip() or "report.html"
    return f"[full report]({url})"


def markdown_check(record: dict[str, Any], limit: int = GITHUB_COMMENT_LIMIT) -> str:
    pol = record["policy"]
    footer = ["", _stats_line(record["stats"])]
    out = _Budget(limit, reserve=sum(len(x) + 1 for x in footer) + 400)
    icon = DECISION_ICONS.get(record["decision"], "⚠️")
    out.add(f"# {icon} gatekeeper: **{record['decision']}**")
    out.add("")
    out.add(f"Policy `{pol['id']}` v{pol['version']} · run `{record['run_id']}` · {_report_link()}")
    out.add("")
    for label in ("candidate", "baseline"):
        entry = record["models"].get(label)
        if entry:
            out.add(f"- **{label}**: `{entry['spec']}` (digest `{entry['identity']['digest'][:12]}`)")
    overall = [m for m in record["metrics"] if not m.get("slice")]
    slices = [m for m in record["metrics"] if m.get("slice")]
    out.add("")
    out.add(METRIC_HEADER)
    specs = {s["name"]: s for s in (pol.get("pccp") or {}).get("performance_evaluation", {}).get("metrics", [])}
    out.add_rows([metric_row(m, specs.get(m["name"], {})) for m in overall], "metrics")
    out.add("")
    out.add("Critical metrics in **bold**; Δ = candidate − baseline with its confidence interval.")
    out.add("")
    out.add("### Reasons")
    out.add("")
    out.add_rows([f"- **{_cell(r['clause'])}**: {_truncate(r['text'])}" for r in record["reasons"]]
                 or ["- none"], "reasons")
    if slices:
        failing = sum(1 for m in slices if m["verdict"] != "PASS")
        out.add("")
        out.add(f"<details><summary>Slices: {len(slices)} rows, {failing} not PASS</summary>")
        out.add("")
        out.add(SLICE_HEADER)
        ordered = sorted(slices, key=lambda m: m["verdict"] == "PASS")  # problems first
        out.add_rows([slice_row(m) for m in ordered], "slice rows")
        out.force("")
        out.force("</details>")
    return "\n".join([*out.lines, *footer]) + "\n"


def markdown_run(record: dict[str, Any], limit: int = GITHUB_COMMENT_LIMIT) -> str:
    footer = ["", _stats_line(record["stats"])]
    out = _Budget(limit, reserve=sum(len(x) + 1 for x in footer) + 400)
    out.add(f"# gatekeeper run `{record['run_id']}`")
    out.add("")
    for label, entry in record["models"].items():
        out.add(f"- **{_cell(label)}**: `{entry['spec']}` (digest `{entry['identity']['digest'][:12]}`)")
    suites = ", ".join(f"{s['name']} ({s['cases']} cases)" for s in record["suites"])
    out.add("")
    out.add(f"Suites: {suites} · {_report_link()}")
    out.add("")
    out.add("| model | metric | mean | passed | failed | nodata | errors |")
    out.add("|---|---|---:|---:|---:|---:|---:|")
    out.add_rows(list(_run_rows(record["summary"])), "metric rows")
    return "\n".join([*out.lines, *footer]) + "\n"


def _run_rows(summary: dict[str, dict[str, dict[str, Any]]]) -> Iterable[str]:
    for label, metrics in summary.items():
        for metric, s in metrics.items():
            yield (
                f"| {_cell(label)} | {_cell(metric)} | {fmt(s['mean'])} | {s['passed']} | {s['failed']} | "
                f"{s['nodata']} | {s['error']} |"
            )


class MarkdownReporter(Reporter):
    name = "markdown"
    description = "summary.md, fit for a pull-request comment and $GITHUB_STEP_SUMMARY"

    def write(self, record: dict[str, Any], out_dir: Path) -> Path:
        text = markdown_check(record) if record["kind"] == "check" else markdown_run(record)
        path = out_dir / "summary.md"
        path.write_text(text, encoding="utf-8")
        return path
