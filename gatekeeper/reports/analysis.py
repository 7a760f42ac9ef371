"""What the HTML report shows, computed from the record alone.

Everything here returns plain data (numbers, short strings, lists of text segments); the
templates turn it into markup, so every piece of text from a model, a case or a plugin
goes through jinja2's autoescaping. Nothing here builds HTML.

Lists are capped (worst regressions, findings, failures) so a report for a suite of
thousands of cases stays a few megabytes; the caps are stated in the report.

Whatever walks every score (histograms, regressions, the case table, findings, failures)
computes with numpy over the run's score columns (:func:`gatekeeper.engine.record.score_columns`)
and reads whole rows back (:func:`gatekeeper.engine.record.rows_at`) only for the few cases
it shows: a million cases cost a few arrays, not a million dicts. The numbers are the ones
the row-by-row code gave (epoch means summed left to right as ``sum()`` does; ties broken by
case key), which tests/test_large_reports.py checks against a row-by-row reference.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gatekeeper.engine.record import case_count, rows_at, score_columns
from gatekeeper.engine.score_columns import ABSENT, ERROR, ScoreColumns

WORST_PER_METRIC = 5
FINDINGS_PER_MODEL = 30
FAILURES_PER_METRIC = 10
MAX_TEXT = 4000
"""Characters of an output, question or reference shown; the record holds the rest."""
MAX_CONTEXT = 6000
HISTOGRAM_BINS = 10
VERDICT_LABEL_WIDTH = 130
"""Pixels right of a forest plot for its verdict labels: bold "INCONCLUSIVE" needs about 100 (12 px DejaVu Sans)."""
MAX_CASE_ROWS = 20_000
"""Rows of the all-cases table; about 200 bytes each."""
MAX_CASE_CELLS = 60_000
"""Cells (cases × metrics × models) of the HTML case table: keeps report.html under 5 MB at 10^6 cases."""

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def clip(text: Any, limit: int = MAX_TEXT) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- text segments


@dataclass
class Segment:
    """A run of text and how to show it: ``equal``, ``del``, ``ins`` or ``mark``."""

    text: str
    op: str = "equal"
    note: str = ""


def word_diff(before: str, after: str) -> tuple[list[Segment], list[Segment]]:
    """Both sides of a word-level diff: ``before`` with deletions, ``after`` with insertions."""
    a, b = _TOKEN.findall(before), _TOKEN.findall(after)
    left: list[Segment] = []
    right: list[Segment] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            left.append(Segment("".join(a[i1:i2])))
            right.append(Segment("".join(b[j1:j2])))
            continue
        if i2 > i1:
            left.append(Segment("".join(a[i1:i2]), "del"))
        if j2 > j1:
            right.append(Segment("".join(b[j1:j2]), "ins"))
    return _merge(left), _merge(right)


def _merge(segments: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for seg in segments:
        if out and out[-1].op == seg.op and out[-1].note == seg.note:
            out[-1].text += seg.text
        else:
            out.append(seg)
    return out


def mark_spans(text: str, spans: Sequence[Mapping[str, Any]]) -> list[Segment]:
    """``text`` cut into plain and flagged segments at the detector's ``[start, end)`` spans.

    Overlapping or out-of-range spans are clipped, never trusted to be well formed.
    """
    out: list[Segment] = []
    pos = 0
    for span in sorted(spans, key=lambda s: (int(s.get("start", 0)), int(s.get("end", 0)))):
        start = max(pos, min(len(text), int(span.get("start", 0))))
        end = max(start, min(len(text), int(span.get("end", 0))))
        if end == start:
            continue
        if start > pos:
            out.append(Segment(text[pos:start]))
        note = str(span.get("reason") or span.get("kind") or "unsupported")
        out.append(Segment(text[start:end], "mark", note))
        pos = end
    if pos < len(text):
        out.append(Segment(text[pos:]))
    return out


# --------------------------------------------------------------------------- forest plots


@dataclass
class ForestRow:
    label: str
    verdict: str
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    bounds: list[float]
    y: float = 0.0
    x: float | None = None
    x_low: float | None = None
    x_high: float | None = None
    x_bounds: list[float] = field(default_factory=list)
    critical: bool = False
    indent: bool = False


@dataclass
class Forest:
    rows: list[ForestRow]
    width: int
    height: int
    left: int
    plot_width: int
    x_zero: float
    ticks: list[tuple[float, str]]


def decision_bounds(hypothesis: str | None, margin: float | None, direction: str | None) -> list[float]:
    """Where the policy's hypothesis draws its line(s) on the Δ axis."""
    m = float(margin or 0.0)
    sign = 1.0 if direction != "lower" else -1.0
    if hypothesis == "non_inferiority":
        return [-sign * m]
    if hypothesis == "superiority":
        return [sign * m]
    if hypothesis == "equivalence":
        return [-m, m]
    return []


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    span = hi - lo or 1.0
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    value = first
    while value <= hi + 1e-12:
        ticks.append(round(value, 10))
        value += step
    return ticks


