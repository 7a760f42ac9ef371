"""The HTML report in a real headless Chromium: it renders cleanly, and nothing in it executes.

Chromium is Debian's ``chromium`` (``.ci/run`` installs it). Without it these tests skip
locally and fail in CI (``CI=true``), so a missing browser never passes silently.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from gatekeeper.testing import Project

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def chromium() -> str:
    from gatekeeper.reports.browser import find_chromium

    found = find_chromium()
    missing = None if found else "no Chromium on PATH (apt-get install chromium)"
    try:
        import websocket  # noqa: F401
    except ImportError:
        missing = "the websocket-client package is not installed (pip install -e '.[dev]')"
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser tests: {missing}")
        pytest.skip(missing)
    assert found
    return found


def open_report(chromium: str, page_path: Path, screenshot: Path | None = None) -> tuple[object, dict]:
    from gatekeeper.reports.browser import BrowserPage

    with BrowserPage(chromium, width=1280, height=1400) as page:
        page.open(page_path.resolve().as_uri(), settle_s=0.5)
        facts = page.evaluate("""(() => ({
            decision: (document.querySelector('#decision-state') || {}).textContent,
            forestPoints: document.querySelectorAll('#forest-plot svg circle.point').length,
            forestBounds: document.querySelectorAll('#forest-plot svg line.bound').length,
            forestBox: (() => { const r = document.querySelector('#forest-plot svg').getBoundingClientRect();
                                return [r.width, r.height]; })(),
            images: document.querySelectorAll('img').length,
            scripts: document.querySelectorAll('script').length,
            text: document.body.innerText,
            pwned: window.__pwned || null,
        }))()""")
        if screenshot is not None:
            page.screenshot(screenshot)
        return page.events, facts


def demo_check(project: Project, candidate: str = "candidate-better") -> int:
    import shutil

    shutil.copytree(REPO / "suites", project.path / "suites")
    shutil.copytree(REPO / "policies", project.path / "policies")
    return project.run(
        "check", "suites", "--baseline", "replay:suites/recordings/baseline.jsonl",
        "--candidate", f"replay:suites/recordings/{candidate}.jsonl",
        "--policy", "policies/support-assistant.yaml", "--out", "out", "--no-progress",
    ).exit_code


def test_demo_report_renders_in_chromium_without_console_errors(project: Project, chromium: str,
                                                                 tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    assert demo_check(project) == 0
    shot = tmp_path_factory.mktemp("shots") / "demo-report.png"
    events, facts = open_report(chromium, project.path / "out/report.html", shot)
    assert events.problems() == []  # type: ignore[attr-defined]
    assert events.requests == [(project.path / "out/report.html").resolve().as_uri()]  # type: ignore[attr-defined]
    assert facts["decision"] == "PROMOTE"
    assert facts["forestPoints"] == 3 and facts["forestBounds"] == 3
    width, height = facts["forestBox"]
    assert width > 500 and height > 80  # laid out, not collapsed
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


PAYLOADS = {
    "script": "<script>console.log('PWNED-script');alert('PWNED-script');window.__pwned='script'</script>",
    "img": "<img src=x onerror=\"console.log('PWNED-img');alert('PWNED-img');window.__pwned='img'\">",
    "svg": "<svg onload=\"alert('PWNED-svg')\"></svg>",
    "attr": "\" autofocus onfocus=\"alert('PWNED-attr')\" x=\"",
}
SUITE = """
suite: hostile
description: "A suite whose inputs carry markup {img}"
prompt: {messages: [{role: user, content: "{{ context }} {{ input }}"}]}
dataset: cases.jsonl
slices: [topic]
evaluators:
  - {name: contains, as: facts, field: facts, mode: all}
detectors:
  - {name: grounding}
"""
POLICY = """
metadata: {id: hostile-pccp, title: Hostile plan, version: "1", effective_date: 2026-01-01, owner: qa}
modifications:
  - {id: M1, type: prompt_template_change, description: a prompt change, authorization: automatic,
     evaluation: [facts]}
performance_evaluation:
  suites: [hostile]
  metrics:
    - {name: facts, metric: facts, direction: higher, hypothesis: non_inferiority, margin: 0.2,
       ci_method: tango, critical: true, slices: [topic], min_slice_n: 2}
    - {name: grounding, metric: grounding, direction: lower, hypothesis: non_inferiority, margin: 0.5,
       ci_method: tango}
gate: {max_failed_noncritical: 5, max_inconclusive_noncritical: 5}
impact_assessment: {intended_use: tests}
traceability:
  - {modification: M1, evaluations: [facts, grounding], rationale: "markup everywhere"}
