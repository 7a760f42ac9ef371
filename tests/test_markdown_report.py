"""summary.md for pull-request comments: compact, linked to the HTML report, never over GitHub's limit."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from gatekeeper.testing import Project

REPO = Path(__file__).resolve().parents[1]
GITHUB_LIMIT = 65_536


def demo_summary(project: Project, env: dict[str, str] | None = None) -> str:
    shutil.copytree(REPO / "suites", project.path / "suites")
    shutil.copytree(REPO / "policies", project.path / "policies")
    result = project.run(
        "check", "suites", "--baseline", "replay:suites/recordings/baseline.jsonl",
        "--candidate", "replay:suites/recordings/candidate-better.jsonl",
        "--policy", "policies/support-assistant.yaml", "--out", "out", "--no-progress", env=env,
    )
    assert result.exit_code == 0, result.output
    return (project.path / "out/summary.md").read_text(encoding="utf-8")


def test_summary_is_a_compact_table_with_deltas_intervals_and_a_report_link(project: Project) -> None:
    text = demo_summary(project)
    lines = text.splitlines()
    assert lines[0] == "# ✅ gatekeeper: **PROMOTE**"
    assert "[full report](report.html)" in lines[2]
    assert "| **facts** | 80 | 0.750 | 0.900 | +0.150 [+0.059, +0.241] 90% | NI 0.050 | ✅ PASS |" in lines
    assert "| **grounding** | 80 | 0.062 | 0.013 | -0.050 [-0.101, +0.001] 90% | NI 0.050, ≤ 0.25 | ✅ PASS |" in lines
    assert "| rouge_l | 80 |" in text  # not critical: not bold
    # Slices are folded away, problems first (5 topics INCONCLUSIVE: clustered, n < 30; 3 NODATA).
    assert "<details><summary>Slices: 8 rows, 8 not PASS</summary>" in lines
    slice_rows = [ln for ln in lines if ln.startswith("| facts | topic=")]
    assert [r.split(" | ")[1] for r in slice_rows[:3]] == ["topic=account", "topic=billing", "topic=loyalty"]
    assert "not shown" not in text


def test_report_url_comes_from_the_environment(project: Project) -> None:
    url = "https://ci.example/artifacts/42/report.html"
    text = demo_summary(project, env={"GATEKEEPER_REPORT_URL": url})
    assert f"[full report]({url})" in text


def test_a_huge_decision_stays_under_githubs_comment_limit(project: Project) -> None:
    demo_summary(project)
    record = project.read_record("out/decision.json")
    template = next(m for m in record["metrics"] if m.get("slice"))
    for i in range(5000):  # e.g. a slice per customer
        row = copy.deepcopy(template)
        row["slice"] = {"field": "customer", "value": f"customer-{i:05d}"}
        row["verdict"] = "FAIL" if i % 7 == 0 else "PASS"
        record["metrics"].append(row)
    record["reasons"] += [{"clause": f"clause[{i}]", "verdict": "FAIL", "text": "x" * 2000} for i in range(50)]
    # Rendered directly: an edited decision.json is refused by `gatekeeper report` (TAMPERED).
    from gatekeeper.reports.markdown import markdown_check

    text = markdown_check(record)
    assert len(text) <= GITHUB_LIMIT
    assert len(text) > GITHUB_LIMIT - 5000  # it used the room it had
    assert "| **facts** | 80 |" in text  # the overall table always comes first
    assert "more slice rows not shown (comment size limit): see report.html or decision.json." in text
    assert text.splitlines()[-1].startswith("model calls:")
    assert "…" in text  # a 2,000-character reason is cut short
    assert text.count("<details>") == 1 and text.count("</details>") == 1
