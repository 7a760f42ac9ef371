"""The gate's statistics over score columns (issue 18): the same verdicts as per-case mappings,
chunked and streamed runs that write the same record, templates without syntax not rendered."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gatekeeper.engine import runner as runner_mod
from gatekeeper.engine import score_columns
from gatekeeper.engine.score_columns import columns_of, summary
from gatekeeper.engine.templates import ENV, StaticText, compile_template, render_bounded
from gatekeeper.gate import stats
from gatekeeper.gate.score_tables import MetricMeans
from gatekeeper.testing import Project
from tests.large_support import bench_module


def _bench_project(project: Project, n: int) -> None:
    """bench/large_suites.py's project (10 metrics, 12 topic slices, clusters of 5) with n cases."""
    bench_module().write_project(project.path, n)


def _check(project: Project, out: str) -> Any:
    return project.run("check", "--baseline", "replay:baseline.jsonl", "--candidate", "replay:candidate.jsonl",
                       "--policy", "policy.yaml", "--out", out, "--no-progress")


def _reference_means(rows: list[dict[str, Any]], metric: str, measure: str) -> dict[str, dict[str, float]]:
    """model -> case key -> mean over epochs, the plain way (per-case lists, stats.average_epochs)."""
    values: dict[str, dict[str, list[float | None]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        score = row["scores"].get(metric)
        if score is None or score["status"] == "error":
            continue
        value = score["passed"] if measure == "passed" else score["value"]
        if value is not None and score["value"] is not None:
            values[row["model"]][row["key"]].append(float(value))
    return {model: stats.average_epochs(by_key) for model, by_key in values.items()}


def test_every_verdict_equals_the_comparison_of_per_case_mappings(project: Project) -> None:
    _bench_project(project, 600)
    result = _check(project, "out")
    assert result.exit_code in (0, 1, 3), result.output
    record = project.read_record("out")
    rows, index = record["cases"], record["case_index"]
    specs = {m["name"]: m for m in _policy_metrics(project)}
    compared = 0
    for metric_row in record["metrics"]:
        spec = specs[metric_row["name"]]
        means = _reference_means(rows, spec["metric"], spec.get("measure", "value"))
        base, cand = means["baseline"], means["candidate"]
        if metric_row["slice"] is not None:
            field, value = metric_row["slice"]["field"], metric_row["slice"]["value"]
            keys = {k for k in base.keys() & cand.keys() if index[k]["slices"].get(field) == value}
            base = {k: v for k, v in base.items() if k in keys}
            cand = {k: v for k, v in cand.items() if k in keys}
        clusters = {k: index[k]["cluster"] or k for k in base.keys() | cand.keys()}
        comp = stats.compare(base, cand, method=metric_row["ci_method"], alpha=metric_row["alpha"],
                             sides=metric_row["sides"], clusters=clusters)
        assert (metric_row["n"], metric_row["delta"], metric_row["ci_low"], metric_row["ci_high"]) == (
            comp.n, comp.delta, comp.ci_low, comp.ci_high), metric_row["reason"]
        compared += 1
    assert compared == 10 + 3 * 12  # ten metrics, three of them in 12 topic slices each


def _policy_metrics(project: Project) -> list[dict[str, Any]]:
    import yaml

    return list(yaml.safe_load((project.path / "policy.yaml").read_text())["performance_evaluation"]["metrics"])


def test_a_run_in_small_chunks_writes_the_same_rows_in_the_same_order(project: Project, monkeypatch) -> None:
    _bench_project(project, 120)
    assert _check(project, "whole").exit_code in (0, 1, 3)
    monkeypatch.setattr(runner_mod, "RUN_CHUNK", 7)
    assert _check(project, "chunked").exit_code in (0, 1, 3)

    def rows(out: str) -> list[dict[str, Any]]:
        lines = (project.path / out / "cases.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "cached"} for line in lines]

    whole, chunked = rows("whole"), rows("chunked")
    assert len(whole) == 240
    assert [(r["model"], r["key"]) for r in whole] == [(r["model"], r["key"]) for r in chunked]
    assert whole == chunked
    first, second = project.read_record("whole"), project.read_record("chunked")
    assert first["decision"] == second["decision"]
    assert [m["reason"] for m in first["metrics"]] == [m["reason"] for m in second["metrics"]]
    assert first["summary"] == second["summary"]


def _row(key: str, model: str, epoch: int, scores: dict[str, Any], error: str | None = None) -> dict[str, Any]:
    return {"key": key, "model": model, "epoch": epoch, "error": error, "scores": scores}


def _score(value: float | None, passed: bool | None = None, status: str = "ok", reason: str = "") -> dict[str, Any]:
    return {"value": value, "passed": passed, "status": status, "reason": reason, "spans": [], "details": {}}


ROWS = [
    _row("s::a", "baseline", 0, {"m": _score(0.1, False)}),
    _row("s::a", "baseline", 1, {"m": _score(0.2, True)}),
    _row("s::a", "baseline", 2, {"m": _score(0.7, True)}),
    _row("s::b", "baseline", 0, {"m": _score(None, status="nodata", reason="no verdict")}),
    _row("s::c", "baseline", 0, {"m": _score(0.5, True)}),
    _row("s::d", "baseline", 0, {"other": _score(1.0, True)}),
    _row("s::a", "candidate", 0, {"m": _score(0.3, True)}),
    _row("s::c", "candidate", 0, {"m": _score(None, status="error", reason="judge raised")}, error=None),
    _row("s::b", "candidate", 0, {"m": _score(0.9, None)}),
    _row("s::b", "candidate", 1, {"m": _score(0.4, True)}),
    _row("s::e", "candidate", 0, {}, error="timed out"),
]


def test_metric_means_count_nodata_and_errors_and_average_epochs_as_the_mappings_do() -> None:
    columns = columns_of(ROWS)
    table = MetricMeans(columns, "m")
    assert table.mapping("baseline") == _reference_means(ROWS, "m", "value")["baseline"]
    assert table.mapping("baseline")["s::a"] == math.fsum([0.1, 0.2, 0.7]) / 3
    assert table.mapping("candidate") == {"s::a": 0.3, "s::b": (0.9 + 0.4) / 2}
    assert (table.nodata, table.errors, table.first_error) == (
        {"baseline": 1}, {"candidate": 1}, {"candidate": "judge raised"})
    passed = MetricMeans(columns, "m", measure="passed")
    assert passed.mapping("candidate") == {"s::a": 1.0, "s::b": 1.0}  # the epoch without a verdict is NODATA
    assert passed.nodata == {"baseline": 1, "candidate": 1}
    pairs = table.pairs()
    assert list(pairs.ids) == ["s::a"] and pairs.cand.tolist() == [0.3]
    assert sorted(pairs.candidate_all.tolist()) == [0.3, 0.65]
    assert columns.errors == {10: "timed out"} and columns.error.tolist() == [False] * 10 + [True]
    assert columns.row(3)["scores"]["m"] == {"value": None, "passed": None, "status": "nodata",
                                             "reason": "no verdict"}
    assert "m" not in columns.row(5)["scores"]  # a row without the metric has none


def test_pairs_follow_the_key_order_of_the_mapping_comparison() -> None:
    rng = np.random.default_rng(3)
    keys = [f"suite::case-{i}" for i in rng.permutation(500)]  # written in no particular order
    rows = [_row(k, model, 0, {"m": _score(float(rng.random()))}) for model in ("candidate", "baseline")
            for k in keys]
    table = MetricMeans(columns_of(rows), "m")
    pairs = table.pairs()
    ids, base, cand = stats._pair(table.mapping("baseline"), table.mapping("candidate"))
    assert list(pairs.ids) == ids
    assert pairs.base.tolist() == base.tolist() and pairs.cand.tolist() == cand.tolist()
    subset = np.array(sorted(rng.choice(500, 40, replace=False)))
    sliced = table.pairs(subset)
    assert len(sliced.ids) == 40 and list(sliced.ids) == sorted(sliced.ids)


def test_the_summary_counts_each_model_and_metric() -> None:
    got = summary(columns_of(ROWS))
    assert got["baseline"]["m"] == {"passed": 3, "failed": 1, "nodata": 1, "error": 0, "n": 4,
                                    "mean": round((0.1 + 0.2 + 0.7 + 0.5) / 4, 6)}
    assert got["candidate"]["m"] == {"passed": 2, "failed": 0, "nodata": 0, "error": 1, "n": 3,
                                     "mean": round((0.3 + 0.9 + 0.4) / 3, 6)}
    assert got["baseline"]["other"]["n"] == 1 and "other" not in got["candidate"]


def _same_columns(a: score_columns.ScoreColumns, b: score_columns.ScoreColumns) -> None:
    assert (a.models, a.keys, a.errors) == (b.models, b.keys, b.errors)
    for name in ("model", "case", "epoch", "error"):
        assert getattr(a, name).tolist() == getattr(b, name).tolist(), name
    assert list(a.metrics) == list(b.metrics)
    for metric, col in a.metrics.items():
        other = b.metrics[metric]
        assert np.array_equal(col.value, other.value, equal_nan=True)
        assert col.passed.tolist() == other.passed.tolist() and col.status.tolist() == other.status.tolist()
        assert (col.reasons, col.labels) == (other.reasons, other.labels)


def test_saved_columns_load_back_equal_and_a_wrong_file_is_not_an_index(tmp_path: Path) -> None:
    rows = [*ROWS, _row("s::f", "candidate", 0,
                        {"m": {**_score(0.0, False), "details": {"labels": ["toxic", "ünïcode"]}}})]
    columns = columns_of(rows)
    offsets = [i * 100 for i in range(len(rows))]
    path = tmp_path / "scores.npz"
    case_offsets = {key: 40 * i for i, key in enumerate(columns.keys)}
    score_columns.save(columns, offsets, case_offsets, path)
    loaded, loaded_offsets = score_columns.load(path, len(rows))
    _same_columns(loaded, columns)
    assert loaded_offsets.tolist() == offsets
    assert loaded.metrics["m"].labels == {len(rows) - 1: ["toxic", "ünïcode"]}
    assert loaded.metrics["m"].reasons == {3: "no verdict", 7: "judge raised"}
    assert summary(loaded) == summary(columns)
    assert score_columns.load_case_offsets(path, len(columns.keys)) == case_offsets
    other_order = {"s::zz": 0, **{key: 7 + i for i, key in enumerate(reversed(columns.keys))}}
    score_columns.save(columns, offsets, other_order, path)  # an index with its own order and one more case
    assert score_columns.load_case_offsets(path, len(other_order)) == other_order
    with pytest.raises(score_columns.NotAnIndex, match="not an index of 3 cases"):
        score_columns.load_case_offsets(path, 3)

    with pytest.raises(score_columns.NotAnIndex, match="not an index of 13 rows"):
        score_columns.load(path, len(rows) + 1)  # the rows it indexes are not these
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(score_columns.NotAnIndex, match=r"junk\.npz: unreadable"):
        score_columns.load(tmp_path / "junk.npz", len(rows))


@pytest.mark.parametrize("text", ["Answer only from the passage.", "a }} b", "# heading", "  spaced  ",
                                  "line\n\nbreaks", "tail\n", "crlf\r\nline", "{{ x }}", "{# c #}y"])
def test_a_template_without_syntax_is_not_rendered_and_gives_what_jinja_gives(text: str) -> None:
    compiled = compile_template(text)
    assert isinstance(compiled, StaticText) == (
        not any(m in text for m in ("{{", "{%", "{#", "\r")) and not text.endswith("\n"))
    assert render_bounded(compiled, {"x": 1}) == ENV.from_string(text).render(x=1)


# --------------------------------------------------------------------------- a suite too large to hold


def _normalised_rows(project: Project, out: str) -> list[dict[str, Any]]:
    lines = (project.path / out / "cases.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "cached"} for line in lines]


def test_a_dataset_above_the_streaming_size_is_read_from_its_file_and_decides_the_same(
        project: Project, monkeypatch) -> None:
    from gatekeeper.engine import record as record_mod
    from gatekeeper.engine import suites as suites_mod

    _bench_project(project, 150)
    assert _check(project, "held").exit_code in (0, 1, 3)
    monkeypatch.setattr(suites_mod, "STREAM_CASES_ABOVE", 40)
    monkeypatch.setattr(record_mod, "INDEX_IN_MEMORY", 40)
    made = []
    real = suites_mod._case_from_row

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(suites_mod, "_case_from_row", counting)
    assert _check(project, "streamed").exit_code in (0, 1, 3)
    # Loading checks each row; each model's run, the index and the origin count make it again.
    assert len(made) == 150 * 5
    assert _normalised_rows(project, "held") == _normalised_rows(project, "streamed")
    held, streamed = project.read_record("held"), project.read_record("streamed")
    assert held["case_index"] == streamed["case_index"]
    assert [m["reason"] for m in held["metrics"]] == [m["reason"] for m in streamed["metrics"]]
    assert held["decision"] == streamed["decision"]
    # A reader of the large record seeks to the entries it shows (the index is not loaded whole).
    again = project.run("report", "streamed", "--format", "html", "--out", "rerendered")
    assert again.exit_code == 0, again.output
    before, after = ((project.path / d / "report.html").read_text() for d in ("streamed", "rerendered"))
    assert after.split("<h3>Signatures")[0] == before.split("<h3>Signatures")[0][:len(after.split("<h3>Signatures")[0])]
    assert after.count("case-0") == before.count("case-0") > 100  # the cases shown, read back by seeking


def test_k_selects_from_a_streamed_dataset_and_a_changed_dataset_stops_the_run(project: Project, monkeypatch) -> None:
    from gatekeeper.engine import suites as suites_mod

    _bench_project(project, 120)
    monkeypatch.setattr(suites_mod, "STREAM_CASES_ABOVE", 40)
    result = project.run("check", "--baseline", "replay:baseline.jsonl", "--candidate", "replay:candidate.jsonl",
                         "--policy", "policy.yaml", "--out", "some", "--no-progress", "-k", "case-000000")
    assert result.exit_code in (0, 1, 3), result.output
    keys = {row["key"] for row in _normalised_rows(project, "some")}
    assert keys == {f"large::case-{i:07d}" for i in range(10)}

    real = suites_mod.DatasetCases.__iter__

    def touched(self: Any) -> Any:  # the dataset is rewritten after loading, before the run reads it
        path = self.path
        path.write_text(path.read_text() + "\n")
        return real(self)

    monkeypatch.setattr(suites_mod.DatasetCases, "__iter__", touched)
    result = _check(project, "changed")
    assert result.exit_code == 4, result.output
    assert "the dataset changed after the suite was loaded" in result.output
    assert "cases.jsonl" in result.output


def test_a_recording_is_replayed_from_its_file_and_not_once_it_changed(tmp_path: Path) -> None:
    import asyncio

    from gatekeeper.builtin.providers.local import ReplayModel
    from gatekeeper.types import Case, GenerationRequest, ModelSpec, UsageError

    path = tmp_path / "rec.jsonl"
    path.write_text('{"id": "a", "output": "first", "latency_ms": 12.5}\n{"id": "a", "epoch": 1, "output": "again"}\n'
                    '{"id": "b", "output": "bee"}\n')
    model = ReplayModel(path, ModelSpec.parse(f"replay:{path}"))
    assert model.offsets == {0: {"a": 0, "b": 94}, 1: {"a": 51}}  # where each row is, not the rows

    def ask(case_id: str, epoch: int = 0) -> GenerationRequest:
        return GenerationRequest(case=Case(id=case_id, suite="s", messages=()), messages=(), epoch=epoch)

    got = asyncio.run(model.generate([ask("a"), ask("a", 1), ask("b", 3), ask("c")]))
    assert [(g.text, g.latency_ms, g.error) for g in got] == [
        ("first", 12.5, None), ("again", None, None), ("bee", None, None),
        ("", None, "no recorded output for case 'c'")]
    asyncio.run(model.aclose())
    path.write_text(path.read_text().replace("bee", "wasp"))
    with pytest.raises(UsageError, match="the recording changed after it was loaded"):
        asyncio.run(model.generate([ask("b")]))