def forest(rows: Sequence[Mapping[str, Any]], *, label_width: int = 230, plot_width: int = 520,
           row_height: int = 28, slices: bool = False) -> Forest | None:
    """Geometry of a forest plot of metric rows: Δ with its interval and the policy's bound(s)."""
    items: list[ForestRow] = []
    for m in rows:
        label = m["name"] if not m.get("slice") else (
            f"{m['slice']['field']}={m['slice']['value']}" if slices else f"{m['name']} [{m['slice']['value']}]")
        items.append(ForestRow(
            label=label, verdict=m["verdict"], delta=m.get("delta"), ci_low=m.get("ci_low"),
            ci_high=m.get("ci_high"), critical=bool(m.get("critical")), indent=bool(m.get("slice")),
            bounds=decision_bounds(m.get("hypothesis"), m.get("margin"), m.get("direction")),
        ))
    values = [0.0] + [v for r in items for v in (r.delta, r.ci_low, r.ci_high, *r.bounds) if v is not None]
    if not items:
        return None
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.08, 0.01)
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> float:
        return round(label_width + (v - lo) / (hi - lo) * plot_width, 2)

    top = 12
    for i, r in enumerate(items):
        r.y = top + i * row_height + row_height / 2
        r.x = x(r.delta) if r.delta is not None else None
        r.x_low = x(r.ci_low) if r.ci_low is not None else None
        r.x_high = x(r.ci_high) if r.ci_high is not None else None
        r.x_bounds = [x(b) for b in r.bounds]
    ticks = [(x(t), f"{t:+.2f}" if t else "0") for t in nice_ticks(lo, hi)]
    height = top + len(items) * row_height + 34
    # Room right of the plot for the longest verdict label ("INCONCLUSIVE", bold, ~100 px).
    return Forest(items, label_width + plot_width + VERDICT_LABEL_WIDTH, height, label_width, plot_width, x(0.0),
                  ticks)


def scale_groups(rows: Sequence[Mapping[str, Any]], ratio: float = 20.0) -> list[list[Mapping[str, Any]]]:
    """Metric rows split so that one plot never mixes scales (a latency Δ in ms would flatten
    a rate's Δ): rows whose largest magnitude is within ``ratio`` of each other share a plot."""
    def magnitude(m: Mapping[str, Any]) -> float:
        bounds = decision_bounds(m.get("hypothesis"), m.get("margin"), m.get("direction"))
        values = [abs(v) for v in (m.get("delta"), m.get("ci_low"), m.get("ci_high"), *bounds) if v is not None]
        return max(values, default=0.0)

    groups: list[list[Mapping[str, Any]]] = []
    scales: list[float] = []
    for m in rows:
        size = magnitude(m)
        for group, scale in zip(groups, scales, strict=True):
            if size == 0.0 or scale == 0.0 or max(size, scale) / min(size, scale) <= ratio:
                group.append(m)
                break
        else:
            groups.append([m])
            scales.append(size)
    return groups


