"""Service levels in the reports (reports/slo.py, templates/slo.html.j2): CDFs, load curves and
the knee drawn from a record's `slo` section, in the HTML and in the Markdown summary."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from gatekeeper.gate.slo_check import LoadRun, Request, evaluate_slo
from gatekeeper.gate.slo_policy import SloSection
from gatekeeper.reports import slo as slo_report
from gatekeeper.reports.html import _environment

SECTION = SloSection.model_validate({"guardrails": [
    {"name": "p95", "measure": "latency", "max": 600},
    {"name": "errors", "measure": "error_rate", "max": 0.05},
    {"name": "capacity", "measure": "throughput", "min": 6},
]})


def ramp_record() -> dict[str, Any]:
    """A ramp 2..24 req/s: the candidate saturates near 12 req/s, the baseline near 20."""
    rng = np.random.default_rng(0)
    requests = []
    for model, knee in (("candidate", 12), ("baseline", 20)):
        for step, rate in enumerate([2, 4, 8, 16, 24]):
            typical = 80 + 300 * (rate / knee) ** 4
            for j in range(rate * 20):
                failed = rate > knee and rng.random() < 0.2
                requests.append(Request(model=model, suite="ramp", status="5xx" if failed else "ok",
                                        latency_ms=float(rng.lognormal(math.log(typical), 0.3)), ttft_ms=None,
                                        step=step, offered_rps=rate, started_s=j / rate, ramp=True))
    return {"kind": "check", "slo": evaluate_slo(SECTION, LoadRun(requests=requests))}


def test_the_knee_and_the_load_curves_are_drawn_from_the_record() -> None:
    record = ramp_record()
    cap = record["slo"]["capacity"]["candidate"]
    assert (cap["low"], cap["estimate"], cap["high"]) == (8, 8, 16)
    rows = {r["name"]: r for r in record["slo"]["rows"]}
    assert rows["capacity"]["verdict"] == "PASS"
    view = slo_report.view(record)
    assert view is not None
    html = _environment().get_template("slo.html.j2").render(slo=view, open="")
    assert html.count('<svg class="slo load"') == 2  # latency and throughput against offered load
    assert html.count('class="knee-band"') == 2 and "knee 8 req/s" in html
    assert len(re.findall(r'<polyline class="line m1 p95" points="(?:[\d.]+,[\d.]+ ?){5}"', html)) == 1
    assert "Capacity of the candidate: knee at 8 req/s (met with confidence up to 8, broken from 16)" in html
    assert 'id="slo-cdf-latency"' in html and 'class="limit"' in html


def test_the_summary_lists_each_guardrail_and_the_capacity() -> None:
    lines = slo_report.markdown_lines(ramp_record())
    text = "\n".join(lines)
    assert "| **capacity** | throughput ≥ 6 req/s |" in text and "✅ PASS |" in text
    assert "- **capacity (candidate)**: knee at 8 req/s; SLO met with confidence up to 8 req/s, broken with " \
           "confidence from 16 req/s" in text
    assert slo_report.markdown_lines({"kind": "check"}) == [] and slo_report.view({"kind": "check"}) is None
