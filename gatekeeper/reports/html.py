"""The HTML reporter: ``report.html``, one self-contained file an auditor can read and print.

Rendered by a sandboxed jinja2 environment with autoescaping from the record alone (plus
the in-memory attestations, when given). No network resource is referenced: styles and
SVG plots are inline, and a Content-Security-Policy forbids anything else, so even text
that slipped past escaping could not load or run anything.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path
from typing import Any

from gatekeeper.kinds import Reporter
from gatekeeper.reports.common import ATTESTATIONS_KEY, ci_level, fmt, record_body, signed, slice_label
from gatekeeper.reports.escaping import visible

TEMPLATES = Path(__file__).parent / "templates"
REPORT_FILE = "report.html"

# The report's only script: open folded sections for printing, fold them back afterwards.
PRINT_SCRIPT = (
    "window.addEventListener('beforeprint',function(){document.querySelectorAll('details')"
    ".forEach(function(d){if(!d.open){d.setAttribute('data-print-opened','');d.open=true;}});});"
    "window.addEventListener('afterprint',function(){document.querySelectorAll('details[data-print-opened]')"
    ".forEach(function(d){d.removeAttribute('data-print-opened');d.open=false;});});"
)


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(PRINT_SCRIPT.encode()).digest()).decode()
    return (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{digest}'; "
            "base-uri 'none'; form-action 'none'")


def _compact(value: Any) -> Any:
    """A mapping without its unset entries (``None``, ``False``, empty)."""
    if not isinstance(value, dict):
        return value
    return {k: v for k, v in value.items() if v not in (None, False, [], {}, "")}


def _short(value: Any) -> str:
    """A score in at most three significant digits (the all-cases table is long)."""
    return "·" if value is None else f"{value:.3g}"


def _case_cells(cells: list[dict[str, Any]]) -> Any:
    """One all-cases row's score cells as markup, made here rather than in the template: the
    table has up to :data:`~gatekeeper.reports.analysis.MAX_CASE_CELLS` cells, and the sandboxed
    template spent ~10 µs on each (0.6 s of a 10^4-case report). Only numbers (formatted by
    :func:`_short`, escaped all the same) and fixed class names go in; the row's text (case id,
    slices) stays in the template, autoescaped."""
    from markupsafe import Markup, escape

    parts = []
    for cell in cells:
        values = cell["values"]
        last = len(values) - 1
        worse = bool(cell["worse"])
        for k, value in enumerate(values):
            parts.append(f'<td class="num{" worse" if worse and k == last else ""}">{escape(_short(value))}</td>')
    return Markup("".join(parts))


def _visible(value: Any) -> Any:
    """Every ``{{ }}`` string shows control, bidi and zero-width characters as markers.

    Markup the template made itself (``Markup``) passes unchanged; it is escaped already.
    """
    from markupsafe import Markup

    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value)
    return value


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    """The sandboxed environment, made once per process: jinja2 then compiles each template
    once (~0.2 s for report.html.j2) however many reports a process renders (tests, ``report``)."""
    from jinja2 import ChainableUndefined, FileSystemLoader
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=ChainableUndefined,
        trim_blocks=True, lstrip_blocks=True, finalize=_visible,
    )
    env.filters.update(fmt=fmt, signed=signed, compact=_compact, short=_short, case_cells=_case_cells,
                       pct=lambda v: "—" if v is None else f"{100 * v:.1f}%")
    from gatekeeper.reports.analysis import deciding_rule

    env.globals.update(slice_label=slice_label, ci_level=ci_level, deciding_rule=deciding_rule)
    return env


def view(record: dict[str, Any], *, print_mode: bool = False) -> dict[str, Any]:
    """Everything the template shows, derived from the record."""
    from gatekeeper.gate.approvals import record_hash
    from gatekeeper.reports import analysis  # here, not at import: `gatekeeper --help` stays light
    from gatekeeper.reports.slo import view as slo_view

    body = record_body(record)
    # the body plus its rows (streamed from cases.jsonl in record format 2): what the case sections read
    cases = {**body, "cases": record.get("cases") or [], "case_index": record.get("case_index") or {}}
    kind = body.get("kind", "run")
    metrics = body.get("metrics") or []
    overall = [m for m in metrics if not m.get("slice")]
    slice_groups: dict[str, list[dict[str, Any]]] = {}
    for m in metrics:
        if m.get("slice"):
            slice_groups.setdefault(m["name"], []).append(m)
    scored = sorted({metric for model in (body.get("summary") or {}).values() for metric in model})
    policy_metrics = [m["metric"] for m in overall]
    ordered = [m for m in dict.fromkeys(policy_metrics) if m in scored] + [m for m in scored if m not in policy_metrics]
    return {
        "kind": kind,
        "record": body,
        "record_hash": (record.get(ATTESTATIONS_KEY) or {}).get("record_hash") or record_hash(body),
        "attestations": record.get(ATTESTATIONS_KEY),
        "pccp": (body.get("policy") or {}).get("pccp") or {},
        "overall": overall,
        "forests": [f for group in analysis.scale_groups(overall) if (f := analysis.forest(group))],
        "slices": [
            {"name": name, "field": field, "rows": rows, "forest": analysis.forest(rows, slices=True)}
            for name, group in slice_groups.items()
            for field, rows in _by_field(group).items()
        ],
        "histograms": analysis.histograms(cases, ordered),
        "regressions": analysis.worst_regressions(cases) if kind == "check" else [],
        "findings": analysis.findings(cases),
        "failures": analysis.failures(cases) if kind != "check" else [],
        "traceability": analysis.traceability(body) if kind == "check" else [],
        "sequestration": analysis.sequestration(body),
        "case_table": analysis.case_table(cases),
        "slo": slo_view(body) if kind == "check" else None,
        "limits": {"worst": analysis.WORST_PER_METRIC, "findings": analysis.FINDINGS_PER_MODEL,
                   "failures": analysis.FAILURES_PER_METRIC, "text": analysis.MAX_TEXT},
        "print_mode": print_mode,
        "csp": _csp(),
        "script": PRINT_SCRIPT,
    }


def _by_field(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["slice"]["field"], []).append(row)
    return out


def render_html(record: dict[str, Any], *, print_mode: bool = False) -> str:
    return str(_environment().get_template("report.html.j2").render(**view(record, print_mode=print_mode)))


class HtmlReporter(Reporter):
    name = "html"
    description = "report.html: self-contained report with plots, traceability and provenance, for auditors"
    filename = REPORT_FILE

    def write(self, record: dict[str, Any], out_dir: Path) -> Path:
        path = out_dir / REPORT_FILE
        tmp = path.with_suffix(".html.tmp")
        tmp.write_text(render_html(record), encoding="utf-8")
        tmp.replace(path)
        return path
