"""Every built-in signal source reads the same signals; columnar sources push filters down."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from gatekeeper.signals.records import SignalFilter, read_signals, scan_signals
from gatekeeper.signals.summary import summarize
from gatekeeper.types import UsageError
from tests.signal_support import (
    NO_AUTOLOAD,
    builtin_registries,
    make_signal,
    otlp_export,
    write_csv,
    write_jsonl,
    write_parquet,
    write_sql,
)

POSTGRES_ENV = "GATEKEEPER_TEST_POSTGRES_URL"


@pytest.fixture(scope="module")
def registries():
    return builtin_registries()


def signals_rows() -> list[dict]:
    rows = []
    for i in range(12):
        verdict = ("accepted", "edited", "rejected", "none")[i % 4]
        rows.append(make_signal(
            i, verdict=verdict, version="1" if i < 8 else "2", topic=("returns", "billing")[i % 2],
            rating=float(1 + i % 5) if i % 3 == 0 else None, flags=["escalation"] if i % 5 == 0 else [],
            consent={"training": i % 6 != 0, "evaluation": True},
        ))
    return rows


def dumps(signals) -> list[dict]:
    return [s.model_dump(mode="json") for s in signals]


@pytest.fixture
def expected(tmp_path, registries):
    path = write_jsonl(tmp_path / "ref.jsonl", signals_rows())
    return dumps(read_signals(str(path), registries))


@pytest.mark.parametrize("layout", ["jsonl", "csv", "parquet", "parquet-nested", "sqlite", "otlp", "otlp-legacy"])
def test_every_source_reads_the_same_signals(tmp_path, registries, expected, layout):
    location = write_layout(tmp_path, layout, signals_rows())
    got = dumps(read_signals(location, registries))
    assert got == expected
    # The lazy (aggregation) path agrees with the row path.
    summary = summarize(location, registries, by=["topic"])
    reference = summarize(str(tmp_path / "ref.jsonl"), registries, by=["topic"])
    assert rounded(summary["groups"]) == rounded(reference["groups"])


def rounded(value):
    """Floats to 9 places: the frames' std may differ in the last bit between readers."""
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def write_layout(tmp_path, layout: str, rows: list[dict]) -> str:
    if layout == "jsonl":
        return str(write_jsonl(tmp_path / "s.jsonl", rows))
    if layout == "csv":
        return str(write_csv(tmp_path / "s.csv", rows))
    if layout == "parquet":
        return str(write_parquet(tmp_path / "s.parquet", rows))
    if layout == "parquet-nested":
        return str(write_parquet(tmp_path / "n.parquet", rows, nested=True))
    if layout == "sqlite":
        url = f"sqlite:///{tmp_path / 's.db'}"
        write_sql(url, rows)
        return f"{url}?table=signals"
    if layout.startswith("otlp"):
        path = tmp_path / "traces.json"
        path.write_text(json.dumps(otlp_export(rows, legacy=layout == "otlp-legacy")), encoding="utf-8")
        return str(path)
    raise AssertionError(layout)


def test_filters_reach_the_parquet_scan(tmp_path, registries):
    location = str(write_parquet(tmp_path / "s.parquet", signals_rows()))
    filters = SignalFilter.make(since="2026-03-01T10:00:00Z", model_version="1", where={"topic": "billing"})
    frame = scan_signals(location, registries, filters).select("id")
    plan = frame.explain()
    scan = plan[plan.index("Parquet SCAN"):]
    for predicate in ('col("model_version") == "1"', 'col("time") >=', 'col("topic").is_in'):
        assert predicate in scan, plan
    assert frame.collect()["id"].to_list() == ["s1", "s3", "s5", "s7"]


def test_parquet_directory_ignores_marker_files(tmp_path, registries):
    folder = tmp_path / "spark-out"
    write_parquet(folder / "part-0000.parquet", signals_rows()[:5])
    write_parquet(folder / "part-0001.parquet", signals_rows()[5:])
    (folder / "_SUCCESS").write_text("")
    assert len(list(read_signals(str(folder), registries))) == 12
    assert sum(g["signals"] for g in summarize(str(folder), registries)["groups"]) == 12


def test_csv_bad_value_names_the_line(tmp_path, registries):
    path = write_csv(tmp_path / "s.csv", signals_rows())
    lines = path.read_text().splitlines()
    assert ",edited," in lines[2]  # the header, s0, then s1 (edited)
    lines[2] = lines[2].replace(",edited,", ",sort-of,")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"s\.csv:3: feedback\.verdict: Input should be"):
        list(read_signals(str(path), registries))
    with pytest.raises(UsageError, match=r"s\.csv:3: feedback\.verdict: Input should be"):
        summarize(str(path), registries)


def test_sqlite_bad_row_names_table_row_and_field(tmp_path, registries):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 's.db'}"
    write_sql(url, signals_rows())
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE signals SET feedback_edited_text = NULL WHERE id = 's5'"))
    engine.dispose()
    with pytest.raises(UsageError) as err:
        list(read_signals(f"{url}?table=signals", registries))
    assert f"{url} table signals (id s5):" in str(err.value)
    assert "feedback: an 'edited' verdict needs the edited text" in str(err.value)


