"""The ``slo`` section applied to a load run: one verdict row per guardrail, and the record.

:func:`evaluate_slo` reads the per-request measurements of the load suites (candidate and
baseline, interleaved in the same window), applies every guardrail of ``policy.slo`` with the
statistics of :mod:`gatekeeper.gate.slo`, and returns what goes into ``decision.json`` under
``slo``: the guardrail rows (which :func:`gatekeeper.gate.decision.decide` counts like metric
rows), the candidate-vs-baseline comparisons at p50/p95/p99, rates, the capacity search of
each model, and the latency CDFs and load curves the reports draw. The record holds summaries
only, never the requests themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gatekeeper.gate import slo
from gatekeeper.gate.slo_policy import QUANTILE_MEASURES, RATE_MEASURES, SloGuardrail, SloSection

SLO_SCHEMA = "gatekeeper.slo/1"
COMPARED_QUANTILES = (0.5, 0.95, 0.99)
CDF_POINTS = 101
"""Points per model and measure kept for the CDF plots (quantiles on an even grid plus the tail)."""
MODELS = ("candidate", "baseline")


@dataclass
class Request:
    """One measured request, normalised from the load driver's record."""

    model: str
    suite: str
    status: str
    """``ok``, ``429``, ``5xx``, ``timeout`` or ``error``."""
    latency_ms: float | None
    ttft_ms: float | None
    output_tokens: int = 0
    step: int | None = None
    offered_rps: float | None = None
    started_s: float = 0.0
    ramp: bool = False


@dataclass
class LoadRun:
    """The requests of the load suites, and each suite's steps (rate and duration)."""

    requests: list[Request] = field(default_factory=list)
    steps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """suite -> [{"step": i, "offered_rps": r, "duration_s": d}, ...]"""
    meta: dict[str, Any] = field(default_factory=dict)
    """What the driver reports about itself (achieved rates, caps hit, overhead); copied to the record."""


CENSORED = ("timeout", "cancelled")
"""Statuses of requests that never completed: slower than any that did."""


def _sample(requests: Iterable[Request], model: str, measure: str, *, censored: bool = False) -> np.ndarray:
    """Latency or TTFT (ms) of the model's successful requests: a fast 5xx says nothing about
    how fast answers are (it counts in the error rate). With ``censored``, a request that timed
    out or was cancelled counts as ``+inf`` (at least that slow), so the order-statistic bounds
    of a candidate that times out cannot look fast."""
    key = "latency_ms" if measure == "latency" else "ttft_ms"
    vals: list[float] = []
    for r in requests:
        if r.model != model:
            continue
        value = getattr(r, key)
        if r.status == "ok" and value is not None and math.isfinite(value):
            vals.append(float(value))
        elif censored and r.status in CENSORED and (measure == "latency" or r.ttft_ms is None):
            vals.append(math.inf)
    return np.asarray(vals, dtype=float)


def from_records(records: Sequence[Mapping[str, Any]]) -> LoadRun:
    """Our view of the load driver's runs (``LoadRun.to_record()`` of each load suite,
    docs/load.md): every measurement, and each suite's steps. A suite whose process is ``ramp``
    (or that steps through several concurrencies) feeds the capacity search."""
    run = LoadRun()
    for rec in records:
        suite = str(rec.get("suite"))
        steps = list(rec.get("steps") or [])
        ramp = rec.get("process") == "ramp" or len(steps) > 1
        run.steps[suite] = [{"step": s.get("index", i), "offered_rps": s.get("offered_rate"),
                             "concurrency": s.get("concurrency"), "duration_s": s.get("duration_s")}
                            for i, s in enumerate(steps)]
        for m in rec.get("measurements") or []:
            run.requests.append(Request(
                model=str(m.get("model")), suite=suite, status=str(m.get("status")),
                latency_ms=m.get("latency_ms"), ttft_ms=m.get("ttft_ms"),
                output_tokens=int(m.get("output_tokens") or 0),
                step=m.get("step"), offered_rps=m.get("offered_rate"), started_s=float(m.get("t_sent") or 0.0),
                ramp=ramp,
            ))
        run.meta[suite] = {k: v for k, v in rec.items() if k != "measurements"}
    return run


