"""The signal schema and the reader: validation, layouts, filters, located errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gatekeeper.signals.records import Signal, SignalFilter, read_signals, resolve_source, signal_from_row
from gatekeeper.types import UsageError
from tests.signal_support import builtin_registries, flat_row, make_signal, write_jsonl


@pytest.fixture(scope="module")
def registries():
    return builtin_registries()


def test_nested_row_becomes_a_signal_in_utc():
    row = make_signal(1, time="2026-03-01T12:00:00+02:00", version=2, rating=4)
    signal = signal_from_row(row)
    assert signal.time == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert signal.model_version == "2"
    assert signal.feedback.rating == 4.0
    assert signal.attributes == {"topic": "returns", "channel": "chat"}
    assert signal.slice_values["user_role"] == "agent"


def test_time_without_offset_is_taken_as_utc():
    assert signal_from_row(make_signal(1, time="2026-03-01T10:00:00")).time.tzinfo == UTC


def test_flat_row_round_trips_to_the_same_signal():
    row = make_signal(3, verdict="edited", flags=["safety", "escalation"], rating=2)
    flat = flat_row(row)
    assert flat["feedback_verdict"] == "edited" and flat["topic"] == "returns"
    assert json.loads(flat["messages"])[0]["role"] == "system"
    assert signal_from_row(flat) == Signal.model_validate(row)


def test_flat_flags_may_be_comma_separated_and_extra_columns_are_attributes():
    flat = flat_row(make_signal(4))
    flat.update(flags="safety, escalation", locale="en-GB")
    signal = signal_from_row(flat)
    assert signal.flags == ["safety", "escalation"]
    assert signal.attributes["locale"] == "en-GB"


def test_plain_prompt_text_becomes_one_user_message():
    row = make_signal(5)
    del row["messages"]
    row["prompt"] = "Where is my parcel?"
    assert signal_from_row(row).messages == [{"role": "user", "content": "Where is my parcel?"}]


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"feedback": {"verdict": "edited"}}, "feedback", "edited text"),
    ({"feedback": {"verdict": "loved"}}, "feedback.verdict", "Input should be"),
    ({"feedback": {"verdict": "accepted", "rating": 9}}, "feedback.rating", "less than or equal to 5"),
    ({"time": "yesterday"}, "time", "datetime"),
    ({"messages": []}, "messages", "at least 1"),
    ({"messages": [{"role": "user"}]}, "messages", "'role' and 'content'"),
    ({"consent": {"training": "maybe"}}, "consent.training", "boolean"),
])
def test_bad_row_names_file_line_and_field(tmp_path, registries, change, field, message):
    rows = [make_signal(1), make_signal(2), {**make_signal(3), **change}]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    with pytest.raises(UsageError) as err:
        list(read_signals(str(path), registries))
    assert err.value.file == str(path) and err.value.line == 3
    assert err.value.field == field
    assert message in err.value.message
    assert str(err.value).startswith(f"{path}:3: {field}: ")


def test_row_without_id_is_reported(tmp_path, registries):
    row = make_signal(1)
    del row["id"]
    path = write_jsonl(tmp_path / "s.jsonl", [row])
    with pytest.raises(UsageError, match=r"s\.jsonl:1: id: field required"):
        list(read_signals(str(path), registries))


def test_invalid_json_line_is_reported(tmp_path, registries):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(make_signal(1)) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"s\.jsonl:2: invalid JSON"):
        list(read_signals(str(path), registries))


def test_filters_by_time_window_model_version_and_slice(tmp_path, registries):
    rows = [make_signal(i, version="1" if i % 2 else "2", topic="returns" if i < 6 else "billing") for i in range(10)]
    path = str(write_jsonl(tmp_path / "s.jsonl", rows))
    # make_signal puts signal i at 09:00 + i hours
    window = [s.id for s in read_signals(path, registries, since="2026-03-01T11:00:00Z", until="2026-03-01T15:00")]
    assert window == ["s2", "s3", "s4", "s5"]
    assert [s.id for s in read_signals(path, registries, model_version="2")] == ["s0", "s2", "s4", "s6", "s8"]
    assert [s.id for s in read_signals(path, registries, where={"topic": "billing"}, model_version=1)] == ["s7", "s9"]
    assert [s.id for s in read_signals(path, registries, where={"user_role": ["agent"], "topic": ["x"]})] == []
    assert list(read_signals(path, registries, model="other")) == []


def test_bad_time_filter_is_a_usage_error():
    with pytest.raises(UsageError, match="--since: 'last week' is not an ISO 8601 time"):
        SignalFilter.make(since="last week")


def test_source_is_chosen_by_scheme_prefix_or_suffix(registries):
    assert resolve_source("a/b.parquet", registries)[0].name == "parquet"
    assert resolve_source("sqlite:///x.db?table=t", registries)[0].name == "sql"
    assert resolve_source("postgresql+psycopg://u@h/db", registries)[0].name == "sql"
    source, target = resolve_source("jsonl:export.txt", registries)
    assert (source.name, target) == ("jsonl", "export.txt")
    assert resolve_source("traces.json", registries)[0].name == "otlp"
    with pytest.raises(UsageError, match=r"no signal source reads 'x\.xlsx' \(schemes and suffixes known: .*parquet"):
        resolve_source("x.xlsx", registries)


def test_missing_file_is_a_usage_error(tmp_path, registries):
    with pytest.raises(UsageError, match="signal file not found"):
        list(read_signals(str(tmp_path / "nope.jsonl"), registries))


def test_directory_and_glob_locations_read_every_file(tmp_path, registries):
    write_jsonl(tmp_path / "d" / "a.jsonl", [make_signal(1)])
    write_jsonl(tmp_path / "d" / "b.jsonl", [make_signal(2)])
    assert [s.id for s in read_signals(str(tmp_path / "d"), registries)] == ["s1", "s2"]
    assert [s.id for s in read_signals(str(tmp_path / "d" / "*.jsonl"), registries)] == ["s1", "s2"]


def test_bundled_telemetry_is_valid_and_covers_the_suite_topics(registries):
    root = Path(__file__).resolve().parents[1] / "suites"
    suite_topics = {json.loads(line)["topic"] for line in (root / "data/support_cases.jsonl").open()}
    for name in ("window2-better", "window2-worse"):
        signals = list(read_signals(str(root / "signals" / f"{name}.parquet"), registries))
        assert 3500 < len(signals) < 5000
        assert {s.model_version for s in signals} == {"1", "2"}
        assert {s.attributes["topic"] for s in signals} == suite_topics
        assert {s.model for s in signals} == {"support-assistant"}
        share = sum(s.model_version == "2" for s in signals) / len(signals)
        assert 0.07 < share < 0.13


def test_telemetry_generator_is_deterministic_and_valid():
    import random
    import sys

    tools = Path(__file__).resolve().parents[1] / "suites" / "tools"
    sys.path.insert(0, str(tools))
    try:
        import make_signals
    finally:
        sys.path.remove(str(tools))
    first = make_signals.make_window(random.Random(5), "t", make_signals.WINDOW2_START, 1, 60, "2", "2-worse")
    again = make_signals.make_window(random.Random(5), "t", make_signals.WINDOW2_START, 1, 60, "2", "2-worse")
    assert first == again and len(first) >= 60
    frame = make_signals.to_frame(first)  # every row passes the schema
    assert set(frame["model_version"]) == {"2"}
    assert all(s.feedback.edited_text for s in map(signal_from_row, first) if s.feedback.verdict == "edited")
