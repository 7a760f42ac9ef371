"""The HTML report and `gatekeeper report`: what an auditor reads, re-rendered from the record alone."""

from __future__ import annotations

import json
import re
import shutil
from html import unescape
from pathlib import Path

import pytest

from gatekeeper.testing import Project

REPO = Path(__file__).resolve().parents[1]


def demo_project(project: Project) -> Project:
    """The bundled demo (suites, recordings, policies) copied into a throwaway project."""
    shutil.copytree(REPO / "suites", project.path / "suites")
    shutil.copytree(REPO / "policies", project.path / "policies")
    return project


def demo_check(project: Project, candidate: str = "candidate-better", *extra: str) -> tuple[int, str]:
    result = project.run(
        "check", "suites", "--baseline", "replay:suites/recordings/baseline.jsonl",
        "--candidate", f"replay:suites/recordings/{candidate}.jsonl",
        "--policy", "policies/support-assistant.yaml", "--out", "out", "--no-progress", *extra,
    )
    return result.exit_code, result.output


def html(project: Project, relpath: str = "out/report.html") -> str:
    return (project.path / relpath).read_text(encoding="utf-8")


def section(page: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}".*?</section>', page, re.S)
    assert match, f"no section {section_id}"
    return match.group(0)


def test_check_writes_a_self_contained_report_of_the_demo(project: Project) -> None:
    demo_project(project)
    code, output = demo_check(project)
    assert code == 0, output
    assert "out/report.html" in output
    page = html(project)
    record = project.read_record("out/decision.json")

    # Self-contained: nothing is fetched, and the CSP forbids fetching anything.
    assert not re.search(r"<(link|img|iframe|object|embed)\b", page)
    assert not re.search(r"\b(src|href)=\"(?!#)", page), "only in-page links"
    assert "url(" not in page and "@import" not in page
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page)
    assert csp and "default-src 'none'" in unescape(csp.group(1))
    assert page.count("<script") == 1

    banner = section(page, "decision")
    assert '<h1 class="decision" id="decision-state">PROMOTE</h1>' in banner
    assert "performance_evaluation.metrics[facts]" in banner and "→ PASS" in banner

    # The forest plot: one row per metric, its interval, and the margin's bound line.
    metrics = section(page, "metrics")
    forest = re.search(r'<div class="plot" id="forest-plot">(.*?)</svg>', metrics, re.S)
    assert forest
    assert forest.group(1).count('<circle class="point"') == 3
    assert forest.group(1).count('class="bound"') == 3
    for name in ("facts", "grounding", "rouge_l"):
        assert f">{name}" in forest.group(1)
    assert "[+0.059, +0.241] 90%" in metrics  # facts' cluster-robust interval (15 passages), as in decision.json

    slices = section(page, "slices")
    assert "facts by topic" in slices and "topic=returns" in slices
    assert slices.count("NODATA") >= 3  # account, loyalty, rentals are below min_slice_n

    dist = section(page, "distributions")
    assert dist.count('<svg class="hist"') == 5  # facts, grounding, rouge_l, concise, no_internal_notes

    # Worst regressions: both answers side by side with the word diff.
    worst = section(page, "regressions")
    assert "rental-fee-credit-05" in worst and "<del>" in worst and "<ins>" in worst
    assert "missing 1 of 2 facts" in worst

    # Hallucination findings with the unsupported span marked in the answer.
    findings = section(page, "findings")
    assert "shipping-overnight-cutoff-02" in findings
    assert re.search(r"arrive on <mark title=\"not in the context: &#39;Wednesday&#39;\">Wednesday</mark>", findings)

    # The PCCP summary and its traceability matrix: modification → evaluation → verdict.
    pccp = section(page, "pccp")
    trace = re.search(r'<table id="traceability">(.*?)</table>', pccp, re.S)
    assert trace
    rows = re.findall(r"<tr.*?</tr>", trace.group(1), re.S)
    assert len(rows) == 1 + 6  # header + M1 × 3 + M2 × 3 evaluations
    assert "<b>M1</b>" in rows[1] and "facts" in rows[1] and "PASS" in rows[1]
    assert "lora_adapter_retrain" in pccp and "support-product-owner" in pccp

    data = section(page, "data")
    assert record["suites"][0]["sha256"] in data
    assert record["suites"][0]["datasets"]["suites/data/support_cases.jsonl"] in data
    assert "at most 50 uses" in data

    models = section(page, "models")
    assert record["models"]["candidate"]["identity"]["digest"] in models

    cases = section(page, "cases")
    assert "80 cases × 3 metrics" in cases
    assert cases.count("<tr><td>") == 80
    # rental-fee-credit-05 lost its facts (1 → 0): the candidate's cell is marked worse.
    row = re.search(r"<tr><td>rental-fee-credit-05</td>.*?</tr>", cases)
    assert row and '<td class="num">1</td><td class="num worse">0</td>' in row.group(0)

    audit = section(page, "audit")
    assert "intact</span>, 1 records" in audit and "<td>check</td>" in audit

    env = section(page, "environment")
    assert "<td>gatekeeper</td>" in env and "@media print" in page