# --------------------------------------------------------------------------- distributions


@dataclass
class Histogram:
    metric: str
    models: list[str]
    bars: list[dict[str, Any]]
    ticks: list[tuple[float, str]]
    max_count: int
    means: dict[str, float | None]
    counts: dict[str, int]
    width: int = 360
    height: int = 150


def _bins(values: np.ndarray) -> tuple[float, float, int]:
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0.0 and hi <= 1.0:
        if bool(np.all((values == 0.0) | (values == 1.0))):
            return 0.0, 1.0, 2
        return 0.0, 1.0, HISTOGRAM_BINS
    if hi == lo:
        hi = lo + 1.0
    return lo, hi, HISTOGRAM_BINS


def histograms(record: Mapping[str, Any], metrics: Iterable[str]) -> list[Histogram]:
    """Per metric, the distribution of each model's scores in shared bins (for small SVGs)."""
    cols = score_columns(record)
    out: list[Histogram] = []
    for metric in metrics:
        col = cols.metrics.get(metric)
        if col is None:
            continue
        usable = (col.status != ABSENT) & (col.status != ERROR) & ~np.isnan(col.value)
        per_model = {label: col.value[usable & (cols.model == index)] for index, label in enumerate(cols.models)}
        per_model = {label: values for label, values in per_model.items() if len(values)}
        if not per_model:
            continue
        models = _ordered_models(per_model)
        lo, hi, nbins = _bins(np.concatenate(list(per_model.values())))
        width = (hi - lo) / nbins
        counts = {m: np.bincount(np.clip(((per_model[m] - lo) / width).astype(np.int64), 0, nbins - 1),
                                 minlength=nbins).tolist() for m in models}
        max_count = max(max(c) for c in counts.values()) or 1
        means = {m: sum(v.tolist()) / len(v) for m, v in per_model.items()}  # sum(): the row code's rounding
        out.append(_histogram_geometry(metric, models, counts, lo, hi, nbins, max_count, means,
                                       {m: len(per_model[m]) for m in models}))
    return out


def _ordered_models(per_model: Mapping[str, Any]) -> list[str]:
    preferred = [m for m in ("baseline", "candidate") if m in per_model]
    return preferred + sorted(m for m in per_model if m not in preferred)


def _histogram_geometry(metric: str, models: list[str], counts: dict[str, list[int]], lo: float, hi: float,
                        nbins: int, max_count: int, means: dict[str, float | None],
                        sizes: dict[str, int]) -> Histogram:
    left, plot_w, plot_h, top = 34, 310, 100, 8
    slot = plot_w / nbins
    bar_w = (slot - 4) / len(models)
    bars = []
    for b in range(nbins):
        for k, m in enumerate(models):
            h = counts[m][b] / max_count * plot_h
            bars.append({
                "model": m, "index": k, "count": counts[m][b], "x": round(left + b * slot + 2 + k * bar_w, 2),
                "y": round(top + plot_h - h, 2), "w": round(bar_w, 2), "h": round(h, 2),
                "range": f"{lo + b * (hi - lo) / nbins:.2f}–{lo + (b + 1) * (hi - lo) / nbins:.2f}",
            })
    if nbins == 2:
        ticks = [(left + slot / 2, "0"), (left + slot * 1.5, "1")]
    else:
        ticks = [(round(left + i * plot_w / 5, 2), f"{lo + i * (hi - lo) / 5:.2g}") for i in range(6)]
    return Histogram(metric, models, bars, ticks, max_count, means, sizes)


# --------------------------------------------------------------------------- which rule decided

_TESTS = {"non_inferiority": "non-inferiority test", "superiority": "superiority test",
          "equivalence": "equivalence test"}


