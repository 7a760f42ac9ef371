"""Tests of gatekeeper.gate.stats: published values, calibration by simulation, and the
decisions the gate promises (non-inferiority with a 3-point margin on binary metrics)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from gatekeeper.gate import stats
from gatekeeper.gate.stats import (
    Comparison,
    average_epochs,
    cluster_robust_ci,
    compare,
    guardrail,
    is_binary,
    newcombe_independent_ci,
    paired_bootstrap_ci,
    power_analysis,
    tango_ci,
    unpaired_compare,
    verdict,
)

MARGIN = 0.03
DISCORDANCE = 0.12
BASELINE_ACCURACY = 0.80


def paired_binary(
    rng: np.random.Generator,
    n: int,
    delta: float,
    *,
    discordance: float = DISCORDANCE,
    baseline_accuracy: float = BASELINE_ACCURACY,
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-case right/wrong of baseline and candidate with a true difference ``delta``.

    Cells: both right, candidate only, baseline only, both wrong. The discordant cells
    share ``discordance`` and differ by ``delta``.
    """
    cand_only = (discordance + delta) / 2
    base_only = (discordance - delta) / 2
    both_right = baseline_accuracy - base_only
    cells = rng.choice(4, size=n, p=[both_right, cand_only, base_only, 1 - both_right - discordance])
    candidate = ((cells == 0) | (cells == 1)).astype(float).tolist()
    baseline = ((cells == 0) | (cells == 2)).astype(float).tolist()
    ids = [f"case-{i}" for i in range(n)]
    return dict(zip(ids, baseline, strict=True)), dict(zip(ids, candidate, strict=True))


def non_inferiority(c: Comparison) -> str:
    return verdict(c, hypothesis="non_inferiority", margin=MARGIN, direction="higher")