def test_rejected_candidate_shows_the_failure(project: Project) -> None:
    demo_project(project)
    code, output = demo_check(project, "candidate-worse")
    assert code == 1, output
    page = html(project)
    assert '<h1 class="decision" id="decision-state">REJECT</h1>' in page
    assert 'class="banner d-reject"' in page
    forest = section(page, "metrics")
    assert '<g class="row r-fail">' in forest


def test_report_rerenders_every_format_from_the_record_alone(project: Project, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    demo_project(project)
    assert demo_check(project)[0] == 0
    before = {name: (project.path / "out" / name).read_text() for name in ("summary.md", "junit.xml")}

    # Only the decision record (and its per-case files) survives: no suites, no policy, no audit log.
    old = Project(tmp_path_factory.mktemp("archive"))
    (old.path / "run").mkdir()
    for name in ("decision.json", "cases.jsonl", "case_index.jsonl"):
        shutil.copy(project.path / "out" / name, old.path / "run" / name)
    result = old.run("report", "run")
    assert result.exit_code == 0, result.output
    assert "re-rendered check" in result.stdout and "(PROMOTE)" in result.stdout
    for name in ("report.html", "summary.md", "junit.xml", "decision.json"):
        assert (old.path / "run" / name).is_file(), name
    assert (old.path / "run/summary.md").read_text() == before["summary.md"]
    assert (old.path / "run/junit.xml").read_text() == before["junit.xml"]
    assert json.loads((old.path / "run/decision.json").read_text()) == project.read_json("out/decision.json")
    page = html(old, "run/report.html")
    assert "PROMOTE" in page and 'id="traceability"' in page
    assert "No audit log at" in page

    # --format picks formats; --out puts them elsewhere.
    result = old.run("report", "run", "--format", "markdown", "--out", "elsewhere")
    assert result.exit_code == 0, result.output
    assert [p.name for p in (old.path / "elsewhere").iterdir()] == ["summary.md"]


def test_report_of_an_older_record_without_the_policy_summary(project: Project) -> None:
    demo_project(project)
    assert demo_check(project)[0] == 0
    record = project.read_record("out/decision.json")
    del record["record_format"], record["case_files"]  # the older layout: cases inline (record format 1)
    del record["policy"]["pccp"]
    for optional in ("selection", "environment", "scope", "test_sets", "approvals", "created"):
        del record[optional]
    (project.path / "out/decision.json").write_text(json.dumps(record))
    # An older gatekeeper recorded the older record's own hash (issue 14: readers check it).
    from gatekeeper.gate.approvals import record_hash
    from gatekeeper.gate.audit import AuditLog

    AuditLog(project.path / ".gatekeeper/audit.jsonl").append(
        "check", subject=record["run_id"], refs={"decision": record_hash(record)})
    result = project.run("report", "out", "--format", "html", "--format", "markdown", "--format", "junit")
    assert result.exit_code == 0, result.output
    page = html(project)
    assert "predates the embedded policy summary" in page
    assert '<h1 class="decision" id="decision-state">PROMOTE</h1>' in page and "rental-fee-credit-05" in page


def test_report_shows_signed_approvals_after_approve(project: Project) -> None:
    demo_project(project)
    provenance = {"modification": "M2", "base_model": {"name": "smollm2"}}
    (project.path / "suites/recordings/candidate-better.provenance.json").write_text(json.dumps(provenance))
    code, output = demo_check(project)
    assert code == 2, output  # M2 is manual: HOLD until signed
    page = html(project)
    assert '<h1 class="decision" id="decision-state">HOLD</h1>' in page
    assert "No signature yet" in section(page, "approvals")
    assert 'class="this-change"' in section(page, "pccp")

    signed = project.run("approve", "out", "--key", str(REPO / "tests/fixtures/keys/support-owner.key"),
                         "--signer", "Sam Support", "--meaning", "approval", "--role", "support-product-owner")
    assert signed.exit_code == 0, signed.output
    assert project.run("report", "out").exit_code == 0
    approvals = section(html(project), "approvals")
    assert "<td>Sam Support</td><td>support-product-owner</td><td>approval</td>" in approvals
    assert "VALID" in approvals and "Every required approval is present and valid." in approvals
    audit = section(html(project), "audit")
    assert "<td>approve</td>" in audit and "2 records" in audit


def test_run_reports_are_html_too(mini: Project) -> None:
    mini.write_jsonl("mixed.jsonl", [{"id": "refund-1", "output": "30 days."},
                                     {"id": "refund-2", "output": "No idea."},
                                     {"id": "ship-1", "output": "It is $15."}])
    result = mini.run("run", "suites", "--model", "replay:mixed.jsonl", "--out", "out")
    assert result.exit_code == 1, result.output
    page = html(mini)
    assert "run report" in page
    failures = section(page, "failures")
    assert "refund-2" in failures and "No idea." in failures and "refund-1" not in failures

    (mini.path / "out/report.html").unlink()
    rerun = mini.run("report", "out/results.json", "--format", "html")
    assert rerun.exit_code == 0, rerun.output
    assert "re-rendered run" in rerun.stdout and "No idea." in html(mini)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "nowhere"], "no decision.json or results.json here"),
        (["report", "out", "--format", "pdfx"], "unknown reporter 'pdfx'"),
        (["report", "stray.json"], "stray.json: not a gatekeeper decision or run record (schema 'x/1')"),
        (["report", "broken.json"], "broken.json:1: invalid JSON"),
        (["report", "thin.json"], "thin.json: the check record lacks field(s) models, suites, summary, stats,"),
    ],
)
def test_report_usage_errors_exit_4(mini: Project, args: list[str], message: str) -> None:
    assert mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out").exit_code == 0
    mini.write("stray.json", '{"schema": "x/1", "kind": "check"}')
    mini.write("broken.json", '{"schema": ')
    mini.write("thin.json", '{"schema": "gatekeeper.decision/1", "kind": "check", "run_id": "r1"}')
    result = mini.run(*args)
    assert result.exit_code == 4, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_pdf_without_chromium_is_a_clear_usage_error(mini: Project) -> None:
    assert mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out").exit_code == 0
    result = mini.run("report", "out", "--pdf", env={"GATEKEEPER_CHROMIUM": str(mini.path / "no-such-browser")})
    assert result.exit_code == 4
    assert "--pdf needs headless Chromium and none was found" in result.stderr
    assert not (mini.path / "out/report.pdf").exists()


