"""The run record: what ``results.json`` holds and every reporter reads.

A record is plain JSON so that reports can be re-rendered from it alone, long after the
models and suites that made it are gone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

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


def result_row(result: CaseResult) -> dict[str, Any]:
    gen = result.generation
    output, cut = clip_text(gen.text, MAX_RECORDED_OUTPUT)
    row = _result_row(result, output)
    if cut is not None:
        row["output_truncated"] = cut
    return row


def _result_row(result: CaseResult, output: str) -> dict[str, Any]:
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
                "spans": [asdict(sp) for sp in s.spans],
                "details": _clip_value(s.details),
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
    results: Sequence[CaseResult],
    stats: RunStats,
    versions: dict[str, str],
    selection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    rows = [result_row(r) for r in results]
    return {
        "schema": RESULTS_SCHEMA,
        "kind": "run",
        "run_id": run_id,
        "created": utc_now(),
        "models": models,
        "suites": suite_entries(suites),
        "selection": selection or {},
        "stats": asdict(stats),
        "summary": summarize(rows),
        "case_index": case_index(suites),
        "cases": rows,
        "environment": environment(versions),
    }