def test_sqlite_missing_table_is_a_usage_error(tmp_path, registries):
    url = f"sqlite:///{tmp_path / 's.db'}"
    write_sql(url, signals_rows())
    with pytest.raises(UsageError, match=r"no table 'nope' \(give \?table=NAME\)"):
        list(read_signals(f"{url}?table=nope", registries))


def test_sql_filters_are_pushed_into_the_query(tmp_path, registries):
    url = f"sqlite:///{tmp_path / 's.db'}"
    write_sql(url, signals_rows())
    signals = read_signals(f"{url}?table=signals", registries, model_version="2", where={"topic": "returns"})
    got = [s.id for s in signals]
    assert got == ["s8", "s10"]  # in time order


def test_otlp_jsonl_export_and_skipped_spans(tmp_path, registries):
    rows = signals_rows()
    path = tmp_path / "traces.jsonl.json"
    path.write_text(json.dumps(otlp_export(rows[:6])) + "\n" + json.dumps(otlp_export(rows[6:8])) + "\n")
    assert [s.id for s in read_signals(f"otlp:{path}", registries)] == [f"s{i}" for i in range(8)]


def test_otlp_span_without_answer_names_the_span(tmp_path, registries):
    export = otlp_export(signals_rows()[:2])
    span = export["resourceSpans"][0]["scopeSpans"][0]["spans"][2]
    span["attributes"] = [a for a in span["attributes"] if a["key"] != "gen_ai.output.messages"]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(export))
    with pytest.raises(UsageError, match=r"t\.json \(span 0000000000000003\):1: answer: field required"):
        list(read_signals(str(path), registries))


def test_json_that_is_not_otlp_says_so(tmp_path, registries):
    path = tmp_path / "signals.json"
    path.write_text(json.dumps([make_signal(1)]))
    with pytest.raises(UsageError, match="not an OTLP JSON trace export"):
        list(read_signals(str(path), registries))


def test_postgresql_source_against_a_real_server(registries):
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{POSTGRES_ENV} is not set; CI must run PostgreSQL for this test")
        pytest.skip(f"set {POSTGRES_ENV} (e.g. postgresql+psycopg://gatekeeper:gatekeeper@127.0.0.1:5432/gatekeeper_test)")
    import sqlalchemy as sa

    table = f"signals_{uuid.uuid4().hex[:10]}"
    rows = signals_rows()
    write_sql(url, rows, table=table)
    try:
        location = f"{url}?table={table}"
        got = dumps(read_signals(location, registries, since="2026-03-01T12:00:00Z", model_version="1"))
        assert [s["id"] for s in got] == ["s3", "s4", "s5", "s6", "s7"]
        assert got[0]["time"] == "2026-03-01T12:00:00Z"
        summary = summarize(location, registries, by=["topic"])
        assert [(g["model_version"], g["signals"]) for g in summary["groups"] if not g["slice"]] == [("1", 8), ("2", 4)]
        with pytest.raises(UsageError, match=r"no table 'absent_table'"):
            list(read_signals(f"{url}?table=absent_table", registries))
    finally:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
        engine.dispose()


LOCAL_SOURCE = '''
from gatekeeper import hookimpl
from gatekeeper.kinds import RowRef, SignalSource


class Inline(SignalSource):
    """Signals written inline in the location: inline:ID:VERDICT,ID:VERDICT,..."""
    name = "inline"
    schemes = ("inline",)

    def read(self, location, filters):
        for n, item in enumerate(location.split(","), 1):
            ident, verdict = item.split(":")
            yield RowRef("inline", n), {
                "id": ident, "conversation_id": ident, "time": "2026-03-01T00:00:00Z",
                "model": "m", "model_version": "7", "messages": [{"role": "user", "content": ident}],
                "answer": "a", "feedback": {"verdict": verdict}, "topic": "t",
            }


@hookimpl
def gatekeeper_register_signal_sources(register):
    register(Inline)
'''


def test_a_plugin_signal_source_gets_summaries_through_the_default_scan(project):
    project.write("gatekeeper_plugins.py", LOCAL_SOURCE)
    location = "inline:a:accepted,b:accepted,c:rejected,d:none"
    result = project.run("signals", "summarize", location, "--json", env=NO_AUTOLOAD)
    assert result.exit_code == 0, result.output
    group = json.loads(result.stdout)["groups"][0]
    assert (group["model_version"], group["signals"], group["with_feedback"]) == ("7", 4, 3)
    assert group["acceptance_rate"]["k"] == 2
    bad = project.run("signals", "summarize", "inline:a:accepted,b:maybe", env=NO_AUTOLOAD)
    assert bad.exit_code == 4
    assert "inline:2: feedback.verdict: Input should be" in bad.stderr


def test_unreachable_database_is_a_harness_error_without_the_password(project):
    location = "postgresql+psycopg://reader:s3cret-pw@127.0.0.1:1/nowhere?table=signals&connect_timeout=2"
    result = project.run("signals", "summarize", location, env=NO_AUTOLOAD)
    assert result.exit_code == 5
    assert "postgresql+psycopg://reader:***@127.0.0.1:1/nowhere" in result.stderr
    assert "the signals database failed" in result.stderr
    assert "s3cret-pw" not in result.output