def deciding_rule(m: Mapping[str, Any]) -> str:
    """One sentence saying which of the policy's rules decided a metric's verdict.

    A metric can have a margin test and an absolute guardrail, and a verdict can be turned
    INCONCLUSIVE by too few cases or by the familywise (Bonferroni) level; the reason lists
    each, which reads as a contradiction when the test passes and the guardrail fails.
    """
    from types import SimpleNamespace

    from gatekeeper.gate import stats

    verdict = str(m.get("verdict"))
    if verdict in ("NODATA", "ERROR"):
        return f"No rule could decide: {verdict} (no paired scores to compare)." if verdict == "NODATA" else \
            "No rule could decide: scoring errors (see the reason)."
    test = _TESTS.get(str(m.get("hypothesis")))
    margin_v = None
    if test and m.get("ci_low") is not None and m.get("ci_high") is not None and m.get("margin") is not None:
        try:
            margin_v = stats.verdict(SimpleNamespace(ci_low=float(m["ci_low"]), ci_high=float(m["ci_high"])),  # type: ignore[arg-type]
                                     hypothesis=m["hypothesis"], margin=float(m["margin"]),
                                     direction=m.get("direction") or "higher")
        except (TypeError, ValueError):
            margin_v = None
    guard = (m.get("guardrail") or {}).get("verdict")
    if margin_v and guard:
        if margin_v == guard == verdict:
            return f"Both rules agree: the {test} and the guardrail each say {verdict}."
        if guard == verdict != margin_v:
            return f"The guardrail decided: the {test} says {margin_v}, but the guardrail says {guard}, so {verdict}."
        if margin_v == verdict != guard:
            return f"The {test} decided: it says {margin_v}, the guardrail {guard}, so {verdict}."
    if margin_v and margin_v != verdict:
        n, min_n = m.get("n"), m.get("min_n")
        if n is not None and min_n is not None and n < min_n:
            return (f"Too few cases decided: the {test} alone says {margin_v}, but n = {n} is below "
                    f"min_n {min_n}, so {verdict}.")
        return (f"The familywise level decided: the {test} alone says {margin_v}, which does not hold "
                f"after the Bonferroni correction over slices, so {verdict}.")
    if margin_v:
        return f"The {test} decided: {verdict}."
    if guard:
        return f"The guardrail decided: {verdict}."
    return f"{verdict} (see the reason)."


# --------------------------------------------------------------------------- cases


def _question(case: Mapping[str, Any]) -> str:
    """The last user message, with the case's context (shown on its own) folded out of it."""
    users = [m["content"] for m in case.get("messages") or [] if m.get("role") == "user"]
    text = str(users[-1]) if users else ""
    context = case.get("context")
    if context and len(context) > 80 and context in text:
        text = text.replace(context, "[… the context, shown below …]")
    return text


