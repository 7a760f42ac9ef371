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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

from gatekeeper.engine.record import RECORD_FORMAT, BlobStore, CaseWriter, score_columns
from gatekeeper.engine.runner import RunStats
from gatekeeper.engine.score_columns import columns_of, summary
from gatekeeper.engine.suites import Suite
from gatekeeper.types import CaseResult, ModelIdentity, Score, Span

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
    return dict(case_index_entries(suites))


def case_index_entries(suites: Sequence[Suite]) -> Iterator[tuple[str, dict[str, Any]]]:
    """:func:`case_index` one case at a time (the record's writer streams it to its file)."""
    for suite in suites:
        for case in suite.cases:
            yield case.key, {
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


def result_row(result: CaseResult, blobs: BlobStore | None = None, *, careful: bool = False) -> dict[str, Any]:
    """The record's row for one result. With ``blobs`` (format 2 on disk), an output or span
    text over the inline limit is stored once as a blob and referenced; without, it is cut
    and summarised by length and SHA-256. Small scores take a fast path that makes the same
    row (``careful=True`` turns it off: the tests compare both)."""
    gen = result.generation
    if blobs is not None and blobs.needed(gen.text):
        ref = blobs.store(gen.text)
        keep = min(MAX_RECORDED_OUTPUT, blobs.max_inline_bytes)
        row = _result_row(result, gen.text[:keep], blobs, in_blob=gen.text, careful=careful)
        row["output_truncated"] = {"chars": ref["chars"], "kept": keep, "sha256": ref["sha256"],
                                   "bytes": ref["bytes"], "path": ref["path"]}
        return row
    output, cut = clip_text(gen.text, MAX_RECORDED_OUTPUT)
    row = _result_row(result, output, blobs, careful=careful)
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
                in_blob: str | None = None, *, careful: bool = False) -> dict[str, Any]:
    gen = result.generation
    error = gen.error
    if careful or not (error is None or (type(error) is str and len(error) <= MAX_RECORDED_TEXT)):
        error = _clip_value(error)
    score = _score_careful if careful or in_blob is not None else _score_entry
    return {
        "key": result.case.key,
        "model": result.model,
        "epoch": result.epoch,
        "output": output,
        "error": error,
        "cached": gen.cached,
        "latency_ms": gen.latency_ms,
        "usage": gen.usage,
        "cost": gen.cost,
        "scores": {s.metric: score(s, blobs, in_blob) for s in result.scores},
    }


def _score_careful(s: Score, blobs: BlobStore | None, in_blob: str | None) -> dict[str, Any]:
    """A score's entry, every part clipped, stored as a blob or copied as its size needs."""
    return {
        "value": s.value,
        "passed": s.passed,
        "status": s.status,
        "reason": _clip_value(s.reason),
        **_spans(s.spans, blobs, in_blob),
        "details": _details(s.details, blobs),
    }


# --------------------------------------------------------------------------- the fast path
# A million rows are ten million scores: :func:`_score_careful` costs ~10 µs a score in
# recursive copies, ``asdict`` and JSON size checks. Almost every score is small (a short
# reason, a few short spans, details of numbers and short strings), and for those the
# careful path's result is a plain copy; :func:`_score_entry` makes that copy directly after
# checking, by type and length alone, that nothing would be clipped or stored as a blob, and
# hands anything else to the careful path. Equal rows either way (tests/test_large_reports.py).

_ATOMS = frozenset({int, float, bool, type(None)})
_ATOMS_AND_STR = _ATOMS | {str}
_STR = frozenset({str})
_INT_CHARS = 10**19
"""Ints below this in magnitude take at most 21 characters of JSON."""
_UNSURE = object()


def _score_entry(s: Score, blobs: BlobStore | None, in_blob: str | None) -> dict[str, Any]:
    """:func:`_score_careful`'s entry for ``s``, made without its recursion when ``s`` is small."""
    reason = s.reason
    if not (type(reason) is str and len(reason) <= MAX_RECORDED_TEXT):
        return _score_careful(s, blobs, in_blob)
    spans: Any = []
    if s.spans:
        spans = _plain_spans(s.spans, blobs)
        if spans is None:
            return _score_careful(s, blobs, in_blob)
    details = s.details
    if type(details) is dict and _ATOMS.issuperset(map(type, details.values())):
        details = dict(details)  # numbers only (or empty): nothing to clip, nothing to store
    elif details is not None:
        details = _plain_details(details, blobs)
        if details is _UNSURE:
            return _score_careful(s, blobs, in_blob)
    return {"value": s.value, "passed": s.passed, "status": s.status, "reason": reason, "spans": spans,
            "details": details}


