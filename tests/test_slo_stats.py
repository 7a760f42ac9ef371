"""Statistics of load runs (gate/slo.py) against published values, and the `slo` policy section."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from gatekeeper.gate import slo
from gatekeeper.gate.policy import load_policy
from gatekeeper.gate.slo_check import LoadRun, Request, evaluate_slo, from_records
from gatekeeper.gate.slo_policy import SloSection
from gatekeeper.types import UsageError

# --------------------------------------------------------------------------- quantiles


@pytest.mark.parametrize(("n", "ranks", "coverage"), [
    # Distribution-free 95 % intervals for the median, as tabulated by Conover (1999),
    # Practical Nonparametric Statistics, 3rd ed., sec. 3.2 and Table A3 (1-based ranks).
    (10, (2, 9), 0.9785),
    (20, (6, 15), 0.9586),
])
def test_median_interval_uses_the_published_order_statistics(n: int, ranks: tuple[int, int], coverage: float) -> None:
    low, high = slo.order_statistic_indices(n, 0.5, alpha=0.025)
    assert (low + 1, high + 1) == ranks  # type: ignore[operator]
    exact = stats.binom.cdf(ranks[1] - 1, n, 0.5) - stats.binom.cdf(ranks[0] - 1, n, 0.5)
    assert exact == pytest.approx(coverage, abs=5e-5)
    q = slo.quantile_ci(np.arange(1.0, n + 1), 0.5, alpha=0.025)
    assert (q.ci_low, q.ci_high) == (float(ranks[0]), float(ranks[1]))


def test_an_upper_bound_on_p95_needs_59_requests() -> None:
    """The largest of n values bounds the 95th percentile from above with 95 % confidence
    once 1 - 0.95^n >= 0.95, i.e. n >= 59 (Wilks 1941; the classic "59 runs" rule)."""
    assert slo.order_statistic_indices(58, 0.95, alpha=0.05)[1] is None
    assert slo.order_statistic_indices(59, 0.95, alpha=0.05)[1] == 58
    assert slo.quantile_ci(np.arange(58.0), 0.95).ci_high is None
    assert (slo.fewest_for_upper_bound(0.95, 0.05), slo.fewest_for_upper_bound(0.99, 0.05)) == (59, 299)


def test_order_statistic_interval_holds_its_coverage_on_a_skewed_distribution() -> None:
    rng = np.random.default_rng(7)
    dist = stats.lognorm(s=0.8, scale=200)
    truth = dist.ppf(0.95)
    covered_high = covered_low = 0
    for _ in range(400):
        q = slo.quantile_ci(dist.rvs(size=200, random_state=rng), 0.95, alpha=0.05)
        covered_high += q.ci_high is not None and truth <= q.ci_high
        covered_low += q.ci_low is not None and q.ci_low <= truth
    # each one-sided bound at least 95 %, conservatively (discrete ranks), within Monte-Carlo error
    assert covered_high / 400 >= 0.93 and covered_low / 400 >= 0.93


def test_requests_that_never_completed_count_as_slower_than_any_answer() -> None:
    done = np.arange(1.0, 91.0)
    q = slo.quantile_ci(np.r_[done, [math.inf] * 10], 0.95)
    assert math.isinf(q.value) and math.isinf(q.ci_low)  # rank 91 of 100 is a timeout: breached for sure
    assert slo.limit_verdict(q.ci_low, q.ci_high, max_value=10_000) == "FAIL"
    q90 = slo.quantile_ci(np.r_[done, [math.inf] * 10], 0.90)
    assert q90.ci_low == 85.0 and math.isinf(q90.ci_high)  # ranks 85 and 95
    assert slo.limit_verdict(q90.ci_low, q90.ci_high, max_value=10_000) == "INCONCLUSIVE"


def test_requests_needed_for_a_quantile_give_the_planned_power() -> None:
    """Plan with the observed distribution, then draw that many requests from it: the bound
    clears the limit about `power` of the time."""
    rng = np.random.default_rng(3)
    dist = stats.lognorm(s=0.5, scale=200)
    limit = float(dist.ppf(0.97))  # the true p95 is under the limit, by a little
    pilot = dist.rvs(size=4000, random_state=rng)
    plan = slo.quantile_requests_needed(pilot, 0.95, limit, alpha=0.05, power=0.8)
    assert plan["side"] == "pass" and 300 < plan["n_needed"] < 3000
    hits = sum(
        (q := slo.quantile_ci(dist.rvs(size=plan["n_needed"], random_state=rng), 0.95)).ci_high is not None
        and q.ci_high <= limit
        for _ in range(300)
    )
    assert 0.72 <= hits / 300 <= 0.88


# --------------------------------------------------------------------------- rates


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    # Newcombe (1998), Two-sided confidence intervals for the single proportion,
    # Stat Med 17:857-872, Table I, method 3 (Wilson score, no continuity correction).
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_newcombe_table_1(k: int, n: int, low: float, high: float) -> None:
    r = slo.wilson_interval(k, n, alpha=0.025)
    assert (r.ci_low, r.ci_high) == (pytest.approx(low, abs=5e-5), pytest.approx(high, abs=5e-5))


def test_requests_needed_for_an_error_rate_with_no_errors_is_the_wilson_bound() -> None:
    """With no error seen, the Wilson upper bound z^2/(n+z^2) falls to 5 % at n >= 19 z^2."""
    z2 = stats.norm.ppf(0.95) ** 2
    assert slo.rate_requests_needed(0, 30, 0.05)["n_needed"] == math.ceil(19 * z2)
    assert slo.rate_requests_needed(8, 100, 0.05)["side"] == "fail"


# --------------------------------------------------------------------------- comparison, capacity


def test_quantile_ratio_interval_separates_a_slower_candidate() -> None:
    rng = np.random.default_rng(11)
    base = rng.lognormal(np.log(200), 0.4, size=600)
    slower = rng.lognormal(np.log(200 * 1.5), 0.4, size=600)
    same = rng.lognormal(np.log(200), 0.4, size=600)
    c = slo.compare_quantiles(base, slower, 0.95)
    assert 1.2 < c["ratio_low"] < 1.5 < c["ratio_high"] < 1.9
    assert c["diff_low"] > 0
    e = slo.compare_quantiles(base, same, 0.95)
    assert e["ratio_low"] < 1.0 < e["ratio_high"]
    assert slo.relative_requests_needed(e, 1.10, alpha=0.05, power=0.8) is not None


def _step(rate: float, p95: float, n: int, errors: int = 0) -> slo.Step:
    rng = np.random.default_rng(int(rate))
    lat = stats.lognorm(s=0.3, scale=p95 / math.exp(0.3 * 1.645)).rvs(size=n, random_state=rng)
    return slo.Step(offered_rps=rate, duration_s=n / rate, latency_ms=list(lat), ttft_ms=[], requests=n,
                    errors=errors, rate_429=0)


def test_capacity_lies_between_the_last_step_met_and_the_first_broken() -> None:
    crit = [slo.Criterion("p95", "latency", 500.0, 0.95), slo.Criterion("errors", "error_rate", 0.05)]
    steps = [_step(2, 300, 200), _step(4, 350, 200), _step(8, 495, 200), _step(16, 900, 200, errors=30)]
    cap = slo.capacity(steps, crit)
    assert [s["state"] for s in cap["steps"]] == ["meets", "meets", "unclear", "breaks"]
    assert (cap["low"], cap["high"]) == (4, 16)
    assert cap["estimate"] in (4, 8)
    assert slo.capacity_verdict(cap, 4) == "PASS"
    assert slo.capacity_verdict(cap, 16) == "FAIL"
    assert slo.capacity_verdict(cap, 8) == "INCONCLUSIVE"
    # a first step too short to show anything does not hide a later one that meets the SLO
    cap = slo.capacity([_step(1, 300, 20), _step(4, 350, 200), _step(16, 900, 200)], crit)
    assert [s["state"] for s in cap["steps"]] == ["unclear", "meets", "breaks"]
    assert (cap["low"], cap["high"], cap["estimate"]) == (4, 16, 4)


# --------------------------------------------------------------------------- the section on a run


def _run(cand_ms: float, base_ms: float, n: int, seed: int = 0) -> LoadRun:
    rng = np.random.default_rng(seed)
    reqs = []
    for i in range(n):
        for model, ms in (("candidate", cand_ms), ("baseline", base_ms)):
            lat = float(rng.lognormal(math.log(ms), 0.3))
            reqs.append(Request(model=model, suite="steady", status="ok", latency_ms=lat, ttft_ms=lat / 4,
                                started_s=i * 0.05))
    return LoadRun(requests=reqs)


SECTION = SloSection.model_validate({"guardrails": [
    {"name": "p95", "measure": "latency", "quantile": "p95", "max": 600},
    {"name": "p95_vs_baseline", "measure": "latency", "max_increase_pct": 20},
    {"name": "ttft", "measure": "ttft", "max": 300},
    {"name": "errors", "measure": "error_rate", "max": 0.05},
]})


def test_a_slower_candidate_fails_the_relative_and_absolute_slo() -> None:
    out = evaluate_slo(SECTION, _run(500, 250, 300))
    verdicts = {r["name"]: r["verdict"] for r in out["rows"]}
    assert verdicts == {"p95": "FAIL", "p95_vs_baseline": "FAIL", "ttft": "PASS", "errors": "PASS"}
    assert {c["p"] for c in out["comparisons"]} == {0.5, 0.95, 0.99}
    assert len(out["cdf"]["candidate"]["latency"]["ms"]) > 100


def test_a_short_run_is_inconclusive_and_says_how_many_requests_it_needs() -> None:
    out = evaluate_slo(SECTION, _run(250, 250, 25))
    rows = {r["name"]: r for r in out["rows"]}
    assert rows["p95"]["verdict"] == "INCONCLUSIVE" and rows["p95"]["ci_high"] is None
    assert rows["p95"]["requests_needed"] >= 59
    assert f"about {rows['p95']['requests_needed']} candidate requests needed" in rows["p95"]["reason"]
    assert rows["errors"]["verdict"] == "INCONCLUSIVE" and rows["errors"]["requests_needed"] == 52


def test_driver_records_become_requests_with_timeouts_censored() -> None:
    records = [{"suite": "s", "process": "constant", "steps": [{"index": 0, "offered_rate": 5, "duration_s": 2}],
                "measurements": [
                    {"model": "candidate", "step": 0, "offered_rate": 5, "t_sent": 0.1, "status": "ok",
                     "latency_ms": 100.0, "ttft_ms": None},
                    {"model": "candidate", "step": 0, "offered_rate": 5, "t_sent": 0.3, "status": "timeout",
                     "latency_ms": 3000.0, "ttft_ms": None},
                ]}]
    run = from_records(records)
    assert [r.status for r in run.requests] == ["ok", "timeout"] and not run.requests[0].ramp
    assert "measurements" not in run.meta["s"]


# --------------------------------------------------------------------------- the policy section

POLICY = """\
metadata: {{id: p, title: t, version: "1", effective_date: 2026-01-01, owner: o}}
modifications:
  - {{id: M1, type: prompt_template_change, description: d, authorization: automatic, evaluation: [facts, p95]}}
