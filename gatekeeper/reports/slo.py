"""Service levels in the reports: latency CDFs, latency and throughput against offered load,
the knee, and the SLO guardrails' verdicts.

Reads only the record's ``slo`` section (gate/slo_check.py). :func:`view` returns numbers and
strings for ``templates/slo.html.j2`` (the template makes the markup, autoescaped);
:func:`markdown_lines` returns the summary's lines, every text through
:mod:`gatekeeper.reports.escaping`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from gatekeeper.reports.escaping import md_inline

MODELS = ("baseline", "candidate")
WIDTH, HEIGHT = 470, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 12, 40


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    if unit == "ms":
        return f"{value:,.0f} ms"
    if unit == "%":
        return f"{100 * value:.2f} %"
    if unit == "rps":
        return f"{value:.3g} req/s"
    return f"{value:.4g}"


class _Axes:
    """Maps data to SVG coordinates of one plot."""

    def __init__(self, x_lo: float, x_hi: float, y_lo: float, y_hi: float) -> None:
        self.x_lo, self.x_hi = x_lo, x_hi if x_hi > x_lo else x_lo + 1
        self.y_lo, self.y_hi = y_lo, y_hi if y_hi > y_lo else y_lo + 1
        self.w, self.h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(self, v: float) -> float:
        return round(LEFT + (min(max(v, self.x_lo), self.x_hi) - self.x_lo) / (self.x_hi - self.x_lo) * self.w, 2)

    def y(self, v: float) -> float:
        return round(TOP + self.h - (min(max(v, self.y_lo), self.y_hi) - self.y_lo) / (self.y_hi - self.y_lo) * self.h,
                     2)

    def frame(self, x_label: str, y_label: str, y_pct: bool = False) -> dict[str, Any]:
        from gatekeeper.reports.analysis import nice_ticks

        return {
            "width": WIDTH, "height": HEIGHT, "left": LEFT, "top": TOP, "right": WIDTH - RIGHT,
            "bottom": TOP + self.h, "x_label": x_label, "y_label": y_label,
            "x_ticks": [(self.x(t), f"{t:g}") for t in nice_ticks(self.x_lo, self.x_hi)],
            "y_ticks": [(self.y(t), f"{100 * t:g}%" if y_pct else f"{t:g}") for t in nice_ticks(self.y_lo, self.y_hi)],
        }

    def points(self, xs: Sequence[float], ys: Sequence[float]) -> str:
        return " ".join(f"{self.x(a)},{self.y(b)}" for a, b in zip(xs, ys, strict=True)
                        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b))


def cdf_plot(section: Mapping[str, Any], measure: str) -> dict[str, Any] | None:
    """Both models' empirical CDFs of ``latency`` or ``ttft`` (ms), with the absolute SLO limits."""
    curves = {m: ((section.get("cdf") or {}).get(m) or {}).get(measure) or {} for m in MODELS}
    values = [v for c in curves.values() for v in c.get("ms", []) if v is not None and math.isfinite(v)]
    if not values:
        return None
    limits = [r for r in section.get("rows", []) if r.get("measure") == measure and r.get("max") is not None]
    x_hi = max(values + [float(r["max"]) for r in limits])
    axes = _Axes(0.0, x_hi * 1.05, 0.0, 1.0)
    lines = [{"model": m, "index": i, "points": axes.points(curves[m].get("ms", []), curves[m].get("p", []))}
             for i, m in enumerate(MODELS) if curves[m].get("ms")]
    marks = []
    for r in limits:
        limit, q = float(r["max"]), r.get("quantile") or 0.95
        marks.append({"x": axes.x(limit), "y": axes.y(q), "label": f"{r['name']}: p{100 * q:g} ≤ {limit:g} ms",
                      "verdict": r["verdict"]})
    return {"measure": measure, **axes.frame(f"{measure} (ms)", "share of requests", y_pct=True),
            "lines": lines, "limits": marks}


