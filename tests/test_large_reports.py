"""Large suites (issue 18, the record and the reports): the fast row path makes the careful
path's rows, each JSON line reads back as json would have written it, and the reports
computed over the score columns say what the row-by-row code said."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gatekeeper.engine import jsonline
from gatekeeper.engine.record import BlobStore, iter_cases, load
from gatekeeper.engine.results import MAX_RECORDED_TEXT, SPANS_KEPT, result_row
from gatekeeper.reports import analysis
from gatekeeper.testing import Project
from gatekeeper.types import Case, CaseResult, Generation, Score, Span
from tests.large_support import bench_module

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- rows: fast == careful


def _result(text: str, scores: list[Score], error: str | None = None, key: str = "c1") -> CaseResult:
    case = Case(id=key, suite="s", messages=({"role": "user", "content": "q"},))
    gen = Generation(text=text, latency_ms=12.5, usage={"prompt_tokens": 3}, cost=None, error=error)
    return CaseResult(case=case, model="candidate", epoch=0, generation=gen, scores=scores)


def _varied() -> list[CaseResult]:
    long = "word " * 20_000
    many_spans = [Span(text=f"w{i}", start=i, end=i + 2, kind="claim", reason="unsupported") for i in range(400)]
    return [
        _result("plain answer", [Score("exact", 1.0, True, "equal"), Score("f1", 0.5, False, "half",
                                                                           details={"precision": 0.5, "n": 3})]),
        _result("spans", [Score("regex", 1.0, True, "matched", spans=[Span("60 days", 0, 7, "match", "re")])]),
        _result("lists", [Score("facts", 0.5, False, "1 of 2", details={"found": ["a"], "missing": ["b", "é"],
                                                                        "nested": {"k": 1, "v": None}})]),
        _result("nan", [Score("m", math.nan, None, "nan value", details={"x": math.inf, "y": -math.inf})]),
        _result("unicode ☃ \u2028 \x00 ctrl", [Score("u", 1.0, True, "snow ☃", details={"t": "é" * 10})]),
        _result("surrogate \ud800 here", [Score("s", 0.0, False, "lone \udc00", details={"z": ["\ud83d"]})]),
        _result("", [Score("judge", None, None, "could not parse", status="nodata")], error="timeout " * 5000),
        _result("err", [Score("e", None, None, "boom", status="error", details=None)]),  # type: ignore[arg-type]
        _result(long, [Score("grounding", 1.0, False, "r" * (MAX_RECORDED_TEXT + 5),
                             spans=[Span(long[:30], 0, 30)], details={"support": [0.1] * 5})]),
        _result("long output " * 8000, [Score("g", 1.0, True, "ok", spans=[Span("long output", 0, 11)])]),
        _result("spans", [Score("det", 1.0, True, "many", spans=many_spans)]),
        _result("details", [Score("d", 1.0, True, "big", details={"rows": [{"a": i} for i in range(10)],
                                                                  "huge": list(range(20_000)),
                                                                  "text": "x" * (MAX_RECORDED_TEXT + 1),
                                                                  "big_int": [2 ** 80], "tuple": (1, 2),
                                                                  "keys": {1: "non-str key"}})]),
        _result("span text", [Score("t", 1.0, True, "long span", spans=[Span("y" * 20_000, 0, 20_000)])]),
        _result("list text", [Score("l", 0.0, False, "", details={"found": ["z" * (MAX_RECORDED_TEXT + 1)],
                                                                  "ok": ["a", 1, 2.5, None, True],
                                                                  "medium": ["é" * 300] * 3, "map": {"a": "b"}})]),
    ]


@pytest.mark.parametrize("with_blobs", [False, True])
def test_the_fast_row_path_makes_the_careful_paths_row(tmp_path: Path, with_blobs: bool) -> None:
    for n, result in enumerate(_varied()):
        fast_blobs = BlobStore(tmp_path / f"fast{n}", 4096) if with_blobs else None
        careful_blobs = BlobStore(tmp_path / f"careful{n}", 4096) if with_blobs else None
        fast = result_row(result, fast_blobs)
        careful = result_row(result, careful_blobs, careful=True)
        assert jsonline.loads_line(jsonline.dumps_line(fast)) == jsonline.loads_line(jsonline.dumps_line(careful)) \
            or _same(fast, careful), (n, fast, careful)
        if with_blobs:
            assert fast_blobs is not None and careful_blobs is not None
            assert fast_blobs.entries == careful_blobs.entries, n
    # the many-spans case really went to a blob, the plain one took no blob at all
    blobs = BlobStore(tmp_path / "check", 4096)
    row = result_row(_varied()[10], blobs)
    assert len(row["scores"]["det"]["spans"]) == SPANS_KEPT and row["scores"]["det"]["spans_blob"]["count"] == 400


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN (a row holding NaN is never == itself)."""
    return json.dumps(a, default=str, sort_keys=True) == json.dumps(b, default=str, sort_keys=True)


