"""From scores to a decision: per-metric verdicts under the policy, then the gate.

Per metric (and per declared slice) the paired difference candidate − baseline gets a
confidence interval by the policy's method and a verdict under its hypothesis (see
:mod:`gatekeeper.gate.stats`). The gate then combines verdicts, the scope check, the test-set
reuse rule and the approvals into one state. Every reason names the policy clause and the
numbers behind it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gatekeeper.engine.score_columns import ScoreColumns, columns_of
from gatekeeper.gate.policy import MetricSpec, Policy, ScopeResult
from gatekeeper.gate.score_tables import EMPTY, MetricMeans, Pairs, case_fields

EXIT_CODES = {"PROMOTE": 0, "REJECT": 1, "ROLLBACK": 1, "HOLD": 2, "INCONCLUSIVE": 3, "ERROR": 5}
VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE", "NODATA", "ERROR")


@dataclass
class Reason:
    clause: str
    verdict: str
    text: str


@dataclass
class ScoreTable:
    """The NODATA and ERROR tallies of a label-distribution metric, per model."""

    nodata: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first_error: dict[str, str] = field(default_factory=dict)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.3f}"


def _explain(spec: MetricSpec, verdict: str, lo: float, hi: float) -> str:
    """Why the interval gives this verdict, in the metric's own units."""
    better = spec.better
    m = spec.margin
    if spec.hypothesis == "non_inferiority":
        bound = -m if better == "higher" else m
        side = {"PASS": "excludes", "FAIL": "lies wholly beyond", "INCONCLUSIVE": "straddles"}[verdict]
        return f"the interval {side} the non-inferiority bound Δ = {bound:+.3f} ({better} is better)"
    if spec.hypothesis == "superiority":
        side = {"PASS": "clears", "FAIL": "does not reach", "INCONCLUSIVE": "straddles"}[verdict]
        return f"the interval {side} the superiority bound {m:+.3f} ({better} is better)"
    side = {"PASS": "lies inside", "FAIL": "lies outside", "INCONCLUSIVE": "crosses"}[verdict]
    return f"the interval {side} the equivalence range ±{m:.3f}"


