"""Running a run's cases on an engine plugin (``gatekeeper run/check --engine NAME``).

The core keeps what makes a run a gatekeeper run; the engine only distributes. The driver
hands the engine a :class:`CaseWork` (picklable) and the case keys; the engine calls
``work(keys, share)`` once per partition on its workers, where the work builds the plugin
host and a session from the project's configuration and runs the partition's cases
through gatekeeper's own runner (cache, retries, Retry-After, AIMD). ``share`` is the
partition's part of the one global rate budget: the runner's concurrency and every
``rpm``/``tpm`` setting (provider settings and model spec) are multiplied by it, so N
partitions running at once send what one process would. The results come back pickled;
the driver checks that every (model, case, epoch) came back exactly once, restores the
run's order, fires ``gatekeeper_case_result`` and merges the counters, so the run record,
the gate, the reports and the audit trail are those of a local run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gatekeeper.engine.runner import RunStats
from gatekeeper.engine.suites import Suite
from gatekeeper.types import CaseResult, GatekeeperError, ModelSpec, PluginError

STATS_KEY = "\x00stats"
ERROR_KEY = "\x00error"
RATE_KEYS = ("rpm", "tpm")


def result_key(label: str, case_key: str, epoch: int) -> str:
    return f"{label}\x1f{case_key}\x1f{epoch}"


def scale_rates(value: Any, share: float) -> Any:
    """``value`` with every ``rpm``/``tpm`` number (at any depth) multiplied by ``share``."""
    if isinstance(value, dict):
        return {k: (v * share if k in RATE_KEYS and isinstance(v, int | float) and not isinstance(v, bool)
                    else scale_rates(v, share)) for k, v in value.items()}
    if isinstance(value, list):
        return [scale_rates(v, share) for v in value]
    return value


def scale_spec(spec: str, share: float) -> str:
    parsed = ModelSpec.parse(spec)
    if not any(k in parsed.params for k in RATE_KEYS):
        return spec
    params = {k: (f"{float(v) * share:g}" if k in RATE_KEYS else v) for k, v in parsed.params.items()}
    return str(dataclasses.replace(parsed, params=params))


@dataclass
class CaseWork:
    """What one partition runs (see the module docstring). Picklable."""

    config: dict[str, Any]
    blocked: list[str]
    plugins: list[str]
    specs: dict[str, str]
    suites: list[Suite]
    run_id: str
    extra: dict[str, Any]

    def __call__(self, keys: Sequence[str], share: float) -> list[dict[str, Any]]:
        from gatekeeper.types import GatekeeperError

        try:
            return self._run(keys, share)
        except GatekeeperError as exc:
            # A usage or plugin error is the same on every attempt: hand it to the driver
            # (which raises it with its exit code) rather than fail the task into retries.
            return [{"key": ERROR_KEY, "payload": pickle.dumps((type(exc).__name__, exc.exit_code, str(exc)))}]

    def _run(self, keys: Sequence[str], share: float) -> list[dict[str, Any]]:
        from gatekeeper.host.plugins import PluginHost
        from gatekeeper.types import Config

        config = Config.model_validate(self.config)
        runner = config.runner.model_copy(update={
            "concurrency": max(1, math.floor(config.runner.concurrency * share)),
            "max_concurrency": max(1, math.floor(config.runner.max_concurrency * share)),
        })
        config = config.model_copy(update={"runner": runner, "providers": scale_rates(config.providers, share)})
        host = PluginHost(config, blocked=self.blocked, extra=self.plugins)
        wanted = set(keys)
        suites = [dataclasses.replace(s, cases=[c for c in s.cases if c.key in wanted]) for s in self.suites]
        suites = [s for s in suites if s.cases]
        models = Models(config, host.registries)
        try:
            loaded = {label: models.load(scale_spec(spec, share)) for label, spec in self.specs.items()}
            results, stats = run_quietly(config, host.registries, models, loaded, suites, self.extra)
        finally:
            models.close()
        rows = [{"key": result_key(r.model, r.case.key, r.epoch), "payload": pickle.dumps(r, protocol=5)}
                for r in results]
        rows.append({"key": f"{STATS_KEY}:{','.join(sorted(wanted))[:64]}", "payload": pickle.dumps(stats)})
        return rows


class Models:
    """A partition's models, loaded once per spec (judges ask for theirs by spec too)."""

    def __init__(self, config: Any, registries: Any) -> None:
        self.config = config
        self.registries = registries
        self.loaded: dict[str, Any] = {}

    def load(self, spec: str | dict[str, Any] | ModelSpec) -> Any:
        from gatekeeper.engine.loading import load_model

        parsed = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec)
        if str(parsed) not in self.loaded:
            self.loaded[str(parsed)] = load_model(parsed, self.registries, self.config)
        return self.loaded[str(parsed)]

    def close(self) -> None:
        async def close_all() -> None:
            for model in self.loaded.values():
                await model.aclose()

        asyncio.run(close_all())