def _outputs(record: Mapping[str, Any], cols: ScoreColumns,
             cases: Iterable[int]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """(case key, model) → the first row of that case and model (in record order), for the
    case indices ``cases`` only (read back by position)."""
    wanted = np.fromiter(set(cases), dtype=np.int64)
    where: dict[tuple[str, str], int] = {}
    if len(wanted):
        for i in np.flatnonzero(np.isin(cols.case, wanted)).tolist():
            where.setdefault((cols.keys[cols.case[i]], cols.models[cols.model[i]]), i)
    full = rows_at(record, where.values())
    return {pair: full[i] for pair, i in where.items()}


def _metric_specs(record: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    pccp = record.get("policy", {}).get("pccp") or {}
    return {m["name"]: m for m in pccp.get("performance_evaluation", {}).get("metrics", [])}


class _Means:
    """One metric's per-case means for each model over the columns (epochs averaged), as
    full-length arrays over the case indices: NaN where a model has no usable score.

    A mean is ``sum(values) / len(values)`` with the epochs added in row order from 0, as
    the row-by-row code (and ``sum()``) added them, so the numbers shown are the same bits.
    """

    def __init__(self, cols: ScoreColumns, metric: str, measure: str = "value",
                 rows: np.ndarray | None = None) -> None:
        self.by_model: dict[str, np.ndarray] = {}
        col = cols.metrics.get(metric)
        if col is None:
            return
        usable = (col.status != ABSENT) & (col.status != ERROR) & ~np.isnan(col.value)
        if measure == "passed":
            usable &= col.passed >= 0
        if rows is not None:
            usable &= rows
        values = col.passed.astype(np.float64) if measure == "passed" else col.value
        n_cases = len(cols.keys)
        for index, label in enumerate(cols.models):
            take = np.flatnonzero(usable & (cols.model == index))
            if len(take):
                self.by_model[label] = _epoch_sums(cols.case[take], values[take], n_cases)

    def get(self, label: str) -> np.ndarray | None:
        return self.by_model.get(label)


def _epoch_sums(cases: np.ndarray, values: np.ndarray, n_cases: int) -> np.ndarray:
    """Per case index, the mean of its ``values`` (NaN where it has none). ``np.bincount``
    adds each case's values one after another in row order from 0.0, as ``sum()`` does, so
    the means are the row-by-row code's to the last bit (tests/test_large_reports.py checks)."""
    counts = np.bincount(cases, minlength=n_cases)
    sums = np.bincount(cases, weights=values, minlength=n_cases)
    out = np.full(n_cases, np.nan)
    has = counts > 0
    out[has] = sums[has] / counts[has]
    return out


def case_suites(index: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """The suite of each case key: from the index's ``fields()`` when it has them (a large
    format-2 index keeps those in memory and reads whole entries by seeking), else the entries."""
    getter = getattr(index, "fields", None)  # engine.record.CaseIndex
    fields = getter() if callable(getter) else None
    if fields is not None:
        return [fields[k][0] for k in keys]
    return [index[k]["suite"] for k in keys]


def _suite_rows(record: Mapping[str, Any], cols: ScoreColumns, suite: str | None) -> np.ndarray | None:
    if suite is None:
        return None
    in_suite = np.array([s == suite for s in case_suites(record.get("case_index") or {}, cols.keys)], dtype=bool)
    return in_suite[cols.case] if len(cols) else np.zeros(0, dtype=bool)


def worst_regressions(record: Mapping[str, Any], limit: int = WORST_PER_METRIC) -> list[dict[str, Any]]:
    """Per policy metric, the cases where the candidate lost most against the baseline."""
    index = record.get("case_index") or {}
    cols = score_columns(record)
    specs = _metric_specs(record)
    out: list[dict[str, Any]] = []
    picked: list[tuple[dict[str, Any], list[tuple[int, float, float]]]] = []
    for m in record.get("metrics") or []:
        if m.get("slice"):
            continue
        spec = specs.get(m["name"], {})
        means = _Means(cols, m["metric"], spec.get("measure", "value"),
                       _suite_rows(record, cols, spec.get("suite")))
        base, cand = means.get("baseline"), means.get("candidate")
        sign = -1.0 if m.get("direction") == "lower" else 1.0
        chosen: list[tuple[int, float, float]] = []
        count = paired = 0
        if base is not None and cand is not None:
            both = np.flatnonzero(~np.isnan(base) & ~np.isnan(cand))
            paired = len(both)
            loss = sign * (cand[both] - base[both])
            lost = both[loss < 0]
            loss = loss[loss < 0]
            count = len(lost)
            if count > limit:  # the `limit` smallest losses, every tie at the cut kept
                cut = np.partition(loss, limit - 1)[limit - 1]
                keep = loss <= cut
                lost, loss = lost[keep], loss[keep]
            order = np.lexsort((cols.key_rank()[lost], loss))[:limit]  # by loss, then case key
            chosen = [(c, float(base[c]), float(cand[c])) for c in lost[order].tolist()]
        group = {"metric": m["name"], "direction": m.get("direction"), "count": count,
                 "paired": paired, "cases": [], "_m": m["metric"]}
        picked.append((group, chosen))
        out.append(group)
    outputs = _outputs(record, cols, (c for _, chosen in picked for c, _, _ in chosen))
    for group, chosen in picked:
        metric = group.pop("_m")
        group["cases"] = [_regression(index[cols.keys[c]], cols.keys[c], b, v, outputs, metric)
                          for c, b, v in chosen]
    return out


def _regression(case: Mapping[str, Any], key: str, base: float, cand: float,
                outputs: Mapping[tuple[str, str], Mapping[str, Any]], metric: str) -> dict[str, Any]:
    b_row, c_row = outputs.get((key, "baseline"), {}), outputs.get((key, "candidate"), {})
    b_text, c_text = clip(b_row.get("output")), clip(c_row.get("output"))
    left, right = word_diff(b_text, c_text)
    return {
        "id": case["id"], "suite": case["suite"], "key": key, "baseline": base, "candidate": cand,
        "question": clip(_question(case)), "expected": clip(case.get("expected")),
        "context": clip(case.get("context"), MAX_CONTEXT), "slices": case.get("slices") or {},
        "baseline_diff": left, "candidate_diff": right,
        "baseline_reason": clip((b_row.get("scores", {}).get(metric) or {}).get("reason"), 500),
        "candidate_reason": clip((c_row.get("scores", {}).get(metric) or {}).get("reason"), 500),
    }


def case_table(record: Mapping[str, Any], limit: int = MAX_CASE_ROWS) -> dict[str, Any]:
    """Every case with each model's score per metric (epochs averaged), worse cells flagged.

    The columns are the policy's metrics for a check (with their ``measure``), every scored
    metric for a run. Rows keep the suite order; at most ``limit`` are kept, and at most
    :data:`MAX_CASE_CELLS` cells: when cases are left out, those where the candidate is worse
    come first, and ``omitted`` / ``full_file`` say how many and where all of them are.
    """
    index = record.get("case_index") or {}
    cols = score_columns(record)
    specs = _metric_specs(record)
    if record.get("kind") == "check":
        columns = [(m["name"], m["metric"], specs.get(m["name"], {}).get("measure", "value"),
                    -1.0 if m.get("direction") == "lower" else 1.0)
                   for m in record.get("metrics") or [] if not m.get("slice")]
    else:
        names = sorted({metric for model in (record.get("summary") or {}).values() for metric in model})
        columns = [(name, name, "value", 1.0) for name in names]
    models = _ordered_models(dict.fromkeys(cols.models))
    n_cases = len(cols.keys)
    values: dict[str, list[np.ndarray]] = {}  # column name -> per model, the mean per case index (NaN: none)
    worse = np.zeros(n_cases, dtype=bool)
    worse_by: dict[str, np.ndarray] = {}
    for name, metric, measure, sign in columns:
        means = _Means(cols, metric, measure)
        values[name] = [_or_nan(means.get(label), n_cases) for label in models]
        flagged = np.zeros(n_cases, dtype=bool)
        if len(models) == 2:
            with np.errstate(invalid="ignore"):
                flagged = sign * (values[name][1] - values[name][0]) < 0  # NaN (a missing value) is never worse
        worse_by[name] = flagged
        worse |= flagged
    limit = max(1, min(limit, MAX_CASE_CELLS // max(1, len(columns) * max(1, len(models)))))
    position = {key: i for i, key in enumerate(cols.keys)}
    total = len(index)
    if total <= limit:
        chosen: Iterable[str] = index.keys()
    else:  # the worse cases first (suite order within each group), then the rest
        keys = list(index.keys())
        is_worse = [(i := position.get(k)) is not None and bool(worse[i]) for k in keys]
        worse_keys = [k for k, w in zip(keys, is_worse, strict=True) if w][:limit]
        chosen = worse_keys + [k for k, w in zip(keys, is_worse, strict=True) if not w][:limit - len(worse_keys)]
    chosen = list(chosen)
    at = np.array([position.get(k, -1) for k in chosen], dtype=np.int64)
    known, at = at >= 0, np.maximum(at, 0)
    gathered = [([np.where(known, v[at], np.nan).tolist() for v in values[name]], (known & worse_by[name][at]).tolist())
                for name, _, _, _ in columns]  # per column: each model's means and the worse flags of the rows shown
    out_rows: list[dict[str, Any]] = []
    for r, key in enumerate(chosen):
        case = index[key]
        slices = " ".join(f"{k}={v}" for k, v in sorted((case.get("slices") or {}).items()))
        cells = [{"values": [None if m[r] != m[r] else m[r] for m in means], "worse": flags[r]}  # NaN: no value
                 for means, flags in gathered]
        out_rows.append({"id": case["id"], "suite": case["suite"], "slices": slices, "cells": cells})
    full = (record.get("case_files") or {}).get("cases") or {}
    return {"models": models, "columns": [c[0] for c in columns], "rows": out_rows, "total": total,
            "limit": limit, "omitted": total - len(out_rows), "worse_first": total > limit,
            "full_file": full.get("path") or ("decision.json" if record.get("kind") == "check" else "results.json"),
            "rows_in_file": case_count(record)}


def _or_nan(values: np.ndarray | None, n: int) -> np.ndarray:
    return values if values is not None else np.full(n, np.nan)


def detector_metrics(record: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for suite in record.get("suites") or []:
        for sc in suite.get("scorers") or []:
            if sc.get("kind") == "detector" and sc["metric"] not in names:
                names.append(sc["metric"])
    return names


def findings(record: Mapping[str, Any], limit: int = FINDINGS_PER_MODEL) -> list[dict[str, Any]]:
    """Outputs a hallucination detector flagged, unsupported spans marked; candidate first."""
    index = record.get("case_index") or {}
    detectors = set(detector_metrics(record))
    groups: dict[str, dict[str, Any]] = {}
    if not detectors:
        return []
    cols = score_columns(record)  # count over the columns; read only the rows shown
    flagged = {metric: col.value >= 0.5 for metric, col in cols.metrics.items() if metric in detectors}
    order = {metric: k for k, metric in enumerate(cols.metrics)}
    shown: list[tuple[int, str]] = []
    for m_index, label in enumerate(cols.models):
        total, first = _hits(flagged, cols.model == m_index, order, limit)
        if total:
            groups[label] = {"model": label, "total": total, "entries": []}
            shown += first
    shown.sort(key=lambda hit: (hit[0], order[hit[1]]))
    full = rows_at(record, (i for i, _ in shown))
    for i, metric in shown:
        row = full[i]
        score = row["scores"][metric]
        group = groups[row["model"]]
        text = clip(row.get("output"))
        case = index.get(row["key"], {})
        group["entries"].append({
            "id": case.get("id", row["key"]), "suite": case.get("suite", ""), "metric": metric,
            "epoch": row.get("epoch", 0), "segments": mark_spans(text, score.get("spans") or []),
            "reason": clip(score.get("reason"), 500), "question": clip(_question(case), 1500),
            "context": clip(case.get("context"), MAX_CONTEXT),
            "support": (score.get("details") or {}).get("support"),
        })
    return [groups[m] for m in sorted(groups, key=lambda m: (m != "candidate", m != "baseline", m))]


def _hits(flagged: Mapping[str, np.ndarray], rows: np.ndarray, order: Mapping[str, int],
          limit: int) -> tuple[int, list[tuple[int, str]]]:
    """How many scores in ``rows`` are flagged, and the first ``limit`` as (row, metric) in the
    order a row-by-row walk meets them (row, then the columns' metric order)."""
    total = 0
    hits: list[tuple[int, str]] = []
    for metric, mask in flagged.items():
        found = np.flatnonzero(mask & rows)
        total += len(found)
        hits += [(i, metric) for i in found[:limit].tolist()]
    hits.sort(key=lambda hit: (hit[0], order[hit[1]]))
    return total, hits[:limit]


def failures(record: Mapping[str, Any], limit: int = FAILURES_PER_METRIC) -> list[dict[str, Any]]:
    """For a run: per model and metric, the first failing outputs (for ``gatekeeper run`` reports)."""
    index = record.get("case_index") or {}
    cols = score_columns(record)  # count over the columns; read only the rows shown
    failed = {metric: (col.passed == 0) | (col.status == ERROR) for metric, col in cols.metrics.items()}
    order = {metric: k for k, metric in enumerate(cols.metrics)}
    slots: list[tuple[tuple[int, int], dict[str, Any], list[int]]] = []
    for m_index, label in enumerate(cols.models):
        mine = cols.model == m_index
        for metric, rows in failed.items():
            hits = np.flatnonzero(rows & mine)
            if len(hits):
                slot: dict[str, Any] = {"model": label, "metric": metric, "total": len(hits), "entries": []}
                slots.append(((int(hits[0]), order[metric]), slot, hits[:limit].tolist()))
    slots.sort(key=lambda s: s[0])  # in the order the row-by-row walk met them first
    out = {(slot["model"], slot["metric"]): slot for _, slot, _ in slots}
    shown = sorted((i, slot["metric"]) for _, slot, first in slots for i in first)
    full = rows_at(record, (i for i, _ in shown))
    for i, metric in shown:
        row = full[i]
        score = row["scores"][metric]
        slot = out[(row["model"], metric)]
        case = index.get(row["key"], {})
        slot["entries"].append({
            "id": case.get("id", row["key"]), "value": score.get("value"), "status": score.get("status"),
            "reason": clip(score.get("reason"), 500), "output": clip(row.get("output")),
            "question": clip(_question(case), 1500), "expected": clip(case.get("expected")),
        })
    return list(out.values())


# --------------------------------------------------------------------------- the policy


def traceability(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each allowed modification → its evaluation methods → their verdicts in this run."""
    pccp = record.get("policy", {}).get("pccp") or {}
    overall = {m["name"]: m for m in record.get("metrics") or [] if not m.get("slice")}
    overall.update({r["name"]: r for r in (record.get("slo") or {}).get("rows", [])})  # SLO guardrails trace too
    slices: dict[str, list[Mapping[str, Any]]] = {}
    for m in record.get("metrics") or []:
        if m.get("slice"):
            slices.setdefault(m["name"], []).append(m)
    specs = _metric_specs(record)
    mods = {m["id"]: m for m in pccp.get("modifications", [])}
    declared = (record.get("scope") or {}).get("modification")
    out = []
    for link in pccp.get("traceability", []):
        mod = mods.get(link["modification"], {"id": link["modification"]})
        evaluations = []
        for name in link["evaluations"]:
            row = overall.get(name)
            sl = slices.get(name, [])
            evaluations.append({
                "name": name, "spec": specs.get(name, {}), "verdict": row["verdict"] if row else "NOT RUN",
                "delta": row.get("delta") if row else None, "ci_low": row.get("ci_low") if row else None,
                "ci_high": row.get("ci_high") if row else None,
                "slices": {v: sum(1 for s in sl if s["verdict"] == v) for v in ("PASS", "FAIL", "INCONCLUSIVE",
                                                                                "NODATA", "ERROR")},
            })
        out.append({"modification": mod, "rationale": link.get("rationale", ""), "evaluations": evaluations,
                    "is_this_change": declared == mod.get("id")})
    return out


def sequestration(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Suite name → its sequestration rule (pinned hash, reuse limit) and whether this run kept it."""
    dm = (record.get("policy", {}).get("pccp") or {}).get("data_management") or {}
    default_limit = dm.get("max_reuse")
    out: dict[str, dict[str, Any]] = {}
    for ts in dm.get("sequestered_test_sets") or []:
        used = (record.get("test_sets") or {}).get(ts["suite"], {})
        limit = ts.get("max_reuse") or default_limit
        pinned = ts.get("sha256")
        hashes = [used.get("sha256"), *(used.get("datasets") or {}).values()]
        out[ts["suite"]] = {
            "max_reuse": limit, "pinned": pinned,
            "pin_ok": None if not pinned else pinned in hashes,
            "uses": used.get("previous_uses"),
        }
    return out
