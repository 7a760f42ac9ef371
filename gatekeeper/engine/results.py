"""The run record: what ``results.json`` holds and every reporter reads.

A record is plain JSON so that reports can be re-rendered from it alone, long after the
models and suites that made it are gone. Its rows are written to per-case files beside
it (format 2, :mod:`gatekeeper.engine.record`); this module makes the rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gatekeeper.engine.record import DEFAULT_MAX_INLINE_BYTES, RECORD_FORMAT, BlobStore, CaseWriter
from gatekeeper.engine.runner import RunStats
from gatekeeper.engine.suites import Suite
from gatekeeper.types import CaseResult, ModelIdentity

RESULTS_SCHEMA = "gatekeeper.results/1"


def new_run_id() -> str:
    now = dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def suite_entries(suites: Sequence[Suite]) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "path": str(s.path),
            "description": s.description,
            "sha256": s.hash,
            "datasets": s.datasets,
            "cases": len(s.cases),
            "epochs": s.epochs,
            "slices": list(s.slices),
            "scorers": [
                {"metric": sc.metric, "name": sc.name, "kind": sc.kind, "params": sc.params}
                for sc in s.scorers
            ],
        }
        for s in suites
    ]


def case_index(suites: Sequence[Suite]) -> dict[str, dict[str, Any]]:
    """Case key → what was asked, once per case (not once per model)."""
    return {
        case.key: {
            "suite": case.suite,
            "id": case.id,
            "messages": list(case.messages),
            "expected": case.expected,
            "context": case.context,
            "slices": case.slices,
            "tags": list(case.tags),
            "cluster": case.cluster,
            "source": case.source,
        }
        for suite in suites for case in suite.cases
    }


MAX_RECORDED_OUTPUT = 65_536
"""Characters of one output kept in a record; the rest is summarised by length and SHA-256
(one 6 MB output once made an 88 MB decision.json). Scores are computed on the full output."""

MAX_RECORDED_TEXT = 16_384
"""Characters of one score reason or detail string kept in a record."""

SPAN_PREVIEW = 1_024
"""Characters of a detector span's text kept in the row when the whole text is in a blob."""

SPANS_KEPT = 200
"""Spans of one score kept in the row when the whole list (over the inline limit) is a blob."""


def clip_text(text: str, limit: int) -> tuple[str, dict[str, Any] | None]:
    """``text`` cut to ``limit`` characters and, when cut, what was cut: the full length and
    the SHA-256 of the full UTF-8 text, so an auditor can still match the original."""
    if len(text) <= limit:
        return text, None
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return text[:limit], {"chars": len(text), "kept": limit, "sha256": digest}


def _clip_value(value: Any) -> Any:
    if isinstance(value, str):
        clipped, cut = clip_text(value, MAX_RECORDED_TEXT)
        return clipped if cut is None else f"{clipped}… [truncated: {cut['chars']} chars, sha256 {cut['sha256']}]"
    if isinstance(value, dict):
        return {k: _clip_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip_value(v) for v in value]
    return value


def result_row(result: CaseResult, blobs: BlobStore | None = None) -> dict[str, Any]:
    """The record's row for one result. With ``blobs`` (format 2 on disk), an output or span
    text over the inline limit is stored once as a blob and referenced; without, it is cut
    and summarised by length and SHA-256."""
    gen = result.generation
    if blobs is not None and blobs.needed(gen.text):
        ref = blobs.store(gen.text)
        keep = min(MAX_RECORDED_OUTPUT, blobs.max_inline_bytes)
        row = _result_row(result, gen.text[:keep], blobs, in_blob=gen.text)
        row["output_truncated"] = {"chars": ref["chars"], "kept": keep, "sha256": ref["sha256"],
                                   "bytes": ref["bytes"], "path": ref["path"]}
        return row
    output, cut = clip_text(gen.text, MAX_RECORDED_OUTPUT)
    row = _result_row(result, output, blobs)
    if cut is not None:
        row["output_truncated"] = cut
    return row


def _span_entry(span: Any, blobs: BlobStore | None, in_blob: str | None) -> dict[str, Any]:
    entry = asdict(span)
    text = entry.get("text")
    if isinstance(text, str):
        if in_blob is not None and in_blob[entry["start"]:entry["end"]] == text:
            del entry["text"]  # the output's blob holds it: [start, end) of the output
            entry["in_output"] = True
        elif blobs is not None and blobs.needed(text):
            entry["text_blob"] = blobs.store(text)
            entry["text"] = text[:SPAN_PREVIEW]
        elif len(text) > MAX_RECORDED_TEXT:
            entry["text"] = _clip_value(text)
    return entry