SPEED_SUITE = """
suite: speed
prompt: {messages: [{role: user, content: "{{ input }}"}]}
dataset: cases.jsonl
evaluators:
  - {name: contains, as: facts, field: facts, mode: all}
  - {name: latency, max_ms: 5000}
"""
SPEED_POLICY = """
metadata: {id: speed-pccp, title: Speed plan, version: "1", effective_date: 2026-01-01, owner: qa}
modifications:
  - {id: M1, type: prompt_template_change, description: prompt, authorization: automatic,
     evaluation: [facts, latency]}
performance_evaluation:
  suites: [speed]
  metrics:
    - {name: facts, metric: facts, direction: higher, hypothesis: non_inferiority, margin: 0.1,
       ci_method: tango, critical: true}
    - {name: latency, metric: latency, direction: lower, hypothesis: non_inferiority, margin: 100,
       ci_method: bootstrap_percentile}
impact_assessment: {intended_use: tests}
traceability:
  - {modification: M1, evaluations: [facts, latency], rationale: both}
"""


def test_metrics_on_different_scales_get_their_own_forest_plot(project: Project) -> None:
    project.write("suites/speed.yaml", SPEED_SUITE)
    project.write_jsonl("suites/cases.jsonl", [{"id": f"c{i}", "input": f"q{i}", "facts": ["yes"]}
                                                for i in range(40)])
    project.write_jsonl("base.jsonl", [{"id": f"c{i}", "output": "yes", "latency_ms": 800 + (i % 7) * 10}
                                        for i in range(40)])
    project.write_jsonl("cand.jsonl", [{"id": f"c{i}", "output": "yes", "latency_ms": 810 + (i % 5) * 10}
                                        for i in range(40)])
    project.write("policy.yaml", SPEED_POLICY)
    result = project.run("check", "suites", "--baseline", "replay:base.jsonl", "--candidate", "replay:cand.jsonl",
                         "--policy", "policy.yaml", "--out", "out", "--no-progress")
    assert result.exit_code == 0, result.output
    metrics = section(html(project), "metrics")
    plots = re.findall(r'<svg class="forest".*?</svg>', metrics, re.S)
    assert len(plots) == 2  # a Δ of ~0 on a 0..1 rate and a Δ of ~10 ms do not share an axis
    assert ">facts ★</text>" in plots[0] and ">latency</text>" in plots[1]


def test_readme_shows_the_committed_report_screenshot() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "](docs/report-screenshot.png)" in readme and "[docs/reports.md](docs/reports.md)" in readme
    png = (REPO / "docs/report-screenshot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
