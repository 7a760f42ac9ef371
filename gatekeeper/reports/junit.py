"""The JUnit XML reporter: what CI systems show as test results.

A run has a testcase per case × metric, up to :data:`MAX_RUN_TESTCASES` scores; a larger
run (10^5 cases × 10 metrics would be a million testcases, which CI test tabs cannot show)
has, per suite × model, a testcase per metric that counts its passes and failures, then
that metric's failing cases as failures (:data:`MAX_CASES` at most, a last testcase saying
how many more). A check has the policy's verdicts (a testcase per
metric × slice), then the candidate's failing cases as failures and the most-regressed
cases (candidate vs baseline) as passed testcases whose output says what changed, both
capped at :data:`MAX_CASES` with a last testcase pointing to the full report.

Every name, message and text goes through :func:`~gatekeeper.reports.escaping.xml_text`:
ElementTree escapes markup but writes characters XML 1.0 forbids verbatim, and one control
character in an output would make the whole file unreadable to the CI system.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from gatekeeper.kinds import Reporter
from gatekeeper.reports.common import fmt
from gatekeeper.reports.escaping import xml_text

MAX_CASES = 50
"""Failing and most-regressed cases listed in a check's junit.xml (each); the report has all."""
MAX_RUN_TESTCASES = 10_000
"""Scores (case × metric) up to which a run's junit.xml has a testcase for each."""
MAX_MESSAGE = 500


def _el(parent: ET.Element, tag: str, text: Any = None, **attrs: Any) -> ET.Element:
    """A sub-element whose attributes and text are XML-safe (see the module docstring)."""
    el = ET.SubElement(parent, tag, {k: xml_text(v) for k, v in attrs.items()})
    if text is not None:
        el.text = xml_text(text)
    return el


def _msg(text: Any) -> str:
    return xml_text(text)[:MAX_MESSAGE]


def _junit_run(record: dict[str, Any]) -> ET.Element:
    root = ET.Element("testsuites", name=f"gatekeeper run {record['run_id']}")
    from gatekeeper.engine.record import case_index, iter_cases, score_columns

    index = case_index(record)
    columns = score_columns(record)
    scores = sum(int((col.status >= 0).sum()) for col in columns.metrics.values())
    if scores > MAX_RUN_TESTCASES:
        _junit_run_summary(root, record, columns)
        return root
    suites: dict[str, ET.Element] = {}
    counts: dict[str, dict[str, int]] = {}
    for row in iter_cases(record):  # streamed from cases.jsonl (record format 2)
        case = index[row["key"]]
        sname = f"{case['suite']}[{row['model']}]"
        if sname not in suites:
            suites[sname] = _el(root, "testsuite", name=sname)
            counts[sname] = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        epoch = f"#{row['epoch']}" if row["epoch"] else ""
        for metric, score in row["scores"].items():
            tc = _el(
                suites[sname], "testcase", classname=f"{case['suite']}.{row['model']}",
                name=f"{case['id']}{epoch}[{metric}]",
                time=f"{(row['latency_ms'] or 0) / 1000:.3f}",
            )
            counts[sname]["tests"] += 1
            message = f"{metric}={fmt(score['value'])}: {score['reason']}"
            if score["status"] == "error":
                _el(tc, "error", score["reason"], message=_msg(message))
                counts[sname]["errors"] += 1
            elif score["value"] is None:
                _el(tc, "skipped", message=_msg(f"NODATA: {score['reason']}"))
                counts[sname]["skipped"] += 1
            elif score["passed"] is False:
                _el(tc, "failure", f"{message}\n\noutput:\n{row['output']}", message=_msg(message))
                counts[sname]["failures"] += 1
    for sname, el in suites.items():
        for key, value in counts[sname].items():
            el.set(key, str(value))
    return root