def _spans(spans: Sequence[Any], blobs: BlobStore | None, in_blob: str | None) -> dict[str, Any]:
    """A score's ``spans``; with ``blobs``, a list longer than the inline limit is stored once
    as a blob (``spans_blob``) and only its first :data:`SPANS_KEPT` stay in the row."""
    entries = [_span_entry(sp, blobs, in_blob) for sp in spans]
    if blobs is None or len(entries) <= SPANS_KEPT:
        return {"spans": entries}
    names = list(dict.fromkeys(k for e in entries for k in e))
    columns = {name: [e.get(name) for e in entries] for name in names}  # one list per field: compact, gzips well
    text = json.dumps(columns, ensure_ascii=False)
    if not blobs.needed(text):
        return {"spans": entries}
    return {"spans": entries[:SPANS_KEPT], "spans_blob": {**blobs.store(text), "count": len(entries),
                                                           "kept": SPANS_KEPT, "layout": "columns"}}


def _details(details: Any, blobs: BlobStore | None) -> Any:
    """A score's ``details``; with ``blobs``, a list or mapping in it longer than the inline limit
    is stored once as a blob: ``{"blob": ref, "items": n}`` stays in its place."""
    if blobs is None or not isinstance(details, dict):
        return _clip_value(details)
    out = {}
    for key, value in details.items():
        if isinstance(value, (list, dict)) and value:
            text = json.dumps(value, ensure_ascii=False, default=str)
            if blobs.needed(text):
                out[key] = {"blob": blobs.store(text), "items": len(value)}
                continue
        out[key] = _clip_value(value)
    return out


def _result_row(result: CaseResult, output: str, blobs: BlobStore | None = None,
                in_blob: str | None = None) -> dict[str, Any]:
    gen = result.generation
    return {
        "key": result.case.key,
        "model": result.model,
        "epoch": result.epoch,
        "output": output,
        "error": _clip_value(gen.error),
        "cached": gen.cached,
        "latency_ms": gen.latency_ms,
        "usage": gen.usage,
        "cost": gen.cost,
        "scores": {
            s.metric: {
                "value": s.value,
                "passed": s.passed,
                "status": s.status,
                "reason": _clip_value(s.reason),
                **_spans(s.spans, blobs, in_blob),
                "details": _details(s.details, blobs),
            }
            for s in result.scores
        },
    }


def summarize(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """model label → metric → mean value, pass/fail/nodata/error counts."""
    acc: dict[str, dict[str, dict[str, Any]]] = defaultdict(
        lambda: defaultdict(lambda: {"values": [], "passed": 0, "failed": 0, "nodata": 0, "error": 0})
    )
    for row in rows:
        for metric, score in row["scores"].items():
            slot = acc[row["model"]][metric]
            if score["status"] == "error":
                slot["error"] += 1
            elif score["value"] is None:
                slot["nodata"] += 1
            else:
                slot["values"].append(score["value"])
                if score["passed"] is True:
                    slot["passed"] += 1
                elif score["passed"] is False:
                    slot["failed"] += 1
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model, metrics in acc.items():
        out[model] = {}
        for metric, slot in metrics.items():
            values = slot.pop("values")
            slot["n"] = len(values)
            slot["mean"] = round(sum(values) / len(values), 6) if values else None
            out[model][metric] = slot
    return out


def identity_entry(spec: str, identity: ModelIdentity) -> dict[str, Any]:
    return {"spec": spec, "identity": asdict(identity)}


def environment(versions: dict[str, str]) -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "plugins": versions}


def run_record(
    *,
    run_id: str,
    models: dict[str, dict[str, Any]],
    suites: Sequence[Suite],
    results: Iterable[CaseResult],
    stats: RunStats,
    versions: dict[str, str],
    selection: dict[str, Any] | None = None,
    directory: Path | None = None,
    max_inline_bytes: int = DEFAULT_MAX_INLINE_BYTES,
) -> dict[str, Any]:
    """The run record. With ``directory``, each row is written to the per-case files there as
    ``results`` yields it (format 2, :mod:`gatekeeper.engine.record`) and the record holds
    views over them; without, the rows stay an inline list (written out by the JSON reporter)."""
    record: dict[str, Any] = {
        "schema": RESULTS_SCHEMA,
        "record_format": RECORD_FORMAT,
        "kind": "run",
        "run_id": run_id,
        "created": utc_now(),
        "models": models,
        "suites": suite_entries(suites),
        "selection": selection or {},
        "stats": asdict(stats),
    }
    if directory is None:
        rows = [result_row(r) for r in results]
        record.update(summary=summarize(rows), case_index=case_index(suites), cases=rows)
    else:
        writer = CaseWriter(directory, max_inline_bytes)
        try:
            for result in results:
                writer.add_row(result_row(result, writer.blobs))
            writer.write_index(case_index(suites))
        except BaseException:
            writer.abort()
            raise
        writer.attach(record)
        record["summary"] = summarize(writer.scores)
    record["environment"] = environment(versions)
    return record
