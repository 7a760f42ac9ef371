"""The run record: what ``results.json`` holds and every reporter reads.

A record is plain JSON so that reports can be re-rendered from it alone, long after the
models and suites that made it are gone.
"""

from __future__ import annotations

import datetime as dt
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


def result_row(result: CaseResult) -> dict[str, Any]:
    gen = result.generation
    return {
        "key": result.case.key,
        "model": result.model,
        "epoch": result.epoch,
        "output": gen.text,
        "error": gen.error,
        "cached": gen.cached,
        "latency_ms": gen.latency_ms,
        "usage": gen.usage,
        "cost": gen.cost,
        "scores": {
            s.metric: {
                "value": s.value,
                "passed": s.passed,
                "status": s.status,
                "reason": s.reason,
                "spans": [asdict(sp) for sp in s.spans],
                "details": s.details,
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
