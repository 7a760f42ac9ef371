"""``pytest --gatekeeper-model SPEC --gatekeeper-out DIR``: the session's run record and reports.

Every process keeps the results its case items ran. A pytest-xdist worker hands its part
(plain JSON: result rows, the cases they answer, the suites and model identities) to the
controller in ``workeroutput``; the controller, or the only process, merges the parts
into one run record — the ``results.json`` of ``gatekeeper run`` — calls the
``gatekeeper_run_finish`` hook and writes every report format into DIR.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gatekeeper.types import GatekeeperError

if TYPE_CHECKING:
    from gatekeeper.pytest_plugin.state import GatekeeperState

WORKER_KEY = "gatekeeper_run_part"


def local_part(state: GatekeeperState) -> dict[str, Any]:
    """What this process ran, as JSON-able data."""
    from gatekeeper.engine.results import case_index, result_row, suite_entries

    collected = {s.name: s for s in state.suites.values()}
    results = [r for rows in state.results.values() for r in rows if r.case.suite in collected]
    keys = {r.case.key for r in results}
    suites = [dataclasses.replace(s, cases=[c for c in s.cases if c.key in keys]) for s in collected.values()]
    suites = [s for s in suites if s.cases]
    return {
        "rows": [result_row(r) for r in results],
        "case_index": case_index(suites),
        "suites": suite_entries(suites),
        "models": dict(state.identities),
        "stats": [asdict(s) for s in state.stats],
    }


def merged_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    from gatekeeper.engine.runner import RunStats

    total: dict[str, Any] = asdict(RunStats())
    for stats in (s for part in parts for s in part["stats"]):
        for f in fields(RunStats):
            if f.name == "max_concurrency_reached":
                total[f.name] = max(total[f.name], stats[f.name])
            else:
                total[f.name] += stats[f.name]
    total["wall_s"] = round(total["wall_s"], 3)
    return total


def write_record(state: GatekeeperState, parts: list[dict[str, Any]], out: Path) -> list[Path]:
    """Merge the parts into one run record, call ``gatekeeper_run_finish``, write the reports."""
    from gatekeeper.engine.results import new_run_id, run_record
    from gatekeeper.engine.runner import RunStats
    from gatekeeper.engine.score_columns import columns_of, summary

    session = state.session
    rows = [row for part in parts for row in part["rows"]]
    suites: dict[str, dict[str, Any]] = {}
    case_index: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for part in parts:
        case_index.update(part["case_index"])
        models.update(part["models"])
        for entry in part["suites"]:
            suites.setdefault(entry["name"], dict(entry))
    for name, entry in suites.items():
        entry["cases"] = sum(1 for c in case_index.values() if c["suite"] == name)
    run_id = new_run_id()
    record = run_record(run_id=run_id, models=models, suites=[], stats=RunStats(),
                        versions=session.host.versions(),
                        selection={"paths": [str(p) for p in state.suite_paths], "pytest": True})
    record.update(suites=list(suites.values()), stats=merged_stats(parts), summary=summary(columns_of(rows)),
                  case_index=case_index, cases=rows)
    session.host.hook.gatekeeper_run_finish(run_id=run_id, record=record)
    return session.write_reports(record, out)


class RecordPlugin:
    """Registered only with ``--gatekeeper-out`` in case mode (as pytest registers its
    junitxml plugin only with ``--junitxml``): collects the xdist workers' parts and writes
    the session's run record and reports when the session ends."""

    def __init__(self, state: GatekeeperState, out: Path) -> None:
        self.state = state
        self.out = out
        self.worker_parts: list[dict[str, Any]] = []

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        part = getattr(node, "workeroutput", {}).get(WORKER_KEY)
        if part is not None:
            self.worker_parts.append(part)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        state = self.state
        if not state.active:
            return
        part = local_part(state) if state.results else None
        if state.is_worker:
            if part is not None:
                state.config.workeroutput[WORKER_KEY] = part  # type: ignore[attr-defined]
            return
        parts = [p for p in [part, *self.worker_parts] if p is not None]
        if parts:
            try:
                state.written = write_record(state, parts, self.out)
            except GatekeeperError as exc:
                raise pytest.UsageError(f"gatekeeper: {exc}") from None
