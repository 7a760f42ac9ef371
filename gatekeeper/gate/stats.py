"""Paired statistics for the gate: intervals, verdicts, guardrails and power.

The gate scores a candidate model and the baseline on the same cases, so every metric is a
*paired* comparison: the difference candidate - baseline on each case, summarised by its
mean and a confidence interval. The interval method is the policy's choice:

* ``bootstrap_bca`` / ``bootstrap_percentile`` -- paired bootstrap of the mean difference
  (:func:`scipy.stats.bootstrap`, resampling cases); any metric.
* ``tango`` -- Tango's (1998) score interval for the difference of paired proportions;
  binary metrics (pass/fail per case). The best-calibrated choice for binary metrics.
* ``cluster`` -- cluster-robust (CR1 sandwich) interval when cases come in groups that are
  not independent (several questions about one document, turns of one conversation).
* ``t`` -- the paired t interval; any metric.

A one-sided test at level ``alpha`` (``sides="one"``, the default) reports the two-sided
``1 - 2*alpha`` interval, whose lower and upper bounds are each one-sided ``1 - alpha``
bounds; ``sides="two"`` reports the ``1 - alpha`` interval. :func:`verdict` turns an
interval into PASS / FAIL / INCONCLUSIVE under the policy's hypothesis, :func:`guardrail`
checks an absolute limit on the candidate alone, :func:`power_analysis` says how many cases
an inconclusive comparison would need, and :func:`unpaired_compare` serves production
monitoring, where the two versions see different traffic. ``docs/statistics.md`` gives
the formulas and references.

Every number returned is a plain Python ``float``/``int`` (JSON-friendly, no numpy
scalars). Bad arguments raise :class:`ValueError` with a message the caller can show; too
few cases raise ``ValueError("need at least 2 paired cases ...")``, which the gate
reports as NODATA.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from scipy import optimize, stats

Method = Literal["bootstrap_bca", "bootstrap_percentile", "tango", "cluster", "t"]
Hypothesis = Literal["non_inferiority", "superiority", "equivalence"]
Direction = Literal["higher", "lower"]
Sides = Literal["one", "two"]
Verdict = Literal["PASS", "FAIL", "INCONCLUSIVE"]

METHODS: tuple[str, ...] = ("bootstrap_bca", "bootstrap_percentile", "tango", "cluster", "t")
HYPOTHESES: tuple[str, ...] = ("non_inferiority", "superiority", "equivalence")
FEW_DISCORDANT_PAIRS = 10
"""Below this many discordant pairs a bootstrap interval on a binary metric is unreliable."""
BCA_MAX_CASES = 20_000
"""Above this many cases BCa's O(n^2) jackknife is replaced by the percentile interval."""
_BOOTSTRAP_BATCH = 256
"""Resamples per vectorised call: bounds memory to about 256 * n floats."""


@dataclass
class Comparison:
    """The paired comparison of one metric (on one slice): what the decision record shows.

    ``delta`` is candidate - baseline in the metric's own units, whatever its direction;
    :func:`verdict` applies the direction. ``ci_low``/``ci_high`` bound ``delta``: the
    two-sided ``1 - 2*alpha`` interval when ``sides == "one"``, the ``1 - alpha`` interval
    when ``sides == "two"``. ``discordant`` is set for binary metrics: (cases the candidate
    got right and the baseline wrong, cases the baseline got right and the candidate
    wrong). ``n_baseline``/``n_candidate`` are set only by :func:`unpaired_compare`.
    """

    n: int
    n_clusters: int | None
    baseline_mean: float
    candidate_mean: float
    delta: float
    ci_low: float
    ci_high: float
    alpha: float
    sides: Sides
    method: str
    discordant: tuple[int, int] | None
    sd_diff: float
    note: str = ""
    n_baseline: int | None = None
    n_candidate: int | None = None


class _Interval(NamedTuple):
    low: float
    high: float
    note: str = ""


# --------------------------------------------------------------------------- helpers


def _check_alpha_sides(alpha: float, sides: str) -> None:
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 0.5):
        raise ValueError(f"alpha must be a number between 0 and 0.5, got {alpha!r}")
    if sides not in ("one", "two"):
        raise ValueError(f"sides must be 'one' or 'two', got {sides!r}")


