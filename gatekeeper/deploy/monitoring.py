"""Production monitoring: compare the signals of a new version with the previous one.

Unpaired statistics (different traffic went to each version): Newcombe's hybrid score
interval for rates, Welch's t interval for ratings (:func:`gatekeeper.gate.stats.unpaired_compare`),
the non-inferiority verdict of the gate (:func:`gatekeeper.gate.stats.verdict`) with the
monitoring metric's margin and alpha, and the policy's rollback criteria. Drift between
the two versions (or against a reference window) is reported: the distribution of input
topics (chi-square test of homogeneity) and of answer lengths (two-sample
Kolmogorov-Smirnov), from scipy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gatekeeper.gate.policy import MonitoringMetric, Policy, RollbackCriterion, Stage
from gatekeeper.gate.stats import guardrail, unpaired_compare, verdict
from gatekeeper.signals.records import Signal

MONITOR_SCHEMA = "gatekeeper.monitor/1"
MONITOR_EXIT_CODES = {"OK": 0, "ROLLBACK": 1, "INCONCLUSIVE": 3}
SAFETY_FLAG = "safety"
DRIFT_ALPHA = 0.01


def _verdict_is(kind: str) -> Callable[[Signal], float | None]:
    def value(signal: Signal) -> float | None:
        if signal.feedback.verdict == "none":
            return None  # no feedback: not in the denominator of a feedback rate
        return 1.0 if signal.feedback.verdict == kind else 0.0

    return value


SIGNAL_VALUES: dict[str, Callable[[Signal], float | None]] = {
    "acceptance_rate": _verdict_is("accepted"),
    "rejection_rate": _verdict_is("rejected"),
    "edit_rate": _verdict_is("edited"),
    "rating": lambda s: s.feedback.rating,
    "flag_rate": lambda s: 1.0 if SAFETY_FLAG in s.flags else 0.0,
}
"""How each policy signal kind turns one signal into a value (``None``: not counted)."""


def signal_values(kind: str, signals: Iterable[Signal]) -> list[float]:
    get = SIGNAL_VALUES[kind]
    return [v for v in (get(s) for s in signals) if v is not None]


@dataclass
class MonitorResult:
    decision: str
    reasons: list[str]
    metrics: list[dict[str, Any]]
    criteria: list[dict[str, Any]]
    drift: dict[str, Any] = field(default_factory=dict)


def compare_metric(spec: MonitoringMetric, previous: Sequence[Signal], new: Sequence[Signal]) -> dict[str, Any]:
    """One monitoring metric: rates of both versions, their difference, interval and verdict."""
    base, cand = signal_values(spec.signal, previous), signal_values(spec.signal, new)
    row: dict[str, Any] = {
        "name": spec.name, "signal": spec.signal, "direction": spec.direction, "margin": spec.margin,
        "alpha": spec.alpha, "n_previous": len(base), "n_new": len(cand),
        "previous": None, "new": None, "delta": None, "ci_low": None, "ci_high": None, "method": None,
    }
    try:
        c = unpaired_compare(base, cand, alpha=spec.alpha)
    except ValueError as exc:
        return row | {"verdict": "NODATA", "note": str(exc)}
    assert spec.direction is not None
    return row | {
        "previous": c.baseline_mean, "new": c.candidate_mean, "delta": c.delta, "ci_low": c.ci_low,
        "ci_high": c.ci_high, "method": c.method, "note": c.note,
        "verdict": verdict(c, hypothesis="non_inferiority", margin=spec.margin, direction=spec.direction),
    }


def evaluate_criterion(
    criterion: RollbackCriterion, spec: MonitoringMetric, row: dict[str, Any], new: Sequence[Signal]
) -> dict[str, Any]:
    """Whether one rollback criterion trips: ``tripped`` True, False, or None (undecided)."""
    out: dict[str, Any] = {"metric": criterion.metric, "condition": criterion.condition,
                           "threshold": criterion.threshold, "description": criterion.description}
    if criterion.condition == "fails":
        v = row["verdict"]
        tripped = True if v == "FAIL" else False if v == "PASS" else None
        why = (f"{spec.name}: new {_pct(row['new'])} vs previous {_pct(row['previous'])}, difference "
               f"{_signed(row['delta'])} (interval {_signed(row['ci_low'])} .. {_signed(row['ci_high'])}, "
               f"margin {spec.margin:g}): {v}")
        return out | {"tripped": tripped, "verdict": v, "explanation": why}
    values = signal_values(spec.signal, new)
    if not values:
        return out | {"tripped": None, "verdict": "NODATA", "explanation": f"{spec.name}: no signals"}
    limit = {"min_value" if criterion.condition == "below" else "max_value": criterion.threshold}
    check = guardrail(values, alpha=spec.alpha, **limit)
    v = check["verdict"]
    tripped = True if v == "FAIL" else False if v == "PASS" else None
    why = (f"{spec.name}: new {_pct(check['mean'])} (interval {_pct(check['ci_low'])} .. "
           f"{_pct(check['ci_high'])}) {'must not be' if v != 'PASS' else 'is not'} "
           f"{criterion.condition} {criterion.threshold:g}: {'tripped' if tripped else v}")
    return out | {"tripped": tripped, "verdict": v, "explanation": why, "guardrail": check}


def evaluate(
    policy: Policy, previous: Sequence[Signal], new: Sequence[Signal], *, stage: Stage | None = None,
) -> MonitorResult:
    """The monitoring decision: ROLLBACK, INCONCLUSIVE or OK, with its reasons."""
    procedures = policy.update_procedures
    specs = {m.name: m for m in procedures.monitoring.metrics}
    rows = {name: compare_metric(spec, previous, new) for name, spec in specs.items()}
    criteria = procedures.rollback_criteria or [RollbackCriterion(metric=name) for name in specs]
    results = [evaluate_criterion(c, specs[c.metric], rows[c.metric], new) for c in criteria]
    reasons: list[str] = []
    tripped = [r for r in results if r["tripped"]]
    undecided = [r for r in results if r["tripped"] is None]
    if not specs:
        return MonitorResult("INCONCLUSIVE", ["the policy declares no monitoring metrics "
                                              "(update_procedures.monitoring.metrics)"], [], [])
    if tripped:
        reasons = [f"rollback criterion tripped — {r['explanation']}" for r in tripped]
        return MonitorResult("ROLLBACK", reasons, list(rows.values()), results)
    if undecided:
        reasons = [f"not enough evidence — {r['explanation']}" for r in undecided]
    if stage is not None and len(new) < stage.min_signals:
        reasons.append(f"{len(new)} signals of the new version; stage {stage.name!r} needs {stage.min_signals}")
    if reasons:
        return MonitorResult("INCONCLUSIVE", reasons, list(rows.values()), results)
    return MonitorResult("OK", [f"no rollback criterion tripped — {r['explanation']}" for r in results],
                         list(rows.values()), results)


# --------------------------------------------------------------------------- drift


def topic_of(signal: Signal) -> str:
    return str(signal.attributes.get("topic") or "(none)")


def answer_length(signal: Signal) -> int:
    return len(signal.answer.split())


def topic_drift(a: Sequence[Signal], b: Sequence[Signal], *, alpha: float = DRIFT_ALPHA) -> dict[str, Any]:
    """Chi-square test of homogeneity of the topic counts of two groups of signals."""
    from scipy.stats import chi2_contingency

    ca, cb = Counter(map(topic_of, a)), Counter(map(topic_of, b))
    topics = sorted(set(ca) | set(cb))
    out: dict[str, Any] = {"test": "chi2", "n": [len(a), len(b)], "topics": len(topics)}
    if len(topics) < 2 or not a or not b:
        return out | {"statistic": None, "p_value": None, "drift": None, "note": "needs 2 topics and 2 groups"}
    result = chi2_contingency([[ca[t] for t in topics], [cb[t] for t in topics]])
    shares = {t: (ca[t] / len(a), cb[t] / len(b)) for t in topics}
    largest = sorted(shares.items(), key=lambda kv: -abs(kv[1][1] - kv[1][0]))[:3]
    return out | {
        "statistic": float(result.statistic), "p_value": float(result.pvalue),
        "drift": bool(result.pvalue < alpha), "alpha": alpha,
        "largest_shifts": [{"topic": t, "reference": round(x, 4), "current": round(y, 4)} for t, (x, y) in largest],
    }


def length_drift(a: Sequence[Signal], b: Sequence[Signal], *, alpha: float = DRIFT_ALPHA) -> dict[str, Any]:
    """Two-sample Kolmogorov-Smirnov test of answer lengths (words)."""
    from scipy.stats import ks_2samp

    la, lb = [answer_length(s) for s in a], [answer_length(s) for s in b]
    out: dict[str, Any] = {"test": "ks", "n": [len(la), len(lb)]}
    if not la or not lb:
        return out | {"statistic": None, "p_value": None, "drift": None, "note": "a group is empty"}
    result = ks_2samp(la, lb)
    return out | {
        "statistic": float(result.statistic), "p_value": float(result.pvalue), "drift": bool(result.pvalue < alpha),
        "alpha": alpha, "mean_words": [sum(la) / len(la), sum(lb) / len(lb)],
    }


def drift_report(
    reference: Sequence[Signal], current: Sequence[Signal], *, alpha: float = DRIFT_ALPHA
) -> dict[str, Any]:
    return {"topics": topic_drift(reference, current, alpha=alpha),
            "answer_length": length_drift(reference, current, alpha=alpha)}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f}"