def _junit_run_summary(root: ET.Element, record: dict[str, Any], columns: Any) -> None:
    """A large run: per suite × model, a testcase per metric with its counts (a failure when
    any case failed, an error when any errored), then the first failing cases of each metric."""
    import numpy as np

    from gatekeeper.engine.record import case_index, rows_at
    from gatekeeper.engine.score_columns import ERROR
    from gatekeeper.reports.analysis import case_suites

    index = case_index(record)
    suites_of_cases = case_suites(index, columns.keys)  # without reading every entry of a large index
    names = sorted(set(suites_of_cases))
    suite_of_row = np.array([names.index(s) for s in suites_of_cases], dtype=np.int64)[columns.case] \
        if len(columns) else np.zeros(0, dtype=np.int64)
    plan: list[tuple[ET.Element, str, str, list[int]]] = []
    for s_index, suite_name in enumerate(names):
        for m_index, model in enumerate(columns.models):
            rows = (suite_of_row == s_index) & (columns.model == m_index)
            if not rows.any():
                continue
            el = _el(root, "testsuite", name=f"{suite_name}[{model}]")
            counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
            for metric, col in columns.metrics.items():
                mine = rows & (col.status >= 0)
                n = int(mine.sum())
                if not n:
                    continue
                errored = mine & (col.status == ERROR)
                nodata = mine & ~errored & np.isnan(col.value)
                failed = mine & ~errored & ~nodata & (col.passed == 0)
                tally = {"passed": int((mine & ~errored & ~nodata & (col.passed == 1)).sum()),
                         "failed": int(failed.sum()), "nodata": int(nodata.sum()), "errors": int(errored.sum())}
                text = f"{metric}: {n} cases, " + ", ".join(f"{v} {k}" for k, v in tally.items())
                tc = _el(el, "testcase", classname=f"{suite_name}.{model}", name=f"[{metric}] all {n} cases")
                counts["tests"] += 1
                if tally["errors"]:
                    _el(tc, "error", text, message=_msg(text))
                    counts["errors"] += 1
                elif tally["failed"]:
                    _el(tc, "failure", text, message=_msg(text))
                    counts["failures"] += 1
                else:
                    _el(tc, "system-out", text)
                bad = np.flatnonzero(failed | errored)
                if len(bad):
                    plan.append((el, suite_name, metric, bad[:MAX_CASES].tolist()))
                    if len(bad) > MAX_CASES:
                        plan.append((el, suite_name, metric, [-len(bad)]))
            for key, value in counts.items():
                el.set(key, str(value))
    full = rows_at(record, (i for _, _, _, shown in plan for i in shown if i >= 0))
    for el, suite_name, metric, shown in plan:
        for i in shown:
            if i < 0:  # how many failing cases were left out
                _el(el, "testcase", classname=f"{suite_name}.cases", name=f"{-i - MAX_CASES} more failing [{metric}]")
                _el(el[-1], "skipped", message=f"{MAX_CASES} of {-i} shown: see report.html or the run's cases.jsonl")
                el.set("tests", str(int(el.get("tests", "0")) + 1))
                el.set("skipped", str(int(el.get("skipped", "0")) + 1))
                continue
            row = full[i]
            score = row["scores"][metric]
            case = index[row["key"]]
            epoch = f"#{row['epoch']}" if row["epoch"] else ""
            tc = _el(el, "testcase", classname=f"{suite_name}.{row['model']}", name=f"{case['id']}{epoch}[{metric}]",
                     time=f"{(row['latency_ms'] or 0) / 1000:.3f}")
            message = f"{metric}={fmt(score['value'])}: {score['reason']}"
            tag = "error" if score["status"] == "error" else "failure"
            _el(tc, tag, message if tag == "error" else f"{message}\n\noutput:\n{row['output']}", message=_msg(message))
            el.set("tests", str(int(el.get("tests", "0")) + 1))
            el.set(f"{tag}s", str(int(el.get(f"{tag}s", "0")) + 1))