def _confidence_level(alpha: float, sides: str) -> float:
    """Two-sided confidence level whose bounds are the test's bounds (see module doc)."""
    _check_alpha_sides(alpha, sides)
    return 1.0 - 2.0 * alpha if sides == "one" else 1.0 - alpha


def _critical_z(alpha: float, sides: str) -> float:
    """Standard normal quantile for one bound of the interval at this alpha and sides."""
    return float(stats.norm.ppf(1.0 - (alpha if sides == "one" else alpha / 2.0)))


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _finite(values: Iterable[Any]) -> np.ndarray:
    """The values that are neither None nor NaN, as a float array."""
    kept = [float(v) for v in values if not _is_missing(v)]
    array = np.asarray(kept, dtype=float)
    return array[np.isfinite(array)]


def _constant(values: np.ndarray) -> bool:
    return bool(values.size > 0 and np.all(values == values[0]))


# ------------------------------------------------------------------ inputs and pairing


def average_epochs(scores: Mapping[str, Sequence[float | None]]) -> dict[str, float]:
    """Mean score of each case over its epochs (repeated runs), ignoring None and NaN.

    A case whose every epoch is missing is left out, so it cannot be paired; the
    comparison's ``n`` then shows how many cases were actually used.
    """
    means: dict[str, float] = {}
    for case_id, epochs in scores.items():
        values = _finite(epochs)
        if values.size:
            means[case_id] = float(values.mean())
    return means


def is_binary(values: Iterable[Any]) -> bool:
    """True when every present value is 0 or 1 (bools count) and at least one is present.

    None and NaN are ignored. Averaging epochs of a binary metric gives fractions such as
    0.5, which are not binary: use a bootstrap or t interval for those.
    """
    present = _finite(values)
    return bool(present.size) and bool(np.all((present == 0.0) | (present == 1.0)))