def evaluate_metric(
    spec: MetricSpec,
    pairs: Pairs,
    *,
    clusters: Mapping[str, str] | None = None,
    clause: str,
    slice_: dict[str, str] | None = None,
    family_size: int = 1,
) -> dict[str, Any]:
    """One verdict row of the decision record, from the paired per-case means ``pairs``
    (:class:`~gatekeeper.gate.score_tables.Pairs`; :func:`pairs_of` makes them from two mappings).

    ``clusters`` (case id -> cluster) are passed to every method; :func:`stats.compare`
    uses them whenever a cluster holds more than one case. ``family_size`` k > 1 (the
    slices of one metric under ``gate.slices.multiplicity: bonferroni``) makes a FAIL need
    the interval at alpha/k; a FAIL that does not hold at that level is INCONCLUSIVE.
    """
    from gatekeeper.gate import stats

    row: dict[str, Any] = {
        "name": spec.name, "metric": spec.metric, "slice": slice_, "clause": clause,
        "direction": spec.direction, "hypothesis": spec.hypothesis, "margin": spec.margin,
        "alpha": spec.alpha, "sides": spec.sides, "ci_method": spec.ci_method, "critical": spec.critical,
        "n": len(pairs.ids), "baseline": None, "candidate": None, "delta": None,
        "ci_low": None, "ci_high": None, "verdict": "NODATA", "reason": "", "power": None,
        "guardrail": None, "comparison": None, "power_target": spec.power,
    }
    try:
        comp = stats.compare_paired(
            pairs.ids, pairs.base, pairs.cand, method=spec.ci_method, alpha=spec.alpha, sides=spec.sides,
            clusters=clusters, cluster_labels=pairs.clusters,
        )
    except ValueError as exc:
        is_nodata = str(exc).startswith("need at least")
        row["verdict"] = "NODATA" if is_nodata else "ERROR"
        row["reason"] = f"{spec.name}: {exc}"
        return row
    row.update(
        n=comp.n, baseline=comp.baseline_mean, candidate=comp.candidate_mean, delta=comp.delta,
        ci_low=comp.ci_low, ci_high=comp.ci_high, comparison=asdict(comp),
    )
    level = round(100 * (1 - (2 * spec.alpha if spec.sides == "one" else spec.alpha)), 1)
    numbers = (
        f"Δ {comp.delta:+.3f} (candidate {comp.candidate_mean:.3f} vs baseline {comp.baseline_mean:.3f}), "
        f"{level:g}% CI [{comp.ci_low:+.3f}, {comp.ci_high:+.3f}], n = {comp.n}"
        + (f" in {comp.n_clusters} clusters" if comp.design_effect is not None else "")
        + f"; method {comp.method}: {comp.method_reason}"
    )
    parts: list[str] = []
    verdicts: list[str] = []
    if spec.hypothesis != "guardrail_only" and spec.hypothesis != "homogeneity":
        v = stats.verdict(comp, hypothesis=spec.hypothesis, margin=spec.margin, direction=spec.better)
        verdicts.append(v)
        parts.append(_explain(spec, v, comp.ci_low, comp.ci_high))
    if spec.guardrail is not None:
        g = stats.guardrail(
            pairs.candidate_all, max_value=spec.guardrail.max, min_value=spec.guardrail.min,
            alpha=spec.alpha,
        )
        row["guardrail"] = g
        verdicts.append(g["verdict"])
        limit = (f"≤ {spec.guardrail.max:g}" if spec.guardrail.max is not None else "") + (
            f" ≥ {spec.guardrail.min:g}" if spec.guardrail.min is not None else "")
        parts.append(
            f"guardrail {limit.strip()}: candidate {g['mean']:.3f}, "
            f"CI [{g['ci_low']:.3f}, {g['ci_high']:.3f}]: "
            + {"PASS": "holds", "FAIL": "breached", "INCONCLUSIVE": "not shown to hold"}[g["verdict"]]
        )
    verdict = "FAIL" if "FAIL" in verdicts else "INCONCLUSIVE" if "INCONCLUSIVE" in verdicts else "PASS"
    if verdict == "FAIL" and family_size > 1:
        strict = spec.model_copy(update={"alpha": spec.alpha / family_size})
        again = evaluate_metric(strict, pairs, clusters=clusters, clause=clause, slice_=slice_)
        if again["verdict"] != "FAIL":
            verdict = "INCONCLUSIVE"
            parts.append(
                f"FAIL not shown at the familywise level alpha/{family_size} = {spec.alpha / family_size:.4g} "
                f"(Bonferroni over {family_size} slices, gate.slices.multiplicity)"
            )
        else:
            parts.append(f"FAIL holds at the familywise level alpha/{family_size} (Bonferroni)")
    min_n = spec.min_n if spec.min_n is not None else stats.default_min_n(comp)
    row["min_n"] = min_n
    if comp.n < min_n and verdict != "INCONCLUSIVE":
        parts.append(
            f"n = {comp.n} is below min_n {min_n}"
            + ("" if spec.min_n is not None else " (the default for this kind of metric)")
            + ": too few cases to decide"
            + (" (the interval alone would say FAIL)" if verdict == "FAIL" else "")
        )
        verdict = "INCONCLUSIVE"
    if verdict == "INCONCLUSIVE" and spec.hypothesis != "guardrail_only" and spec.hypothesis != "homogeneity":
        power = stats.power_analysis(
            comp, margin=spec.margin, alpha=spec.alpha, power=spec.power,
            hypothesis=spec.hypothesis, direction=spec.better,
        )
        row["power"] = power
        if power.get("n_needed"):
            needed = max(power["n_needed"], min_n)
            clustered = (
                f" ({power['clusters_needed']} clusters; design effect {power['design_effect']:.2f}, "
                f"ICC {power['icc']:.2f})" if power.get("clusters_needed") else ""
            )
            parts.append(
                f"detectable effect at this n ≈ {power['mde']:.3f}; about {needed} cases{clustered} "
                f"needed for power {spec.power:g} on this comparison alone"
            )
    if comp.note:
        parts.append(comp.note)
    row["verdict"] = verdict
    row["reason"] = f"{spec.name}: {numbers}; " + "; ".join(parts) + f" → {verdict}"
    return row


