"""The gate on designs beyond independent binary cases (issue 15): clustered cases, small
samples, slices, and many critical metrics.

Each test simulates one dataset with a fixed seed, shows that the statistics the gate used
before would have decided it wrongly, and runs the real ``gatekeeper check`` to assert the
decision, the method the record names and the reason the report gives.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gatekeeper.gate import stats
from gatekeeper.testing import PAIRED_POLICY, PAIRED_SUITE, Project, run_paired_check, write_paired_project


def cells(rng: np.random.Generator, n: int, base_acc: float, discordance: float, delta: float,
          per_cluster: np.ndarray | None = None, icc: float | None = None) -> tuple[list[bool], list[bool]]:
    """Paired right/wrong outcomes with true difference ``delta``; with ``per_cluster`` (cluster
    of each case) each cluster draws Dirichlet cell probabilities, so the per-case difference
    has intra-cluster correlation ``icc`` (see bench/decision_quality.py)."""
    cand_only, base_only = (discordance + delta) / 2, (discordance - delta) / 2
    both_right = base_acc - base_only
    probs = np.array([both_right, base_only, cand_only, 1 - both_right - base_only - cand_only])
    if per_cluster is None or icc is None:
        kind = rng.choice(4, size=n, p=probs)
    else:
        cluster_probs = rng.dirichlet((1 / icc - 1) * probs, size=int(per_cluster.max()) + 1)
        kind = (rng.random(n)[:, None] > cluster_probs.cumsum(axis=1)[per_cluster]).sum(axis=1).clip(0, 3)
    return [bool(k in (0, 1)) for k in kind], [bool(k in (0, 2)) for k in kind]


def policy(*, method: str = "tango", extra: str = "", gate: str = "") -> str:
    text = PAIRED_POLICY.replace("ci_method: tango", f"ci_method: {method}")
    text = text.replace("critical: true}", f"critical: true{extra}}}")
    return text + (f"gate: {gate}\n" if gate else "")


def clustered_project(project: Project, baseline: list[bool], candidate: list[bool], size: int, **kw: str) -> None:
    write_paired_project(project, baseline=baseline, candidates={"candidate": candidate}, margin=0.05,
                         suite=PAIRED_SUITE + "cluster: doc\n", policy=policy(**kw))
    rows = [json.loads(line) for line in (project.path / "suites/cases.jsonl").read_text().splitlines()]
    project.write_jsonl("suites/cases.jsonl", [{**row, "doc": f"doc{i // size}"} for i, row in enumerate(rows)])


def as_scores(outcomes: list[bool]) -> dict[str, float]:
    return {f"c{i:03d}": float(ok) for i, ok in enumerate(outcomes)}


def overall(record: dict) -> dict:  # type: ignore[type-arg]
    return next(m for m in record["metrics"] if m["slice"] is None)


def non_inferior(comparison: stats.Comparison, margin: float = 0.05) -> str:
    return stats.verdict(comparison, hypothesis="non_inferiority", margin=margin, direction="higher")


# --------------------------------------------------------------------------- clusters (defects 1 and 2)


def test_declared_clusters_are_used_when_the_policy_says_tango(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """50 documents x 10 questions, ICC about 0.3, the candidate truly 5 points (the margin) worse."""
    clusters = np.repeat(np.arange(50), 10)
    baseline, candidate = cells(np.random.default_rng(20), 500, 0.55, 0.30, -0.05, clusters, 0.3)
    ignoring_clusters = stats.compare(as_scores(baseline), as_scores(candidate), method="tango")
    assert non_inferior(ignoring_clusters) == "PASS", "the gate used to promote this candidate"

    project = Project(tmp_path)
    clustered_project(project, baseline, candidate, 10)
    result = run_paired_check(project)
    assert result.exit_code == 3 and result.record["decision"] == "INCONCLUSIVE", result.output
    row = overall(result.record)
    comparison = row["comparison"]
    assert comparison["method"] == "cluster" and comparison["requested_method"] == "tango"
    assert comparison["n_clusters"] == 50
    assert comparison["design_effect"] == pytest.approx(3.52, abs=0.01)
    assert comparison["icc"] == pytest.approx(0.28, abs=0.01)
    assert "n = 500 in 50 clusters; method cluster: Tango's interval assumes independent cases" in row["reason"]
    assert "design effect 3.52, intra-cluster correlation 0.28" in row["reason"]
    summary = (project.path / "out/summary.md").read_text()
    assert "method cluster: Tango's interval assumes independent cases" in summary


def test_cases_needed_account_for_the_design_effect(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clusters = np.repeat(np.arange(50), 10)
    baseline, candidate = cells(np.random.default_rng(20), 500, 0.55, 0.30, -0.05, clusters, 0.3)
    project = Project(tmp_path)
    clustered_project(project, baseline, candidate, 10, method="cluster")
    row = overall(run_paired_check(project).record)
    power = row["power"]
    independent = stats.Comparison(**{**row["comparison"], "design_effect": None, "icc": None})
    plain = stats.power_analysis(independent, margin=0.05)["n_needed"]
    assert power["design_effect"] == pytest.approx(3.52, abs=0.01)
    assert power["n_needed"] == pytest.approx(plain * power["design_effect"], rel=0.01)
    assert power["n_needed"] > 3 * plain and power["clusters_needed"] == -(-power["n_needed"] // 10)
    assert (f"about {power['n_needed']} cases ({power['clusters_needed']} clusters; design effect 3.52, "
            "ICC 0.28) needed") in row["reason"]


def test_bootstrap_policy_resamples_whole_clusters(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clusters = np.repeat(np.arange(50), 10)
    baseline, candidate = cells(np.random.default_rng(20), 500, 0.55, 0.30, -0.05, clusters, 0.3)
    project = Project(tmp_path)
    clustered_project(project, baseline, candidate, 10, method="bootstrap_bca")
    result = run_paired_check(project)
    row = overall(result.record)
    assert row["comparison"]["method"] == "cluster_bootstrap_bca"
    assert "the bootstrap resamples whole clusters" in row["reason"]
    assert result.record["decision"] == "INCONCLUSIVE" and row["verdict"] == "INCONCLUSIVE"


# --------------------------------------------------------------------------- small samples (defect 3)


def test_one_discordant_pair_in_twenty_is_not_enough_even_when_the_policy_says_bca(tmp_path) -> None:  # type: ignore[no-untyped-def]
    baseline = [i < 15 for i in range(20)]
    candidate = [i < 16 for i in range(20)]
    low, _ = stats.paired_bootstrap_ci([float(b) for b in baseline], [float(c) for c in candidate])
    assert low > -0.05, "the BCa interval used to pass this candidate"

    project = Project(tmp_path)
    write_paired_project(project, baseline=baseline, candidates={"candidate": candidate}, margin=0.05,
                         policy=policy(method="bootstrap_bca"))
    result = run_paired_check(project)
    assert result.exit_code == 3 and result.record["decision"] == "INCONCLUSIVE", result.output
    row = overall(result.record)
    assert row["comparison"]["method"] == "tango" and row["comparison"]["requested_method"] == "bootstrap_bca"
    assert row["ci_low"] < -0.05 < row["ci_high"]
    assert "bootstrap_bca is replaced because its coverage of paired proportions is poor" in row["reason"]


def test_below_the_default_minimum_n_a_metric_is_inconclusive_with_the_n_needed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    baseline = [i < 10 for i in range(16)]
    candidate = [True] * 16  # six more right, none lost
    project = Project(tmp_path)
    write_paired_project(project, baseline=baseline, candidates={"candidate": candidate}, margin=0.05)
    result = run_paired_check(project)
    row = overall(result.record)
    comparison = stats.Comparison(**{**row["comparison"], "discordant": tuple(row["comparison"]["discordant"])})
    assert non_inferior(comparison) == "PASS", "the interval alone passes"
    assert result.exit_code == 3 and row["verdict"] == "INCONCLUSIVE" and row["min_n"] == 30
    assert "n = 16 is below min_n 30 (the default for this kind of metric): too few cases to decide" in row["reason"]
    assert row["power"]["n_needed"] >= 30 and "cases needed for power 0.8" in row["reason"]


# --------------------------------------------------------------------------- slices (defects 4 and 5)


def sliced(seed: int, deltas: list[float], per_slice: int = 100) -> tuple[list[bool], list[bool]]:
    """Slice s holds the cases i with i % len(deltas) == s (the topics of write_paired_project)."""
    rng = np.random.default_rng(seed)
    k = len(deltas)
    baseline, candidate = [False] * (k * per_slice), [False] * (k * per_slice)
    for s, delta in enumerate(deltas):
        b, c = cells(rng, per_slice, 0.7, 0.3, delta)
        for j, i in enumerate(range(s, k * per_slice, k)):
            baseline[i], candidate[i] = b[j], c[j]
    return baseline, candidate


def sliced_project(project: Project, deltas: list[float], seed: int, margin: float, gate: str = "") -> None:
    baseline, candidate = sliced(seed, deltas)
    write_paired_project(project, baseline=baseline, candidates={"candidate": candidate}, margin=margin,
                         topics=[f"t{s}" for s in range(len(deltas))],
                         policy=policy(extra=", slices: [topic], min_slice_n: 10", gate=gate))


def test_a_slice_twice_the_margin_worse_is_not_promoted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    project = Project(tmp_path / "hold")
    sliced_project(project, [-0.10, 0, 0, 0, 0, 0], seed=1, margin=0.05)
    result = run_paired_check(project)
    rows = {(m["slice"] or {}).get("value"): m for m in result.record["metrics"]}
    assert rows[None]["verdict"] == "PASS" and rows["t0"]["verdict"] == "INCONCLUSIVE"
    assert not any(m["verdict"] == "FAIL" for m in rows.values()), "the gate used to PROMOTE this candidate"
    assert result.exit_code == 3 and result.record["decision"] == "INCONCLUSIVE", result.output
    assert "critical slice: gate.slices.inconclusive is hold" in result.output

    # deciding inconclusive slices on the overall metric still holds a slice worse than the margin
    project = Project(tmp_path / "overall")
    sliced_project(project, [-0.10, 0, 0, 0, 0, 0], seed=1, margin=0.05, gate="{slices: {inconclusive: overall}}")
    result = run_paired_check(project)
    assert result.record["decision"] == "INCONCLUSIVE"
    held = [r for r in result.record["reasons"] if r["verdict"] == "INCONCLUSIVE" and "topic=" in r["clause"]]
    assert [r["clause"] for r in held] == ["performance_evaluation.metrics[facts].slices[topic=t0]"]
    assert "its point estimate is worse than the margin" in held[0]["text"]


def test_slices_within_the_margin_are_decided_on_the_overall_metric_when_asked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    project = Project(tmp_path)
    sliced_project(project, [0.05] * 6, seed=3, margin=0.05, gate="{slices: {inconclusive: overall}}")
    result = run_paired_check(project)
    slices = [m for m in result.record["metrics"] if m["slice"]]
    assert any(m["verdict"] == "INCONCLUSIVE" for m in slices)
    assert result.exit_code == 0 and result.record["decision"] == "PROMOTE", result.output


def test_twenty_equal_slices_do_not_reject_on_one_chance_fail(tmp_path) -> None:  # type: ignore[no-untyped-def]
    baseline, candidate = sliced(1, [0.0] * 20)
    keys = [i for i in range(2000) if i % 20 == 15]
    one_slice = stats.compare({str(i): float(baseline[i]) for i in keys}, {str(i): float(candidate[i]) for i in keys})
    assert non_inferior(one_slice, 0.03) == "FAIL", "at the full alpha this slice fails: the gate used to REJECT"

    project = Project(tmp_path)
    sliced_project(project, [0.0] * 20, seed=1, margin=0.03)
    result = run_paired_check(project)
    assert result.record["decision"] != "REJECT" and result.exit_code == 3, result.output
    row = next(m for m in result.record["metrics"] if (m["slice"] or {}).get("value") == "t15")
    assert row["verdict"] == "INCONCLUSIVE"
    assert "FAIL not shown at the familywise level alpha/20 = 0.0025 (Bonferroni over 20 slices" in row["reason"]

    project = Project(tmp_path / "none")
    sliced_project(project, [0.0] * 20, seed=1, margin=0.03, gate="{slices: {multiplicity: none}}")
    assert run_paired_check(project).record["decision"] == "REJECT"


# --------------------------------------------------------------------------- the whole gate's power (defect 6)

MANY_SUITE = """
suite: paired
prompt: {messages: [{role: user, content: "{{ input }}"}]}
dataset: cases.jsonl
evaluators:
"""


def test_cases_needed_are_planned_for_all_critical_metrics_together(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)  # nine metrics pass, one is inconclusive
    n, k = 1000, 10
    outcomes = [cells(rng, n, 0.8, 0.12, 0.0) for _ in range(k)]
    project = Project(tmp_path)
    project.write("suites/paired.yaml", MANY_SUITE + "".join(
        f"  - {{name: contains, as: m{j}, field: m{j}, mode: all}}\n" for j in range(k)))
    project.write_jsonl("suites/cases.jsonl", [
        {"id": f"c{i:04d}", "input": f"question {i}", **{f"m{j}": [f"<m{j}>"] for j in range(k)}} for i in range(n)])
    for side, model in ((0, "baseline"), (1, "candidate")):
        project.write_jsonl(f"{model}.jsonl", [
            {"id": f"c{i:04d}", "output": " ".join(f"<m{j}>" for j in range(k) if outcomes[j][side][i])}
            for i in range(n)])
    metrics = "".join(
        f"    - {{name: m{j}, metric: m{j}, direction: higher, hypothesis: non_inferiority, margin: 0.03, "
        f"critical: true}}\n" for j in range(k))
    names = ", ".join(f"m{j}" for j in range(k))
    text = PAIRED_POLICY.replace("evaluation: [facts]", f"evaluation: [{names}]")
    text = text.replace(text[text.index("    - {name: facts"):text.index("impact_assessment")], metrics)
    project.write("policy.yaml", text.replace("metrics: [facts]", f"metrics: [{names}]").replace(
        "evaluations: [facts]", f"evaluations: [{names}]"))
    result = run_paired_check(project)
    assert result.record["decision"] == "INCONCLUSIVE", result.output
    plan = next(r for r in result.record["reasons"] if r["clause"] == "gate.power_plan")
    single = max(m["power"]["n_needed"] for m in result.record["metrics"] if m["power"])
    needed = int(plan["text"].split("about ")[1].split(" cases")[0])
    assert "for all 10 critical claim(s) to pass together with power 0.8 (each planned at 0.978" in plan["text"]
    assert 1.7 * single < needed < 2.6 * single, (single, needed)
    assert 1500 < needed < 2300


# --------------------------------------------------------------------------- the bundled demo


def test_demo_report_names_the_method_used_for_its_clustered_cases(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    shutil.copytree(repo / "suites", tmp_path / "suites", ignore=shutil.ignore_patterns("tools", "training"))
    shutil.copytree(repo / "policies", tmp_path / "policies")
    project = Project(tmp_path)
    result = project.run(
        "check", "suites/support_assistant.yaml", "--candidate", "replay:suites/recordings/candidate-better.jsonl",
        "--baseline", "replay:suites/recordings/baseline.jsonl", "--policy", "policies/support-assistant.yaml",
        "--out", "out", "--no-progress",
    )
    record = project.read_record("out/decision.json")
    assert result.exit_code == 0 and record["decision"] == "PROMOTE", result.output
    facts = overall({"metrics": [m for m in record["metrics"] if m["name"] == "facts"]})
    assert facts["ci_method"] == "tango" and facts["comparison"]["method"] == "cluster"
    assert facts["comparison"]["n_clusters"] == 15
    explained = "n = 80 in 15 clusters; method cluster: Tango's interval assumes independent cases"
    assert explained in facts["reason"]
    assert explained in (project.path / "out/summary.md").read_text()
    rouge = next(m for m in record["metrics"] if m["name"] == "rouge_l")
    assert rouge["comparison"]["method"] == "cluster_bootstrap_bca"
    # topics of 10-16 cases are inconclusive; the demo policy decides them on the overall metric
    topics = [m for m in record["metrics"] if m["name"] == "facts" and m["slice"]]
    assert {m["verdict"] for m in topics} == {"INCONCLUSIVE", "NODATA"}
