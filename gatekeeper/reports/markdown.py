"""The Markdown reporter: ``summary.md``, fit for a pull-request comment and ``$GITHUB_STEP_SUMMARY``.

A check's summary is the decision, its reasons, one compact row per metric (Δ with its
interval, margin, verdict), the most-regressed and the failing cases (capped), the slices
folded away, and a link to the HTML report. It never exceeds :data:`GITHUB_COMMENT_LIMIT`
characters: what does not fit is cut at a row boundary and a note says how much was left
out and where to find it.

Every piece of text from a case, a model or a plugin goes through
:mod:`gatekeeper.reports.escaping`: a comment renders it as text, never as an image, a
link, a tag or a broken table.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gatekeeper.kinds import Reporter
from gatekeeper.reports.common import DECISION_ICONS, ci_level, fmt, signed, slice_label
from gatekeeper.reports.escaping import md_code, md_inline, md_link_target

GITHUB_COMMENT_LIMIT = 65_536
"""GitHub refuses issue and pull-request comments longer than this many characters."""
REPORT_URL_ENV = "GATEKEEPER_REPORT_URL"
"""Where the HTML report is published (a CI artifact URL); default: ``report.html`` beside the summary."""
MAX_REASON_CHARS = 600
MAX_CASES = 10
"""Rows in each case table (most regressed, failing) of the comment; the report has the rest."""
MAX_CASE_TEXT = 160
"""Characters of an output or a reason in a case row."""
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


def _cell(text: Any, limit: int | None = None) -> str:
    """Table-safe, Markdown-inert text (:func:`~gatekeeper.reports.escaping.md_inline`)."""
    return md_inline(text, limit=limit)


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
    return md_inline(text, limit=limit)


def _report_target() -> str:
    return md_link_target(os.environ.get(REPORT_URL_ENV, ""), "report.html")


def _report_link() -> str:
    return f"[full report]({_report_target()})"


def _case_name(suite: Any, case_id: Any) -> str:
    return f"{_cell(suite)} / {md_code(case_id)}"


def regressed_rows(record: dict[str, Any], limit: int = MAX_CASES) -> tuple[list[str], int]:
    """The cases where the candidate lost most against the baseline, worst first, across metrics.

    Returns the table rows (at most ``limit``) and how many regressions there are in all.
    """
    from gatekeeper.reports.analysis import worst_regressions
    found: list[tuple[float, str, dict[str, Any]]] = []
    total = 0
    for group in worst_regressions(record, limit=limit):
        total += group["count"]
        sign = -1.0 if group.get("direction") == "lower" else 1.0
        found += [(sign * (c["candidate"] - c["baseline"]), group["metric"], c) for c in group["cases"]]
    found.sort(key=lambda t: (t[0], t[1], t[2]["key"]))
    rows = [
        f"| {_case_name(c['suite'], c['id'])} | {_cell(metric)} | {fmt(c['baseline'])} | {fmt(c['candidate'])} | "
        f"{_cell(''.join(seg.text for seg in c['candidate_diff']), MAX_CASE_TEXT)} |"
        for _, metric, c in found[:limit]
    ]
    return rows, total


def failing_rows(record: dict[str, Any], model: str | None, metrics: set[str] | None,
                 limit: int = MAX_CASES) -> tuple[list[str], int]:
    """Failing (or erroring) cases of ``model`` (all models when None) on ``metrics`` (all when None)."""
    from gatekeeper.reports.analysis import failures
    groups = [g for g in failures(record, limit=limit)
              if (model is None or g["model"] == model) and (metrics is None or g["metric"] in metrics)]
    total = sum(g["total"] for g in groups)
    rows: list[str] = []
    for rank in range(limit):  # round-robin over metrics: each failing metric shows its first cases
        for g in groups:
            if rank < len(g["entries"]) and len(rows) < limit:
                e = g["entries"][rank]
                score = "error" if e["status"] == "error" else fmt(e["value"])
                model_cell = "" if model is not None else f"{_cell(g['model'])} | "
                rows.append(f"| {model_cell}{md_code(e['id'])} | {_cell(g['metric'])} | {score} | "
                            f"{_cell(e['reason'], MAX_CASE_TEXT)} | {_cell(e['output'], MAX_CASE_TEXT)} |")
    return rows, total


def _case_tables(out: _Budget, record: dict[str, Any], model: str | None, metrics: set[str] | None) -> None:
    """The failing cases and, for a check, the most-regressed ones: capped, with where to see all."""
    sections: list[tuple[str, str, list[str], int]] = []
    if record.get("kind") == "check":
        rows, total = regressed_rows(record)
        sections.append(("Most-regressed cases", "| case | metric | baseline | candidate | candidate output |\n"
                         "|---|---|---:|---:|---|", rows, total))
    rows, total = failing_rows(record, model, metrics)
    header = ("| case | metric | score | reason | output |\n|---|---|---:|---|---|" if model is not None else
              "| model | case | metric | score | reason | output |\n|---|---|---|---:|---|---|")
    sections.append((f"Failing cases ({model})" if model else "Failing cases", header, rows, total))
    for title, head, rows, total in sections:
        if not rows:
            continue
        out.add("")
        out.add(f"### {title}")
        out.add("")
        out.add(head)
        out.add_rows(rows, "cases")
        if total > len(rows):
            out.add("")
            out.add(f"*{len(rows)} of {total} shown: all of them in the [full report]({_report_target()}) "
                    "and decision.json.*")


def markdown_check(record: dict[str, Any], limit: int = GITHUB_COMMENT_LIMIT) -> str:
    pol = record["policy"]
    footer = ["", _stats_line(record["stats"])]
    out = _Budget(limit, reserve=sum(len(x) + 1 for x in footer) + 400)
    icon = DECISION_ICONS.get(record["decision"], "⚠️")
    out.add(f"# {icon} gatekeeper: **{record['decision']}**")
    out.add("")
    out.add(f"Policy {md_code(pol['id'])} v{_cell(pol['version'])} (sha256 {md_code(str(pol.get('sha256', ''))[:12])}) "
            f"· run {md_code(record['run_id'])} · {_report_link()}")
    out.add("")
    scope_line = (record.get("scope") or {}).get("summary")
    if scope_line:
        out.add(f"- **scope**: {_cell(scope_line)}")
    for label in ("candidate", "baseline"):
        entry = record["models"].get(label)
        if entry:
            out.add(f"- **{label}**: {md_code(entry['spec'])} (digest {md_code(entry['identity']['digest'][:12])})")
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
    from gatekeeper.reports.slo import markdown_lines as slo_lines

    out.add_rows(slo_lines(record), "service-level rows")  # the policy's slo section (reports/slo.py)
    from gatekeeper.reports.origin import markdown_lines as origin_lines

    out.add_rows(origin_lines(record), "data origin rows")  # synthetic and real cases apart (reports/origin.py)
    _case_tables(out, record, "candidate", {m["metric"] for m in overall})
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
    out.add(f"# gatekeeper run {md_code(record['run_id'])}")
    out.add("")
    for label, entry in record["models"].items():
        out.add(f"- **{_cell(label)}**: {md_code(entry['spec'])} (digest {md_code(entry['identity']['digest'][:12])})")
    suites = ", ".join(f"{_cell(s['name'])} ({s['cases']} cases)" for s in record["suites"])
    out.add("")
    out.add(f"Suites: {suites} · {_report_link()}")
    out.add("")
    out.add("| model | metric | mean | passed | failed | nodata | errors |")
    out.add("|---|---|---:|---:|---:|---:|---:|")
    out.add_rows(list(_run_rows(record["summary"])), "metric rows")
    _case_tables(out, record, None, None)
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
