"""The load part of ``gatekeeper check``: which load suites the policy's ``slo`` section asks
for, their safety checks (before any model is called), the runs, and the ``slo`` record.

A load run sends real traffic, so it happens only when the policy has an ``slo`` section; the
suites are ``slo.suites`` (by their ``load:`` name) or, when it names none, every load suite
the check collects. The raw measurements are written beside the reports
(``load-<suite>.jsonl``); the record keeps the summaries (gate/slo_check.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gatekeeper.types import UsageError


def select_load_suites(session: Any, paths: Sequence[str] | None, policy: Any) -> list[Any]:
    """The load suites this check runs (none without an ``slo`` section)."""
    if policy.slo is None:
        return []
    from gatekeeper.engine.load import collect_load_suites

    config = session.config
    roots = list(paths) if paths else [str(config.path(p)) for p in config.suites]
    found = collect_load_suites(roots, config, session.registries)
    wanted = policy.slo.suites
    known = {s.name for s in found}
    for i, name in enumerate(wanted):
        if name not in known:
            raise UsageError(
                f"unknown load suite {name!r} (found: {', '.join(sorted(known)) or 'no load suite'})",
                file=str(policy.path) if policy.path else None, field=f"slo.suites[{i}]",
            )
    chosen = [s for s in found if not wanted or s.name in wanted]
    if not chosen:
        raise UsageError(
            "the policy has an slo section but the check found no load suite (a YAML file with a top-level "
            "'load:' key, docs/load.md)", file=str(policy.path) if policy.path else None, field="slo",
        )
    return chosen


def check_load_safety(suites: Sequence[Any], models: Mapping[str, Any], config: Any, *, confirm_rate: bool) -> None:
    """Refuse (exit 4) before anything is sent: unnamed endpoints, a rate above the ceiling."""
    from gatekeeper.engine.load import check_safety

    for suite in suites:
        check_safety(suite, models, config, confirm_rate=confirm_rate)


def run_load_suites(suites: Sequence[Any], models: Mapping[str, Any], config: Any, policy: Any, staging: Path, *,
                    confirm_rate: bool, echo: Callable[[str], None] | None = None) -> tuple[dict[str, Any], list[Path]]:
    """Run every load suite on both models, write each run's measurements into ``staging``
    and return the record's ``slo`` section with the files written."""
    from gatekeeper.engine.load import run_load

    records, files = [], []
    staging.mkdir(parents=True, exist_ok=True)
    for suite in suites:
        if echo:
            echo(f"load suite {suite.name}: {suite.process}, candidate and baseline interleaved")
        run = run_load(suite, models, config, confirm_rate=confirm_rate, progress=echo)
        path = staging / f"load-{suite.name}.jsonl"
        run.write_jsonl(path)
        files.append(path)
        record = run.to_record()
        record["measurements_file"] = {"path": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        records.append(record)
    from gatekeeper.gate.slo_check import evaluate_slo, from_records  # scipy: only when a load suite ran

    return evaluate_slo(policy.slo, from_records(records)), files