"""


def hostile_project(project: Project) -> None:
    rows, base, cand = [], [], []
    payloads = list(PAYLOADS.values())
    for i in range(12):
        p = payloads[i % len(payloads)]
        rows.append({"id": f"c{i:02d}", "input": f"Question {p}", "context": f"Refunds take 5 days. {p}",
                     "expected": f"5 days {p}", "facts": ["5 days"], "topic": f"t{i % 2}{p}"})
        base.append({"id": f"c{i:02d}", "output": f"Refunds take 5 days. {p}"})
        # The candidate drops the fact sometimes and invents text the grounding detector flags.
        cand.append({"id": f"c{i:02d}", "output": (f"Refunds take 5 days. {p}" if i % 3 else
                                                   f"Refunds take 9 weeks via Zanzibar {p}")})
    project.write("suites/hostile.yaml", SUITE.replace("{img}", PAYLOADS["img"].replace('"', '\\"')))
    project.write_jsonl("suites/cases.jsonl", rows)
    project.write_jsonl("baseline.jsonl", base)
    project.write_jsonl("candidate.jsonl", cand)
    project.write("policy.yaml", POLICY)
    # A plugin distribution whose entry-point name and version carry markup: both appear
    # in the report's environment table.
    site = project.path / "site"
    (site / "hostile_plugin.py").parent.mkdir(parents=True)
    (site / "hostile_plugin.py").write_text("")
    info = site / "hostile_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(textwrap.dedent(f"""\
        Metadata-Version: 2.1
        Name: hostile-plugin
        Version: 1.0{PAYLOADS['img']}
        """))
    (info / "entry_points.txt").write_text(
        "[gatekeeper]\nhostile<script>alert('PWNED-ep')</script> = hostile_plugin\n")


def test_markup_in_outputs_inputs_and_plugin_names_never_executes(project: Project, chromium: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    hostile_project(project)
    monkeypatch.syspath_prepend(str(project.path / "site"))
    result = project.run("check", "suites", "--baseline", "replay:baseline.jsonl", "--candidate",
                         "replay:candidate.jsonl", "--policy", "policy.yaml", "--out", "out", "--no-progress")
    assert result.exit_code in (0, 1, 3), result.output
    record = project.read_record("out/decision.json")
    plugin_name = "hostile<script>alert('PWNED-ep')</script>"
    assert record["environment"]["plugins"][plugin_name] == "1.0" + PAYLOADS["img"]
    page_text = (project.path / "out/report.html").read_text()
    assert "<script>console.log" not in page_text and "<img src=x" not in page_text

    events, facts = open_report(chromium, project.path / "out/report.html")
    assert events.dialogs == []  # type: ignore[attr-defined]
    assert events.problems() == []  # type: ignore[attr-defined]
    assert facts["pwned"] is None and facts["images"] == 0 and facts["scripts"] == 1
    # The markup is shown as text, where the reader can see it.
    for payload in (PAYLOADS["script"], PAYLOADS["img"], plugin_name):
        assert payload in facts["text"], payload
    assert "Zanzibar" in facts["text"]


def test_pdf_is_printed_through_headless_chromium(project: Project, chromium: str) -> None:
    assert demo_check(project) == 0
    result = project.run("report", "out", "--pdf", "--format", "html")
    assert result.exit_code == 0, result.output
    pdf = (project.path / "out/report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.count(b"/Type /Page") + pdf.count(b"/Type/Page") >= 3
    assert not (project.path / "out/report.print.html").exists()
    assert json.loads((project.path / "out/decision.json").read_text())["decision"] == "PROMOTE"


LAYOUT_JS = """(() => {
    const clipped = [];
    for (const svg of document.querySelectorAll('svg.forest')) {
        const width = svg.viewBox.baseVal.width;
        for (const t of svg.querySelectorAll('text')) {
            const b = t.getBBox();
            if (b.x < -0.5 || b.x + b.width > width + 0.5) clipped.push(t.textContent);
        }
    }
    const wrapped = [...document.querySelectorAll('td.nowrap')]
        .filter(td => td.textContent.trim() !== '—' && td.getClientRects().length
                && td.querySelector ? (() => { const r = document.createRange(); r.selectNodeContents(td);
                                               return r.getClientRects().length > 1; })() : false)
        .map(td => td.textContent);
    return {clipped, wrapped, decided: [...document.querySelectorAll('p.decided')].map(p => p.textContent),
            overflow: document.documentElement.scrollWidth - window.innerWidth};
})()"""


@pytest.mark.parametrize("width", [1440, 1280, 1024, 768, 390])
def test_report_layout_at_common_widths(project: Project, chromium: str, width: int,
                                        tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    """Issue 17, item 7: verdict labels never clipped, intervals on one line, the deciding rule said."""
    from gatekeeper.reports.browser import BrowserPage

    assert demo_check(project, "candidate-worse") in (1, 3)  # slices with INCONCLUSIVE verdicts
    shot = tmp_path_factory.mktemp("shots") / f"report-{width}.png"
    with BrowserPage(chromium, width=width, height=1400) as page:
        page.open((project.path / "out/report.html").resolve().as_uri(), settle_s=0.5)
        facts = page.evaluate(LAYOUT_JS)
        page.screenshot(shot)
        assert page.events.problems() == []
    assert shot.stat().st_size > 10_000
    assert facts["clipped"] == []
    assert facts["wrapped"] == []
    assert len(facts["decided"]) == 3
    assert all(s.endswith(".") and ("decided" in s or "agree" in s) for s in facts["decided"]), facts["decided"]
    if width >= 1024:
        assert facts["overflow"] <= 0  # no sideways scrolling of the page on a laptop screen