def evaluate_metrics(
    policy: Policy, scores: ScoreColumns | list[Mapping[str, Any]], case_index: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Every metric of the policy, overall and per declared slice, from the run's score
    columns (:func:`gatekeeper.engine.record.score_columns`; result rows are accepted too)."""
    columns = scores if isinstance(scores, ScoreColumns) else columns_of(list(scores))
    fields = case_fields(columns, case_index)
    suite_rows: dict[str, np.ndarray] = {}
    rows_for_labels: list[dict[str, Any]] | None = None
    out: list[dict[str, Any]] = []
    gate = policy.gate
    for spec in policy.performance_evaluation.metrics:
        clause = f"performance_evaluation.metrics[{spec.name}]"
        if spec.measure == "distribution":
            if rows_for_labels is None:
                rows_for_labels = list(columns.rows())
            out.extend(evaluate_distribution(spec, rows_for_labels, case_index, clause=clause, gate=gate))
            continue
        rows = None
        if spec.suite is not None:
            if spec.suite not in suite_rows:
                in_suite = np.array([s == spec.suite for s in fields["suite"]], dtype=bool)
                suite_rows[spec.suite] = in_suite[columns.case] if len(columns) else np.zeros(0, dtype=bool)
            rows = suite_rows[spec.suite]
        table = MetricMeans(columns, spec.metric, measure=spec.measure, rows=rows)
        with_means = np.union1d(table.cases("baseline"), table.cases("candidate"))
        n_cases = len(with_means) + table.n_nodata + table.n_errors
        if n_cases == 0:
            out.append({
                **evaluate_metric(spec, EMPTY, clusters=None, clause=clause),
                "reason": f"{spec.name}: no case in the run has the metric {spec.metric!r}",
            })
            continue
        errors, nodata = table.n_errors, table.n_nodata
        row = evaluate_metric(spec, table.pairs(clusters=fields["cluster"]), clause=clause)
        row.update(nodata=nodata, errors=errors)
        if errors:
            example = next(iter(table.first_error.values()))
            row["verdict"] = "ERROR"
            row["reason"] = f"{spec.name}: {errors} score(s) could not be computed (e.g. {example})"
        elif nodata > gate.nodata_limit(n_cases):
            row["verdict"] = "NODATA"
            row["reason"] = (
                f"{spec.name}: {nodata} NODATA score(s) of {n_cases} cases exceed gate.max_nodata "
                f"({gate.nodata_limit(n_cases)})"
            )
        out.append(row)
        common = table.common()
        slice_groups: dict[str, dict[str, np.ndarray]] = {}
        for field_name in spec.slices:
            groups: dict[str, list[int]] = defaultdict(list)
            for case in common.tolist():
                value = fields["slices"][case].get(field_name)
                if value is not None:
                    groups[value].append(case)
            slice_groups[field_name] = {v: np.array(c, dtype=np.int64) for v, c in groups.items()}
        family = sum(len(k) >= spec.min_slice_n for g in slice_groups.values() for k in g.values())
        family = family if gate.slices.multiplicity == "bonferroni" else 1
        for field_name, by_value in slice_groups.items():
            for value, cases in sorted(by_value.items()):
                sclause = f"{clause}.slices[{field_name}={value}]"
                sl = {"field": field_name, "value": value}
                if len(cases) < spec.min_slice_n:
                    srow = evaluate_metric(spec, EMPTY, clusters=None, clause=sclause, slice_=sl)
                    srow["n"] = len(cases)
                    srow["reason"] = (
                        f"{spec.name}[{field_name}={value}]: n = {len(cases)} is below "
                        f"min_slice_n {spec.min_slice_n}"
                    )
                else:
                    srow = evaluate_metric(
                        spec, table.pairs(cases, clusters=fields["cluster"]),
                        clause=sclause, slice_=sl, family_size=max(family, 1),
                    )
                    srow["reason"] = srow["reason"].replace(f"{spec.name}:", f"{spec.name}[{field_name}={value}]:", 1)
                out.append(srow)
    return out


def label_counts(
    rows: Iterable[Mapping[str, Any]], metric: str, task: str | None, *, keys: set[str] | None = None
) -> tuple[dict[str, Counter[str]], ScoreTable]:
    """model → counts of the labels a classifier ``metric`` gave for ``task`` (its first task
    when ``None``), from ``details["labels"]`` of its ``ok`` scores; and the NODATA/ERROR
    tallies. Every epoch's label counts."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    table = ScoreTable()
    for row in rows:
        score = row["scores"].get(metric)
        if score is None or (keys is not None and row["key"] not in keys):
            continue
        found = (score.get("details") or {}).get("labels")
        labels: dict[str, Any] = found if isinstance(found, dict) else {}
        usable = score["status"] == "ok" and bool(labels)
        key = (task or next(iter(labels))) if usable else None
        if score["status"] == "error":
            table.errors[row["model"]] += 1
            table.first_error.setdefault(row["model"], score["reason"])
        elif key is None or key not in labels:
            table.nodata[row["model"]] += 1
        else:
            counts[row["model"]][str(labels[key])] += 1
    return counts, table


def _shares(counts: Mapping[str, int]) -> str:
    total = sum(counts.values()) or 1
    return "{" + ", ".join(f"{k}: {v} ({v / total:.0%})" for k, v in counts.items()) + "}"


def distribution_row(
    spec: MetricSpec, counts: Mapping[str, Counter[str]], *, clause: str, slice_: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One verdict row for a label distribution: candidate vs baseline, chi-square (or G)
    test of homogeneity. FAIL when p < alpha and Cramér's V exceeds the margin."""
    from gatekeeper.gate import stats

    label = spec.name + (f"[{slice_['field']}={slice_['value']}]" if slice_ else "")
    base, cand = counts.get("baseline", Counter()), counts.get("candidate", Counter())
    row: dict[str, Any] = {
        "name": spec.name, "metric": spec.metric, "slice": slice_, "clause": clause, "direction": None,
        "hypothesis": "homogeneity", "margin": spec.margin, "alpha": spec.alpha, "sides": "two",
        "ci_method": spec.test, "critical": spec.critical, "n": min(sum(base.values()), sum(cand.values())),
        "baseline": None, "candidate": None, "delta": None, "ci_low": None, "ci_high": None,
        "verdict": "NODATA", "reason": "", "power": None, "guardrail": None, "comparison": None,
        "task": spec.task, "distribution": None,
    }
    missing = [m for m, c in (("baseline", base), ("candidate", cand)) if not c]
    if missing:
        row["reason"] = f"{label}: no labels from the {' and the '.join(missing)} for metric {spec.metric!r}"
        return row
    result = stats.label_distribution_test(base, cand, test=spec.test)
    row["distribution"] = result
    name = "chi-square" if spec.test == "chi_square" else "G"
    numbers = (
        f"labels{f' of task {spec.task!r}' if spec.task else ''}: baseline {_shares(result['baseline'])} vs "
        f"candidate {_shares(result['candidate'])}; {name} = {result['statistic']:.2f}, dof {result['dof']}, "
        f"p = {result['p_value']:.4g}, Cramér's V {result['cramers_v']:.3f}"
    )
    shifted = result["p_value"] < spec.alpha
    if shifted and result["cramers_v"] > spec.margin:
        verdict, why = "FAIL", f"p < alpha {spec.alpha:g}: the candidate's label distribution shifted"
    elif shifted:
        verdict, why = "PASS", f"p < alpha {spec.alpha:g} but V ≤ margin {spec.margin:g}: a negligible shift"
    else:
        verdict, why = "PASS", f"p ≥ alpha {spec.alpha:g}: no shift shown"
        if spec.min_n is not None and row["n"] < spec.min_n:
            verdict, why = "INCONCLUSIVE", f"{why}, but n = {row['n']} is below min_n {spec.min_n}"
    if result["low_expected_share"] > 0.2:
        why += f"; {result['low_expected_share']:.0%} of the cells expect fewer than 5 (the test is approximate)"
    row["verdict"] = verdict
    row["reason"] = f"{label}: {numbers}; {why} → {verdict}"
    return row


def evaluate_distribution(
    spec: MetricSpec, rows: Sequence[Mapping[str, Any]], case_index: Mapping[str, Any], *, clause: str, gate: Any,
) -> list[dict[str, Any]]:
    """A ``measure: distribution`` metric, overall and per declared slice."""
    counts, table = label_counts(rows, spec.metric, spec.task)
    row = distribution_row(spec, counts, clause=clause)
    errors, nodata = sum(table.errors.values()), sum(table.nodata.values())
    n_cases = sum(sum(c.values()) for c in counts.values()) + errors + nodata
    row.update(nodata=nodata, errors=errors)
    if n_cases == 0:
        row["reason"] = f"{spec.name}: no case in the run has the metric {spec.metric!r}"
    elif errors:
        row["verdict"] = "ERROR"
        example = next(iter(table.first_error.values()))
        row["reason"] = f"{spec.name}: {errors} score(s) could not be computed (e.g. {example})"
    elif nodata > gate.nodata_limit(n_cases):
        row["verdict"] = "NODATA"
        row["reason"] = (f"{spec.name}: {nodata} NODATA score(s) of {n_cases} exceed gate.max_nodata "
                         f"({gate.nodata_limit(n_cases)})")
    out = [row]
    for field_name in spec.slices:
        groups: dict[str, set[str]] = defaultdict(set)
        for key, entry in case_index.items():
            value = entry["slices"].get(field_name)
            if value is not None:
                groups[value].add(key)
        for value, keys in sorted(groups.items()):
            sl = {"field": field_name, "value": value}
            srow = distribution_row(spec, label_counts(rows, spec.metric, spec.task, keys=keys)[0],
                                    clause=f"{clause}.slices[{field_name}={value}]", slice_=sl)
            if srow["n"] < spec.min_slice_n and srow["verdict"] != "NODATA":
                srow.update(verdict="NODATA", reason=(
                    f"{spec.name}[{field_name}={value}]: n = {srow['n']} is below min_slice_n {spec.min_slice_n}"))
            out.append(srow)
    return out


@dataclass
class GateInputs:
    """What the gate combines besides the metric rows."""

    scope: ScopeResult
    reuse_violations: list[Reason] = field(default_factory=list)
    generation_error_rate: float = 0.0
    approvals_required: list[str] = field(default_factory=list)
    """roles whose signed approval the change needs before it may be promoted"""


def decide(policy: Policy, metrics: list[dict[str, Any]], inputs: GateInputs) -> tuple[str, list[Reason]]:
    """The gate: REJECT > ERROR > INCONCLUSIVE > HOLD > PROMOTE, with every reason."""
    gate = policy.gate
    reject: list[Reason] = []
    error: list[Reason] = []
    inconclusive: list[Reason] = []
    passed: list[Reason] = []

    for dev in inputs.scope.deviations:
        reject.append(Reason(dev.split(":", 1)[0] if ":" in dev else "modifications", "DEVIATION", dev))
    reject.extend(inputs.reuse_violations)
    if inputs.generation_error_rate > gate.max_error_rate:
        error.append(Reason(
            "gate.max_error_rate", "ERROR",
            f"{inputs.generation_error_rate:.1%} of generations failed, above gate.max_error_rate "
            f"{gate.max_error_rate:.1%}",
        ))

    overall = [m for m in metrics if m["slice"] is None]
    failed_names = {m["name"] for m in metrics if m["verdict"] == "FAIL"}
    noncritical_fail = [m for m in overall if not m["critical"] and m["name"] in failed_names]
    noncritical_inconclusive = [m for m in overall if not m["critical"] and m["verdict"] == "INCONCLUSIVE"]
    errors = [m for m in metrics if m["verdict"] == "ERROR"]
    for m in metrics:
        reason = Reason(m["clause"], m["verdict"], m["reason"])
        if m["critical"] and m["verdict"] == "FAIL":
            reject.append(reason)
        elif m["critical"] and m["slice"] is None and m["verdict"] in ("INCONCLUSIVE", "NODATA"):
            inconclusive.append(reason)
        elif m["critical"] and m["slice"] is not None and m["verdict"] == "INCONCLUSIVE" and (
            gate.slices.inconclusive == "hold" or worse_than_margin(m)
        ):
            why = ("gate.slices.inconclusive is hold" if gate.slices.inconclusive == "hold"
                   else "its point estimate is worse than the margin, so it cannot pass on the overall metric")
            inconclusive.append(Reason(m["clause"], "INCONCLUSIVE", f"{m['reason']} (critical slice: {why})"))
        elif m["critical"] and m["slice"] is None and m["verdict"] == "PASS":
            passed.append(reason)
    if len(noncritical_fail) > gate.max_failed_noncritical:
        reject.extend(
            Reason(m["clause"], "FAIL", m["reason"])
            for m in metrics if not m["critical"] and m["verdict"] == "FAIL"
        )
        reject.append(Reason(
            "gate.max_failed_noncritical", "FAIL",
            f"{len(noncritical_fail)} non-critical metric(s) failed; the policy tolerates "
            f"{gate.max_failed_noncritical}",
        ))
    limit = gate.max_inconclusive_noncritical
    if limit is not None and len(noncritical_inconclusive) > limit:
        inconclusive.append(Reason(
            "gate.max_inconclusive_noncritical", "INCONCLUSIVE",
            f"{len(noncritical_inconclusive)} non-critical metric(s) inconclusive; the policy tolerates {limit}",
        ))
    if len(errors) > gate.max_error:
        error.extend(Reason(m["clause"], "ERROR", m["reason"]) for m in errors)

    if reject:
        return "REJECT", reject
    if error:
        return "ERROR", error
    if inconclusive:
        plan = gate_power_plan(policy, metrics)
        if plan is not None:
            inconclusive.append(Reason("gate.power_plan", "INCONCLUSIVE", plan["text"]))
        return "INCONCLUSIVE", inconclusive
    change = (
        f"the change is modification {inputs.scope.modification_id}, within its bounds"
        if inputs.scope.modification_id else "no modification declared (gate.scope.require_provenance is off)"
    )
    summary = Reason(
        "gate", "PASS",
        f"{len(passed)} critical metric(s) passed; {len(noncritical_fail)} non-critical failure(s) "
        f"(≤ {gate.max_failed_noncritical} allowed); {change}",
    )
    if inputs.approvals_required:
        return "HOLD", [*passed, summary, Reason(
            "update_procedures.approvals", "HOLD",
            "signed approval required from: " + ", ".join(inputs.approvals_required)
            + " (gatekeeper approve RUN --key FILE --signer NAME --meaning ...)",
        )]
    return "PROMOTE", [*passed, summary]


def worse_than_margin(row: Mapping[str, Any]) -> bool:
    """True when the row's point estimate lies where its claim does not hold.

    In improvement units (positive = candidate better): non-inferiority below -margin,
    superiority at or below +margin, equivalence at or beyond ±margin.
    """
    if row.get("delta") is None or row.get("direction") is None:
        return False
    improvement = row["delta"] if row["direction"] == "higher" else -row["delta"]
    margin = row["margin"]
    if row["hypothesis"] == "non_inferiority":
        return bool(improvement < -margin)
    if row["hypothesis"] == "superiority":
        return bool(improvement <= margin)
    if row["hypothesis"] == "equivalence":
        return bool(abs(improvement) >= margin)
    return False


def _claims(policy: Policy, metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that must PASS together for a PROMOTE: critical comparisons, and critical
    slices when ``gate.slices.inconclusive`` is ``hold``."""
    hold = policy.gate.slices.inconclusive == "hold"
    return [
        m for m in metrics
        if m["critical"] and m.get("comparison") and m["hypothesis"] in ("non_inferiority", "superiority",
                                                                          "equivalence")
        and (m["slice"] is None or hold)
    ]


def gate_power_plan(policy: Policy, metrics: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Cases needed for every critical claim to PASS together at the policy's power.

    With k claims that must all pass, each is planned at power ``p**(1/k)`` (exact when the
    claims are independent, as disjoint slices are; conservative for metrics measured on the
    same cases, which are positively correlated). Each claim's ``n_needed``
    (:func:`stats.power_analysis`, design effect included) is scaled from its own cases to
    the whole suite by the share of cases it sees (a slice of 100 in 600 cases needs six
    times its own n in total), and the plan is the largest. None when no claim can be planned.
    """
    from gatekeeper.gate import stats

    claims = _claims(policy, metrics)
    if not claims:
        return None
    power = max(float(m.get("power_target") or 0.8) for m in claims)
    each = power ** (1.0 / len(claims))
    totals = {m["name"]: m["n"] for m in metrics if m["slice"] is None and m.get("n")}
    needs: list[tuple[int, str]] = []
    for m in claims:
        comp = stats.Comparison(**{**m["comparison"], "discordant": _pair_or_none(m["comparison"]["discordant"])})
        try:
            plan = stats.power_analysis(comp, margin=m["margin"], power=min(each, 0.9999),
                                        hypothesis=m["hypothesis"], direction=m["direction"])
        except ValueError:
            continue
        if plan["n_needed"] is None:
            continue
        plan["n_needed"] = max(plan["n_needed"], int(m.get("min_n") or 0))
        share = comp.n / max(totals.get(m["name"], comp.n), comp.n)
        label = m["name"] + (f"[{m['slice']['field']}={m['slice']['value']}]" if m["slice"] else "")
        needs.append((math.ceil(plan["n_needed"] / share), label))
    if not needs:
        return None
    total, driver = max(needs)
    text = (
        f"about {total} cases are needed for all {len(claims)} critical claim(s) to pass together with "
        f"power {power:g} (each planned at {each:.3f}, assuming the models are truly equal); "
        f"the most demanding is {driver}"
    )
    return {"n_needed": total, "claims": len(claims), "power": power, "power_each": each, "driver": driver,
            "text": text}


def _pair_or_none(value: Any) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))