def _plain_spans(spans: Sequence[Any], blobs: BlobStore | None) -> list[dict[str, Any]] | None:
    """The span entries when none is clipped or stored and the list stays inline (else None)."""
    if blobs is not None and len(spans) > SPANS_KEPT:
        return None
    # a text of at most limit/4 characters is at most limit UTF-8 bytes: never a blob
    longest = MAX_RECORDED_TEXT if blobs is None else min(MAX_RECORDED_TEXT, blobs.max_inline_bytes // 4)
    out = []
    for sp in spans:
        if type(sp) is not Span:
            return None
        text = sp.text
        if type(text) is not str or len(text) > longest:
            return None
        out.append({"text": text, "start": sp.start, "end": sp.end, "kind": sp.kind, "reason": sp.reason})
    return out


def _plain_details(details: Any, blobs: BlobStore | None) -> Any:
    """A copy of ``details`` when :func:`_details` would only copy it, else :data:`_UNSURE`."""
    if type(details) is not dict:
        return _UNSURE
    limit = None if blobs is None else blobs.max_inline_bytes
    out = {}
    for key, value in details.items():
        kind = type(value)
        if kind is str:
            if len(value) > MAX_RECORDED_TEXT:
                return _UNSURE
        elif kind is list or kind is dict:
            value = _plain_container(value, limit)
            if value is None:
                return _UNSURE
        elif kind not in _ATOMS:
            return _UNSURE
        out[key] = value
    return out


def _plain_container(value: list[Any] | dict[str, Any], limit: int | None) -> Any:
    """A copy of a list or mapping of numbers and short strings whose JSON is surely within
    ``limit`` bytes (no limit: no blob store), else None. The bound is generous: 6 bytes a
    character (an escape), 30 a number or a separator and quotes."""
    if type(value) is dict:
        keys: Any = value.keys()
        items: Any = value.values()
        if not _STR.issuperset(map(type, keys)):
            return None
    else:
        keys, items = (), value
    kinds = set(map(type, items))
    if not _ATOMS_AND_STR.issuperset(kinds):
        return None
    size = 2 + 30 * len(value) + 6 * sum(map(len, keys))
    if str in kinds:
        texts = [item for item in items if type(item) is str]
        if max(map(len, texts)) > MAX_RECORDED_TEXT:
            return None
        size += 6 * sum(map(len, texts))
    if int in kinds and not all(-_INT_CHARS < item < _INT_CHARS for item in items if type(item) is int):
        return None
    if limit is not None and size > limit:
        return None
    return dict(value) if type(value) is dict else list(value)


def identity_entry(spec: str, identity: ModelIdentity) -> dict[str, Any]:
    return {"spec": spec, "identity": asdict(identity)}


def environment(versions: dict[str, str]) -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "plugins": versions}


def row_sink(writer: CaseWriter) -> Callable[[CaseResult], None]:
    """What the runner hands each result to: its record row, written by ``writer``."""

    def add(result: CaseResult) -> None:
        writer.add_row(result_row(result, writer.blobs))

    return add


def run_record(
    *,
    run_id: str,
    models: dict[str, dict[str, Any]],
    suites: Sequence[Suite],
    stats: RunStats,
    versions: dict[str, str],
    selection: dict[str, Any] | None = None,
    results: Iterable[CaseResult] = (),
    writer: CaseWriter | None = None,
) -> dict[str, Any]:
    """The run record. With ``writer`` (format 2, :mod:`gatekeeper.engine.record`), the rows it
    was given as the run went (:func:`row_sink`) are on disk: the case index is written beside
    them and the record holds views over both; without, ``results`` become an inline list of
    rows (written out by the JSON reporter)."""
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
    if writer is None:
        rows = [result_row(r) for r in results]
        record.update(summary=summary(columns_of(rows)), case_index=case_index(suites), cases=rows)
    else:
        try:
            writer.write_index(case_index_entries(suites))
        except BaseException:
            writer.abort()
            raise
        writer.attach(record)
        record["summary"] = summary(score_columns(record))
    record["environment"] = environment(versions)
    return record