def _counts(requests: Iterable[Request], model: str) -> tuple[int, int, int]:
    """(requests, failed, 429s) of a model."""
    rs = [r for r in requests if r.model == model]
    return len(rs), sum(r.status != "ok" for r in rs), sum(r.status == "429" for r in rs)


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "none"
    if math.isinf(value):
        return "never (timed out)"
    text = f"{value:.4g}" if unit != "ms" else f"{value:.0f}"
    return f"{text} {unit}".rstrip()


def _finite_or_none(value: float | None) -> float | None:
    """For the record (JSON has no infinity): an unbounded or never-completed value is ``None``;
    the reason says which."""
    return value if value is not None and math.isfinite(value) else None


def _level(alpha: float) -> str:
    return f"{100 * (1 - 2 * alpha):g}%"


def _row(g: SloGuardrail, section: SloSection) -> dict[str, Any]:
    return {
        "name": g.name, "metric": g.measure, "measure": g.measure, "quantile": g.quantile,
        "clause": f"slo.guardrails[{g.name}]", "limit": g.label(), "max": g.max, "min": g.min,
        "max_increase_pct": g.max_increase_pct, "slice": None, "critical": g.critical,
        "alpha": section.alpha_of(g), "power_target": section.power_of(g), "hypothesis": "slo",
        "direction": None, "margin": None, "comparison": None, "delta": None,
        "n": 0, "n_baseline": 0, "candidate": None, "baseline": None, "ci_low": None, "ci_high": None,
        "verdict": "NODATA", "reason": "", "requests_needed": None,
    }


def _scoped(run: LoadRun, section: SloSection, g: SloGuardrail, *, ramp: bool | None) -> list[Request]:
    suites = {g.suite} if g.suite else set(section.suites)
    return [r for r in run.requests if (not suites or r.suite in suites) and (ramp is None or r.ramp == ramp)]


def _quantile_row(g: SloGuardrail, section: SloSection, requests: Sequence[Request]) -> dict[str, Any]:
    row = _row(g, section)
    alpha, power, p = row["alpha"], row["power_target"], g.quantile or 0.95
    cand = _sample(requests, "candidate", g.measure, censored=not g.relative)
    base = _sample(requests, "baseline", g.measure, censored=not g.relative)
    row.update(n=int(cand.size), n_baseline=int(base.size))
    what = f"{g.measure} p{100 * p:g}"
    if cand.size == 0:
        row["reason"] = f"{g.name}: no successful candidate request measured {g.measure}"
        return row
    q = slo.quantile_ci(cand, p, alpha=alpha)
    row.update(candidate=_finite_or_none(q.value), ci_low=_finite_or_none(q.ci_low),
               ci_high=_finite_or_none(q.ci_high), method="order_statistic", censored=int(np.isinf(cand).sum()))
    if base.size:
        row["baseline"] = _finite_or_none(slo.quantile_ci(base, p, alpha=alpha).value)
    if g.relative:
        return _relative_row(row, g, cand, base, p, what)
    limit = float(g.max)  # type: ignore[arg-type]
    verdict = slo.limit_verdict(q.ci_low, q.ci_high, max_value=limit)
    numbers = (f"candidate {what} {_fmt(q.value, 'ms')}, {_level(alpha)} CI [{_fmt(q.ci_low, 'ms')}, "
               f"{_fmt(q.ci_high, 'ms')}] (order statistics, n = {q.n} requests)")
    why = {"PASS": f"the upper bound is within {limit:g} ms",
           "FAIL": f"the lower bound is above {limit:g} ms: the SLO is breached",
           "INCONCLUSIVE": (f"{q.n} requests cannot bound the p{100 * p:g} from above" if q.ci_high is None
                            else "the upper bound falls among requests that never completed"
                            if math.isinf(q.ci_high) else f"the interval straddles {limit:g} ms")}[verdict]
    if verdict == "INCONCLUSIVE":
        plan = slo.quantile_requests_needed(cand, p, limit, alpha=alpha, power=power)
        row["requests_needed"] = plan["n_needed"]
        row["power"] = plan
        goal = "show it is met" if plan["side"] == "pass" else "show it is breached"
        why += (f"; about {plan['n_needed']} candidate requests needed to {goal} with power {power:g} "
                f"({plan['share_within']:.1%} of the requests so far are within the limit)"
                if plan["n_needed"] else "; the observed quantile sits at the limit: no number of requests decides it")
    row["verdict"] = verdict
    row["reason"] = f"{g.name} ({g.label()}): {numbers}; {why} → {verdict}"
    return row


