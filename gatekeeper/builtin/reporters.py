"""Built-in reporters: JSON record, JUnit XML, Markdown summary.

Each reads only the record (``kind`` ``run`` or ``check``), so ``gatekeeper report`` can
re-render an old run.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.kinds import Reporter

GITHUB_COMMENT_LIMIT = 65_000  # GitHub refuses comments over 65,536 characters


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


class JsonReporter(Reporter):
    name = "json"
    description = "the full record: results.json (run) or decision.json (check)"

    def write(self, record: dict[str, Any], out_dir: Path) -> Path:
        path = out_dir / ("decision.json" if record["kind"] == "check" else "results.json")
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
        tmp.replace(path)
        return path


# --------------------------------------------------------------------------- JUnit


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
            message = f"{metric}={_fmt(score['value'])}: {score['reason']}"
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


# --------------------------------------------------------------------------- Markdown


def _stats_line(stats: dict[str, Any]) -> str:
    return (
        f"model calls: {stats['model_calls']} · cache hits: {stats['cache_hits']} · "
        f"retries: {stats['retries']} · generation errors: {stats['generation_errors']} · "
        f"wall time: {stats['wall_s']:.1f} s"
    )


def _markdown_run(record: dict[str, Any]) -> str:
    lines = [f"# gatekeeper run `{record['run_id']}`", ""]
    for label, entry in record["models"].items():
        ident = entry["identity"]
        lines.append(f"- **{label}**: `{entry['spec']}` (digest `{ident['digest'][:12]}`)")
    suites = ", ".join(f"{s['name']} ({s['cases']} cases)" for s in record["suites"])
    lines += ["", f"Suites: {suites}", ""]
    lines += ["| model | metric | mean | passed | failed | nodata | errors |", "|---|---|---:|---:|---:|---:|---:|"]
    for label, metrics in record["summary"].items():
        for metric, s in metrics.items():
            lines.append(
                f"| {label} | {metric} | {_fmt(s['mean'])} | {s['passed']} | {s['failed']} | "
                f"{s['nodata']} | {s['error']} |"
            )
    lines += ["", _stats_line(record["stats"])]
    return "\n".join(lines) + "\n"


def _markdown_check(record: dict[str, Any], limit: int = GITHUB_COMMENT_LIMIT) -> str:
    icon = {"PROMOTE": "✅", "HOLD": "✋", "INCONCLUSIVE": "❔", "REJECT": "❌", "ROLLBACK": "⏪"}.get(
        record["decision"], "⚠️"
    )
    pol = record["policy"]
    lines = [
        f"# {icon} gatekeeper: **{record['decision']}**",
        "",
        f"Policy `{pol['id']}` v{pol['version']} · run `{record['run_id']}`",
        "",
    ]
    for label in ("candidate", "baseline"):
        entry = record["models"].get(label)
        if entry:
            lines.append(f"- **{label}**: `{entry['spec']}` (digest `{entry['identity']['digest'][:12]}`)")
    lines += ["", "## Reasons", ""]
    lines += [f"- **{r['clause']}**: {r['text']}" for r in record["reasons"]] or ["- none"]
    lines += [
        "", "## Metrics", "",
        "| metric | slice | n | baseline | candidate | Δ | CI | margin | verdict |",
        "|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    footer = ["", _stats_line(record["stats"])]
    body = "\n".join(lines)
    rows = []
    for m in record["metrics"]:
        sl = f"{m['slice']['field']}={m['slice']['value']}" if m.get("slice") else "all"
        ci = f"[{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]" if m.get("ci_low") is not None else "—"
        rows.append(
            f"| {m['name']} | {sl} | {m['n']} | {_fmt(m['baseline'])} | {_fmt(m['candidate'])} | "
            f"{_fmt(m['delta'])} | {ci} | {_fmt(m.get('margin'))} | {m['verdict']} |"
        )
    kept: list[str] = []
    size = len(body) + sum(len(x) + 1 for x in footer) + 200
    for row in rows:
        if size + len(row) + 1 > limit:
            kept.append(
                f"\n*{len(rows) - len(kept)} more rows not shown (comment size limit); "
                "see decision.json or report.html.*"
            )
            break
        kept.append(row)
        size += len(row) + 1
    return body + "\n" + "\n".join(kept) + "\n" + "\n".join(footer) + "\n"


class MarkdownReporter(Reporter):
    name = "markdown"
    description = "summary.md, fit for a pull-request comment and $GITHUB_STEP_SUMMARY"

    def write(self, record: dict[str, Any], out_dir: Path) -> Path:
        text = _markdown_check(record) if record["kind"] == "check" else _markdown_run(record)
        path = out_dir / "summary.md"
        path.write_text(text, encoding="utf-8")
        return path


@hookimpl
def gatekeeper_register_reporters(register: Any) -> None:
    register(JsonReporter)
    register(JUnitReporter)
    register(MarkdownReporter)
