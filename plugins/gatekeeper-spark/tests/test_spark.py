"""gatekeeper on Spark, local[2] (a failed task is retried, as on a cluster): the signal
source and summary, distributed runs (a worker killed mid-partition, the rate budget
divided), classify across executors, and the errors a user meets.

One SparkSession for the whole module (starting one takes 10-30 s)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.classify_support import ENV, LABELS, POLICY, conversations, judge, spec
from tests.fakes import FakeOpenAIServer
from tests.signal_support import make_signal

from gatekeeper.testing import Project

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from gatekeeper_spark.spark_session import get_spark

    # Executors read API keys from their environment, fixed when their Python workers start.
    os.environ.update(ENV)
    warehouse = tmp_path_factory.mktemp("warehouse")
    session = get_spark("local[2,4]", conf={"spark.sql.warehouse.dir": str(warehouse),
                                            "spark.sql.shuffle.partitions": "2"})
    yield session
    session.stop()


def approx_equal(left: Any, right: Any, path: str = "") -> None:
    """Equal, floats to 1e-9 relative (Spark and Polars add in different orders)."""
    if isinstance(left, float) and isinstance(right, float):
        assert right == pytest.approx(left, rel=1e-9, abs=1e-12), path
    elif isinstance(left, dict) and isinstance(right, dict):
        assert left.keys() == right.keys(), path
        for key in left:
            approx_equal(left[key], right[key], f"{path}.{key}")
    elif isinstance(left, list) and isinstance(right, list):
        assert len(left) == len(right), path
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            approx_equal(a, b, f"{path}[{i}]")
    else:
        assert left == right, path


def nested_signals(n: int = 80) -> list[dict[str, Any]]:
    verdicts = ["accepted", "edited", "rejected", "none", "accepted"]
    return [make_signal(i, verdict=verdicts[i % 5], version=str(1 + i % 2), topic=["returns", "billing"][i % 3 % 2],
                        rating=[None, 2.0, 5.0, 4.0][i % 4], flags=["safety"] if i % 7 == 0 else [],
                        consent={"training": True, "evaluation": i % 4 != 0},
                        question=f"How long do I have to return item {i}? Write to jane{i}@example.com.")
            for i in range(n)]


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import polars as pl

    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(path)
    return path


# --------------------------------------------------------------------------- signals


def test_summarize_on_spark_gives_the_polars_figures(spark: Any, tmp_path: Path) -> None:
    project = Project(tmp_path)
    write_parquet(tmp_path / "signals.parquet", nested_signals())
    args = ("signals", "summarize", "signals.parquet", "--by", "topic", "--baseline-version", "1", "--json")

    polars_run = project.run(*args)
    spark_run = project.run(*args, "--engine", "spark")

    assert polars_run.exit_code == 0, polars_run.output
    assert spark_run.exit_code == 0, spark_run.output
    on_polars, on_spark = json.loads(polars_run.stdout), json.loads(spark_run.stdout)
    assert [g["signals"] for g in on_spark["groups"]] == [40, 13, 27, 40, 14, 26]
    approx_equal(on_polars, on_spark)
    filtered = project.run(*args, "--engine", "spark", "--where", "topic=billing", "--since", "2026-03-02")
    assert filtered.exit_code == 0, filtered.output
    approx_equal(json.loads(project.run(*args, "--where", "topic=billing", "--since", "2026-03-02").stdout),
                 json.loads(filtered.stdout))


def test_catalog_table_gives_the_same_curated_suite_as_the_file(spark: Any, tmp_path: Path) -> None:
    project = Project(tmp_path)
    write_parquet(tmp_path / "signals.parquet", nested_signals(40))
    spark.read.parquet(str(tmp_path / "signals.parquet")).write.mode("overwrite").saveAsTable("support_signals")

    from_file = project.run("signals", "build-suite", "signals.parquet", "--out", "file/reg.yaml",
                            "--eval-fraction", "0.999", "--json")
    from_table = project.run("signals", "build-suite", "table:support_signals", "--out", "table/reg.yaml",
                             "--eval-fraction", "0.999", "--json")

    assert from_file.exit_code == 0, from_file.output
    assert from_table.exit_code == 0, from_table.output
    file_manifest, table_manifest = json.loads(from_file.stdout), json.loads(from_table.stdout)
    assert table_manifest["counts"] == file_manifest["counts"]
    assert table_manifest["counts"]["no_evaluation_consent"] == 10  # consent is honoured
    dataset = (tmp_path / "table" / "reg.jsonl").read_text(encoding="utf-8")
    assert dataset == (tmp_path / "file" / "reg.jsonl").read_text(encoding="utf-8")
    assert "@example.com" not in dataset and table_manifest["pii"]["total"] > 0  # PII scrubbed


# --------------------------------------------------------------------------- distributed runs

SUITE = """\
suite: support
prompt:
  messages: [{role: user, content: "{{ input }}"}]