def _relative_row(row: dict[str, Any], g: SloGuardrail, cand: np.ndarray, base: np.ndarray, p: float,
                  what: str) -> dict[str, Any]:
    alpha, power = row["alpha"], row["power_target"]
    if base.size < 2 or cand.size < 2:
        row["reason"] = f"{g.name}: need at least 2 successful requests per model, got {base.size} (baseline) " \
                        f"and {cand.size} (candidate)"
        return row
    comp = slo.compare_quantiles(base, cand, p, alpha=alpha)
    max_ratio = 1 + float(g.max_increase_pct) / 100  # type: ignore[arg-type]
    verdict = slo.limit_verdict(comp["ratio_low"], comp["ratio_high"], max_value=max_ratio)
    row.update(comparison=comp, delta=comp["diff"], ratio=comp["ratio"], ci_low=comp["ratio_low"],
               ci_high=comp["ratio_high"], method="bootstrap_percentile")
    numbers = (f"{what}: candidate {_fmt(comp['candidate']['value'], 'ms')} vs baseline "
               f"{_fmt(comp['baseline']['value'], 'ms')}, ratio {comp['ratio']:.3f}, {_level(alpha)} CI "
               f"[{comp['ratio_low']:.3f}, {comp['ratio_high']:.3f}] (two-sample percentile bootstrap, "
               f"n = {comp['n_candidate']} / {comp['n_baseline']} requests)")
    pct = f"{g.max_increase_pct:g} %"
    why = {"PASS": f"the upper bound is within +{pct} of the baseline",
           "FAIL": f"the lower bound is above +{pct}: the candidate is slower than the SLO allows",
           "INCONCLUSIVE": f"the interval straddles +{pct}"}[verdict]
    if verdict == "INCONCLUSIVE":
        needed = slo.relative_requests_needed(comp, max_ratio, alpha=alpha, power=power)
        row["requests_needed"] = needed
        why += (f"; about {needed} requests per model needed for power {power:g} (normal approximation of the "
                "bootstrap)" if needed else "; the observed ratio sits at the limit: no number of requests decides it")
    row["verdict"] = verdict
    row["reason"] = f"{g.name} ({g.label()}): {numbers}; {why} → {verdict}"
    return row


