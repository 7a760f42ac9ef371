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
* ``auto`` (the policy default) -- chosen from the data by :func:`choose_method`: Tango for
  a binary metric, the cluster-robust interval when the suite declares clusters, BCa for
  other metrics.

Declared clusters are used by every method that can use them, whatever the policy says:
the bootstraps resample whole clusters, ``t`` and ``auto`` become the cluster-robust
interval, and ``tango`` (which assumes independent cases) is replaced by the
cluster-robust interval. Binary metrics never get a bootstrap or t interval (their
coverage of paired proportions is poor with few discordant pairs; Fagerland et al. 2014):
Tango's score interval is used. :class:`Comparison` names the method used and why
(``method``, ``method_reason``) and, for clustered data, the design effect and the ICC.

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

Method = Literal["auto", "bootstrap_bca", "bootstrap_percentile", "tango", "cluster", "t"]
Hypothesis = Literal["non_inferiority", "superiority", "equivalence"]
Direction = Literal["higher", "lower"]
Sides = Literal["one", "two"]
Verdict = Literal["PASS", "FAIL", "INCONCLUSIVE"]

METHODS: tuple[str, ...] = ("auto", "bootstrap_bca", "bootstrap_percentile", "tango", "cluster", "t")
HYPOTHESES: tuple[str, ...] = ("non_inferiority", "superiority", "equivalence")
FEW_DISCORDANT_PAIRS = 10
"""Below this many discordant pairs a bootstrap interval on a binary metric is unreliable."""
MIN_N_BINARY = 30
"""Default minimum n for a binary metric: from here Tango's interval holds alpha (at n = 20 it
promotes up to 5.5 % at a 5 % alpha; docs/statistics.md "Small samples")."""
MIN_N_CONTINUOUS = 50
"""Default minimum n for other metrics: below it the bootstrap and t intervals of skewed scores
with many exact 0s and 1s promote at up to 1.6 x alpha (docs/benchmarks.md)."""
BCA_MAX_CASES = 20_000
"""Above this many cases the BCa interval is replaced by the percentile interval (they agree)."""
_BOOTSTRAP_BATCH = 256
"""Resamples per vectorised call: bounds memory to about 256 * n floats."""
SCIPY_BOOTSTRAP_MAX = 2_000
"""Up to this many cases (clusters) the bootstrap is :func:`scipy.stats.bootstrap` itself;
above it, :func:`_array_bootstrap`: the same resamples (same seed, same numbers up to
rounding), in chunks bounded by :data:`RESAMPLE_ELEMENTS`, and BCa's jackknife of a mean or a
ratio of sums in closed form (O(n), where scipy's is O(n^2))."""
RESAMPLE_ELEMENTS = 1 << 22
"""Resampled values held at once (about 64 MB of indices and values) at any n."""
MULTINOMIAL_MIN_CASES = BCA_MAX_CASES
"""Above this many cases, a metric with few distinct paired differences (binary, a few
levels) is resampled as multinomial counts of those values: the same bootstrap
distribution, O(distinct values) per resample instead of O(n) (another random stream)."""


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
    requested_method: str = ""
    """The policy's ``ci_method``; ``method`` is what was used (see :func:`choose_method`)."""
    method_reason: str = ""
    """Why ``method`` was used, in words the report shows."""
    design_effect: float | None = None
    """Clustered data: Var(mean) under clustering / Var(mean) if cases were independent."""
    icc: float | None = None
    """Clustered data: intra-cluster correlation of the paired differences, from the design effect."""


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
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        array = values
    else:
        array = np.fromiter((math.nan if v is None else v for v in values), dtype=float)
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
    isfinite = math.isfinite
    for case_id, epochs in scores.items():  # plain Python: numpy costs ~50 us per tiny array
        if len(epochs) == 1:  # the common case, without building a list
            only = epochs[0]
            if only is not None and isfinite(number := float(only)):
                means[case_id] = number
            continue
        kept = [number for v in epochs if v is not None and isfinite(number := float(v))]
        if kept:
            means[case_id] = kept[0] if len(kept) == 1 else math.fsum(kept) / len(kept)
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
    ids = sorted(baseline.keys() & candidate.keys())

    def column(scores: Mapping[str, float | None]) -> np.ndarray:
        return np.fromiter((math.nan if (v := scores[i]) is None else float(v) for i in ids), dtype=float,
                           count=len(ids))

    base_scores, cand_scores = column(baseline), column(candidate)
    keep = np.isfinite(base_scores) & np.isfinite(cand_scores)
    if not keep.all():
        ids = [case_id for case_id, kept in zip(ids, keep.tolist(), strict=True) if kept]
        base_scores, cand_scores = base_scores[keep], cand_scores[keep]
    return ids, base_scores, cand_scores