cases:
%s
evaluators:
  - exact_match
  - dies_once
"""

KILLER = """\
import os
from pathlib import Path

from gatekeeper import Evaluator, hookimpl


class DiesOnce(Evaluator):
    name = "dies_once"

    def score(self, case, generation):
        marker = Path(__file__).with_name("killed.marker")
        if case.id == "q5" and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)  # the Python worker dies mid-partition, once
        return self.result(1.0)


@hookimpl
def gatekeeper_register_evaluators(register):
    register(DiesOnce)
"""


def test_run_on_spark_survives_a_killed_worker_and_matches_the_local_run(spark: Any, tmp_path: Path) -> None:
    project = Project(tmp_path)
    cases = {f"q{i}": f"question {i}" for i in range(12)}
    project.write("suites/support.yaml", SUITE % "\n".join(
        f"  - {{id: {k}, input: {v!r}, expected: 'answer {k}'}}" for k, v in cases.items()))
    project.write_jsonl("rec.jsonl", [{"id": k, "output": f"answer {k}" if i % 3 else "wrong"}
                                      for i, k in enumerate(cases)])
    project.write("gatekeeper_plugins.py", KILLER)
    (tmp_path / "killed.marker").write_text("not this time")

    local = project.run("run", "suites", "--model", "replay:rec.jsonl", "--out", "local", "--no-progress")
    (tmp_path / "killed.marker").unlink()
    spread = project.run("run", "suites", "--model", "replay:rec.jsonl", "--out", "spark", "--no-progress",
                         "--engine", "spark")

    assert local.exit_code == spread.exit_code == 1, spread.output  # 4 wrong answers fail exact_match
    assert (tmp_path / "killed.marker").read_text() != "not this time"  # a worker was killed
    on_spark, on_local = project.read_record("spark/results.json"), project.read_record("local/results.json")
    keys = [(row["key"], row["model"]) for row in on_spark["cases"]]
    assert len(keys) == len(set(keys)) == 12  # none lost, none counted twice
    assert keys == [(row["key"], row["model"]) for row in on_local["cases"]]
    assert on_spark["summary"] == on_local["summary"]
    assert on_spark["summary"]["replay:rec.jsonl"]["exact_match"]["failed"] == 4


def test_one_rate_budget_is_divided_among_executors(spark: Any, tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write("gatekeeper.yaml", "runner: {concurrency: 2, max_concurrency: 2, retries: 1}\n")
    cases = "\n".join(f"  - {{id: r{i}, input: 'request {i}'}}" for i in range(8))
    project.write("suites/s.yaml", f"""\
suite: paced
prompt:
  messages: [{{role: user, content: "{{{{ input }}}}"}}]