def load_plots(section: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Latency (p50, p95) and achieved throughput against offered load per model, and the knee."""
    caps = section.get("capacity") or {}
    steps = {m: (caps.get(m) or {}).get("steps") or [] for m in MODELS}
    rates = [s["offered_rps"] for ss in steps.values() for s in ss if s.get("offered_rps") is not None]
    if len(set(rates)) < 2:
        return []
    x_axis = (0.0, max(rates) * 1.05)
    knee = caps.get("candidate") or {}
    band = {"low": knee.get("low"), "high": knee.get("high"), "estimate": knee.get("estimate")}
    lat = [v for ss in steps.values() for s in ss for v in (s.get("p50_ms"), s.get("p95_ms")) if v is not None]
    out = []
    if lat:
        axes = _Axes(*x_axis, 0.0, max(lat) * 1.1)
        series = []
        for i, m in enumerate(MODELS):
            ss = [s for s in steps[m] if s.get("p95_ms") is not None]
            for stat in ("p50_ms", "p95_ms"):
                xs, ys = [s["offered_rps"] for s in ss], [s[stat] for s in ss]
                series.append({"model": m, "index": i, "stat": stat[:3], "points": axes.points(xs, ys),
                               "dots": [{"x": axes.x(a), "y": axes.y(b), "title": f"{m} {stat[:3]} at {a:g} req/s: "
                                         f"{b:,.0f} ms"} for a, b in zip(xs, ys, strict=True)]})
        out.append({"title": "Latency against offered load", **axes.frame("offered load (req/s per model)",
                                                                              "latency (ms)"),
                    "series": series, "knee": _knee(axes, band)})
    thr = [s.get("achieved_rps") for ss in steps.values() for s in ss if s.get("achieved_rps") is not None]
    if thr:
        axes = _Axes(*x_axis, 0.0, max(max(thr), x_axis[1]) * 1.05)
        series = []
        for i, m in enumerate(MODELS):
            ss = [s for s in steps[m] if s.get("achieved_rps") is not None]
            xs, ys = [s["offered_rps"] for s in ss], [s["achieved_rps"] for s in ss]
            series.append({"model": m, "index": i, "stat": "ok/s", "points": axes.points(xs, ys),
                           "dots": [{"x": axes.x(a), "y": axes.y(b), "title": f"{m} at {a:g} req/s offered: "
                                     f"{b:.3g} ok/s"} for a, b in zip(xs, ys, strict=True)]})
        out.append({"title": "Throughput against offered load", **axes.frame("offered load (req/s per model)",
                                                                                 "successful requests/s"),
                    "series": series, "knee": _knee(axes, band),
                    "identity": axes.points([0.0, x_axis[1]], [0.0, x_axis[1]])})
    return out


def _knee(axes: _Axes, band: Mapping[str, Any]) -> dict[str, Any] | None:
    if band["low"] is None and band["high"] is None and band["estimate"] is None:
        return None
    lo = band["low"] if band["low"] is not None else axes.x_lo
    hi = band["high"] if band["high"] is not None else axes.x_hi
    return {"x_low": axes.x(lo), "x_high": axes.x(hi), "top": TOP, "height": axes.h,
            "x": axes.x(band["estimate"]) if band["estimate"] is not None else None,
            "label": f"knee {_fmt(band['estimate'], 'rps')}"}


def view(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the HTML template's SLO section shows; ``None`` when the check ran no load."""
    section = record.get("slo")
    if not section:
        return None
    rows = [_row_text(r) for r in section.get("rows", [])]
    return {
        "rows": rows,
        "cdfs": [p for m in ("latency", "ttft") if (p := cdf_plot(section, m))],
        "load": load_plots(section),
        "comparisons": [{**c, "p_label": f"p{100 * c['p']:g}"} for c in section.get("comparisons") or []],
        "rates": section.get("rates") or {},
        "capacity": {m: {k: v for k, v in c.items() if k != "steps"} | {"steps": c.get("steps") or []}
                     for m, c in (section.get("capacity") or {}).items()},
        "runs": section.get("runs") or {},
        "requests": section.get("requests") or {},
    }


def _row_text(r: Mapping[str, Any]) -> dict[str, Any]:
    """A guardrail row with its estimate, interval and baseline as text in the row's units."""
    if r.get("max_increase_pct") is not None:  # relative: the ratio candidate / baseline
        est = "—" if r.get("ratio") is None else f"×{r['ratio']:.3f} ({_fmt(r.get('candidate'), 'ms')})"
        ci = f"[×{_fmt(r.get('ci_low'))}, ×{_fmt(r.get('ci_high'))}]"
        return {**r, "estimate_text": est, "ci_text": ci, "baseline_text": _fmt(r.get("baseline"), "ms")}
    unit = {"error_rate": "%", "rate_429": "%", "throughput": "rps"}.get(r["measure"], "ms")
    return {**r, "estimate_text": _fmt(r.get("candidate"), unit),
            "ci_text": f"[{_fmt(r.get('ci_low'), unit)}, {_fmt(r.get('ci_high'), unit)}]",
            "baseline_text": _fmt(r.get("baseline"), unit)}


# --------------------------------------------------------------------------- Markdown

ICONS = {"PASS": "✅", "FAIL": "❌", "INCONCLUSIVE": "❔", "NODATA": "∅", "ERROR": "⚠️"}


def markdown_lines(record: Mapping[str, Any]) -> list[str]:
    """The summary's SLO section: one row per guardrail, the comparison at p50/p95/p99, the knee."""
    section = record.get("slo")
    if not section:
        return []
    v = view(record)
    assert v is not None
    out = ["", "### Service levels (load)", "",
           "| SLO | limit | n | candidate | CI | baseline | verdict |", "|---|---|---:|---:|---|---:|---|"]
    for r in v["rows"]:
        name = f"**{md_inline(r['name'])}**" if r.get("critical") else md_inline(r["name"])
        needed = f" (≈{r['requests_needed']} requests needed)" if r.get("requests_needed") else ""
        out.append(f"| {name} | {md_inline(r['limit'])} | {r['n']} | {md_inline(r['estimate_text'])} | "
                   f"{md_inline(r['ci_text'])} | {md_inline(r['baseline_text'])} | "
                   f"{ICONS.get(r['verdict'], '')} {r['verdict']}{needed} |")
    if v["comparisons"]:
        out += ["", "| measure | quantile | baseline | candidate | Δ [CI] | ratio [CI] |",
                "|---|---|---:|---:|---|---|"]
        for c in v["comparisons"]:
            out.append(f"| {c['measure']} | {c['p_label']} | {_fmt(c['baseline']['value'], 'ms')} | "
                       f"{_fmt(c['candidate']['value'], 'ms')} | {c['diff']:+,.0f} ms [{c['diff_low']:+,.0f}, "
                       f"{c['diff_high']:+,.0f}] | ×{c['ratio']:.3f} [{c['ratio_low']:.3f}, {c['ratio_high']:.3f}] |")
    for m, cap in v["capacity"].items():
        if len(cap["steps"]) > 1:
            out.append(f"\n- **capacity ({m})**: knee at {_fmt(cap.get('estimate'), 'rps')}; SLO met with confidence "
                       f"up to {_fmt(cap.get('low'), 'rps')}, broken with confidence from "
                       f"{_fmt(cap.get('high'), 'rps')}")
    return out