def run_quietly(config: Any, registries: Any, models: Models, loaded: dict[str, Any], suites: Sequence[Suite],
                extra: dict[str, Any]) -> tuple[list[CaseResult], RunStats]:
    """The runner on a worker, without the run hooks: the driver fires ``gatekeeper_run_start``
    and ``gatekeeper_case_result`` once for the whole run, so a plugin that records results
    (a tracker, a database) sees each case once, not once more per executor."""
    from gatekeeper.engine.cache import Cache
    from gatekeeper.engine.runner import ModelRun, Runner
    from gatekeeper.kinds import EvalContext

    cache = Cache(config.path(config.cache))
    try:
        scorers = {s.name: s.build_scorers(registries["evaluators"], registries["detectors"]) for s in suites}
        runner = Runner(config=config.runner, cache=cache, scorers=scorers,
                        eval_context=EvalContext(config=config, cache=cache, load_model=models.load, extra=extra),
                        progress=False)
        results = runner.run([ModelRun(label, m) for label, m in loaded.items()], suites)
    finally:
        cache.close()
    return results, runner.stats


def merge_stats(parts: Sequence[RunStats]) -> RunStats:
    merged = RunStats()
    for part in parts:
        for f in dataclasses.fields(RunStats):
            if f.name in ("wall_s", "max_concurrency_reached"):
                continue
            setattr(merged, f.name, getattr(merged, f.name) + getattr(part, f.name))
        merged.max_concurrency_reached += part.max_concurrency_reached  # partitions ran side by side
    merged.cost = round(merged.cost, 8)
    return merged


class WorkerError(GatekeeperError):
    """An error a worker raised (a usage error, a plugin failure), re-raised on the driver
    with the worker's message and exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def raise_worker_error(kind: str, exit_code: int, message: str) -> None:
    raise WorkerError(message, exit_code)


def run_on_engine(
    session: Any, engine: Any, models: dict[str, Any], suites: Sequence[Suite], *, run_id: str,
    specs: dict[str, str], extra: dict[str, Any] | None,
) -> tuple[list[CaseResult], RunStats]:
    """Run ``models`` × ``suites`` on ``engine`` (module docstring); results in local order."""
    hook = session.host.hook
    plugin = session.registries["engines"].entry(engine.name).plugin
    cases = [c for s in suites for c in s.cases]
    work = CaseWork(
        config=session.config.model_dump(mode="json"), blocked=list(session.host.blocked),
        plugins=list(session.host.extra), specs=dict(specs), suites=list(suites), run_id=run_id,
        extra=dict(extra or {}),
    )
    hook.gatekeeper_run_start(run_id=run_id, models=specs, cases=cases)
    started = time.perf_counter()
    rows = engine.map_cases(work, [c.key for c in cases])
    found: dict[str, CaseResult] = {}
    parts: list[RunStats] = []
    for row in rows:
        if row["key"] == ERROR_KEY:
            raise_worker_error(*pickle.loads(row["payload"]))
        if row["key"].startswith(STATS_KEY):
            parts.append(pickle.loads(row["payload"]))
        elif row["key"] in found:
            raise PluginError(plugin, f"engine {engine.name!r} returned case {row['key'].split(chr(31))[1]!r} twice")
        else:
            found[row["key"]] = pickle.loads(row["payload"])
    by_key = {c.key: c for c in cases}
    expected = [(label, s, c) for label in models for s in suites for c in s.cases]
    ordered: list[CaseResult] = []
    for label, suite, case in expected:
        for epoch in range(suite.epochs):
            result = found.pop(result_key(label, case.key, epoch), None)
            if result is None:
                raise PluginError(plugin, f"engine {engine.name!r} lost case {case.key!r} of {label!r} (epoch {epoch})")
            ordered.append(dataclasses.replace(result, case=by_key[case.key]))
    if found:
        raise PluginError(plugin, f"engine {engine.name!r} returned {len(found)} results nobody asked for")
    for result in ordered:
        hook.gatekeeper_case_result(result=result)
    stats = merge_stats(parts)
    stats.wall_s = round(time.perf_counter() - started, 3)
    return ordered, stats