def verdict_rates(n: int, delta: float, *, runs: int = 400, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    counts = {"PASS": 0, "FAIL": 0, "INCONCLUSIVE": 0}
    for _ in range(runs):
        counts[non_inferiority(compare(*paired_binary(rng, n, delta), method="tango"))] += 1
    return {name: count / runs for name, count in counts.items()}


# ----------------------------------------------------------------- published values


# Tango (1998) score interval. Each row: a = both positive, b = first only, c = second
# only, d = both negative; (low, high) as published; decimals as published.
TANGO_PUBLISHED = [
    # Tango T. (1998) Stat Med 17:891-908, the n = 44 example with one discordant pair,
    # 90% interval; also in the test suite of the R package ratesci (pairbinci).
    ((43, 0, 1, 0), 0.90, (-0.096, 0.037), 3),
    # Tango (1998) example as reproduced in ratesci's tests of pairbinci, 95%.
    ((4, 9, 3, 16), 0.95, (-0.027, 0.390), 3),
    # Agresti A. & Min Y. (2005) Stat Med 24:729-740, Table (53, 16, 8, 9), 95%.
    ((53, 16, 8, 9), 0.95, (-0.020, 0.207), 3),
    # Fagerland M.W., Lydersen S., Laake P. (2014) Stat Med 33:2850-2875: airway
    # hyper-responsiveness (Bentur et al. 2009), 95%.
    ((1, 1, 7, 12), 0.95, (-0.517, -0.026), 3),
    # Fagerland et al. (2014) and Fagerland, Lydersen & Laake, "Statistical Analysis of
    # Contingency Tables" (2017), ch. 8: complete response (Cavo et al. 2012), 95%;
    # also in the test suite of the R package contingencytables.
    ((59, 6, 16, 80), 0.95, (-0.1240, -0.0054), 4),
]


@pytest.mark.parametrize(("table", "level", "published", "decimals"), TANGO_PUBLISHED)
def test_tango_interval_matches_published_examples(table, level, published, decimals):
    _both, first_only, second_only, _neither = table
    n = sum(table)
    low, high = tango_ci(first_only, second_only, n, alpha=1 - level, sides="two")
    assert round(low, decimals) == pytest.approx(published[0], abs=1e-9)
    assert round(high, decimals) == pytest.approx(published[1], abs=1e-9)


def test_tango_one_sided_alpha_is_the_two_sided_interval_at_twice_alpha():
    assert tango_ci(0, 1, 44, alpha=0.05, sides="one") == tango_ci(0, 1, 44, alpha=0.10, sides="two")


def test_tango_interval_is_antisymmetric_and_stays_in_bounds():
    low, high = tango_ci(12, 5, 60, sides="two")
    swapped_low, swapped_high = tango_ci(5, 12, 60, sides="two")
    assert (low, high) == pytest.approx((-swapped_high, -swapped_low), abs=1e-9)
    assert low < 7 / 60 < high
    assert tango_ci(10, 0, 10, sides="two")[1] == 1.0
    assert tango_ci(0, 10, 10, sides="two")[0] == -1.0
    no_discordance = tango_ci(0, 0, 10, sides="two")
    assert no_discordance[0] < 0 < no_discordance[1], "no discordant pairs still leaves uncertainty"


def test_tango_rejects_impossible_counts():
    with pytest.raises(ValueError, match="n10"):
        tango_ci(6, 5, 10)


# Newcombe R.G. (1998) "Interval estimation for the difference between independent
# proportions: comparison of eleven methods", Stat Med 17:873-890, Table II, method 10
# (hybrid score, no continuity correction), 95%. Examples (a), (b), (d)-(h).
NEWCOMBE_PUBLISHED = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((0, 10, 0, 10), (-0.2775, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
    ((10, 10, 0, 10), (0.6075, 1.0000)),
]


@pytest.mark.parametrize(("counts", "published"), NEWCOMBE_PUBLISHED)
def test_newcombe_hybrid_interval_matches_published_examples(counts, published):
    low, high = newcombe_independent_ci(*counts, alpha=0.05, sides="two")
    assert round(low, 4) == pytest.approx(published[0], abs=1e-9)
    assert round(high, 4) == pytest.approx(published[1], abs=1e-9)


# ------------------------------------------------------------------ paired bootstrap


def test_paired_bootstrap_covers_near_nominal_on_binary_data():
    """One-sided alpha 0.05 -> a 90% interval; each tail should miss about 5% of the time."""
    rng = np.random.default_rng(20240611)
    true_delta, runs, n = -0.02, 300, 300
    miss_low = miss_high = 0
    for run in range(runs):
        baseline, candidate = paired_binary(rng, n, true_delta)
        low, high = paired_bootstrap_ci(
            list(baseline.values()), list(candidate.values()), n_resamples=999, seed=run
        )
        miss_low += true_delta < low
        miss_high += true_delta > high
    coverage = 1 - (miss_low + miss_high) / runs
    assert 0.85 <= coverage <= 0.95, coverage
    assert miss_low / runs <= 0.085, "the lower bound decides non-inferiority: it must not be optimistic"
    assert miss_high / runs <= 0.085


def test_paired_bootstrap_pairs_cases_and_handles_equal_differences():
    baseline = [0.2, 0.4, 0.6, 0.8]
    assert paired_bootstrap_ci(baseline, [b + 0.1 for b in baseline]) == pytest.approx((0.1, 0.1))
    low, high = paired_bootstrap_ci([0.1, 0.5, 0.2, 0.9, 0.4], [0.3, 0.6, 0.2, 1.0, 0.7], method="percentile")
    assert 0 <= low < 0.16 < high <= 0.3


def test_bca_falls_back_to_percentile_when_degenerate(monkeypatch):
    real_bootstrap = sps.bootstrap

    def nan_bca(*args, **kwargs):
        result = real_bootstrap(*args, **kwargs)
        if kwargs["method"] == "BCa":
            result.confidence_interval = type(result.confidence_interval)(math.nan, math.nan)
        return result

    monkeypatch.setattr(stats.stats, "bootstrap", nan_bca)
    baseline = {f"c{i}": (i % 7) / 7 for i in range(40)}
    candidate = {f"c{i}": (i % 5) / 5 for i in range(40)}
    result = compare(baseline, candidate, method="bootstrap_bca")
    assert "BCa fell back to percentile" in result.note
    assert math.isfinite(result.ci_low) and result.ci_low < result.delta < result.ci_high


# ---------------------------------------------------------------- cluster-robust CI


def test_cluster_interval_with_one_case_per_cluster_is_the_paired_t_interval():
    diffs = [0.3, -0.1, 0.2, 0.0, 0.5, -0.2, 0.1]
    expected = sps.ttest_1samp(diffs, 0.0).confidence_interval(0.90)
    low, high = cluster_robust_ci(diffs, [f"g{i}" for i in range(len(diffs))], alpha=0.05, sides="one")
    assert (low, high) == pytest.approx((expected.low, expected.high))


def test_cluster_interval_counts_clusters_not_cases():
    """Five copies of each of six documents carry the information of six cases."""
    per_document = [0.3, -0.1, 0.2, 0.0, 0.5, -0.2]
    diffs = [d for d in per_document for _ in range(5)]
    clusters = [f"doc{i}" for i in range(6) for _ in range(5)]
    low, high = cluster_robust_ci(diffs, clusters, alpha=0.05, sides="two")
    expected = sps.ttest_1samp(per_document, 0.0).confidence_interval(0.95)
    assert (low, high) == pytest.approx((expected.low, expected.high))
    naive = sps.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    assert naive.high - naive.low < (high - low) / 2


def test_cluster_interval_needs_two_clusters():
    with pytest.raises(ValueError, match="at least 2 clusters"):
        cluster_robust_ci([0.1, 0.2, 0.3], ["a", "a", "a"])


# -------------------------------------------------------------------------- compare


def test_compare_pairs_shared_cases_and_drops_missing_scores():
    baseline = {"a": 1.0, "b": 0.0, "c": 1.0, "d": None, "only-baseline": 1.0}
    candidate = {"a": 1.0, "b": 1.0, "c": float("nan"), "d": 1.0, "only-candidate": 0.0, "e": 1.0}
    result = compare(baseline, candidate, method="t")
    assert result.n == 2
    assert (result.baseline_mean, result.candidate_mean, result.delta) == (0.5, 1.0, 0.5)
    assert result.discordant == (1, 0)


def test_compare_with_too_few_pairs_raises_a_clear_error():
    with pytest.raises(ValueError, match="need at least 2 paired cases"):
        compare({"a": 1.0, "b": 0.0}, {"a": 1.0, "c": 0.0})


def test_compare_tango_refuses_non_binary_scores():
    with pytest.raises(ValueError, match="binary"):
        compare({"a": 0.5, "b": 1.0}, {"a": 1.0, "b": 1.0}, method="tango")


def test_compare_cluster_needs_a_cluster_for_every_case():
    scores = {"a": 0.1, "b": 0.4, "c": 0.3}
    with pytest.raises(ValueError, match="1 case"):
        compare(scores, scores, method="cluster", clusters={"a": "x", "b": "y"})
    result = compare(
        scores, {"a": 0.2, "b": 0.4, "c": 0.5}, method="cluster", clusters={"a": "x", "b": "y", "c": "y"}
    )
    assert result.n_clusters == 2 and result.method == "cluster"


def test_compare_rejects_unknown_method_and_bad_alpha():
    scores = {"a": 0.1, "b": 0.4}
    with pytest.raises(ValueError, match="unknown method"):
        compare(scores, scores, method="wilcoxon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        compare(scores, scores, alpha=0.7)


def test_compare_result_is_plain_json():
    rng = np.random.default_rng(3)
    result = compare(*paired_binary(rng, 200, 0.0), method="bootstrap_bca")
    text = json.dumps(dataclasses.asdict(result), allow_nan=False)
    again = json.loads(text)
    assert again["n"] == 200 and again["method"] == "tango" and again["requested_method"] == "bootstrap_bca"
    for name in ("baseline_mean", "candidate_mean", "delta", "ci_low", "ci_high", "sd_diff", "alpha"):
        assert type(getattr(result, name)) is float, name
    assert type(result.n) is int and all(type(k) is int for k in result.discordant)


def test_identical_binary_models_get_a_tango_interval_instead_of_a_degenerate_bootstrap():
    scores = {f"c{i}": float(i % 4 != 0) for i in range(100)}
    result = compare(scores, dict(scores), method="bootstrap_bca")
    assert result.method == "tango" and "binary metric" in result.method_reason
    assert result.ci_low < 0 < result.ci_high
    assert non_inferiority(result) == "PASS", "100 identical cases rule out a 3-point loss"


def test_identical_continuous_scores_get_a_zero_width_interval():
    scores = {f"c{i}": (i % 7) / 7 for i in range(60)}
    result = compare(scores, dict(scores), method="t")
    assert result.method == "t" and "zero width" in result.note
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)


def test_average_epochs_ignores_missing_epochs_and_empty_cases():
    averaged = average_epochs({"a": [1.0, 0.0, None], "b": [float("nan"), 1.0], "c": [None]})
    assert averaged == {"a": 0.5, "b": 1.0}
    assert not is_binary(averaged.values())
    assert is_binary([1, 0, True, None, float("nan")])
    assert not is_binary([])


# --------------------------------------------------------------------------- verdict


def _comparison(low: float, high: float) -> Comparison:
    return Comparison(
        n=100, n_clusters=None, baseline_mean=0.8, candidate_mean=0.8 + (low + high) / 2,
        delta=(low + high) / 2, ci_low=low, ci_high=high, alpha=0.05, sides="one",
        method="t", discordant=None, sd_diff=0.3,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("hypothesis", "margin", "low", "high", "expected"),
    [
        ("non_inferiority", 0.03, -0.02, 0.01, "PASS"),
        ("non_inferiority", 0.03, -0.04, 0.01, "INCONCLUSIVE"),
        ("non_inferiority", 0.03, -0.06, -0.035, "FAIL"),
        ("non_inferiority", 0.03, -0.05, -0.01, "INCONCLUSIVE"),  # worse, but not shown beyond the margin
        ("superiority", 0.0, 0.001, 0.02, "PASS"),
        ("superiority", 0.0, -0.01, 0.02, "INCONCLUSIVE"),
        ("superiority", 0.0, -0.02, -0.001, "FAIL"),
        ("superiority", 0.0, 0.0, 0.0, "FAIL"),  # identical models are not superior
        ("equivalence", 0.05, -0.02, 0.03, "PASS"),
        ("equivalence", 0.05, -0.02, 0.07, "INCONCLUSIVE"),
        ("equivalence", 0.05, 0.06, 0.09, "FAIL"),
        ("equivalence", 0.05, -0.09, -0.05, "FAIL"),
    ],
)
def test_verdict_rules(hypothesis, margin, low, high, expected):
    result = verdict(_comparison(low, high), hypothesis=hypothesis, margin=margin, direction="higher")
    assert result == expected


def test_verdict_flips_the_interval_when_lower_is_better():
    latency_up = _comparison(0.035, 0.06)  # candidate is 35-60 ms slower
    assert verdict(latency_up, hypothesis="non_inferiority", margin=0.03, direction="lower") == "FAIL"
    assert verdict(latency_up, hypothesis="non_inferiority", margin=0.03, direction="higher") == "PASS"
    error_rate_down = _comparison(-0.02, -0.005)
    assert verdict(error_rate_down, hypothesis="superiority", margin=0.0, direction="lower") == "PASS"


def test_verdict_rejects_bad_margins():
    c = _comparison(-0.01, 0.01)
    with pytest.raises(ValueError, match="margin"):
        verdict(c, hypothesis="non_inferiority", margin=-0.03, direction="higher")
    with pytest.raises(ValueError, match="equivalence margin"):
        verdict(c, hypothesis="equivalence", margin=0.0, direction="higher")
    with pytest.raises(ValueError, match="direction"):
        verdict(c, hypothesis="superiority", margin=0.0, direction="up")  # type: ignore[arg-type]


# ------------------------------------------ the decisions the gate promises (binary)


def test_candidate_exactly_at_the_margin_passes_at_most_alpha():
    rates = verdict_rates(2000, -MARGIN, seed=11)
    assert rates["PASS"] <= 0.07, rates  # nominal 5%; 400 runs give +-2.2 points of noise


def test_equal_models_pass_with_high_power_at_2000_cases():
    rates = verdict_rates(2000, 0.0, seed=12)
    assert rates["PASS"] >= 0.90, rates
    assert rates["FAIL"] == 0.0


def test_equal_models_at_500_cases_are_underpowered_not_failed():
    """At n=500 the power is about 61%: many runs are INCONCLUSIVE, none FAIL, and the
    power analysis asks for more cases (about 825)."""
    rng = np.random.default_rng(13)
    verdicts, needed = [], []
    for _ in range(400):
        result = compare(*paired_binary(rng, 500, 0.0), method="tango")
        verdicts.append(non_inferiority(result))
        needed.append(power_analysis(result, margin=MARGIN)["n_needed"])
    assert verdicts.count("FAIL") == 0
    assert 0.25 <= verdicts.count("INCONCLUSIVE") / 400 <= 0.55
    assert verdicts.count("PASS") / 400 < 0.80, "fewer cases than the power analysis asks for"
    assert min(needed) > 500
    assert 700 <= float(np.median(needed)) <= 950


def test_power_analysis_n_needed_delivers_the_promised_power():
    rng = np.random.default_rng(14)
    pilot = compare(*paired_binary(rng, 5000, 0.0), method="tango")
    n_needed = power_analysis(pilot, margin=MARGIN, power=0.8)["n_needed"]
    assert 700 <= n_needed <= 950
    rates = verdict_rates(n_needed, 0.0, seed=15)
    assert 0.74 <= rates["PASS"] <= 0.87, rates


def test_bootstrap_and_tango_agree_on_binary_metrics():
    rng = np.random.default_rng(16)
    agreements = 0
    for delta in (0.0, -MARGIN, -0.015, 0.01) * 3:
        baseline, candidate = paired_binary(rng, 2000, delta)
        tango = compare(baseline, candidate, method="tango")
        bootstrap = compare(baseline, candidate, method="bootstrap_bca")
        assert bootstrap.ci_low == pytest.approx(tango.ci_low, abs=0.003)
        assert bootstrap.ci_high == pytest.approx(tango.ci_high, abs=0.003)
        agreements += non_inferiority(bootstrap) == non_inferiority(tango)
    assert agreements >= 11


# ------------------------------------------------------------------------ guardrail


@pytest.mark.parametrize(
    ("events", "expected"), [(10, "PASS"), (20, "INCONCLUSIVE"), (27, "INCONCLUSIVE"), (40, "FAIL")]
)
def test_binary_guardrail_on_hallucination_rate(events, expected):
    values = [1.0] * events + [0.0] * (1000 - events)
    result = guardrail(values, max_value=0.02)
    assert result["verdict"] == expected
    assert result["method"] == "wilson" and result["n"] == 1000
    assert result["ci_low"] < result["mean"] < result["ci_high"]
    json.dumps(result, allow_nan=False)


def test_continuous_guardrail_uses_a_t_interval_and_min_value():
    rng = np.random.default_rng(5)
    scores = rng.normal(0.85, 0.05, size=200).tolist()
    assert guardrail(scores, min_value=0.80)["verdict"] == "PASS"
    assert guardrail(scores, min_value=0.90)["verdict"] == "FAIL"
    assert guardrail(scores, min_value=0.80, max_value=0.85)["verdict"] == "INCONCLUSIVE"
    assert guardrail(scores, min_value=0.80)["method"] == "t"


def test_guardrail_needs_a_limit_and_enough_values():
    with pytest.raises(ValueError, match="max_value, min_value"):
        guardrail([0.0, 1.0])
    with pytest.raises(ValueError, match="at least 2 values"):
        guardrail([0.3], max_value=0.5)


# ---------------------------------------------------------------------------- power


def test_power_formula_for_paired_binary_non_inferiority():
    rng = np.random.default_rng(17)
    result = compare(*paired_binary(rng, 2000, 0.0), method="tango")
    report = power_analysis(result, margin=MARGIN)
    discordance = sum(result.discordant) / result.n
    z_sum = sps.norm.ppf(0.95) + sps.norm.ppf(0.8)
    assert report["discordance"] == pytest.approx(discordance)
    assert report["n_needed"] == math.ceil(z_sum**2 * discordance / MARGIN**2)
    assert report["mde"] == pytest.approx(z_sum * math.sqrt(discordance / result.n))
    assert report["mde"] < MARGIN, "2000 cases detect a smaller loss than the margin"
    json.dumps(report, allow_nan=False)


def test_power_for_superiority_when_the_observed_effect_cannot_clear_the_margin():
    c = _comparison(-0.02, 0.01)
    report = power_analysis(c, margin=0.0, hypothesis="superiority")
    assert report["n_needed"] is None and report["assumed_effect"] == pytest.approx(-0.005)
    better = _comparison(-0.005, 0.045)
    assert power_analysis(better, margin=0.0, hypothesis="superiority")["n_needed"] > 100


def test_power_for_equivalence_and_lower_is_better():
    c = _comparison(-0.02, 0.01)
    equivalence = power_analysis(c, margin=0.05, hypothesis="equivalence")
    z_sum = sps.norm.ppf(0.95) + sps.norm.ppf(0.9)
    assert equivalence["n_needed"] == math.ceil(z_sum**2 * 0.3**2 / 0.05**2)
    lower = power_analysis(c, margin=0.05, direction="lower")
    assert lower["observed_effect"] == pytest.approx(0.005)


# ------------------------------------------------------------------------- unpaired


def test_unpaired_binary_uses_newcombe():
    baseline = [1.0] * 48 + [0.0] * 32
    candidate = [1.0] * 56 + [0.0] * 14 + [None]
    result = unpaired_compare(baseline, candidate, alpha=0.05, sides="two")
    assert result.method == "newcombe"
    assert (result.n_baseline, result.n_candidate, result.n) == (80, 70, 150)
    assert (round(result.ci_low, 4), round(result.ci_high, 4)) == (0.0524, 0.3339)
    with pytest.raises(ValueError, match="paired comparison"):
        power_analysis(result, margin=0.05)


def test_unpaired_continuous_uses_welch():
    rng = np.random.default_rng(8)
    baseline = rng.normal(1.0, 0.5, size=300).tolist()
    candidate = rng.normal(1.2, 1.5, size=100).tolist()
    result = unpaired_compare(baseline, candidate)
    expected = sps.ttest_ind(candidate, baseline, equal_var=False).confidence_interval(0.90)
    assert result.method == "welch"
    assert (result.ci_low, result.ci_high) == pytest.approx((expected.low, expected.high))
    assert result.sd_diff == pytest.approx(math.sqrt(np.var(baseline, ddof=1) + np.var(candidate, ddof=1)))
    with pytest.raises(ValueError, match="at least 2 values"):
        unpaired_compare([0.3], [0.5, 0.6])


# --------------------------------------------------------------------------- clusters and method choice (issue 15)


def test_design_effect_is_cluster_size_for_identical_copies_and_one_for_singletons():
    diffs = np.repeat([0.3, -0.1, 0.2, 0.0, 0.5], 4)
    deff, icc = stats.design_effect(diffs, [str(i // 4) for i in range(20)])
    assert deff == pytest.approx(4.0) and icc == pytest.approx(1.0)
    deff, icc = stats.design_effect(diffs, [str(i) for i in range(20)])
    assert deff == pytest.approx(1.0) and icc == 0.0


def test_cluster_bootstrap_with_one_case_per_cluster_is_the_paired_bootstrap():
    rng = np.random.default_rng(5)
    base, cand = rng.random(60), rng.random(60)
    plain = paired_bootstrap_ci(base, cand, method="percentile", seed=3)
    clustered = stats.cluster_bootstrap_ci(cand - base, [str(i) for i in range(60)], method="percentile", seed=3)
    assert clustered == pytest.approx(plain, abs=0.02)


def test_cluster_bootstrap_is_wider_than_the_case_bootstrap_when_clusters_are_correlated():
    rng = np.random.default_rng(8)
    diffs = np.repeat(rng.normal(0, 0.2, 20), 10) + rng.normal(0, 0.05, 200)
    labels = [str(i // 10) for i in range(200)]
    low, high = stats.cluster_bootstrap_ci(diffs, labels)
    p_low, p_high = paired_bootstrap_ci(np.zeros(200), diffs)
    robust = cluster_robust_ci(diffs, labels)
    assert (high - low) > 2.5 * (p_high - p_low)
    assert (high - low) == pytest.approx(robust[1] - robust[0], rel=0.25)


@pytest.mark.parametrize(
    ("requested", "binary", "clustered", "used"),
    [
        ("auto", True, False, "tango"), ("auto", False, False, "bootstrap_bca"), ("auto", True, True, "cluster"),
        ("tango", True, True, "cluster"), ("t", False, True, "cluster"), ("t", True, False, "tango"),
        ("bootstrap_bca", True, False, "tango"), ("bootstrap_bca", False, True, "cluster_bootstrap_bca"),
        ("bootstrap_percentile", True, True, "cluster_bootstrap_percentile"),
        ("cluster", False, False, "cluster"),
    ],
)
def test_choose_method_uses_clusters_and_tango_where_they_apply(requested, binary, clustered, used):
    method, why = stats.choose_method(requested, binary=binary, clustered=clustered)
    assert method == used and why


def test_compare_uses_declared_clusters_with_every_method():
    rng = np.random.default_rng(2)
    base = {f"c{i}": float(rng.random() < 0.7) for i in range(200)}
    cand = {k: v if rng.random() < 0.8 else 1.0 - v for k, v in base.items()}
    clusters = {f"c{i}": f"d{i // 8}" for i in range(200)}
    for method in ("auto", "tango", "t", "cluster"):
        result = compare(base, cand, method=method, clusters=clusters)
        assert result.method == "cluster" and result.n_clusters == 25 and result.design_effect is not None
    singletons = {k: k for k in base}
    assert compare(base, cand, clusters=singletons).method == "tango"


def test_power_analysis_multiplies_the_planning_variance_by_the_design_effect():
    independent = _comparison(-0.05, 0.01)
    clustered = dataclasses.replace(independent, design_effect=3.7, icc=0.3, n_clusters=10)
    plain = power_analysis(independent, margin=MARGIN)
    inflated = power_analysis(clustered, margin=MARGIN)
    assert inflated["n_needed"] == pytest.approx(3.7 * plain["n_needed"], rel=0.01)
    assert inflated["clusters_needed"] == math.ceil(inflated["n_needed"] / 10)
    assert inflated["design_effect"] == 3.7 and inflated["icc"] == 0.3