cases:
{cases}
evaluators: [{{length: {{max_chars: 1000}}}}]
""")
    with FakeOpenAIServer(latency_s=0.4) as server:
        model = f"openai:gpt-fake?base_url={server.base_url}&api_key_env=GK_TEST_CLASSIFY_KEY&rpm=240"
        result = project.run("run", "suites", "--model", model, "--out", "out", "--no-progress",
                             "--engine", "spark", env=ENV)
        arrivals = sorted(server.received_at)

    assert result.exit_code == 0, result.output
    assert len(arrivals) == 8
    # Two partitions at once: each runs 1 call at a time at 120 requests/minute, together
    # the configured 2 in flight and 240/min (4 per second), not twice that.
    assert server.peak_in_flight <= 2
    assert (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) < 6.0
    assert project.read_record("out/results.json")["stats"]["model_calls"] == 8


# --------------------------------------------------------------------------- classify


def test_classify_on_spark_labels_every_row_and_compares_versions(spark: Any, tmp_path: Path) -> None:
    project = Project(tmp_path)
    write_parquet(tmp_path / "conversations.parquet", list(conversations(300)))
    project.write("policy.yaml", POLICY)
    with FakeOpenAIServer(responder=judge()) as server:
        project.write("classify.yaml", spec(server))
        result = project.run("classify", "label", "conversations.parquet", "--spec", "classify.yaml",
                             "--out", "labelled", "--engine", "spark", "--compare", "1,2", "--policy", "policy.yaml",
                             env=ENV)

    assert result.exit_code == 1, result.output  # the topic mix of version 2 shifted: the policy fails it
    report = project.read_json("labelled.classify.json")
    assert report["engine"] == "spark" and report["refused"] is False
    assert report["agreement"]["topic"]["kappa"] >= 0.6
    assert report["labelled"]["rows"] == 300
    import polars as pl

    table = pl.read_parquet(tmp_path / "labelled" / "*.parquet")
    assert table.height == 300 and table["id"].n_unique() == 300
    assert set(table["topic"].unique()) <= set(LABELS)
    assert table["classifier_version"].unique().to_list() == [report["classifier"]["version"]]
    assert not list(tmp_path.glob("labelled._tmp-*"))
    assert report["verdicts"][0]["verdict"] == "FAIL"
    result.fnmatch_lines(["*agreement with the LLM*kappa*", "labelled 300 rows*", "*Jensen-Shannon distance*",
                          "FAIL: topic_mix*"])


# --------------------------------------------------------------------------- bad input


def test_a_table_without_a_required_column_is_named(spark: Any, tmp_path: Path) -> None:
    project = Project(tmp_path)
    rows = [{k: v for k, v in r.items() if k != "messages"} for r in conversations(40)]
    write_parquet(tmp_path / "no_messages.parquet", rows)
    with FakeOpenAIServer(responder=judge()) as server:
        project.write("classify.yaml", spec(server))
        result = project.run("classify", "label", "no_messages.parquet", "--spec", "classify.yaml", "--out", "out",
                             "--engine", "spark", env=ENV)
    assert result.exit_code == 4
    assert "no_messages.parquet" in result.stderr and "no 'messages' column" in result.stderr
    assert not (tmp_path / "out").exists()
    summary = project.run("signals", "summarize", "no_messages.parquet", "--engine", "spark")
    assert summary.exit_code == 0, summary.output


def test_delta_through_spark_without_delta_configured_says_what_to_add(spark: Any, tmp_path: Path) -> None:
    from deltalake import write_deltalake

    write_deltalake(str(tmp_path / "delta_signals"), __import__("pyarrow").table({"id": ["a"]}))
    result = Project(tmp_path).run("signals", "summarize", "delta:delta_signals", "--engine", "spark")
    assert result.exit_code == 5
    assert "delta-spark" in result.stderr and "docs/spark.md" in result.stderr


def test_java_missing_is_reported_by_name(tmp_path: Path) -> None:
    write_parquet(tmp_path / "s.parquet", nested_signals(4))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python")
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(bin_dir)
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "gatekeeper.cli", "signals", "summarize", "s.parquet",
                           "--engine", "spark"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 5, proc.stderr
    assert "Java is missing" in proc.stderr and "Traceback" not in proc.stderr
    assert shutil.which("java") is not None  # the rest of this module had one