# --------------------------------------------------------------------------- JSON lines: orjson where exact


def _json_line(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode("utf-8", "surrogatepass")


class Colour:
    def __str__(self) -> str:
        return "colour"


def test_a_plain_row_is_written_by_orjson_and_reads_back_the_same() -> None:
    row = {"key": "s::c1", "scores": {"m": {"value": 0.25, "passed": True, "spans": [], "details": {"n": [1, 2]}}},
           "error": None, "output": "é ☃ \u2028 \x7f \x00", "latency_ms": 1e-7, "big": 2 ** 63 - 1}
    line = jsonline.dumps_line(row)
    assert line != _json_line(row), "orjson's compact form, not json's"
    assert line.endswith(b"\n") and json.loads(line) == row and jsonline.loads_line(line) == row


@pytest.mark.parametrize("value", [
    math.nan, math.inf, -math.inf, [1.0, math.nan], "\ud800", {"x": "\udfff"}, 2 ** 64, -(2 ** 63) - 1,
    {1: "int key"}, {None: 1}, (1, 2), {"e": __import__("enum").Enum("E", "A").A}, Colour(), {"s": {1, 2}},
    b"bytes", np.float64(0.5), 1e308 * 10,
])
def test_what_orjson_would_change_is_written_as_json_writes_it(value: Any) -> None:
    obj = {"v": value}
    expected = json.loads(_json_line(obj))
    line = jsonline.dumps_line(obj)
    assert _same(json.loads(line), expected)
    assert _same(jsonline.loads_line(line), expected)


@pytest.mark.parametrize("raw", [
    b'{"a": NaN, "b": Infinity, "c": -Infinity}\n', '{"a": "\ud800"}\n'.encode("utf-8", "surrogatepass"),
    b'{"a": "\\ud800"}', b'{"a": 123456789012345678901234567890}', b'{"a": -9223372036854775809}',
    b'{"a": 18446744073709551616}', b'{"a": 1e400}', b'\xef\xbb\xbf{"a": 1}', b'{"a": 0.000123456789012345678}',
    b'{"a": 1, "a": 2}',
])
def test_a_line_orjson_would_misread_is_read_as_json_reads_it(raw: bytes) -> None:
    assert _same(jsonline.loads_line(raw), json.loads(raw))


def test_a_broken_line_raises_jsons_error() -> None:
    for raw in (b"", b"{", b'{"a": }', b"\xff\xfe"):
        with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
            jsonline.loads_line(raw)


# --------------------------------------------------------------------------- epoch means as sum() makes them


def test_epoch_means_add_left_to_right_as_sum_does() -> None:
    rng = np.random.default_rng(3)
    cases = rng.integers(0, 50, size=400)
    values = rng.random(400) * 10.0 ** rng.integers(-8, 8, size=400)
    means = analysis._epoch_sums(cases, values, 60)
    for c in range(60):
        mine = values[cases == c].tolist()
        if mine:
            assert means[c] == sum(mine) / len(mine)  # the same bits, not merely close
        else:
            assert math.isnan(means[c])


# --------------------------------------------------------------------------- reports: columns == rows


def _bench() -> Any:
    return bench_module()


@pytest.fixture(scope="module")
def bench_record(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real `gatekeeper check` of the benchmark's suite: 400 cases x 10 metrics x 2 models."""
    project = Project(tmp_path_factory.mktemp("bench400"))
    _bench().write_project(project.path, 400, seed=5)
    result = project.run("check", "--baseline", "replay:baseline.jsonl", "--candidate", "replay:candidate.jsonl",
                         "--policy", "policy.yaml", "--out", "out", "--no-progress")
    assert result.exit_code in (0, 1, 2, 3), result.output
    return load(project.path / "out")


@pytest.fixture(scope="module")
def demo_record(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo's check: a grounding detector (findings), failing cases, slices."""
    project = Project(tmp_path_factory.mktemp("demo"))
    shutil.copytree(REPO / "suites", project.path / "suites")
    shutil.copytree(REPO / "policies", project.path / "policies")
    result = project.run("check", "suites", "--baseline", "replay:suites/recordings/baseline.jsonl",
                         "--candidate", "replay:suites/recordings/candidate-better.jsonl",
                         "--policy", "policies/support-assistant.yaml", "--out", "out", "--no-progress")
    assert result.exit_code == 0, result.output
    return load(project.path / "out")


def _ordered(models: Any) -> list[str]:
    preferred = [m for m in ("baseline", "candidate") if m in models]
    return preferred + sorted(m for m in models if m not in preferred)


def _row_means(rows: list[dict[str, Any]], metric: str, measure: str = "value",
               keep: Any = None) -> dict[str, dict[str, float]]:
    """The row-by-row code: model -> case key -> mean over epochs (what gate.decision.score_table did, + sum/len)."""
    values: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        score = row["scores"].get(metric)
        if score is None or (keep is not None and not keep(row)) or score["status"] == "error":
            continue
        if score["value"] is None or (measure == "passed" and score["passed"] is None):
            continue
        value = float(score["passed"]) if measure == "passed" else float(score["value"])
        values.setdefault(row["model"], {}).setdefault(row["key"], []).append(value)
    return {m: {k: sum(v) / len(v) for k, v in by_key.items()} for m, by_key in values.items()}


def _reference_worst(record: Mapping[str, Any], rows: list[dict[str, Any]], limit: int) -> list[Any]:
    specs = analysis._metric_specs(record)
    index = record["case_index"]
    out = []
    for m in record["metrics"]:
        if m.get("slice"):
            continue
        spec = specs.get(m["name"], {})
        suite = spec.get("suite")
        means = _row_means(rows, m["metric"], spec.get("measure", "value"),
                           None if suite is None else (lambda r, s=suite: index[r["key"]]["suite"] == s))
        base, cand = means.get("baseline", {}), means.get("candidate", {})
        sign = -1.0 if m.get("direction") == "lower" else 1.0
        losses = sorted((sign * (cand[k] - base[k]), k) for k in base.keys() & cand.keys()
                        if sign * (cand[k] - base[k]) < 0)
        out.append((m["name"], len(losses), len(base.keys() & cand.keys()),
                    [(k, base[k], cand[k]) for _, k in losses[:limit]]))
    return out


@pytest.mark.parametrize("which", ["bench", "demo"])
def test_the_reports_over_columns_say_what_the_rows_say(which: str, bench_record: dict[str, Any],
                                                         demo_record: dict[str, Any]) -> None:
    record = bench_record if which == "bench" else demo_record
    rows = list(iter_cases(record))
    index = record["case_index"]

    # worst regressions: the same cases, in the same order, with the same numbers
    for limit in (5, 50):
        got = [(g["metric"], g["count"], g["paired"], [(c["key"], c["baseline"], c["candidate"]) for c in g["cases"]])
               for g in analysis.worst_regressions(record, limit=limit)]
        assert got == _reference_worst(record, rows, limit)
    assert any(g[1] for g in got), "some case regressed"
    first = next(g for g in analysis.worst_regressions(record) if g["cases"])["cases"][0]
    output = next(r["output"] for r in rows if r["key"] == first["key"] and r["model"] == "candidate")
    assert "".join(s.text for s in first["candidate_diff"]) == analysis.clip(output)

    # histograms: the same bins, counts and means
    metrics = sorted({m for model in record["summary"].values() for m in model})
    for h in analysis.histograms(record, metrics):
        per_model: dict[str, list[float]] = {}
        for row in rows:
            s = row["scores"].get(h.metric)
            if s and s.get("value") is not None and s.get("status") != "error":
                per_model.setdefault(row["model"], []).append(float(s["value"]))
        assert h.models == _ordered(per_model)
        assert h.means == {m: sum(v) / len(v) for m, v in per_model.items()}
        assert h.counts == {m: len(v) for m, v in per_model.items()}
        assert sum(b["count"] for b in h.bars) == sum(len(v) for v in per_model.values())

    # the case table: the same cells for the same cases, worse ones first
    table = analysis.case_table(record)
    models = _ordered({r["model"] for r in rows})
    assert table["models"] == models and table["total"] == len(index)
    specs = analysis._metric_specs(record)
    columns = [(m["name"], m["metric"], specs.get(m["name"], {}).get("measure", "value"),
                -1.0 if m.get("direction") == "lower" else 1.0) for m in record["metrics"] if not m.get("slice")]
    means = {name: _row_means(rows, metric, measure) for name, metric, measure, _ in columns}
    by_id = {index[k]["id"]: k for k in index}
    for out_row in table["rows"]:
        key = by_id[out_row["id"]]
        for (name, _, _, sign), cell in zip(columns, out_row["cells"], strict=True):
            values = [means[name].get(m, {}).get(key) for m in models]
            assert cell["values"] == values
            assert cell["worse"] == (len(values) == 2 and None not in values
                                     and sign * (values[1] - values[0]) < 0)  # type: ignore[operator]
    if table["worse_first"]:
        flags = [any(c["worse"] for c in r["cells"]) for r in table["rows"]]
        assert flags == sorted(flags, reverse=True)

    # failures and findings: the same totals and the same first cases
    expected: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        for metric, s in row["scores"].items():
            if s.get("passed") is False or s.get("status") == "error":
                expected.setdefault((row["model"], metric), []).append(index[row["key"]]["id"])
    got_failures = analysis.failures(record, limit=7)
    assert [(g["model"], g["metric"]) for g in got_failures] == list(expected)
    assert all(g["total"] == len(expected[(g["model"], g["metric"])]) for g in got_failures)
    assert all([e["id"] for e in g["entries"]] == expected[(g["model"], g["metric"])][:7] for g in got_failures)
    detectors = set(analysis.detector_metrics(record))
    flagged: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        for metric, s in row["scores"].items():
            if metric in detectors and s.get("value") is not None and float(s["value"]) >= 0.5:
                flagged.setdefault(row["model"], []).append((index[row["key"]]["id"], metric))
    found = analysis.findings(record, limit=4)
    assert {g["model"]: g["total"] for g in found} == {m: len(v) for m, v in flagged.items()}
    assert all([(e["id"], e["metric"]) for e in g["entries"]] == flagged[g["model"]][:4] for g in found)
    if which == "demo":
        assert found and got_failures, "the demo has findings and failing cases"


# --------------------------------------------------------------------------- junit.xml of a large run


def test_a_large_runs_junit_has_a_testcase_per_metric_and_its_first_failing_cases(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import xml.etree.ElementTree as ET

    from gatekeeper.reports import junit

    monkeypatch.setattr(junit, "MAX_RUN_TESTCASES", 1000)  # 300 cases x 10 metrics is "large"
    monkeypatch.setattr(junit, "MAX_CASES", 8)
    project = Project(tmp_path)
    _bench().write_project(project.path, 300, seed=2)
    result = project.run("run", "suites", "--model", "replay:candidate.jsonl", "--out", "out", "--no-progress")
    assert result.exit_code in (0, 1), result.output
    summary = project.read_json("out/results.json")["summary"]
    root = ET.parse(project.path / "out/junit.xml").getroot()
    suites = root.findall("testsuite")
    assert len(suites) == len(summary) == 1  # large[<model>]
    for suite in suites:
        label = next(label for label in summary if suite.get("name") == f"large[{label}]")
        cases = suite.findall("testcase")
        per_metric = [tc for tc in cases if " all 300 cases" in tc.get("name", "")]
        assert len(per_metric) == len(summary[label]) == 10
        for tc in per_metric:
            metric = tc.get("name", "").split("]")[0][1:]
            counts = summary[label][metric]
            shown = tc.find("failure") if tc.find("failure") is not None else tc.find("system-out")
            text = shown.text or "" if shown is not None else ""
            assert f"{counts['passed']} passed, {counts['failed']} failed" in text
            assert (tc.find("failure") is not None) == (counts["failed"] > 0)
            listed = [c for c in cases if c.get("name", "").endswith(f"[{metric}]") and c is not tc]
            failing = [c for c in listed if c.find("failure") is not None]
            assert len(failing) == min(counts["failed"], junit.MAX_CASES)
            more = [c for c in listed if c.get("name", "").startswith(f"{counts['failed'] - junit.MAX_CASES} more")]
            assert len(more) == (1 if counts["failed"] > junit.MAX_CASES else 0)
        assert int(suite.get("tests", "0")) == len(cases) < 300
        assert int(suite.get("failures", "0")) == sum(1 for c in cases if c.find("failure") is not None)
        assert int(suite.get("skipped", "0")) == sum(1 for c in cases if c.find("skipped") is not None)
    assert any(int(s.get("failures", "0")) > 10 for s in suites), "failing cases are listed"
    assert any(c.get("name", "").split(" ")[1:3] == ["more", "failing"] for c in root.iter("testcase"))


def _synthetic_record(seed: int) -> dict[str, Any]:
    """An inline record whose row order is not its key order, with two epochs, ties, a metric
    only one suite has, a ``passed`` measure and a lower-is-better metric."""
    rng = np.random.default_rng(seed)
    keys = [f"{'ab'[i % 2]}::k{i:03d}" for i in range(60)]
    order = rng.permutation(len(keys))
    rows = []
    for epoch in (0, 1):
        for model in ("candidate", "baseline"):
            for i in order.tolist():
                key = keys[i]
                value = float(rng.choice([0.0, 0.25, 0.5, 1.0]))
                scores = {"q": {"value": value, "passed": value >= 0.5, "status": "ok", "reason": ""},
                          "lat": {"value": float(rng.choice([100.0, 200.0, 300.5])), "passed": None, "status": "ok",
                                  "reason": ""}}
                if key.startswith("a::"):
                    scores["only_a"] = {"value": value / 3, "passed": None, "status": "ok", "reason": ""}
                if rng.random() < 0.05:
                    scores["q"] = {"value": None, "passed": None, "status": "error", "reason": "boom"}
                rows.append({"key": key, "model": model, "epoch": epoch, "output": f"{model} says {value}",
                             "error": None, "scores": scores})
    index = {k: {"suite": k[0], "id": k[3:], "messages": [], "slices": {}, "cluster": None} for k in keys}
    metric = {"slice": None, "direction": "higher"}
    return {
        "kind": "check", "case_index": index, "cases": rows, "summary": {},
        "metrics": [{**metric, "name": "q", "metric": "q"}, {**metric, "name": "q_passed", "metric": "q"},
                    {**metric, "name": "lat", "metric": "lat", "direction": "lower"},
                    {**metric, "name": "only_a", "metric": "only_a"}],
        "policy": {"pccp": {"performance_evaluation": {"metrics": [
            {"name": "q_passed", "measure": "passed"}, {"name": "only_a", "suite": "a"}]}}},
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_regressions_and_cells_follow_the_key_order_and_the_epochs_not_the_row_order(seed: int) -> None:
    record = _synthetic_record(seed)
    rows = record["cases"]
    for limit in (3, 10, 100):
        got = [(g["metric"], g["count"], g["paired"], [(c["key"], c["baseline"], c["candidate"]) for c in g["cases"]])
               for g in analysis.worst_regressions(record, limit=limit)]
        assert got == _reference_worst(record, rows, limit)
    table = analysis.case_table(record)
    means = {"q": _row_means(rows, "q"), "q_passed": _row_means(rows, "q", "passed"), "lat": _row_means(rows, "lat"),
             "only_a": _row_means(rows, "only_a")}
    for out_row in table["rows"]:
        key = f"{out_row['suite']}::{out_row['id']}"
        assert [c["values"] for c in out_row["cells"]] == [
            [means[name].get(m, {}).get(key) for m in ("baseline", "candidate")] for name in table["columns"]]