performance_evaluation:
  suites: [s]
  metrics:
    - {{name: facts, metric: facts, direction: higher, margin: 0.05}}
impact_assessment: {{intended_use: tests}}
traceability:
  - {{modification: M1, evaluations: [facts, p95], rationale: r}}
slo:
  guardrails:
    - name: p95
      measure: latency
{extra}
"""


def _policy(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(extra=extra))
    return path


def test_slo_guardrails_load_and_can_be_traced_like_metrics(tmp_path: Path) -> None:
    policy = load_policy(_policy(tmp_path, "      max: 800\n    - {name: cap, measure: throughput, min: 5}"))
    assert policy.slo is not None
    g = policy.slo.guardrails[0]
    assert (g.quantile, g.max, g.critical, g.label()) == (0.95, 800, True, "latency p95 ≤ 800 ms")


@pytest.mark.parametrize(("extra", "line", "field", "message"), [
    ("      min: 800", 15, "slo.guardrails[0].min", "min applies to throughput only"),
    ("      max: 800\n      max_increase_pct: 10", 13, "slo.guardrails[0]", "one limit per guardrail"),
    ("      quantile: 95\n      max: 800", 15, "slo.guardrails[0].quantile", "write 0.95 or p95"),
    ("      max: 800\n    - {name: e, measure: error_rate, max: 5}", 16, "slo.guardrails[1].max",
     "1 % is 0.01"),
    ("      max_increase_pct: 10\n    - {name: c, measure: throughput, min: 5}", 16, "slo.guardrails[1].measure",
     "needs an absolute latency"),
    ("      max: 800\n    - {name: facts, measure: ttft, max: 100}", 16, "slo.guardrails[1].name",
     "already a performance_evaluation metric name"),
])
def test_a_bad_slo_guardrail_is_a_usage_error_naming_file_line_and_field(
        tmp_path: Path, extra: str, line: int, field: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        load_policy(_policy(tmp_path, extra))
    err = info.value
    assert (err.line, err.field) == (line, field), str(err)
    assert message in err.message
    assert err.file is not None and err.file.endswith("policy.yaml")
