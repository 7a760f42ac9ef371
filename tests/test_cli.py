"""The CLI as a user meets it: help, start-up cost, `gatekeeper run` and its reports."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

from gatekeeper.testing import Project

HEAVY = ("torch", "transformers", "pandas", "polars", "scipy", "numpy", "pyarrow", "peft", "rich", "yaml", "asyncio",
         "jinja2", "sqlite3", "gatekeeper.gate.policy", "gatekeeper.engine.runner",
         # the installed plugins register their classes by import path (docs/architecture.md)
         "gatekeeper_hf.tuning", "gatekeeper_hf.provider", "gatekeeper_ragas.evaluators", "gatekeeper_deepeval.metrics",
         "gatekeeper_azure_eval.evaluators", "gatekeeper_spark.engine", "gatekeeper_mlflow.target")


def test_help_lists_commands_and_exit_codes(project: Project) -> None:
    result = project.run("--help")
    assert result.exit_code == 0
    result.fnmatch_lines(["usage: gatekeeper*", "*run*evaluate one model*", "exit codes:",
                          "  0  PROMOTE*", "  4  usage or configuration error*"])


def test_help_imports_no_heavy_library(project: Project) -> None:
    code = (
        "import sys\n"
        "from gatekeeper.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=project.path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_run_writes_results_junit_and_summary(mini: Project) -> None:
    mini.write_jsonl("mixed.jsonl", [
        {"id": "refund-1", "output": "You have 30 days.", "latency_ms": 120, "usage": {"completion_tokens": 5}},
        {"id": "refund-2", "output": "No idea."},
        {"id": "ship-1", "output": "It is $15."},
    ])
    result = mini.run("run", "suites", "--model", "replay:mixed.jsonl", "--out", "out")
    assert result.exit_code == 1, result.output  # one case failed its threshold
    result.fnmatch_lines(["replay:mixed.jsonl: replay:mixed.jsonl", "*facts*0.667*2*1*0*0",
                          "model calls: 3 (cache hits: 0*", "wrote *out/results.json, out/junit.xml, out/summary.md"])

    record = mini.read_record("out/results.json")
    assert record["schema"] == "gatekeeper.results/1" and record["kind"] == "run"
    assert record["summary"]["replay:mixed.jsonl"]["facts"] == {
        "passed": 2, "failed": 1, "nodata": 0, "error": 0, "n": 3, "mean": 0.666667}
    rows = {r["key"]: r for r in record["cases"]}
    assert rows["mini::refund-2"]["scores"]["facts"]["passed"] is False
    assert "receipt" in rows["mini::refund-2"]["scores"]["facts"]["reason"]
    assert rows["mini::refund-1"]["latency_ms"] == 120
    assert record["case_index"]["mini::ship-1"]["slices"] == {"topic": "shipping"}
    assert record["models"]["replay:mixed.jsonl"]["identity"]["provider"] == "replay"

    junit = ET.parse(mini.path / "out/junit.xml").getroot()
    suite = junit.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    names = [tc.get("name") for tc in suite.iter("testcase")]
    assert names == ["refund-1[facts]", "refund-2[facts]", "ship-1[facts]"]
    failure = suite.find("testcase[@name='refund-2[facts]']/failure")
    assert failure is not None and "No idea." in (failure.text or "")

    summary = (mini.path / "out/summary.md").read_text()
    assert "| replay:mixed.jsonl | facts | 0.667 | 2 | 1 | 0 | 0 |" in summary


def test_config_from_gatekeeper_yaml_and_pyproject(mini: Project) -> None:
    mini.write("gatekeeper.yaml", "model: replay:good.jsonl\nout: reports\n")
    result = mini.run("run")
    assert result.exit_code == 0, result.output
    assert (mini.path / "reports/results.json").exists()
    (mini.path / "gatekeeper.yaml").unlink()
    mini.write("pyproject.toml", '[tool.gatekeeper]\nmodel = "replay:good.jsonl"\nout = "pp"\n')
    result = mini.run("run")
    assert result.exit_code == 0, result.output
    assert json.loads((mini.path / "pp/results.json").read_text())["kind"] == "run"


def test_bad_config_is_a_located_usage_error(mini: Project) -> None:
    mini.write("gatekeeper.yaml", "model: replay:good.jsonl\nrunner:\n  concurency: 3\n")
    result = mini.run("run")
    assert result.exit_code == 4
    where = str(mini.path / "gatekeeper.yaml")
    assert result.stderr.strip() == f"error: {where}:3: runner.concurency: unknown field"


def test_no_model_is_a_usage_error(mini: Project) -> None:
    result = mini.run("run")
    assert result.exit_code == 4 and "no model" in result.stderr
