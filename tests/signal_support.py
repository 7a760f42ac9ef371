"""Signals for tests: a factory for schema rows and writers for every built-in layout."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SYSTEM = "You are the support assistant. Answer from the passages."
PASSAGE = "[Returns]\nItems can be returned within 45 days. Call 1-800-555-0148 or write to care@shop.example."

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def make_signal(i: int, **over: Any) -> dict[str, Any]:
    """A nested-layout signal row; ``question``, ``verdict``, ``edited``, ``topic`` and
    ``version`` are shortcuts for the fields they name."""
    question = over.pop("question", f"Question number {i}: how long do I have to return item {i}?")
    verdict = over.pop("verdict", "accepted")
    edited = over.pop("edited", f"You have 45 days to return item {i}." if verdict == "edited" else None)
    topic = over.pop("topic", "returns")
    version = over.pop("version", "1")
    row: dict[str, Any] = {
        "id": f"s{i}",
        "conversation_id": f"c{i}",
        "time": (START + timedelta(hours=i)).isoformat(),
        "model": "support-assistant",
        "model_version": version,
        "messages": [{"role": "system", "content": SYSTEM},
                     {"role": "user", "content": f"Policy passages:\n\n{PASSAGE}\n\nCustomer question: {question}"}],
        "context": [PASSAGE],
        "answer": over.pop("answer", f"Item {i} can be returned within 30 days."),
        "feedback": {"verdict": verdict, "edited_text": edited, "rating": over.pop("rating", None)},
        "flags": over.pop("flags", []),
        "user_role": over.pop("user_role", "agent"),
        "consent": over.pop("consent", {"training": True, "evaluation": True}),
        "retention": over.pop("retention", "standard-1y"),
        "attributes": {"topic": topic, "channel": over.pop("channel", "chat")},
    }
    row.update(over)
    return row


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """The flat (columnar) layout of a nested row, as the schema defines it."""
    from gatekeeper.signals.records import Signal

    return Signal.model_validate(row).flat()


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    import polars as pl

    frame = pl.DataFrame([flat_row(r) for r in rows], infer_schema_length=None)
    frame = frame.with_columns(pl.col("time").dt.strftime("%Y-%m-%dT%H:%M:%S%.f%:z"))
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path)
    return path


def write_parquet(path: Path, rows: Iterable[dict[str, Any]], *, nested: bool = False) -> Path:
    import polars as pl

    from gatekeeper.signals.records import Signal

    path.parent.mkdir(parents=True, exist_ok=True)
    if nested:
        records = [Signal.model_validate(r).model_dump() for r in rows]
    else:
        records = []
        for r in rows:
            flat = flat_row(r)
            flat["flags"] = json.loads(flat["flags"])
            records.append(flat)
    pl.DataFrame(records, infer_schema_length=None).write_parquet(path)
    return path


def write_sql(url: str, rows: Iterable[dict[str, Any]], table: str = "signals") -> None:
    """Create ``table`` (flat layout, real timestamp column) and insert the rows."""
    import sqlalchemy as sa

    flat = [flat_row(r) for r in rows]
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    columns = [sa.Column("id", sa.String, primary_key=True), sa.Column("time", sa.DateTime(timezone=True))]
    names = list(dict.fromkeys(k for f in flat for k in f))
    types = {"feedback_rating": sa.Float, "consent_training": sa.Boolean, "consent_evaluation": sa.Boolean}
    columns += [sa.Column(n, types.get(n, sa.Text)) for n in names if n not in ("id", "time")]
    t = sa.Table(table, meta, *columns)
    with engine.begin() as conn:
        meta.drop_all(conn)
        meta.create_all(conn)
        conn.execute(t.insert(), flat)
    engine.dispose()


def otlp_export(rows: Iterable[dict[str, Any]], *, legacy: bool = False) -> dict[str, Any]:
    """An OTLP JSON trace export with one GenAI span per signal row (plus a non-GenAI span).

    ``legacy`` uses the older conventions: ``gen_ai.prompt``/``gen_ai.completion`` and
    feedback as a ``gen_ai.evaluation.result`` event; else the current
    ``gen_ai.input.messages``/``gen_ai.output.messages`` with parts and a
    ``gatekeeper.feedback`` event."""

    def value(v: Any) -> dict[str, Any]:
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v)}
        if isinstance(v, float):
            return {"doubleValue": v}
        if isinstance(v, list):
            return {"arrayValue": {"values": [value(x) for x in v]}}
        return {"stringValue": str(v)}

    def attrs(d: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"key": k, "value": value(v)} for k, v in d.items() if v is not None]

    spans_by_version: dict[str, list[dict[str, Any]]] = {}
    marker = [{"traceId": "ff" * 16, "spanId": "ee" * 8, "name": "retrieve", "startTimeUnixNano": "1",
               "endTimeUnixNano": "2", "attributes": attrs({"db.system": "vector"})}]
    count = 1
    for r in rows:
        end = int(datetime.fromisoformat(r["time"]).timestamp() * 1e9)
        a: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": r["model"],
            "gen_ai.response.id": r["id"],
            "gen_ai.conversation.id": r["conversation_id"],
            "gatekeeper.context": json.dumps(r["context"]),
            "gatekeeper.flags": r["flags"],
            "gatekeeper.user.role": r["user_role"],
            "gatekeeper.retention": r["retention"],
            "gatekeeper.consent.training": r["consent"]["training"],
            "gatekeeper.consent.evaluation": r["consent"]["evaluation"],
            **{f"gatekeeper.attributes.{k}": v for k, v in r["attributes"].items()},
        }
        fb = r["feedback"]
        events = []
        if legacy:  # the version comes from the resource's service.version
            a["gen_ai.prompt"] = json.dumps(r["messages"])
            a["gen_ai.completion"] = json.dumps([{"role": "assistant", "content": r["answer"]}])
            events.append({"name": "gen_ai.evaluation.result", "timeUnixNano": str(end), "attributes": attrs(
                {"gen_ai.evaluation.name": "user_feedback", "gen_ai.evaluation.score.label": fb["verdict"]})})
            if fb.get("rating") is not None:
                events.append({"name": "gen_ai.evaluation.result", "attributes": attrs(
                    {"gen_ai.evaluation.name": "user_rating", "gen_ai.evaluation.score.value": float(fb["rating"])})})
            if fb.get("edited_text"):
                a["gatekeeper.feedback.edited_text"] = fb["edited_text"]
        else:
            a["gatekeeper.model.version"] = r["model_version"]
            a["gen_ai.input.messages"] = json.dumps(
                [{"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]} for m in r["messages"]])
            a["gen_ai.output.messages"] = json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": r["answer"]}], "finish_reason": "stop"}])
            events.append({"name": "gatekeeper.feedback", "timeUnixNano": str(end),
                           "attributes": attrs({k: v for k, v in fb.items() if v is not None})})
        count += 1
        spans_by_version.setdefault(str(r["model_version"]), []).append({
            "traceId": f"{count:032x}", "spanId": f"{count:016x}", "name": "chat", "kind": 3,
            "startTimeUnixNano": str(end - 10**9), "endTimeUnixNano": str(end), "attributes": attrs(a),
            "events": events,
        })
    return {"resourceSpans": [
        {"resource": {"attributes": attrs({"service.name": "support-assistant", "service.version": version})},
         "scopeSpans": [{"scope": {"name": "support-app"}, "spans": (marker if i == 0 else []) + spans}]}
        for i, (version, spans) in enumerate(spans_by_version.items())
    ]}


NO_AUTOLOAD = {"GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD": "1"}
"""These tests need only the built-in plugins; other installed distributions stay out."""


def builtin_registries() -> dict[str, Any]:
    import os

    from gatekeeper.host.config import load_config
    from gatekeeper.host.plugins import PluginHost

    old = os.environ.get("GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD")
    os.environ["GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        return PluginHost(load_config(None)).registries
    finally:
        if old is None:
            del os.environ["GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD"]
        else:
            os.environ["GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD"] = old
