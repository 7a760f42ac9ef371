"""Hostile and broken input (issue 14, items 5-8 and 12): every one ends in exit 4 naming the
file (and line and field where there is one), never an internal error, a silently changed
plan, a shorter dataset or a resource bomb."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from pathlib import Path

import pytest

from gatekeeper.gate.policy import load_policy
from gatekeeper.testing import Project
from tests.conftest import GOOD, SUITE, recording
from tests.signal_support import make_signal, write_csv, write_jsonl, write_parquet
from tests.test_policy import write_policy

# --------------------------------------------------------------------------- 5: code in data

EVIL = "from pathlib import Path\nPath('pwned').write_text('yes')\ndef f(messages, params):\n    return 'PASS'\n"


def _judged_suite(judge: str) -> str:
    return SUITE.replace(
        "  - {name: contains, as: facts, field: facts, mode: all}\n",
        "  - {name: contains, as: facts, field: facts, mode: all}\n"
        f"  - {{name: rubric, criteria: correct, judge: \"{judge}\"}}\n",
    )


def test_a_suite_naming_python_code_is_refused_without_allow_code(mini: Project) -> None:
    mini.write("evilmod.py", EVIL)
    mini.write("suites/mini.yaml", _judged_suite("python:evilmod:f"))
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out")
    assert result.exit_code == 4, result.output
    assert "suites/mini.yaml:" in result.stderr
    assert "evaluators.rubric.judge: 'python:evilmod:f' would import and run Python code" in result.stderr
    assert "--allow-code" in result.stderr
    assert not (mini.path / "pwned").exists()  # nothing was imported


def test_the_same_suite_runs_with_allow_code_or_the_project_setting(mini: Project) -> None:
    mini.write("evilmod.py", EVIL)
    mini.write("suites/mini.yaml", _judged_suite("python:evilmod:f"))
    result = mini.run("--allow-code", "run", "suites", "--model", "replay:good.jsonl", "--out", "out")
    assert "would import and run Python code" not in result.output
    assert (mini.path / "pwned").exists()
    (mini.path / "pwned").unlink()
    mini.write("evilmod2.py", EVIL)  # a fresh module: the first is imported in this process
    mini.write("suites/mini.yaml", _judged_suite("python:evilmod2:f"))
    mini.write("gatekeeper.yaml", "allow_code: true\n")
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out2")
    assert "would import and run Python code" not in result.output
    assert (mini.path / "pwned").exists()


def test_a_mapping_spec_is_refused_too(mini: Project) -> None:
    mini.write("suites/mini.yaml", SUITE.replace(
        "  - {name: contains, as: facts, field: facts, mode: all}\n",
        "  - {name: contains, as: facts, field: facts, mode: all}\n"
        "  - name: rubric\n    criteria: correct\n    judge: {provider: python, model: \"os:system\"}\n",
    ))
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out")
    assert result.exit_code == 4 and "evaluators.rubric.judge: 'python:os:system'" in result.stderr


# --------------------------------------------------------------------------- 6: duplicate keys


def test_duplicate_yaml_keys_in_a_suite_name_both_lines(mini: Project) -> None:
    text = SUITE.replace("slices: [topic]\n", "slices: [topic]\ncases: []\n")
    lines = mini.write("suites/mini.yaml", text).read_text(encoding="utf-8").splitlines()
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out")
    first, second = lines.index("cases: []") + 1, lines.index("cases:") + 1
    assert result.exit_code == 4
    assert f"suites/mini.yaml:{second}: cases: duplicate key 'cases' (first at line {first}" in result.stderr


def test_a_second_hypothesis_in_a_policy_is_refused(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "      margin: 0.05\n", "      margin: 0.05\n      hypothesis: superiority\n"
                        "      hypothesis: non_inferiority\n")
    with pytest.raises(Exception, match=r"duplicate key 'hypothesis' \(first at line \d+") as info:
        load_policy(path)
    assert type(info.value).__name__ == "UsageError" and info.value.file == str(path)  # type: ignore[attr-defined]


def test_duplicate_keys_in_project_config_and_nested_mappings(mini: Project) -> None:
    mini.write("gatekeeper.yaml", "out: a\nrunner:\n  concurrency: 2\n  concurrency: 64\n")
    result = mini.run("run", "suites", "--model", "replay:good.jsonl")
    assert result.exit_code == 4
    assert "gatekeeper.yaml:4: concurrency: duplicate key 'concurrency' (first at line 3" in result.stderr


def test_duplicate_ids_in_a_recording_are_refused(mini: Project) -> None:
    mini.write_jsonl("dup.jsonl", [*recording(GOOD), {"id": "refund-1", "output": "No."}])
    result = mini.run("run", "suites", "--model", "replay:dup.jsonl", "--out", "out")
    assert result.exit_code == 4
    assert "dup.jsonl:4: id: duplicate recording for id 'refund-1' epoch 0 (first at line 1)" in result.stderr


@pytest.mark.parametrize(("line", "message"), [
    ('{"id": "refund-1", "output": "yes", "output": "no"}', "duplicate key 'output'"),
    ('{"id": "refund-1", "output": "yes", "latency_ms": NaN}', "NaN is not a number"),
    ('{"id": "refund-1", "output": "yes", "cost": Infinity}', "Infinity is not a number"),
    ('{"id": "refund-1", "output": "yes", "epoch": "zero"}', "'epoch' must be a whole number"),
    ('{"id": "refund-1", "output": "yes", "usage": "lots"}', "'usage' must be an object"),
])
def test_ambiguous_json_rows_in_a_recording_are_refused(mini: Project, line: str, message: str) -> None:
    mini.write("bad.jsonl", line + "\n")
    result = mini.run("run", "suites", "--model", "replay:bad.jsonl", "--out", "out")
    assert result.exit_code == 4, result.output
    assert "bad.jsonl:1: " in result.stderr and message in result.stderr


def test_duplicate_keys_in_a_dataset_row(mini: Project) -> None:
    mini.write("suites/mini.yaml", SUITE.split("cases:")[0] + "dataset: ds.jsonl\n")
    mini.write("suites/ds.jsonl", '{"id": "a", "topic": "x"}\n{"id": "b", "topic": "x", "topic": "y"}\n')
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out")
    assert result.exit_code == 4 and "ds.jsonl:2: duplicate key 'topic'" in result.stderr


# --------------------------------------------------------------------------- 7: resource bombs

LAUGHS = "\n".join(
    ["suite: mini", "lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
) + "\n"


def test_billion_laughs_fails_fast(mini: Project) -> None:
    mini.write("suites/mini.yaml", LAUGHS)
    started = time.perf_counter()
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out")
    elapsed = time.perf_counter() - started
    assert result.exit_code == 4
    assert "suites/mini.yaml:" in result.stderr and "alias bomb" in result.stderr
    assert elapsed < 10  # was minutes and gigabytes; about 0.1 s here (2 shared cores)


def test_recursive_alias_is_refused(mini: Project) -> None:
    mini.write("suites/mini.yaml", "suite: mini\nx: &a [1, *a]\n")
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out")
    assert result.exit_code == 4 and "suites/mini.yaml:2: recursive YAML alias" in result.stderr


@pytest.mark.parametrize(("template", "message"), [
    ("{{ 'A' * 1000000000 }}", "would produce 1000000000 characters"),
    ("{% for i in range(10**8) %}x{% endfor %}", "range() of 100000000 items"),
    ("{% include '/etc/passwd' %}", "cannot include, import or extend"),
    ("{% import 'x.j2' as x %}", "cannot include, import or extend"),
    ("{{ 2 ** 100000000 }}", "too large for a template"),
    ("{{ '%999999999d' % 1 }}", "would produce 999999999 characters"),
    ("{% for i in range(9000) %}{{ 'A' * 900 }}{% endfor %}", "would produce"),
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
])
def test_template_bombs_are_usage_errors(mini: Project, template: str, message: str) -> None:
    mini.write("suites/mini.yaml", SUITE.replace("Question: {{ input }}", "Question: " + template.replace('"', '\\"')))
    started = time.perf_counter()
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out")
    assert result.exit_code == 4, result.output
    assert "suites/mini.yaml:" in result.stderr and message in result.stderr
    assert time.perf_counter() - started < 20


def test_a_huge_output_is_stored_once_truncated_with_its_hash(mini: Project) -> None:
    huge = "x" * 6_000_000 + " 30 days"
    mini.write_jsonl("big.jsonl", [*recording({k: v for k, v in GOOD.items() if k != "refund-1"}),
                                   {"id": "refund-1", "output": huge}])
    result = mini.run("run", "suites", "--model", "replay:big.jsonl", "--out", "out")
    assert result.exit_code == 0, result.output  # scored on the full output: "30 days" is found
    size = (mini.path / "out/results.json").stat().st_size
    assert size < 500_000, size
    row = next(r for r in mini.read_record("out/results.json")["cases"] if r["key"] == "mini::refund-1")
    digest = hashlib.sha256(huge.encode()).hexdigest()
    assert row["output_truncated"] == {  # record format 2: the whole output is kept once, as a blob
        "chars": len(huge), "kept": 65_536, "sha256": digest, "bytes": len(huge), "path": f"blobs/{digest}.gz"}
    assert row["output"] == huge[:65_536]
    assert gzip.decompress((mini.path / "out/blobs" / f"{digest}.gz").read_bytes()).decode() == huge


# --------------------------------------------------------------------------- 8: readers


def _csv_suite(project: Project, text: str) -> None:
    project.write("suites/mini.yaml", SUITE.split("cases:")[0] + "dataset: ds.csv\n")
    project.write("suites/ds.csv", text)


def test_a_csv_with_an_unterminated_quote_does_not_swallow_the_file(mini: Project) -> None:
    _csv_suite(mini, 'id,input,topic\nrefund-1,"How long,returns\nrefund-2,receipt?,returns\nship-1,cost?,shipping\n')
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out")
    assert result.exit_code == 4, result.output
    assert "suites/ds.csv:2: invalid CSV: unexpected end of data" in result.stderr


def test_a_ragged_csv_names_the_row(mini: Project) -> None:
    _csv_suite(mini, "id,input,topic\nrefund-1,a,returns\nrefund-2,b,returns,extra\n")
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out")
    assert result.exit_code == 4 and "suites/ds.csv:3: row has 4 fields, the header has 3" in result.stderr


def test_a_csv_with_quoted_newlines_keeps_every_row(mini: Project) -> None:
    _csv_suite(mini, 'id,input,context,topic\nrefund-1,"two\nlines",c,returns\n'
                     'refund-2,b,c,returns\nship-1,c,c,shipping\n')
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out")
    index = mini.read_record("out/results.json")["case_index"]
    assert sorted(index) == ["mini::refund-1", "mini::refund-2", "mini::ship-1"], result.output
    assert index["mini::refund-2"]["source"].endswith("ds.csv:4")


def test_a_corrupt_parquet_dataset(mini: Project) -> None:
    mini.write("suites/mini.yaml", SUITE.split("cases:")[0] + "dataset: ds.parquet\n")
    mini.write("suites/ds.parquet", "PAR1 not really\n")
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out")
    assert result.exit_code == 4 and "suites/ds.parquet: cannot read Parquet" in result.stderr


BAD_SIGNALS = {
    "no id": ({"id": None}, "id"),
    "no answer": ({"answer": None}, "answer"),
    "invalid messages": ({"messages": [{"role": "user"}]}, "messages"),
    "empty messages": ({"messages": []}, "messages"),
}


@pytest.mark.parametrize(("layout", "case"), [
    *((layout, case) for layout in ("jsonl", "csv") for case in [*BAD_SIGNALS, "duplicate id"]),
    ("parquet", "duplicate id"),  # the Parquet writer validates rows: the columnar case
])
def test_summarize_validates_like_build_suite(project: Project, layout: str, case: str) -> None:
    rows = [make_signal(i) for i in range(6)]
    if case == "duplicate id":
        rows[4]["id"] = rows[1]["id"]
        field, line_row = "id", 5
    else:
        change, field = BAD_SIGNALS[case]
        rows[3].update(change)
        line_row = 4
    path = project.path / f"signals.{layout}"
    if layout == "jsonl":
        write_jsonl(path, rows)
    elif layout == "csv":
        if case in ("no id", "no answer", "invalid messages", "empty messages"):
            # the flat writer validates; write the bad cell by hand
            good = [dict(r) for r in rows]
            good[3] = make_signal(3)
            write_csv(path, good)
            lines = path.read_text(encoding="utf-8").splitlines()
            header = lines[0].split(",")
            import csv as _csv
            import io
            parsed = list(_csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
            col = header.index(field)
            parsed[4][col] = "" if case != "invalid messages" else json.dumps([{"role": "user"}])
            if case == "empty messages":
                parsed[4][col] = "[]"
            buf = io.StringIO()
            _csv.writer(buf, lineterminator="\n").writerows(parsed)
            path.write_text(buf.getvalue(), encoding="utf-8")
        else:
            write_csv(path, rows)
    else:
        write_parquet(path, rows)
    results = {cmd: project.run("signals", *args) for cmd, args in {
        "summarize": ("summarize", path.name),
        "build-suite": ("build-suite", path.name, "--out", "suites/reg.yaml"),
    }.items()}
    for cmd, result in results.items():
        assert result.exit_code == 4, (cmd, result.output)
        assert f"signals.{layout}" in result.stderr, (cmd, result.stderr)
    assert results["summarize"].stderr == results["build-suite"].stderr  # one reader, one message
    if layout != "parquet":
        assert f"signals.{layout}:{line_row + (layout == 'csv')}" in results["summarize"].stderr


def test_summarize_of_a_csv_with_an_unterminated_quote(project: Project) -> None:
    path = write_csv(project.path / "signals.csv", [make_signal(i) for i in range(4)])
    text = path.read_text(encoding="utf-8").splitlines()
    text[2] = text[2].replace(",", ',"', 1)  # opens a quote that never closes
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    result = project.run("signals", "summarize", "signals.csv")
    assert result.exit_code == 4 and "signals.csv:" in result.stderr, result.output


# --------------------------------------------------------------------------- 12: exit codes


@pytest.mark.parametrize("target", ["suite", "recording", "policy", "registry", "config", "dataset"])
def test_non_utf8_files_are_usage_errors(mini: Project, target: str) -> None:
    bad = b"\xff\xfe not text\n"
    args = ["run", "suites", "--model", "replay:good.jsonl", "--out", "out"]
    if target == "suite":
        (mini.path / "suites/mini.yaml").write_bytes(SUITE.encode() + b"# " + bad)
        name = "suites/mini.yaml"
    elif target == "recording":
        (mini.path / "good.jsonl").write_bytes((mini.path / "good.jsonl").read_bytes() + bad)
        name = "good.jsonl:4"
    elif target == "dataset":
        mini.write("suites/mini.yaml", SUITE.split("cases:")[0] + "dataset: ds.csv\n")
        (mini.path / "suites/ds.csv").write_bytes(b"id,topic\na,x\n" + bad)
        name = "suites/ds.csv"
    elif target == "config":
        (mini.path / "gatekeeper.yaml").write_bytes(b"out: x\n" + bad)
        name = "gatekeeper.yaml:2"
    elif target == "policy":
        path = write_policy(mini.path)
        path.write_bytes(path.read_bytes() + b"# " + bad)
        args = ["check", "suites", "--candidate", "replay:good.jsonl", "--baseline", "replay:good.jsonl",
                "--policy", str(path.relative_to(mini.path)), "--out", "out"]
        name = str(path.relative_to(mini.path))
    else:
        (mini.path / ".gatekeeper/registry").mkdir(parents=True)
        (mini.path / ".gatekeeper/registry/registry.json").write_bytes(bad)
        args = ["registry", "show", "--model", "support-assistant"]
        name = "registry.json"
    result = mini.run(*args)
    assert result.exit_code == 4, result.output
    assert name in result.stderr and "UTF-8" in result.stderr, result.stderr


def test_margin_inf_fails_policy_loading(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "      margin: 0.05\n", "      margin: .inf\n")
    with pytest.raises(Exception, match=r"margin: .*finite") as info:
        load_policy(path)
    assert type(info.value).__name__ == "UsageError"


def test_a_suite_with_zero_cases_does_not_pass(mini: Project) -> None:
    mini.write("suites/mini.yaml", SUITE.split("cases:")[0] + "cases: []\n")
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out")
    assert result.exit_code == 4 and "suites/mini.yaml:" in result.stderr and "no cases" in result.stderr
    mini.write("suites/mini.yaml", SUITE.split("cases:")[0] + "dataset: empty.jsonl\n")
    mini.write("suites/empty.jsonl", "")
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out")
    assert result.exit_code == 4 and "dataset 'empty.jsonl' is empty" in result.stderr


def test_a_corrupt_cache_is_moved_aside_and_said_so(mini: Project) -> None:
    cache = mini.path / ".gatekeeper/cache.sqlite"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"definitely not sqlite" * 100)
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out")
    assert result.exit_code == 0, result.output
    assert "the cache is not a usable SQLite database" in result.stderr
    assert "moved it to cache.sqlite.corrupt-" in result.stderr
    assert [p.name for p in cache.parent.glob("cache.sqlite.corrupt-*")]


def test_a_too_long_plugin_name_is_a_usage_error(mini: Project) -> None:
    result = mini.run("-p", "a" * 5000, "run", "suites", "--model", "replay:good.jsonl")
    assert result.exit_code == 4 and "is not a module name" in result.stderr
    result = mini.run("-p", "../evil", "run", "suites", "--model", "replay:good.jsonl")
    assert result.exit_code == 4


def test_a_selection_of_zero_cases_does_not_pass(mini: Project) -> None:
    result = mini.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out", "-k", "nothing-matches")
    assert result.exit_code == 4
    assert "-k/-m: no case selected by -k 'nothing-matches' in 1 suite(s)" in result.stderr
