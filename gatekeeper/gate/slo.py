"""Statistics of a load run: latency quantiles, rates and capacity, with their uncertainty.

A service level is a statement about a distribution's tail (p95 latency) or a rate (errors),
so the gate needs intervals for those, not for means:

- **Quantiles** get the distribution-free order-statistic interval: for the sorted sample
  ``x(1) <= ... <= x(n)`` the interval ``[x(l), x(u)]`` covers the p-quantile with probability
  ``P(l <= B < u)``, ``B ~ Binomial(n, p)``, whatever the latency distribution (Conover 1999,
  *Practical Nonparametric Statistics*, sec. 3.2; Hahn & Meeker 1991, ch. 5). It is
  ``scipy.stats.quantile_test(...).confidence_interval``. A bound that needs more data than
  there is (the upper bound of a p99 from 100 requests) is ``None``: no claim.
- **Candidate vs baseline** at p50/p95/p99 (latency and time to first token): the two samples
  are independent (different requests), so the difference and the ratio of the quantiles get
  a two-sample percentile bootstrap (``scipy.stats.bootstrap``, vectorised). Not BCa: its
  jackknife is inconsistent for quantiles (Efron & Tibshirani 1993, sec. 11.6).
- **Rates** (errors, 429s) get Wilson score intervals (``scipy.stats.binomtest``).
- **Power**: how many requests an inconclusive bound needs, computed exactly from the
  binomial with the observed distribution plugged in (the share of requests under the limit),
  not from a normal approximation.
- **Capacity**: per step of a ramp, each SLO's interval; the capacity lies between the last
  step of the unbroken run of steps that meet the SLO with confidence and the first step that
  breaks it with confidence.

Intervals are two-sided ``1 - 2*alpha``, so each bound is a one-sided ``1 - alpha`` bound,
as in :mod:`gatekeeper.gate.stats`. docs/load.md and docs/statistics.md explain the rules.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

Verdict = Literal["PASS", "FAIL", "INCONCLUSIVE"]
Side = Literal["pass", "fail"]

MAX_REQUESTS_PLANNED = 10_000_000
"""Above this the request count is reported as unreachable (``None``)."""
BOOTSTRAP_RESAMPLES = 2000
_BOOTSTRAP_BATCH = 100


def _level(alpha: float) -> float:
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be between 0 and 0.5, got {alpha!r}")
    return 1.0 - 2.0 * alpha


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return np.sort(arr[np.isfinite(arr)])


def _censored(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Sorted values, NaN dropped, ``+inf`` kept: a request that never completed (timed out,
    cancelled) is slower than any that did, which the order statistics can use as it is."""
    arr = np.asarray(values, dtype=float)
    return np.sort(arr[~np.isnan(arr)])


def _point_quantile(x: np.ndarray, p: float) -> float:
    """The sample p-quantile: interpolated when every value is known, else the order statistic
    (interpolating towards ``+inf`` says nothing)."""
    return float(np.quantile(x, p) if np.isfinite(x[-1]) else np.quantile(x, p, method="inverted_cdf"))


def _num(value: float) -> float | None:
    """A bound for the record: ``None`` where the data cannot give one (JSON has no NaN)."""
    return float(value) if value is not None and math.isfinite(value) else None


# --------------------------------------------------------------------------- quantiles


@dataclass
class QuantileInterval:
    """The p-quantile of a sample with its order-statistic interval (``None``: no bound)."""

    p: float
    n: int
    value: float
    ci_low: float | None
    ci_high: float | None
    level: float
    method: str = "order_statistic"