# ------------------------------------------------------------------- paired intervals


class _Distribution(NamedTuple):
    """A bootstrap distribution and its interval, shaped like what scipy returns."""

    confidence_interval: _Interval
    bootstrap_distribution: np.ndarray


def _resampled_ratios(
    num: np.ndarray, den: np.ndarray | None, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap distribution of ``mean(num)`` (``den`` None) or ``sum(num) / sum(den)``,
    resampling indices as :func:`scipy.stats.bootstrap` does (``rng.integers(0, n, (b, n))``
    per chunk; numpy's stream does not depend on the chunking), at most
    :data:`RESAMPLE_ELEMENTS` values at a time."""
    n = num.size
    out = np.empty(n_resamples)
    rows = max(1, min(_BOOTSTRAP_BATCH, RESAMPLE_ELEMENTS // n))
    for start in range(0, n_resamples, rows):
        b = min(rows, n_resamples - start)
        index = rng.integers(0, n, (b, n))
        if den is None:
            out[start : start + b] = num[index].mean(axis=-1)
        else:
            out[start : start + b] = num[index].sum(axis=-1) / den[index].sum(axis=-1)
    return out


def _multinomial_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray | None:
    """Bootstrap means drawn as multinomial counts over the distinct values, or None when
    there are too many distinct values for that to pay."""
    levels, counts = np.unique(values, return_counts=True)
    if levels.size > max(16, values.size // 64):
        return None
    out = np.empty(n_resamples)
    rows = max(1, min(_BOOTSTRAP_BATCH, RESAMPLE_ELEMENTS // levels.size))
    shares = counts / values.size
    for start in range(0, n_resamples, rows):
        b = min(rows, n_resamples - start)
        out[start : start + b] = rng.multinomial(values.size, shares, size=b) @ levels / values.size
    return out


def _jackknife(num: np.ndarray, den: np.ndarray | None) -> np.ndarray:
    """Leave-one-out values of the mean (or ratio of sums), in closed form."""
    if den is None:
        return (num.sum() - num) / (num.size - 1)
    return (num.sum() - num) / (den.sum() - den)


def _array_bootstrap(
    num: np.ndarray, den: np.ndarray | None, *, level: float, method: str, n_resamples: int, seed: int,
    previous: np.ndarray | None = None,
) -> _Distribution:
    """The percentile or BCa interval of the mean of ``num`` (or ratio ``sum(num)/sum(den)``)
    as :func:`scipy.stats.bootstrap` computes it (Efron & Tibshirani 1993, 14.3), with
    resamples in bounded chunks and the jackknife in closed form. ``previous``: a
    distribution already drawn (the percentile fallback of a degenerate BCa)."""
    from scipy.special import ndtr, ndtri

    rng = np.random.default_rng(seed)
    if previous is not None:
        theta_b = previous
    else:
        theta_b = None
        if den is None and num.size > MULTINOMIAL_MIN_CASES:
            theta_b = _multinomial_means(num, n_resamples, rng)
        if theta_b is None:
            theta_b = _resampled_ratios(num, den, n_resamples, rng)
    assert theta_b is not None
    alpha = (1 - level) / 2
    if method == "BCa":
        theta = float(num.mean()) if den is None else float(num.sum() / den.sum())
        below = np.count_nonzero(theta_b < theta) + np.count_nonzero(theta_b <= theta)
        z0 = float(ndtri(below / (2 * theta_b.size)))
        jack = _jackknife(num, den)
        u = (num.size - 1) * (jack.mean() - jack)
        with np.errstate(divide="ignore", invalid="ignore"):
            a_hat = float((np.sum(u**3) / num.size**3) / (np.sum(u**2) / num.size**2) ** 1.5 / 6)
            z_alpha = float(ndtri(alpha))
            bounds = []
            for z in (z_alpha, -z_alpha):
                shifted = z0 + z
                bounds.append(float(ndtr(z0 + shifted / (1 - a_hat * shifted))))
        if not all(math.isfinite(b) for b in bounds):
            return _Distribution(_Interval(math.nan, math.nan), theta_b)
        low, high = np.quantile(theta_b, bounds)
    else:
        low, high = np.quantile(theta_b, [alpha, 1 - alpha])
    return _Distribution(_Interval(float(low), float(high)), theta_b)


def _run_bootstrap(
    diffs: np.ndarray, *, level: float, method: str, n_resamples: int, seed: int, previous: Any = None
) -> Any:
    if diffs.size > SCIPY_BOOTSTRAP_MAX:
        return _array_bootstrap(
            diffs, None, level=level, method=method, n_resamples=n_resamples, seed=seed,
            previous=None if previous is None else previous.bootstrap_distribution,
        )
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


def _cluster_labels(ids: Sequence[str], clusters: Mapping[str, str] | None, *, required: bool) -> list[str] | None:
    """The cluster of each paired case, or None when the cases are independent.

    Cases whose cluster is missing count as clusters of their own when the method does not
    require clusters; ``cluster`` requires one for every case.
    """
    if clusters is None:
        if required:
            raise ValueError("method 'cluster' needs a cluster for each case (clusters=...)")
        return None
    missing = [case_id for case_id in ids if case_id not in clusters or clusters[case_id] is None]
    if missing and required:
        raise ValueError(
            f"method 'cluster' needs a cluster for each case; {len(missing)} case(s) have none, "
            f"e.g. {missing[0]!r}"
        )
    labels = [str(clusters[case_id]) if case_id not in missing else f"\0{case_id}" for case_id in ids]
    return labels


def _is_clustered(labels: list[str] | None) -> bool:
    """True when at least one cluster holds more than one case."""
    return labels is not None and len(set(labels)) < len(labels)


def design_effect(diffs: Sequence[float], clusters: Sequence[str]) -> tuple[float, float]:
    """Design effect of the mean paired difference under clustering, and the implied ICC.

    ``deff = sum_g (sum_{i in g} e_i)^2 / sum_i e_i^2`` with ``e_i = d_i - mean(d)``: the
    ratio of the cluster-robust (CR0) variance of the mean to the variance it would have if
    the cases were independent. With clusters of sizes m_g, ``deff = 1 + (m_w - 1) * icc``
    where ``m_w = sum m_g^2 / n`` (Kish 1965; Donner & Klar 2000, for unequal sizes), so
    ``icc = (deff - 1) / (m_w - 1)``. Both are moment estimates from the data at hand and
    can fall below 1 and 0 by chance; :func:`power_analysis` plans with ``max(deff, 1)``.
    """
    values = np.asarray(diffs, dtype=float)
    _, group = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    residuals = values - values.mean()
    total = float(np.sum(residuals**2))
    sizes = np.bincount(group)
    m_w = float(np.sum(sizes.astype(float) ** 2)) / values.size
    if total == 0.0:
        return 1.0, 0.0
    deff = float(np.sum(np.bincount(group, weights=residuals) ** 2)) / total
    icc = (deff - 1.0) / (m_w - 1.0) if m_w > 1.0 else 0.0
    return deff, icc


def cluster_bootstrap_ci(
    diffs: Sequence[float],
    clusters: Sequence[str],
    *,
    alpha: float = 0.05,
    sides: Sides = "one",
    method: Literal["BCa", "percentile"] = "BCa",
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval for the mean difference that resamples whole clusters.

    Each cluster contributes its sum of differences and its size; a resample draws G
    clusters with replacement and the statistic is sum(sums) / sum(sizes), the mean over
    the drawn cases (Davison & Hinkley 1997, sec. 3.8; Field & Welsh 2007). Passed to
    :func:`scipy.stats.bootstrap` as two paired samples, so BCa's jackknife leaves out one
    cluster at a time. With one case per cluster it is the ordinary paired bootstrap.
    """
    level = _confidence_level(alpha, sides)
    values = np.asarray(diffs, dtype=float)
    _, group = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    n_clusters = int(group.max()) + 1 if values.size else 0
    if n_clusters < 2:
        raise ValueError(f"need at least 2 clusters for a cluster bootstrap, got {n_clusters}")
    sums = np.bincount(group, weights=values)
    sizes = np.bincount(group).astype(float)
    if _constant(values):
        return float(values[0]), float(values[0])

    def ratio(s: np.ndarray, m: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(s.sum(axis=axis) / m.sum(axis=axis))

    def run(kind: str, previous: Any = None) -> Any:
        if n_clusters > SCIPY_BOOTSTRAP_MAX:
            return _array_bootstrap(
                sums, sizes, level=level, method=kind, n_resamples=n_resamples, seed=seed,
                previous=None if previous is None else previous.bootstrap_distribution,
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            return stats.bootstrap(
                (sums, sizes), ratio, paired=True, vectorized=True, confidence_level=level, method=kind,
                n_resamples=0 if previous is not None else n_resamples, bootstrap_result=previous,
                batch=_BOOTSTRAP_BATCH, rng=np.random.default_rng(seed),
            )

    result = run("BCa" if method.lower() == "bca" else "percentile")
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        result = run("percentile", result)
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return low, high


def choose_method(requested: str, *, binary: bool, clustered: bool) -> tuple[str, str]:
    """The interval method to use for ``requested`` on this data, and why (for the report).

    * clustered data: ``cluster`` for ``cluster``, ``t``, ``auto`` and ``tango`` (Tango's
      interval assumes independent cases and cannot use clusters); the bootstraps resample
      clusters (``bootstrap_bca`` / ``bootstrap_percentile`` are kept as names, with
      ``cluster_`` prefixed).
    * independent binary data: ``tango`` for every method but ``cluster`` -- the bootstrap
      and t intervals of a paired proportion promote about twice as often as alpha allows
      at n = 20-50 (docs/benchmarks.md), Tango's score interval holds it.
    * independent other data: ``auto`` is ``bootstrap_bca``; explicit choices are kept.
    """
    if requested not in METHODS:
        raise ValueError(f"unknown method {requested!r}; expected one of {', '.join(METHODS)}")
    if clustered:
        if requested.startswith("bootstrap"):
            return f"cluster_{requested}", "the suite declares clusters: the bootstrap resamples whole clusters"
        if requested == "cluster":
            return "cluster", "the policy asks for the cluster-robust interval"
        why = {
            "tango": "Tango's interval assumes independent cases and cannot use the suite's clusters",
            "t": "the paired t interval with clusters is the cluster-robust interval",
            "auto": "the suite declares clusters",
        }[requested]
        return "cluster", f"{why}: used the cluster-robust (CR1) interval"
    if binary and requested != "cluster":
        if requested == "tango":
            return "tango", "the policy asks for Tango's score interval (binary metric)"
        if requested == "auto":
            return "tango", "binary metric: Tango's score interval, which holds alpha down to small n"
        return "tango", (
            f"binary metric: {requested} is replaced because its coverage of paired proportions is poor "
            "with few discordant pairs; used Tango's score interval, which holds alpha down to small n"
        )
    if requested == "auto":
        return "bootstrap_bca", "continuous metric: the paired BCa bootstrap"
    if requested == "cluster":
        return "cluster", "the policy asks for the cluster-robust interval; each case is its own cluster"
    return requested, f"the policy asks for {requested}"


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
    """The interval by the resolved ``method``, and the method actually used (binary ties -> tango)."""
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
    if method == "cluster":
        labels = cluster_labels if cluster_labels is not None else [str(i) for i in range(diffs.size)]
        if binary and _constant(diffs) and not _is_clustered(labels):
            n10, n01 = _discordant(base, cand)
            low, high = tango_ci(n10, n01, diffs.size, alpha=alpha, sides=sides)
            return _Interval(low, high, "no discordant pairs: used the Tango score interval"), "tango"
        if _constant(diffs):
            only = float(diffs[0])
            return _Interval(only, only, "all paired differences are equal: the interval has zero width"), method
        return _Interval(*cluster_robust_ci(diffs, labels, alpha=alpha, sides=sides)), method
    if method.startswith("cluster_bootstrap"):
        assert cluster_labels is not None
        kind: Literal["BCa", "percentile"] = "BCa" if method.endswith("bca") else "percentile"
        low, high = cluster_bootstrap_ci(diffs, cluster_labels, alpha=alpha, sides=sides, method=kind, seed=seed)
        return _Interval(low, high), method
    if binary and _constant(diffs):
        n10, n01 = _discordant(base, cand)
        low, high = tango_ci(n10, n01, diffs.size, alpha=alpha, sides=sides)
        reason = f"no discordant pairs: {method} is degenerate, used the Tango score interval"
        return _Interval(low, high, reason), "tango"
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
    method: Method = "auto",
    alpha: float = 0.05,
    sides: Sides = "one",
    clusters: Mapping[str, str] | None = None,
    seed: int = 0,
) -> Comparison:
    """Compare per-case scores of candidate and baseline (case id -> score).

    Only case ids present in both with a finite score are paired (None/NaN are dropped;
    ``n`` says how many were used). The interval is the policy's ``method`` as resolved by
    :func:`choose_method` for this data: declared clusters (``clusters``, case id ->
    cluster) are used whenever a cluster holds more than one case, and binary metrics get
    Tango's interval. ``method`` in the result is the method used and ``method_reason``
    says why. Raises ValueError for fewer than 2 pairs ("need at least 2 paired cases"),
    for clustered data with fewer than 2 clusters ("need at least 2 clusters"), for
    ``tango`` on non-binary scores, and for ``cluster`` without a cluster for every case.
    """
    ids, base, cand = _pair(baseline, candidate)
    return compare_paired(ids, base, cand, method=method, alpha=alpha, sides=sides, clusters=clusters, seed=seed)


def compare_paired(
    ids: Sequence[str],
    base: np.ndarray,
    cand: np.ndarray,
    *,
    method: Method = "auto",
    alpha: float = 0.05,
    sides: Sides = "one",
    clusters: Mapping[str, str] | None = None,
    seed: int = 0,
    cluster_labels: Sequence[str] | None = None,
) -> Comparison:
    """:func:`compare` on pairs already made: ``ids`` sorted, both score arrays finite and in
    the order of ``ids`` (what :func:`compare` makes of two mappings; the gate makes them from
    the run's score columns without a dict per case). ``cluster_labels``: each pair's cluster,
    in the order of ``ids``, instead of ``clusters`` (every case has one)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    _check_alpha_sides(alpha, sides)
    if len(ids) < 2:
        raise ValueError(f"need at least 2 paired cases, got {len(ids)}")
    labels = list(cluster_labels) if cluster_labels is not None else _cluster_labels(
        ids, clusters, required=method == "cluster")
    clustered = _is_clustered(labels)
    binary = is_binary(base) and is_binary(cand)
    diffs = cand - base
    if clustered:
        assert labels is not None
        if len(set(labels)) < 2:
            raise ValueError(f"need at least 2 clusters for a clustered comparison, got {len(set(labels))}")
    resolved, why = choose_method(method, binary=binary, clustered=clustered)
    interval, used = _paired_interval(
        resolved, base, cand, alpha=alpha, sides=sides, cluster_labels=labels if clustered else None, seed=seed
    )
    discordant = _discordant(base, cand) if binary else None
    notes = [interval.note] if interval.note else []
    if binary and (interval.low < -1.0 or interval.high > 1.0):  # a t-based interval on few clusters
        interval = _Interval(max(interval.low, -1.0), min(interval.high, 1.0), interval.note)
    deff = icc = None
    if clustered:
        assert labels is not None
        deff, icc = design_effect(diffs, labels)
        notes.append(
            f"{len(set(labels))} clusters: design effect {deff:.2f}, intra-cluster correlation {icc:.2f}"
        )
    return Comparison(
        n=len(ids),
        n_clusters=len(set(labels)) if labels is not None and (clustered or method == "cluster") else None,
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
        requested_method=method,
        method_reason=why,
        design_effect=deff,
        icc=icc,
    )


def default_min_n(c: Comparison) -> int:
    """The minimum n a comparison needs when the policy sets none: by the kind of metric."""
    return MIN_N_BINARY if c.discordant is not None else MIN_N_CONTINUOUS


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
    values: Sequence[float] | np.ndarray,
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
    Clustered data: times the design effect (at least 1), so n counts cases in clusters
    like the ones observed.
    """
    inflation = max(c.design_effect or 1.0, 1.0)
    if c.discordant is None:
        return c.sd_diff**2 * inflation, None
    discordance = sum(c.discordant) / c.n
    return max(discordance - effect**2, 0.0) * inflation, discordance


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

    Clustered comparisons plan with the per-case variance times the observed design effect
    (at least 1; ``design_effect`` and ``icc`` are reported), and ``clusters_needed`` is
    ``n_needed`` divided by the mean cluster size. ``alpha`` defaults to the comparison's
    alpha.
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
        "design_effect": None if c.design_effect is None else max(float(c.design_effect), 1.0),
        "icc": c.icc,
        "clusters_needed": _clusters_needed(c, needed(assumed)),
    }


def _clusters_needed(c: Comparison, n_needed: int | None) -> int | None:
    """Clusters of the observed mean size that hold ``n_needed`` cases (clustered data only)."""
    if n_needed is None or c.design_effect is None or not c.n_clusters:
        return None
    return math.ceil(n_needed / (c.n / c.n_clusters))


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