def _junit_check(record: dict[str, Any]) -> ET.Element:
    root = ET.Element("testsuites", name=xml_text(f"gatekeeper check {record['run_id']}: {record['decision']}"))
    suite = _el(root, "testsuite", name=f"policy {record['policy']['id']}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for m in record["metrics"]:
        slice_name = f"[{m['slice']['field']}={m['slice']['value']}]" if m.get("slice") else ""
        tc = _el(suite, "testcase", classname=f"policy.{record['policy']['id']}", name=f"{m['name']}{slice_name}")
        totals["tests"] += 1
        message = m["reason"]
        if m["verdict"] == "FAIL":
            _el(tc, "failure", message, message=_msg(message))
            totals["failures"] += 1
        elif m["verdict"] == "ERROR":
            _el(tc, "error", message, message=_msg(message))
            totals["errors"] += 1
        elif m["verdict"] in ("INCONCLUSIVE", "NODATA"):
            _el(tc, "skipped", message=_msg(f"{m['verdict']}: {message}"))
            totals["skipped"] += 1
    for dev in record.get("scope", {}).get("deviations", []):
        tc = _el(suite, "testcase", classname=f"policy.{record['policy']['id']}", name="scope")
        _el(tc, "failure", dev, message=_msg(dev))
        totals["tests"] += 1
        totals["failures"] += 1
    for key, value in totals.items():
        suite.set(key, str(value))
    _failing_cases(root, record)
    _regressed_cases(root, record)
    return root


def _more(suite: ET.Element, shown: int, total: int, what: str) -> None:
    """A last, skipped testcase saying how many were left out and where they are."""
    if total > shown:
        _el(suite, "testcase", classname="cases", name=f"{total - shown} more {what}")
        _el(suite[-1], "skipped", message=f"{shown} of {total} shown: see report.html or decision.json")


def _failing_cases(root: ET.Element, record: dict[str, Any]) -> None:
    """The candidate's failing (or erroring) cases on the policy's metrics, as failures."""
    from gatekeeper.reports.analysis import failures
    metrics = {m["metric"] for m in record["metrics"] if not m.get("slice")}
    groups = [g for g in failures(record, limit=MAX_CASES) if g["model"] == "candidate" and g["metric"] in metrics]
    total = sum(g["total"] for g in groups)
    if not total:
        return
    suite = _el(root, "testsuite", name="failing cases (candidate)")
    shown = 0
    for rank in range(MAX_CASES):  # round-robin, so every failing metric shows its first cases
        for g in groups:
            if rank < len(g["entries"]) and shown < MAX_CASES:
                e = g["entries"][rank]
                tc = _el(suite, "testcase", classname=f"cases.{g['metric']}", name=f"{e['id']}[{g['metric']}]")
                message = f"{g['metric']}={fmt(e['value'])}: {e['reason']}"
                tag = "error" if e["status"] == "error" else "failure"
                _el(tc, tag, f"{message}\n\nquestion:\n{e['question']}\n\noutput:\n{e['output']}",
                    message=_msg(message))
                shown += 1
    _more(suite, shown, total, "failing cases")
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(sum(1 for tc in suite if tc.find("failure") is not None)))
    suite.set("errors", str(sum(1 for tc in suite if tc.find("error") is not None)))
    suite.set("skipped", str(sum(1 for tc in suite if tc.find("skipped") is not None)))


def _regressed_cases(root: ET.Element, record: dict[str, Any]) -> None:
    """The cases where the candidate lost most against the baseline: passed testcases that say what changed.

    A regression on one case is evidence, not a verdict (the policy decides on the whole
    sample), so these do not count as failures; failing cases are listed above.
    """
    from gatekeeper.reports.analysis import worst_regressions
    found = []
    total = 0
    for group in worst_regressions(record, limit=MAX_CASES):
        total += group["count"]
        sign = -1.0 if group.get("direction") == "lower" else 1.0
        found += [(sign * (c["candidate"] - c["baseline"]), group["metric"], c) for c in group["cases"]]
    if not found:
        return
    found.sort(key=lambda t: (t[0], t[1], t[2]["key"]))
    suite = _el(root, "testsuite", name="most-regressed cases (candidate vs baseline)")
    for _, metric, c in found[:MAX_CASES]:
        tc = _el(suite, "testcase", classname=f"regressions.{metric}", name=f"{c['id']}[{metric}]")
        before = "".join(seg.text for seg in c["baseline_diff"])
        after = "".join(seg.text for seg in c["candidate_diff"])
        _el(tc, "system-out", f"{metric}: baseline {fmt(c['baseline'])} -> candidate {fmt(c['candidate'])}\n\n"
            f"question:\n{c['question']}\n\nbaseline output:\n{before}\n\ncandidate output:\n{after}")
    _more(suite, min(len(found), MAX_CASES), total, "regressed cases")
    suite.set("tests", str(len(suite)))
    suite.set("failures", "0")
    suite.set("errors", "0")
    suite.set("skipped", str(sum(1 for tc in suite if tc.find("skipped") is not None)))


class JUnitReporter(Reporter):
    name = "junit"
    description = ("JUnit XML: a testcase per case × metric (run; per metric plus the failing cases for a large "
                   "run) or per metric × slice verdict (check)")

    def write(self, record: dict[str, Any], out_dir: Path) -> Path:
        root = _junit_check(record) if record["kind"] == "check" else _junit_run(record)
        ET.indent(root)
        path = out_dir / "junit.xml"
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
        return path