def order_statistic_indices(n: int, p: float, alpha: float) -> tuple[int | None, int | None]:
    """0-based ranks ``(l, u)`` of the order statistics bounding the p-quantile of n values
    at two-sided level ``1 - 2*alpha`` (each a one-sided ``1 - alpha`` bound); ``None`` where
    n values cannot give that bound. ``quantile_test`` run on the ranks themselves."""
    if n < 1:
        raise ValueError("need at least 1 value")
    ci = stats.quantile_test(np.arange(n, dtype=float), q=0.0, p=p).confidence_interval(_level(alpha))
    low, high = float(ci.low), float(ci.high)
    return (int(low) if math.isfinite(low) else None, int(high) if math.isfinite(high) else None)


def fewest_for_upper_bound(p: float, alpha: float) -> int:
    """The fewest values whose largest bounds the p-quantile from above at one-sided ``1 - alpha``:
    ``1 - p^n >= 1 - alpha`` (Wilks 1941), i.e. 59 for a p95 at 95 %, 299 for a p99."""
    n = max(1, math.ceil(math.log(alpha) / math.log(p) - 1e-9))
    while order_statistic_indices(n, p, alpha)[1] is None:  # guard the closed form with scipy's ranks
        n += 1
    return n


def quantile_ci(values: Sequence[float] | np.ndarray, p: float, *, alpha: float = 0.05) -> QuantileInterval:
    """The p-quantile of ``values`` and its distribution-free interval. NaN is dropped; ``+inf``
    stands for a request that never completed (censored) and makes a bound, or the estimate,
    infinite when it falls among them: an infinite lower bound breaks every limit, an infinite
    upper bound meets none. ``None``: n values cannot give that bound at all."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be between 0 and 1, got {p!r}")
    x = _censored(values)
    if x.size == 0:
        raise ValueError("need at least 1 value for a quantile")
    low, high = order_statistic_indices(int(x.size), p, alpha)
    ci_low = None if low is None else float(x[low])
    ci_high = None if high is None else float(x[high])
    return QuantileInterval(p=p, n=int(x.size), value=_point_quantile(x, p), ci_low=ci_low, ci_high=ci_high,
                            level=_level(alpha))


def _quantile_power(n: int, p: float, share_within: float, alpha: float, side: Side) -> float:
    """Chance that n requests drawn from a distribution with ``share_within`` of its mass at
    or below the limit give an upper bound at or below it (``pass``) or a lower bound above
    it (``fail``). The bound ``x(k)`` is at or below the limit iff at least k+1 of the n
    values are, and that count is Binomial(n, share_within)."""
    low, high = order_statistic_indices(n, p, alpha)
    if side == "pass":
        return 0.0 if high is None else float(stats.binom.sf(high, n, share_within))
    return 0.0 if low is None else float(stats.binom.cdf(low, n, share_within))


def _smallest_n(power_at: Callable[[int], float], target: float, start: int) -> int | None:
    """Smallest n (searched by doubling, then bisection) whose power reaches ``target``.

    Power is not exactly monotone in n (the bounds move in whole ranks), so the answer is
    the n found by bisection between the last failing and the first succeeding doubling.
    """
    low, high = 0, max(2, start)
    while power_at(high) < target:
        low, high = high, high * 2
        if high > MAX_REQUESTS_PLANNED:
            return None
    while high - low > max(1, high // 200):
        mid = (low + high) // 2
        if power_at(mid) >= target:
            high = mid
        else:
            low = mid
    return high


def quantile_requests_needed(values: Sequence[float] | np.ndarray, p: float, limit: float, *,
                             alpha: float = 0.05, power: float = 0.8) -> dict[str, Any]:
    """Requests needed for the p-quantile's interval to clear ``limit`` with probability
    ``power``, if the latencies keep the observed distribution.

    The side is the one the data point to: when more than a share p of the observed requests
    are within the limit the upper bound should come under it (PASS), otherwise the lower
    bound above it (FAIL). ``n_needed`` is ``None`` when the observed quantile sits exactly
    at the limit (no n separates them) or the count exceeds :data:`MAX_REQUESTS_PLANNED`.
    """
    x = _censored(values)
    if x.size == 0:
        return {"side": None, "share_within": None, "n_needed": None}
    share = float(np.mean(x <= limit))
    side: Side = "pass" if share > p else "fail"
    n_needed = None
    if share != p:
        n_needed = _smallest_n(lambda n: _quantile_power(n, p, share, alpha, side), power, x.size)
    return {"side": side, "share_within": share, "n_needed": n_needed}


# --------------------------------------------------------------------------- comparison


def compare_quantiles(baseline: Sequence[float] | np.ndarray, candidate: Sequence[float] | np.ndarray,
                      p: float, *, alpha: float = 0.05, n_resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0) -> dict[str, Any]:
    """Candidate vs baseline at the p-quantile: the difference and the ratio with their
    two-sample percentile bootstrap intervals (level ``1 - 2*alpha``).

    Returns both quantiles (with their order-statistic intervals), ``diff`` (candidate −
    baseline, in the values' units), ``ratio`` (candidate / baseline) and ``se_log_ratio``
    (the bootstrap standard error of log(ratio), used to plan the requests needed).
    """
    base, cand = _finite(baseline), _finite(candidate)
    if base.size < 2 or cand.size < 2:
        raise ValueError(f"need at least 2 requests per model, got {base.size} (baseline) and {cand.size} (candidate)")
    if base.min() <= 0 or cand.min() <= 0:
        raise ValueError("latencies must be positive for a ratio of quantiles")

    def statistic(b: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
        qb, qc = np.quantile(b, p, axis=axis), np.quantile(c, p, axis=axis)
        return np.stack([qc - qb, np.log(qc) - np.log(qb)])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.bootstrap((base, cand), statistic, vectorized=True, paired=False,
                                 confidence_level=_level(alpha), method="percentile",
                                 n_resamples=n_resamples, batch=_BOOTSTRAP_BATCH,
                                 rng=np.random.default_rng(seed))
    low, high = result.confidence_interval.low, result.confidence_interval.high
    qb, qc = float(np.quantile(base, p)), float(np.quantile(cand, p))
    return {
        "p": p, "alpha": alpha, "level": _level(alpha), "method": "bootstrap_percentile",
        "n_baseline": int(base.size), "n_candidate": int(cand.size),
        "baseline": asdict(quantile_ci(base, p, alpha=alpha)), "candidate": asdict(quantile_ci(cand, p, alpha=alpha)),
        "diff": qc - qb, "diff_low": float(low[0]), "diff_high": float(high[0]),
        "ratio": qc / qb, "ratio_low": float(np.exp(low[1])), "ratio_high": float(np.exp(high[1])),
        "se_log_ratio": float(result.standard_error[1]),
    }


def relative_requests_needed(comparison: Mapping[str, Any], max_ratio: float, *, alpha: float,
                             power: float) -> int | None:
    """Requests per model for the ratio's interval to clear ``max_ratio`` with ``power``, if
    the observed ratio and spread hold: ``n * ((z_(1-alpha) + z_power) * se / distance)^2``
    on the log scale, with se the bootstrap standard error of log(ratio) at the current n
    (which shrinks as 1/sqrt(n)). A normal approximation of the bootstrap distribution."""
    distance = abs(math.log(max_ratio) - math.log(comparison["ratio"]))
    se = comparison["se_log_ratio"]
    n = min(comparison["n_baseline"], comparison["n_candidate"])
    if distance == 0 or not math.isfinite(se) or se <= 0:
        return None
    z = float(stats.norm.ppf(1 - alpha) + stats.norm.ppf(power))
    needed = math.ceil(n * (z * se / distance) ** 2)
    return needed if needed <= MAX_REQUESTS_PLANNED else None


# --------------------------------------------------------------------------- rates


@dataclass
class RateInterval:
    k: int
    n: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    level: float
    method: str = "wilson"


def wilson_interval(k: int, n: int, *, alpha: float = 0.05) -> RateInterval:
    """The share k/n with its Wilson score interval at level ``1 - 2*alpha`` (Wilson 1927;
    ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``)."""
    if n == 0:
        return RateInterval(k=0, n=0, rate=None, ci_low=None, ci_high=None, level=_level(alpha))
    ci = stats.binomtest(k, n).proportion_ci(_level(alpha), method="wilson")
    return RateInterval(k=k, n=n, rate=k / n, ci_low=float(ci.low), ci_high=float(ci.high), level=_level(alpha))


def _max_count_within(n: int, limit: float, alpha: float) -> int:
    """The largest count k whose Wilson upper bound over n is at most ``limit`` (-1: none)."""
    lo, hi = -1, n  # invariant: upper(lo) <= limit (or lo = -1), upper(hi) > limit unless hi is the answer
    if wilson_interval(n, n, alpha=alpha).ci_high <= limit:  # type: ignore[operator]
        return n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if wilson_interval(mid, n, alpha=alpha).ci_high <= limit:  # type: ignore[operator]
            lo = mid
        else:
            hi = mid
    return lo


def _min_count_beyond(n: int, limit: float, alpha: float) -> int | None:
    """The smallest count k whose Wilson lower bound over n is above ``limit``."""
    if wilson_interval(n, n, alpha=alpha).ci_low <= limit:  # type: ignore[operator]
        return None
    lo, hi = 0, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if wilson_interval(mid, n, alpha=alpha).ci_low > limit:  # type: ignore[operator]
            hi = mid
        else:
            lo = mid
    return hi if wilson_interval(lo, n, alpha=alpha).ci_low <= limit else lo  # type: ignore[operator]


def rate_requests_needed(k: int, n: int, limit: float, *, alpha: float = 0.05,
                         power: float = 0.8) -> dict[str, Any]:
    """Requests needed for the Wilson bound of a rate to clear ``limit`` with ``power`` if
    the true rate is the observed k/n: exactly, from Binomial(m, k/n) and the counts whose
    Wilson bound is within (PASS side) or beyond (FAIL side) the limit."""
    if n == 0:
        return {"side": None, "n_needed": None}
    rate = k / n
    side: Side = "pass" if rate < limit else "fail"
    if rate == limit:
        return {"side": side, "n_needed": None}

    def power_at(m: int) -> float:
        if side == "pass":
            kmax = _max_count_within(m, limit, alpha)
            return 0.0 if kmax < 0 else float(stats.binom.cdf(kmax, m, rate))
        kmin = _min_count_beyond(m, limit, alpha)
        return 0.0 if kmin is None else float(stats.binom.sf(kmin - 1, m, rate))

    return {"side": side, "n_needed": _smallest_n(power_at, power, n)}


# --------------------------------------------------------------------------- limits


def limit_verdict(low: float | None, high: float | None, *, max_value: float | None = None,
                  min_value: float | None = None) -> Verdict:
    """PASS when the interval is inside the allowed side of the limit, FAIL when wholly beyond
    it, INCONCLUSIVE otherwise (a missing bound cannot show either)."""
    if max_value is not None:
        if high is not None and high <= max_value:
            return "PASS"
        return "FAIL" if low is not None and low > max_value else "INCONCLUSIVE"
    if min_value is not None:
        if low is not None and low >= min_value:
            return "PASS"
        return "FAIL" if high is not None and high < min_value else "INCONCLUSIVE"
    raise ValueError("a limit needs max_value or min_value")


# --------------------------------------------------------------------------- capacity


@dataclass
class Criterion:
    """One absolute SLO that defines "sustainable" for the capacity search."""

    name: str
    measure: Literal["latency", "ttft", "error_rate", "rate_429"]
    max_value: float
    quantile: float | None = None


@dataclass
class Step:
    """What one ramp step measured for one model."""

    offered_rps: float
    duration_s: float
    latency_ms: list[float]
    ttft_ms: list[float]
    requests: int
    errors: int
    rate_429: int


def step_check(step: Step, criteria: Sequence[Criterion], alpha: float) -> dict[str, Any]:
    """Every criterion at one step: its estimate, interval and verdict; the step ``meets`` the
    SLO when all PASS, ``breaks`` it when any FAILs, else ``unclear``."""
    checks: list[dict[str, Any]] = []
    est: float | None
    for c in criteria:
        if c.measure in ("latency", "ttft"):
            values = step.latency_ms if c.measure == "latency" else step.ttft_ms
            if not values:
                checks.append({"name": c.name, "value": None, "ci_low": None, "ci_high": None,
                               "verdict": "INCONCLUSIVE"})
                continue
            q = quantile_ci(values, c.quantile or 0.95, alpha=alpha)
            est, low, high = q.value, q.ci_low, q.ci_high
        else:
            r = wilson_interval(step.errors if c.measure == "error_rate" else step.rate_429, step.requests,
                                alpha=alpha)
            est, low, high = r.rate, r.ci_low, r.ci_high
        checks.append({"name": c.name, "value": est, "ci_low": low, "ci_high": high,
                       "verdict": limit_verdict(low, high, max_value=c.max_value),
                       "point_meets": est is not None and est <= c.max_value})
    verdicts = {c["verdict"] for c in checks}
    state = "breaks" if "FAIL" in verdicts else "meets" if verdicts == {"PASS"} else "unclear"
    ok = step.requests - step.errors
    return {
        "offered_rps": step.offered_rps, "achieved_rps": ok / step.duration_s if step.duration_s > 0 else None,
        "requests": step.requests, "errors": step.errors, "rate_429": step.rate_429, "state": state,
        "point_meets": all(c.get("point_meets") for c in checks), "checks": checks,
        "p50_ms": float(np.quantile(step.latency_ms, 0.5)) if step.latency_ms else None,
        "p95_ms": float(np.quantile(step.latency_ms, 0.95)) if step.latency_ms else None,
    }


def capacity(steps: Sequence[Step], criteria: Sequence[Criterion], *, alpha: float = 0.05) -> dict[str, Any]:
    """The highest sustainable offered rate under ``criteria`` found by a ramp (the knee).

    Latency and errors do not improve with more load (queueing), so a step that meets every
    criterion with confidence shows that the lower rates are sustainable too, even those whose
    few requests could not show it themselves. ``low``: the highest step, below the first one
    that breaks a criterion with confidence, that meets every criterion with confidence
    (``None``: none does). ``high``: the first step that breaks a criterion with confidence;
    the capacity is below it (``None`` when no step does: it is above the ramp). ``estimate``
    (the knee): the last step before the first whose point estimates break a criterion.
    """
    ordered = sorted(steps, key=lambda s: s.offered_rps)
    rows = [step_check(s, criteria, alpha) for s in ordered]
    low = None
    for row in rows:
        if row["state"] == "breaks":
            break
        if row["state"] == "meets":
            low = row["offered_rps"]
    high = next((row["offered_rps"] for row in rows if row["state"] == "breaks"), None)
    estimate = None
    for row in rows:
        if not row["point_meets"]:
            break
        estimate = row["offered_rps"]
    return {"steps": rows, "low": low, "high": high, "estimate": estimate, "alpha": alpha,
            "criteria": [asdict(c) for c in criteria]}


def capacity_verdict(cap: Mapping[str, Any], min_rps: float) -> Verdict:
    """PASS when the capacity is shown to be at least ``min_rps`` (a step at or above it met
    the SLO with confidence, as did every step below); FAIL when a step at or below it broke
    the SLO with confidence; else INCONCLUSIVE."""
    if cap["low"] is not None and cap["low"] >= min_rps:
        return "PASS"
    if cap["high"] is not None and cap["high"] <= min_rps:
        return "FAIL"
    return "INCONCLUSIVE"
