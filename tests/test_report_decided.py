"""The report says in one sentence which rule decided a metric (issue 17, item 7).

A margin test that passes beside a guardrail that fails used to read "the interval excludes
the NI bound" and then FAIL; the sentence names the guardrail as what decided.
"""

from __future__ import annotations

import pytest

from gatekeeper.reports.analysis import deciding_rule
from gatekeeper.testing import Project, run_paired_check, write_paired_project

NI = {"hypothesis": "non_inferiority", "direction": "lower", "margin": 0.05, "ci_low": -0.10, "ci_high": -0.02,
      "n": 80, "min_n": 10}


@pytest.mark.parametrize(("row", "sentence"), [
    ({**NI, "verdict": "FAIL", "guardrail": {"verdict": "FAIL"}},
     "The guardrail decided: the non-inferiority test says PASS, but the guardrail says FAIL, so FAIL."),
    ({**NI, "verdict": "PASS", "guardrail": {"verdict": "PASS"}},
     "Both rules agree: the non-inferiority test and the guardrail each say PASS."),
    ({**NI, "ci_high": 0.2, "verdict": "INCONCLUSIVE", "guardrail": {"verdict": "PASS"}},
     "The non-inferiority test decided: it says INCONCLUSIVE, the guardrail PASS, so INCONCLUSIVE."),
    ({**NI, "verdict": "INCONCLUSIVE", "n": 5},
     "Too few cases decided: the non-inferiority test alone says PASS, but n = 5 is below min_n 10, "
     "so INCONCLUSIVE."),
    ({**NI, "verdict": "PASS"}, "The non-inferiority test decided: PASS."),
    ({"hypothesis": "guardrail_only", "verdict": "FAIL", "guardrail": {"verdict": "FAIL"}},
     "The guardrail decided: FAIL."),
    ({"verdict": "NODATA"}, "No rule could decide: NODATA (no paired scores to compare)."),
])
def test_deciding_rule(row: dict, sentence: str) -> None:
    assert deciding_rule(row) == sentence


POLICY_WITH_GUARDRAIL = """
metadata: {id: guard-pccp, title: Guarded plan, version: "1", effective_date: 2026-01-01, owner: qa}
modifications:
  - {id: M1, type: lora_adapter_retrain, description: retrain, authorization: automatic, evaluation: [facts]}
performance_evaluation:
  suites: [paired]
  metrics:
    - {name: facts, metric: facts, direction: higher, hypothesis: non_inferiority, margin: 0.2,
       alpha: 0.05, ci_method: tango, critical: true, guardrail: {min: 0.95}}
impact_assessment: {intended_use: tests, risks: [{id: R1, description: r, mitigation: m, metrics: [facts]}]}
traceability:
  - {modification: M1, evaluations: [facts], rationale: r}
"""


def test_the_report_names_the_guardrail_when_it_decides(project: Project) -> None:
    write_paired_project(project, baseline=[True] * 50 + [False] * 10,
                         candidates={"candidate": [True] * 52 + [False] * 8}, policy=POLICY_WITH_GUARDRAIL)
    result = run_paired_check(project)
    assert result.exit_code == 1, result.output
    html = (project.path / "out/report.html").read_text(encoding="utf-8")
    assert ("The guardrail decided: the non-inferiority test says PASS, but the guardrail says FAIL, so FAIL."
            in html)