def _rate_row(g: SloGuardrail, section: SloSection, requests: Sequence[Request]) -> dict[str, Any]:
    row = _row(g, section)
    alpha, power, limit = row["alpha"], row["power_target"], float(g.max)  # type: ignore[arg-type]
    n, failed, too_many = _counts(requests, "candidate")
    k = failed if g.measure == "error_rate" else too_many
    nb, fb, tb = _counts(requests, "baseline")
    row.update(n=n, n_baseline=nb, baseline=((fb if g.measure == "error_rate" else tb) / nb) if nb else None)
    if n == 0:
        row["reason"] = f"{g.name}: no candidate request was measured"
        return row
    r = slo.wilson_interval(k, n, alpha=alpha)
    row.update(candidate=r.rate, ci_low=r.ci_low, ci_high=r.ci_high, method="wilson", count=k)
    verdict = slo.limit_verdict(r.ci_low, r.ci_high, max_value=limit)
    what = "failed (429, 5xx, timeout, error)" if g.measure == "error_rate" else "answered 429"
    numbers = (f"{k} of {n} candidate requests {what}: {r.rate:.2%}, {_level(alpha)} Wilson CI "
               f"[{r.ci_low:.2%}, {r.ci_high:.2%}]")
    why = {"PASS": f"the upper bound is within {limit:.2%}", "FAIL": f"the lower bound is above {limit:.2%}",
           "INCONCLUSIVE": f"the interval straddles {limit:.2%}"}[verdict]
    if verdict == "INCONCLUSIVE":
        plan = slo.rate_requests_needed(k, n, limit, alpha=alpha, power=power)
        row["requests_needed"] = plan["n_needed"]
        why += (f"; about {plan['n_needed']} candidate requests needed for power {power:g}" if plan["n_needed"]
                else "; the observed rate sits at the limit: no number of requests decides it")
    row["verdict"] = verdict
    row["reason"] = f"{g.name} ({g.label()}): {numbers}; {why} → {verdict}"
    return row


def criteria(section: SloSection) -> list[slo.Criterion]:
    """The absolute guardrails that define "sustainable" for the capacity search."""
    return [slo.Criterion(name=g.name, measure=g.measure, max_value=float(g.max), quantile=g.quantile)  # type: ignore[arg-type]
            for g in section.guardrails if g.max is not None and g.measure in (*QUANTILE_MEASURES, *RATE_MEASURES)]


def steps_of(run: LoadRun, requests: Sequence[Request], model: str) -> list[slo.Step]:
    """The model's requests grouped by (suite, step): one :class:`slo.Step` per ramp step, or one
    per steady suite."""
    groups: dict[tuple[str, int], list[Request]] = {}
    for r in requests:
        if r.model == model:
            groups.setdefault((r.suite, r.step if r.step is not None else 0), []).append(r)
    out = []
    for (suite, index), rs in sorted(groups.items()):
        declared = next((s for s in run.steps.get(suite, []) if s.get("step", 0) == index), {})
        span = max(r.started_s for r in rs) - min(r.started_s for r in rs)
        duration = float(declared.get("duration_s") or span or 1e-9)
        offered = declared.get("offered_rps") or next((r.offered_rps for r in rs if r.offered_rps), None)
        if offered is None:  # closed loop: the rate is what the endpoint achieved at this concurrency
            offered = sum(r.status == "ok" for r in rs) / duration
        out.append(slo.Step(
            offered_rps=float(offered), duration_s=duration,
            latency_ms=[r.latency_ms for r in rs if r.status == "ok" and r.latency_ms is not None],
            ttft_ms=[r.ttft_ms for r in rs if r.status == "ok" and r.ttft_ms is not None],
            requests=len(rs), errors=sum(r.status != "ok" for r in rs), rate_429=sum(r.status == "429" for r in rs),
        ))
    return out


