"""Outputs safe for their consumers (issue 14, item 9; issue 17, item 3).

A check whose candidate answers with markup, links, control and bidi characters, on cases
whose ids are hostile too: the PR comment (summary.md) lists the failing and most-regressed
cases as inert text, junit.xml parses and carries them as test cases, the terminal and the
HTML report show invisible characters as markers.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest
from markdown_it import MarkdownIt

from gatekeeper.reports.escaping import md_code, md_inline, md_link_target, xml_text
from gatekeeper.testing import Project, run_paired_check, write_paired_project

N = 40
HOSTILE = [
    '<img src=x onerror="alert(1)">',
    "![tracker](https://evil.example/pixel.png)",
    "[click here](javascript:alert(1))",
    "</details><script>alert(2)</script>",
    "a | b | c\n| --- |",
    "ok\u202edlrow\u200bhidden\x1b[2J\x07\x00",
]
RLO = "\u202e"


def hostile_project(project: Project) -> Project:
    """Baseline right everywhere; the candidate wrong (and hostile) on the first six cases."""
    write_paired_project(project, baseline=[True] * N, candidates={"candidate": [True] * N}, margin=0.5)
    cases = [json.loads(line) for line in (project.path / "suites/cases.jsonl").read_text().splitlines()]
    ids = [c["id"] for c in cases]
    cases[0]["id"] = ids[0] = "c|<img src=y>"
    cases[1]["id"] = ids[1] = f"c{RLO}\x01"
    project.write_jsonl("suites/cases.jsonl", cases)
    project.write_jsonl("baseline.jsonl", [{"id": cid, "output": "yes"} for cid in ids])
    project.write_jsonl("candidate.jsonl", [
        {"id": cid, "output": HOSTILE[i] if i < len(HOSTILE) else "yes"} for i, cid in enumerate(ids)
    ])
    return project


def render(markdown: str) -> str:
    """summary.md as a GitHub-flavoured renderer with raw HTML enabled would show it."""
    return MarkdownIt("commonmark", {"html": True}).enable("table").enable("strikethrough").render(markdown)


@pytest.fixture
def hostile(project: Project) -> tuple[Project, str]:
    hostile_project(project)
    result = run_paired_check(project)
    assert result.exit_code in (0, 1), result.output
    return project, result.output


def test_the_pr_comment_lists_failing_and_regressed_cases_as_inert_text(hostile: tuple[Project, str]) -> None:
    project, _ = hostile
    text = (project.path / "out/summary.md").read_text(encoding="utf-8")
    assert "### Most-regressed cases" in text and "### Failing cases (candidate)" in text
    html = render(text)
    assert "<img" not in html and "<script" not in html and "javascript:" not in html.replace(
        "javascript:alert(1))", "")  # the words may show, never as a link target
    assert 'href="javascript' not in html and "<a " not in html.split("full report")[0].replace(
        '<a href="report.html">', "")
    assert html.count("<details>") == html.count("</details>")
    # The tags, the image and the link are shown as the text the model wrote.
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "![tracker](https://evil.example/pixel.png)" in html
    assert "&lt;/details&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in html
    # A | in an output or an id does not add table columns: every row has the header's cells.
    tables = [t for t in html.split("<table>")[1:]]
    for table in tables:
        head = len(re.findall(r"<th[ >]", table.split("</thead>")[0]))
        for row in table.split("<tbody>")[1].split("<tr>")[1:]:
            assert len(re.findall(r"<td[ >]", row)) == head, row
    # Bidi and control characters are visible markers, not obeyed.
    assert RLO not in text and "\x1b" not in text and "\x00" not in text
    assert "ok⟨U+202E⟩dlrow⟨U+200B⟩hidden⟨U+001B⟩" in text
    assert "c⟨U+202E⟩⟨U+0001⟩" in text


def test_junit_stays_well_formed_and_carries_the_failing_cases(hostile: tuple[Project, str]) -> None:
    project, _ = hostile
    root = ET.parse(project.path / "out/junit.xml").getroot()  # raises on an ill-formed file
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    failing = suites["failing cases (candidate)"]
    assert failing.get("failures") == "6"
    names = [tc.get("name") for tc in failing.iter("testcase")]
    assert "c|<img src=y>[facts]" in names and "c⟨U+202E⟩⟨U+0001⟩[facts]" in names
    texts = [tc.find("failure").text for tc in failing.iter("testcase")]  # type: ignore[union-attr]
    assert any("ok⟨U+202E⟩dlrow⟨U+200B⟩hidden⟨U+001B⟩[2J⟨U+0007⟩⟨U+0000⟩" in (t or "") for t in texts)
    regressed = suites["most-regressed cases (candidate vs baseline)"]
    assert regressed.get("tests") == "6" and regressed.get("failures") == "0"


def test_the_terminal_and_the_html_report_show_invisible_characters(hostile: tuple[Project, str]) -> None:
    project, _ = hostile
    run = project.run("run", "suites", "--model", "replay:candidate.jsonl", "--out", "run", "--no-progress")
    assert RLO not in run.output and "\x1b" not in run.output
    html = (project.path / "out/report.html").read_text(encoding="utf-8")
    assert RLO not in html and "\u200b" not in html and "\x1b" not in html
    assert "⟨U+202E⟩" in html


def test_the_comment_caps_the_case_lists_and_points_to_the_full_report(project: Project) -> None:
    write_paired_project(project, baseline=[True] * 60, candidates={"candidate": [False] * 30 + [True] * 30})
    result = run_paired_check(project)
    assert result.exit_code == 1, result.output
    text = (project.path / "out/summary.md").read_text(encoding="utf-8")
    assert "*10 of 30 shown: all of them in the [full report](report.html) and decision.json.*" in text
    root = ET.parse(project.path / "out/junit.xml").getroot()
    failing = next(s for s in root.iter("testsuite") if s.get("name") == "failing cases (candidate)")
    assert failing.get("failures") == "30" and failing.get("tests") == "30"


@pytest.mark.parametrize(("text", "expected"), [
    ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
    ("[a](javascript:x)", "\\[a\\](javascript:x)"),
    ("rouge_l and _em_ and *b*", "rouge_l and \\_em\\_ and \\*b\\*"),
    ("a|b\nc", "a\\|b c"),
    ("\u2067x\u2069", "⟨U+2067⟩x⟨U+2069⟩"),
])
def test_md_inline(text: str, expected: str) -> None:
    assert md_inline(text) == expected


def test_md_code_link_target_and_xml_text() -> None:
    assert md_code("a`b|c") == "``a`b\\|c``"
    assert md_link_target("javascript:alert(1)", "report.html") == "report.html"
    assert md_link_target("data:text/html,x", "report.html") == "report.html"
    assert md_link_target("https://ci.example/a (1).html", "r") == "https://ci.example/a%20%281%29.html"
    assert md_link_target("artifacts/report.html", "r") == "artifacts/report.html"
    assert xml_text("a\x00b\x0bc\ud800\ufffe\tok\n") == "a⟨U+0000⟩b⟨U+000B⟩c⟨U+D800⟩⟨U+FFFE⟩\tok\n"


def test_an_unsafe_report_url_falls_back_to_the_relative_path(project: Project) -> None:
    write_paired_project(project, baseline=[True] * 20, candidates={"candidate": [True] * 20})
    project.run("check", "--baseline", "replay:baseline.jsonl", "--candidate", "replay:candidate.jsonl",
                "--policy", "policy.yaml", "--out", "out", "--no-progress",
                env={"GATEKEEPER_REPORT_URL": "javascript:alert(document.cookie)"})
    text = (project.path / "out/summary.md").read_text(encoding="utf-8")
    assert "[full report](report.html)" in text and "javascript" not in text
