"""The JUnit XML reporter: what CI systems show as test results."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from gatekeeper.kinds import Reporter
from gatekeeper.reports.common import fmt


def _junit_run(record: dict[str, Any]) -> ET.Element:
    root = ET.Element("testsuites", name=f"gatekeeper run {record['run_id']}")
    index = record["case_index"]
    suites: dict[str, ET.Element] = {}
    counts: dict[str, dict[str, int]] = {}
    for row in record["cases"]:
        case = index[row["key"]]
        sname = f"{case['suite']}[{row['model']}]"
        if sname not in suites:
            suites[sname] = ET.SubElement(root, "testsuite", name=sname)
            counts[sname] = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        epoch = f"#{row['epoch']}" if row["epoch"] else ""
        for metric, score in row["scores"].items():
            tc = ET.SubElement(
                suites[sname], "testcase", classname=f"{case['suite']}.{row['model']}",
                name=f"{case['id']}{epoch}[{metric}]",
                time=f"{(row['latency_ms'] or 0) / 1000:.3f}",
            )
            counts[sname]["tests"] += 1
            message = f"{metric}={fmt(score['value'])}: {score['reason']}"
            if score["status"] == "error":
                ET.SubElement(tc, "error", message=message[:500]).text = score["reason"]
                counts[sname]["errors"] += 1
            elif score["value"] is None:
                ET.SubElement(tc, "skipped", message=f"NODATA: {score['reason']}"[:500])
                counts[sname]["skipped"] += 1
            elif score["passed"] is False:
                ET.SubElement(tc, "failure", message=message[:500]).text = (
                    f"{message}\n\noutput:\n{row['output']}"
                )
                counts[sname]["failures"] += 1
    for sname, el in suites.items():
        for key, value in counts[sname].items():
            el.set(key, str(value))
    return root


def _junit_check(record: dict[str, Any]) -> ET.Element:
    root = ET.Element("testsuites", name=f"gatekeeper check {record['run_id']}: {record['decision']}")
    suite = ET.SubElement(root, "testsuite", name=f"policy {record['policy']['id']}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for m in record["metrics"]:
        slice_name = f"[{m['slice']['field']}={m['slice']['value']}]" if m.get("slice") else ""
        tc = ET.SubElement(
            suite, "testcase", classname=f"policy.{record['policy']['id']}",
            name=f"{m['name']}{slice_name}",
        )
        totals["tests"] += 1
        message = m["reason"]
        if m["verdict"] == "FAIL":
            ET.SubElement(tc, "failure", message=message[:500]).text = message
            totals["failures"] += 1
        elif m["verdict"] == "ERROR":
            ET.SubElement(tc, "error", message=message[:500]).text = message
            totals["errors"] += 1
        elif m["verdict"] in ("INCONCLUSIVE", "NODATA"):
            ET.SubElement(tc, "skipped", message=f"{m['verdict']}: {message}"[:500])
            totals["skipped"] += 1
    for dev in record.get("scope", {}).get("deviations", []):
        tc = ET.SubElement(suite, "testcase", classname=f"policy.{record['policy']['id']}", name="scope")
        ET.SubElement(tc, "failure", message=dev[:500]).text = dev
        totals["tests"] += 1
        totals["failures"] += 1
    for key, value in totals.items():
        suite.set(key, str(value))
    return root


class JUnitReporter(Reporter):
    name = "junit"
    description = "JUnit XML: a testcase per case × metric (run) or per metric × slice verdict (check)"

    def write(self, record: dict[str, Any], out_dir: Path) -> Path:
        root = _junit_check(record) if record["kind"] == "check" else _junit_run(record)
        ET.indent(root)
        path = out_dir / "junit.xml"
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
        return path