def _score(value: object) -> float | None:
    """A score as a finite float, or None when it is missing (None, NaN, +-inf)."""
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _pair(
    baseline: Mapping[str, float | None], candidate: Mapping[str, float | None]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Case ids with a finite score in both mappings (sorted), and the two score arrays."""
    pairs = sorted(
        (case_id, base, cand)
        for case_id in baseline.keys() & candidate.keys()
        if (base := _score(baseline[case_id])) is not None
        and (cand := _score(candidate[case_id])) is not None
    )
    ids = [case_id for case_id, _, _ in pairs]
    base_scores = np.array([base for _, base, _ in pairs], dtype=float)
    cand_scores = np.array([cand for _, _, cand in pairs], dtype=float)
    return ids, base_scores, cand_scores


# ------------------------------------------------------------------- paired intervals


def _run_bootstrap(
    diffs: np.ndarray, *, level: float, method: str, n_resamples: int, seed: int, previous: Any = None
) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return stats.bootstrap(
            (diffs,),
            np.mean,
            confidence_level=level,
            method=method,
            n_resamples=0 if previous is not None else n_resamples,
            bootstrap_result=previous,
            batch=_BOOTSTRAP_BATCH,
            rng=np.random.default_rng(seed),
        )


def _bootstrap_interval(
    baseline: np.ndarray,
    candidate: np.ndarray,
    *,
    alpha: float,
    sides: str,
    method: str,
    n_resamples: int,
    seed: int,
) -> _Interval:
    """Paired bootstrap interval of the mean difference, with the reason for any fallback.

    Resampling cases and recomputing mean(candidate) - mean(baseline) on each resample is
    the same as resampling the per-case differences and taking their mean, so the
    differences are passed to :func:`scipy.stats.bootstrap` as one sample: the resamples
    are those of ``paired=True`` on the two arrays, at half the cost of BCa's jackknife.
    """
    level = _confidence_level(alpha, sides)
    method_key = method.lower()
    if method_key not in ("bca", "percentile"):
        raise ValueError(f"bootstrap method must be 'BCa' or 'percentile', got {method!r}")
    diffs = candidate - baseline
    if diffs.size < 2:
        raise ValueError(f"need at least 2 paired cases for a bootstrap interval, got {diffs.size}")
    if _constant(diffs):
        only = float(diffs[0])
        return _Interval(only, only, "all paired differences are equal: the interval has zero width")
    note = ""
    if method_key == "bca" and diffs.size > BCA_MAX_CASES:
        method_key = "percentile"
        note = f"BCa replaced by percentile above {BCA_MAX_CASES} cases (the two agree at this size)"
    scipy_method = "BCa" if method_key == "bca" else "percentile"
    result = _run_bootstrap(diffs, level=level, method=scipy_method, n_resamples=n_resamples, seed=seed)
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if method_key == "bca" and not (math.isfinite(low) and math.isfinite(high)):
        result = _run_bootstrap(
            diffs, level=level, method="percentile", n_resamples=n_resamples, seed=seed, previous=result
        )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        note = "BCa fell back to percentile: degenerate resamples"
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("the bootstrap distribution is degenerate; use method 't' or 'tango'")
    return _Interval(low, high, note)


def paired_bootstrap_ci(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    alpha: float = 0.05,
    sides: Sides = "one",
    method: Literal["BCa", "percentile"] = "BCa",
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired bootstrap confidence interval for mean(candidate - baseline).

    Cases are resampled as pairs (:func:`scipy.stats.bootstrap`; see
    :func:`_bootstrap_interval`), which keeps the correlation between the two models'
    scores on a case. BCa (bias-corrected and accelerated, Efron 1987) is second-order
    accurate; when its resamples are degenerate
    (NaN bounds) the percentile interval is returned instead. When every difference is the
    same the interval is that value with zero width. ``baseline[i]`` and ``candidate[i]``
    must be the same case.
    """
    base, cand = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if base.shape != cand.shape or base.ndim != 1:
        raise ValueError("baseline and candidate must be 1-D sequences of the same length")
    interval = _bootstrap_interval(
        base, cand, alpha=alpha, sides=sides, method=method, n_resamples=n_resamples, seed=seed
    )
    return interval.low, interval.high


def _tango_score(delta0: float, n10: int, n01: int, n: int) -> float:
    """Tango's score statistic for H0: p_candidate - p_baseline = delta0.

    ``(n10 - n01 - n*delta0) / sqrt(n*(2*q01~ + delta0*(1 - delta0)))`` where q01~ is the
    maximum-likelihood estimate of P(baseline right, candidate wrong) under H0, the root of
    a quadratic (Tango 1998, eq. 4-5). Decreasing in delta0.
    """
    a = 2.0 * n
    b = -n10 - n01 + (2.0 * n - n10 + n01) * delta0
    c = -n01 * delta0 * (1.0 - delta0)
    q01 = (math.sqrt(max(b * b - 4.0 * a * c, 0.0)) - b) / (2.0 * a)
    numerator = n10 - n01 - n * delta0
    variance = n * (2.0 * q01 + delta0 * (1.0 - delta0))
    if variance <= 0.0:  # only at delta0 = +-1 or when nothing is discordant at delta0 = 0
        return 0.0 if numerator == 0 else math.copysign(1e12, numerator)
    return numerator / math.sqrt(variance)


def tango_ci(n10: int, n01: int, n: int, *, alpha: float = 0.05, sides: Sides = "one") -> tuple[float, float]:
    """Tango's (1998) score interval for a difference of paired proportions.

    ``n10``: pairs where the candidate is right and the baseline wrong; ``n01``: the
    reverse; ``n``: all pairs. The interval bounds p_candidate - p_baseline, estimated by
    ``(n10 - n01) / n``; it is found by inverting the score test (root-finding with
    :func:`scipy.optimize.brentq`), stays inside [-1, 1], and has sensible width even with
    no discordant pairs. scipy has no implementation; the tests check it against the
    published examples of Tango (1998), Agresti & Min (2005) and Fagerland et al. (2014).
    """
    _check_alpha_sides(alpha, sides)
    if min(n10, n01) < 0 or n < 1 or n10 + n01 > n:
        raise ValueError(f"need 0 <= n10 + n01 <= n and n >= 1, got n10={n10}, n01={n01}, n={n}")
    z = _critical_z(alpha, sides)
    estimate = (n10 - n01) / n
    edge = 1e-12

    def above(delta0: float) -> float:
        return _tango_score(delta0, n10, n01, n) - z

    def below(delta0: float) -> float:
        return _tango_score(delta0, n10, n01, n) + z

    low = -1.0 if estimate <= -1.0 else optimize.brentq(above, -1.0 + edge, estimate, xtol=1e-12)
    high = 1.0 if estimate >= 1.0 else optimize.brentq(below, estimate, 1.0 - edge, xtol=1e-12)
    return float(low), float(high)


def cluster_robust_ci(
    diffs: Sequence[float], clusters: Sequence[str], *, alpha: float = 0.05, sides: Sides = "one"
) -> tuple[float, float]:
    """Interval for the mean difference when cases are correlated within clusters.

    The mean of ``diffs`` is the intercept of an OLS regression, whose CR1 sandwich
    variance for G clusters is ``G/(G-1) * sum_g (sum_{i in g} (d_i - d_mean))^2 / n^2``
    (Liang & Zeger 1986; Cameron & Miller 2015; the small-sample factor Stata uses). The
    interval uses the t distribution with G - 1 degrees of freedom. With one case per
    cluster it equals the paired t interval; with few clusters (G < ~30) it is approximate.
    """
    _check_alpha_sides(alpha, sides)
    values = np.asarray(diffs, dtype=float)
    labels = np.asarray([str(c) for c in clusters])
    if values.ndim != 1 or values.shape != labels.shape:
        raise ValueError("diffs and clusters must be 1-D sequences of the same length")
    if not np.all(np.isfinite(values)):
        raise ValueError("diffs must be finite numbers")
    _, group = np.unique(labels, return_inverse=True)
    n_clusters = int(group.max()) + 1 if values.size else 0
    if n_clusters < 2:
        raise ValueError(f"need at least 2 clusters for a cluster-robust interval, got {n_clusters}")
    mean = float(values.mean())
    cluster_sums = np.bincount(group, weights=values - mean)
    variance = n_clusters / (n_clusters - 1) * float(np.sum(cluster_sums**2)) / values.size**2
    t = float(stats.t.ppf(_confidence_level(alpha, sides) / 2 + 0.5, n_clusters - 1))
    half_width = t * math.sqrt(variance)
    return mean - half_width, mean + half_width


def _t_interval(diffs: np.ndarray, *, alpha: float, sides: str) -> _Interval:
    if _constant(diffs):
        only = float(diffs[0])
        return _Interval(only, only, "all paired differences are equal: the interval has zero width")
    result = stats.ttest_1samp(diffs, 0.0).confidence_interval(_confidence_level(alpha, sides))
    return _Interval(float(result.low), float(result.high))


# ------------------------------------------------------------------------- comparison


def _discordant(base: np.ndarray, cand: np.ndarray) -> tuple[int, int]:
    return int(np.sum((cand == 1.0) & (base == 0.0))), int(np.sum((base == 1.0) & (cand == 0.0)))


def _cluster_labels(ids: list[str], clusters: Mapping[str, str] | None) -> list[str]:
    if clusters is None:
        raise ValueError("method 'cluster' needs a cluster for each case (clusters=...)")
    missing = [case_id for case_id in ids if case_id not in clusters or clusters[case_id] is None]
    if missing:
        raise ValueError(
            f"method 'cluster' needs a cluster for each case; {len(missing)} case(s) have none, "
            f"e.g. {missing[0]!r}"
        )
    return [str(clusters[case_id]) for case_id in ids]


def _paired_interval(
    method: str,
    base: np.ndarray,
    cand: np.ndarray,
    *,
    alpha: float,
    sides: Sides,
    cluster_labels: list[str] | None,
    seed: int,
) -> tuple[_Interval, str]:
    """The interval by ``method``, and the method actually used (binary ties -> tango)."""
    diffs = cand - base
    binary = is_binary(base) and is_binary(cand)
    if method == "tango":
        if not binary:
            raise ValueError(
                "method 'tango' needs binary scores (0 or 1 per case); this metric has other values "
                "(averaged epochs?) -- use 'bootstrap_bca' or 't'"
            )
        n10, n01 = _discordant(base, cand)
        return _Interval(*tango_ci(n10, n01, diffs.size, alpha=alpha, sides=sides)), "tango"
    if method != "cluster" and binary and _constant(diffs):
        n10, n01 = _discordant(base, cand)
        low, high = tango_ci(n10, n01, diffs.size, alpha=alpha, sides=sides)
        reason = f"no discordant pairs: {method} is degenerate, used the Tango score interval"
        return _Interval(low, high, reason), "tango"
    if method == "cluster":
        assert cluster_labels is not None
        return _Interval(*cluster_robust_ci(diffs, cluster_labels, alpha=alpha, sides=sides)), method
    if method == "t":
        return _t_interval(diffs, alpha=alpha, sides=sides), method
    kind = "BCa" if method == "bootstrap_bca" else "percentile"
    bootstrap = _bootstrap_interval(
        base, cand, alpha=alpha, sides=sides, method=kind, n_resamples=2000, seed=seed
    )
    return bootstrap, method


def compare(
    baseline: Mapping[str, float],
    candidate: Mapping[str, float],
    *,
    method: Method = "bootstrap_bca",
    alpha: float = 0.05,
    sides: Sides = "one",
    clusters: Mapping[str, str] | None = None,
    seed: int = 0,
) -> Comparison:
    """Compare per-case scores of candidate and baseline (case id -> score).

    Only case ids present in both with a finite score are paired (None/NaN are dropped;
    ``n`` says how many were used). The interval is the policy's ``method``; for a binary
    metric with no discordant pairs the bootstrap and t intervals are degenerate, so the
    Tango interval is used and ``note`` says so. Raises ValueError for fewer than 2 pairs
    ("need at least 2 paired cases"), for ``tango`` on non-binary scores, and for
    ``cluster`` without a cluster for every paired case.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    _check_alpha_sides(alpha, sides)
    ids, base, cand = _pair(baseline, candidate)
    if len(ids) < 2:
        raise ValueError(f"need at least 2 paired cases, got {len(ids)}")
    labels = _cluster_labels(ids, clusters) if method == "cluster" else None
    interval, used = _paired_interval(
        method, base, cand, alpha=alpha, sides=sides, cluster_labels=labels, seed=seed
    )
    binary = is_binary(base) and is_binary(cand)
    discordant = _discordant(base, cand) if binary else None
    notes = [interval.note] if interval.note else []
    if binary and used.startswith("bootstrap") and discordant and sum(discordant) < FEW_DISCORDANT_PAIRS:
        notes.append(f"only {sum(discordant)} discordant pairs: the bootstrap is unreliable, prefer 'tango'")
    if clusters is not None and method != "cluster":
        notes.append(f"clusters ignored by method {method!r}; use 'cluster' to account for them")
    diffs = cand - base
    return Comparison(
        n=len(ids),
        n_clusters=len(set(labels)) if labels is not None else None,
        baseline_mean=float(base.mean()),
        candidate_mean=float(cand.mean()),
        delta=float(diffs.mean()),
        ci_low=interval.low,
        ci_high=interval.high,
        alpha=float(alpha),
        sides=sides,
        method=used,
        discordant=discordant,
        sd_diff=float(diffs.std(ddof=1)),
        note="; ".join(notes),
    )


# --------------------------------------------------------------------------- verdicts


def _check_direction(direction: str) -> None:
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")


def _improvement_bounds(c: Comparison, direction: str) -> tuple[float, float]:
    """The interval in improvement units: positive means the candidate is better."""
    _check_direction(direction)
    return (c.ci_low, c.ci_high) if direction == "higher" else (-c.ci_high, -c.ci_low)


def _check_margin(hypothesis: str, margin: float) -> None:
    if hypothesis not in HYPOTHESES:
        raise ValueError(f"unknown hypothesis {hypothesis!r}; expected one of {', '.join(HYPOTHESES)}")
    if not (isinstance(margin, int | float) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a number >= 0, got {margin!r}")
    if hypothesis == "equivalence" and margin == 0:
        raise ValueError("an equivalence margin must be > 0")


def verdict(c: Comparison, *, hypothesis: Hypothesis, margin: float, direction: Direction) -> Verdict:
    """PASS, FAIL or INCONCLUSIVE for one comparison under the policy's hypothesis.

    Work in improvement units (candidate better = positive; the interval is flipped when
    lower values are better). The claim's region and its complement are:

    * ``non_inferiority`` -- claim: improvement > -margin. PASS if low > -margin;
      FAIL if high <= -margin (the whole interval says worse than the margin allows).
    * ``superiority`` -- claim: improvement > margin (usually 0). PASS if low > margin;
      FAIL if high <= margin (the candidate is shown *not* better by more than margin, e.g.
      a zero-width interval at 0 for identical models).
    * ``equivalence`` -- claim: |improvement| < margin (TOST with the 1 - 2*alpha interval).
      PASS if -margin < low and high < margin; FAIL if high <= -margin or low >= margin.

    Anything else -- the interval straddles a boundary -- is INCONCLUSIVE, as is an interval
    with a NaN bound. The margin is in the metric's units and must be >= 0.
    """
    _check_margin(hypothesis, margin)
    low, high = _improvement_bounds(c, direction)
    if math.isnan(low) or math.isnan(high):
        return "INCONCLUSIVE"
    if hypothesis == "non_inferiority":
        if low > -margin:
            return "PASS"
        return "FAIL" if high <= -margin else "INCONCLUSIVE"
    if hypothesis == "superiority":
        if low > margin:
            return "PASS"
        return "FAIL" if high <= margin else "INCONCLUSIVE"
    if -margin < low and high < margin:
        return "PASS"
    return "FAIL" if high <= -margin or low >= margin else "INCONCLUSIVE"


def _limit_verdict(low: float, high: float, *, max_value: float | None, min_value: float | None) -> Verdict:
    """PASS when the interval is inside the allowed range, FAIL when wholly outside it."""
    outcomes: list[Verdict] = []
    if max_value is not None:
        outcomes.append("PASS" if high <= max_value else "FAIL" if low > max_value else "INCONCLUSIVE")
    if min_value is not None:
        outcomes.append("PASS" if low >= min_value else "FAIL" if high < min_value else "INCONCLUSIVE")
    if "FAIL" in outcomes:
        return "FAIL"
    return "INCONCLUSIVE" if "INCONCLUSIVE" in outcomes else "PASS"


def guardrail(
    values: Sequence[float],
    *,
    max_value: float | None = None,
    min_value: float | None = None,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Check an absolute limit on the candidate's mean, e.g. hallucination rate <= 0.02.

    The interval is two-sided ``1 - 2*alpha``, so each bound is a one-sided ``1 - alpha``
    bound. Binary values use the Wilson score interval
    (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``); other values the t
    interval. Verdict: PASS when the whole interval is inside the allowed range
    (``ci_high <= max_value`` and/or ``ci_low >= min_value``); FAIL when the whole interval
    is outside it (evidence of a breach); INCONCLUSIVE when it straddles a limit -- even if
    the point estimate is over the limit, the gate then cannot promote, but the record does
    not claim a breach it cannot show. None and NaN values are ignored.
    """
    if max_value is None and min_value is None:
        raise ValueError("a guardrail needs max_value, min_value or both")
    level = _confidence_level(alpha, "one")
    present = _finite(values)
    binary = is_binary(present)
    note = ""
    if binary:
        ci = stats.binomtest(int(present.sum()), int(present.size)).proportion_ci(level, method="wilson")
        low, high, method = float(ci.low), float(ci.high), "wilson"
    elif present.size < 2:
        raise ValueError(f"need at least 2 values for a guardrail on a non-binary metric, got {present.size}")
    else:
        interval = _t_interval(present, alpha=alpha, sides="one")
        low, high, method, note = interval.low, interval.high, "t", interval.note
    return {
        "n": int(present.size),
        "mean": float(present.mean()),
        "ci_low": low,
        "ci_high": high,
        "alpha": float(alpha),
        "method": method,
        "max_value": None if max_value is None else float(max_value),
        "min_value": None if min_value is None else float(min_value),
        "verdict": _limit_verdict(low, high, max_value=max_value, min_value=min_value),
        "note": note,
    }


# ------------------------------------------------------------------------------ power


def _cases_needed(z_sum: float, variance: float, distance: float) -> int | None:
    """Normal-approximation n: (z_sum)^2 * variance / distance^2, or None if unreachable."""
    if distance <= 0 or variance <= 0:
        return None
    return max(2, math.ceil(z_sum**2 * variance / distance**2))


def _planning_variance(c: Comparison, effect: float) -> tuple[float, float | None]:
    """Per-case variance of the difference for planning, and the discordance rate if binary.

    Binary: (n10 + n01)/n - effect^2 (the variance of a difference in {-1, 0, 1} with that
    discordance rate and mean). Otherwise the observed variance of the differences.
    """
    if c.discordant is None:
        return c.sd_diff**2, None
    discordance = sum(c.discordant) / c.n
    return max(discordance - effect**2, 0.0), discordance


def power_analysis(
    c: Comparison,
    *,
    margin: float,
    alpha: float | None = None,
    power: float = 0.8,
    hypothesis: Hypothesis = "non_inferiority",
    direction: Direction = "higher",
) -> dict[str, Any]:
    """How small an effect this n can show, and how many paired cases the claim needs.

    Normal approximation with the observed per-case variance sd^2 of the paired differences
    (binary metrics: the discordance-based variance psi - effect^2, psi = share of
    discordant pairs). With z = z(1-alpha) (one-sided; z(1-alpha/2) for a two-sided
    comparison) and z_p = z(power):

    * ``mde`` -- the distance from the claim's boundary a true effect must have to be shown
      with this power at the current n: (z + z_p)*sd/sqrt(n). For equivalence (true effect 0)
      it is the smallest margin this n would show: (z + z(1-(1-power)/2))*sd/sqrt(n).
    * ``n_needed`` -- cases for the claim under the planning assumption ``assumed_effect``:
      0 (the models are truly equal) for non-inferiority and equivalence, the conventional
      and conservative choice that does not reward a lucky draw; the observed improvement
      for superiority. n = (z + z_p)^2 * sd^2 / (effect - boundary)^2; equivalence uses
      (margin - |effect|) as the distance. None when the effect cannot clear the boundary
      or the differences have no variance (nothing to plan from).
    * ``n_needed_observed`` -- the same if the true effect equals the observed improvement.

    ``alpha`` defaults to the comparison's alpha.
    """
    _check_margin(hypothesis, margin)
    if c.n_baseline is not None:
        raise ValueError("power_analysis needs a paired comparison, not an unpaired one")
    if not 0.5 <= power < 1.0:
        raise ValueError(f"power must be in [0.5, 1), got {power!r}")
    test_alpha = c.alpha if alpha is None else alpha
    z = _critical_z(test_alpha, c.sides)
    z_power = float(stats.norm.ppf(power))
    _check_direction(direction)
    observed = c.delta if direction == "higher" else -c.delta
    assumed = observed if hypothesis == "superiority" else 0.0
    variance, discordance = _planning_variance(c, assumed)
    sd = math.sqrt(variance)
    boundary = margin if hypothesis == "superiority" else -margin

    def needed(effect: float) -> int | None:
        planning_variance = _planning_variance(c, effect)[0]
        if hypothesis == "equivalence":
            z_total = z + (float(stats.norm.ppf(1 - (1 - power) / 2)) if effect == 0 else z_power)
            return _cases_needed(z_total, planning_variance, margin - abs(effect))
        return _cases_needed(z + z_power, planning_variance, effect - boundary)

    mde_z = z + (float(stats.norm.ppf(1 - (1 - power) / 2)) if hypothesis == "equivalence" else z_power)
    return {
        "n": c.n,
        "hypothesis": hypothesis,
        "alpha": float(test_alpha),
        "power": float(power),
        "margin": float(margin),
        "sd_diff": sd,
        "discordance": discordance,
        "mde": mde_z * sd / math.sqrt(c.n),
        "assumed_effect": float(assumed),
        "n_needed": needed(assumed),
        "observed_effect": float(observed),
        "n_needed_observed": needed(observed),
    }


# --------------------------------------------------------------------------- unpaired


def newcombe_independent_ci(
    x_candidate: int,
    n_candidate: int,
    x_baseline: int,
    n_baseline: int,
    *,
    alpha: float = 0.05,
    sides: Sides = "one",
) -> tuple[float, float]:
    """Newcombe's (1998, method 10) hybrid score interval for p_candidate - p_baseline.

    Independent samples. With Wilson intervals (l1, u1) for the candidate and (l2, u2) for
    the baseline (from :func:`scipy.stats.binomtest`):
    low = d - sqrt((p1 - l1)^2 + (u2 - p2)^2), high = d + sqrt((u1 - p1)^2 + (p2 - l2)^2).
    """
    level = _confidence_level(alpha, sides)
    if min(n_candidate, n_baseline) < 1:
        raise ValueError("need at least 1 observation in each group")
    if not (0 <= x_candidate <= n_candidate and 0 <= x_baseline <= n_baseline):
        raise ValueError("successes must lie between 0 and the group size")
    cand_ci = stats.binomtest(x_candidate, n_candidate).proportion_ci(level, method="wilson")
    base_ci = stats.binomtest(x_baseline, n_baseline).proportion_ci(level, method="wilson")
    p_cand, p_base = x_candidate / n_candidate, x_baseline / n_baseline
    delta = p_cand - p_base
    low = delta - math.hypot(p_cand - cand_ci.low, base_ci.high - p_base)
    high = delta + math.hypot(cand_ci.high - p_cand, p_base - base_ci.low)
    return float(low), float(high)


def unpaired_compare(
    baseline: Sequence[float], candidate: Sequence[float], *, alpha: float = 0.05, sides: Sides = "one"
) -> Comparison:
    """Compare two versions on different traffic (production monitoring): not paired.

    Binary values -> Newcombe's hybrid score interval (method ``newcombe``); otherwise
    Welch's t interval (``scipy.stats.ttest_ind(equal_var=False)``, method ``welch``).
    None/NaN are dropped. ``n`` is the total of both groups (each in ``n_baseline`` /
    ``n_candidate``), and ``sd_diff`` is sqrt(s^2_baseline + s^2_candidate), the sd of the
    difference between one candidate and one baseline observation.
    """
    _check_alpha_sides(alpha, sides)
    base, cand = _finite(baseline), _finite(candidate)
    binary = is_binary(base) and is_binary(cand)
    if min(base.size, cand.size) < (1 if binary else 2):
        raise ValueError(
            f"need at least {1 if binary else 2} values in each group, got "
            f"baseline {base.size}, candidate {cand.size}"
        )
    note = ""
    if binary:
        low, high = newcombe_independent_ci(
            int(cand.sum()), cand.size, int(base.sum()), base.size, alpha=alpha, sides=sides
        )
        method = "newcombe"
    elif _constant(base) and _constant(cand):
        low = high = float(cand[0] - base[0])
        method, note = "welch", "both groups are constant: the interval has zero width"
    else:
        result = stats.ttest_ind(cand, base, equal_var=False)
        ci = result.confidence_interval(_confidence_level(alpha, sides))
        low, high, method = float(ci.low), float(ci.high), "welch"
    spread = math.sqrt(_variance(base) + _variance(cand))
    return Comparison(
        n=int(base.size + cand.size),
        n_clusters=None,
        baseline_mean=float(base.mean()),
        candidate_mean=float(cand.mean()),
        delta=float(cand.mean() - base.mean()),
        ci_low=low,
        ci_high=high,
        alpha=float(alpha),
        sides=sides,
        method=method,
        discordant=None,
        sd_diff=spread,
        note=note,
        n_baseline=int(base.size),
        n_candidate=int(cand.size),
    )


def _variance(values: np.ndarray) -> float:
    return float(values.var(ddof=1)) if values.size > 1 else 0.0


# --------------------------------------------------------------------------- label distributions


def label_distribution_test(
    baseline: Mapping[str, int], candidate: Mapping[str, int], *, test: str = "chi_square"
) -> dict[str, Any]:
    """Chi-square (or G) test of homogeneity of two label distributions (2 × L table).

    Returns the counts, the statistic, degrees of freedom, p-value, Cramér's V (the effect
    size: 0 same shares, 1 disjoint labels) and the share of cells whose expected count is
    below 5, where the chi-square approximation is rough. One label in all: p = 1.
    """
    labels = sorted(set(baseline) | set(candidate))
    table = np.array([[baseline.get(lab, 0) for lab in labels], [candidate.get(lab, 0) for lab in labels]])
    n = int(table.sum())
    out: dict[str, Any] = {
        "test": test, "labels": labels,
        "baseline": {lab: int(baseline.get(lab, 0)) for lab in labels},
        "candidate": {lab: int(candidate.get(lab, 0)) for lab in labels},
        "n_baseline": int(table[0].sum()), "n_candidate": int(table[1].sum()),
    }
    if len(labels) < 2 or 0 in table.sum(axis=1):
        return {**out, "statistic": 0.0, "dof": 0, "p_value": 1.0, "cramers_v": 0.0, "low_expected_share": 0.0}
    statistic, p_value, dof, expected = stats.chi2_contingency(
        table, lambda_="log-likelihood" if test == "g_test" else None
    )
    return {
        **out,
        "statistic": float(statistic), "dof": int(dof), "p_value": float(p_value),
        "cramers_v": math.sqrt(float(statistic) / n),  # min(rows, columns) - 1 = 1
        "low_expected_share": float((expected < 5).mean()),
    }