def _throughput_row(g: SloGuardrail, section: SloSection, run: LoadRun,
                    capacities: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    row = _row(g, section)
    cap = capacities.get("candidate")
    floor = float(g.min)  # type: ignore[arg-type]
    if not cap or not cap["steps"]:
        row["reason"] = f"{g.name}: no load step was measured for the candidate"
        return row
    verdict = slo.capacity_verdict(cap, floor)
    row.update(n=sum(s["requests"] for s in cap["steps"]), candidate=cap["estimate"], ci_low=cap["low"],
               ci_high=cap["high"], method="ramp", capacity=cap,
               baseline=(capacities.get("baseline") or {}).get("estimate"))
    names = ", ".join(c["name"] for c in cap["criteria"])
    numbers = (f"candidate capacity under {names}: knee at {_fmt(cap['estimate'], 'req/s')}; met with confidence "
               f"up to {_fmt(cap['low'], 'req/s')}, broken with confidence from {_fmt(cap['high'], 'req/s')} "
               f"({len(cap['steps'])} step(s), {_level(row['alpha'])} intervals per step)")
    why = {"PASS": f"every step up to {_fmt(cap['low'], 'req/s')} met the SLO with confidence, at or above "
                   f"{floor:g} req/s",
           "FAIL": f"the step at {_fmt(cap['high'], 'req/s')} broke the SLO with confidence, at or below "
                   f"{floor:g} req/s",
           "INCONCLUSIVE": f"no step shows whether {floor:g} req/s is sustainable"}[verdict]
    if verdict == "INCONCLUSIVE":
        fewest = max((slo.fewest_for_upper_bound(c["quantile"], row["alpha"]) for c in cap["criteria"]
                      if c["quantile"] is not None), default=0)
        short = [s for s in cap["steps"] if s["requests"] < fewest]
        why += (f"; {len(short)} of {len(cap['steps'])} steps had fewer than the {fewest} requests a step needs to "
                "bound its quantile from above (longer steps, or a step at that rate)" if short
                else "; longer steps, or a step at that rate, narrow the intervals")
    row["verdict"] = verdict
    row["reason"] = f"{g.name} ({g.label()}): {numbers}; {why} → {verdict}"
    return row


def cdf(values: np.ndarray) -> dict[str, list[float]]:
    """Quantiles on an even grid (and the far tail) for an empirical CDF plot."""
    if values.size == 0:
        return {"p": [], "ms": []}
    grid = np.unique(np.concatenate([np.linspace(0, 1, CDF_POINTS), [0.995, 0.999]]))
    return {"p": [round(float(p), 4) for p in grid], "ms": [round(float(v), 3) for v in np.quantile(values, grid)]}


def evaluate_slo(section: SloSection, run: LoadRun) -> dict[str, Any]:
    """Everything the record keeps under ``slo``; ``rows`` are the guardrails' verdicts."""
    if section.suites:
        run = LoadRun([r for r in run.requests if r.suite in section.suites],
                      {k: v for k, v in run.steps.items() if k in section.suites},
                      {k: v for k, v in run.meta.items() if k in section.suites})
    steady = [r for r in run.requests if not r.ramp] or list(run.requests)
    ramped = [r for r in run.requests if r.ramp] or steady
    crit = criteria(section)
    alpha = section.alpha
    capacities = {m: slo.capacity(steps_of(run, ramped, m), crit, alpha=alpha) for m in MODELS} if crit else {}
    rows = []
    for g in section.guardrails:
        if g.measure == "throughput":
            rows.append(_throughput_row(g, section, run, capacities))
            continue
        scoped = _scoped(run, section, g, ramp=False) or _scoped(run, section, g, ramp=None)
        rows.append(_quantile_row(g, section, scoped) if g.measure in QUANTILE_MEASURES
                    else _rate_row(g, section, scoped))
    comparisons = []
    for measure in QUANTILE_MEASURES:
        base, cand = _sample(steady, "baseline", measure), _sample(steady, "candidate", measure)
        for p in COMPARED_QUANTILES:
            if base.size >= 2 and cand.size >= 2 and base.min() > 0 and cand.min() > 0:
                comparisons.append({"measure": measure, **slo.compare_quantiles(base, cand, p, alpha=alpha)})
    rates = {}
    for model in MODELS:
        n, failed, too_many = _counts(steady, model)
        rates[model] = {"requests": n, "error_rate": asdict(slo.wilson_interval(failed, n, alpha=alpha)),
                        "rate_429": asdict(slo.wilson_interval(too_many, n, alpha=alpha))}
    return {
        "schema": SLO_SCHEMA, "alpha": alpha, "rows": rows, "comparisons": comparisons, "rates": rates,
        "capacity": capacities,
        "cdf": {m: {ms: cdf(_sample(steady, m, ms)) for ms in QUANTILE_MEASURES} for m in MODELS},
        "suites": sorted({r.suite for r in run.requests}),
        "requests": {m: sum(r.model == m for r in run.requests) for m in MODELS},
        "runs": run.meta,
    }
