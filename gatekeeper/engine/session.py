"""One invocation of gatekeeper: configuration, plugins, and the operations commands share.

Commands receive a :class:`Session`; it collects suites, loads models and runs them, so
``run``, ``check`` and the pytest plugin all take the same path.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gatekeeper.engine.cache import Cache
from gatekeeper.engine.runner import ModelRun, Runner, RunStats
from gatekeeper.engine.suites import Suite, discover, select
from gatekeeper.host.plugins import PluginHost
from gatekeeper.kinds import EvalContext, Evaluator, Model, Registries, Reporter
from gatekeeper.types import CaseResult, Config, ModelSpec, PluginError, UsageError


class Session:
    def __init__(self, config: Config, host: PluginHost, *, out: Any = None) -> None:
        self.config = config
        self.host = host
        self.out = out or sys.stdout
        self._models: dict[str, Model] = {}

    @property
    def registries(self) -> Registries:
        return self.host.registries

    def echo(self, text: str = "") -> None:
        print(text, file=self.out)

    # ----------------------------------------------------------------- suites

    def collect(
        self, paths: Sequence[str] | None = None, *, keyword: str | None = None, marker: str | None = None
    ) -> list[Suite]:
        """Discover and load suites, apply ``-k``/``-m`` and the collection hook."""
        if not paths:
            paths = [str(self.config.path(p)) for p in self.config.suites]
        files = discover(paths, self.config)
        suites: list[Suite] = []
        names: dict[str, Path] = {}
        for path in files:
            suite = self.load_suite(path)
            if suite is None:
                continue
            if suite.name in names:
                raise UsageError(
                    f"suite name {suite.name!r} is also used by {names[suite.name]}",
                    file=str(path), field="suite",
                )
            names[suite.name] = path
            suites.append(suite)
        if not suites:
            raise UsageError(f"no suites found in {', '.join(map(str, paths))}")
        cases = select([c for s in suites for c in s.cases], keyword, marker)
        self.host.hook.gatekeeper_collection_modifyitems(cases=cases, config=self.config)
        by_suite: dict[str, list[Any]] = {s.name: [] for s in suites}
        for case in cases:
            by_suite.setdefault(case.suite, []).append(case)
        for suite in suites:
            suite.cases = by_suite[suite.name]
        return [s for s in suites if s.cases]

    def load_suite(self, path: Path) -> Suite | None:
        """Load one file through the ``gatekeeper_load_suite`` hook and validate its scorers;
        ``None`` when no plugin reads it as a suite."""
        suite: Suite | None = self.host.hook.gatekeeper_load_suite(path=path, config=self.config)
        if suite is not None:
            suite.build_scorers(self.registries.evaluators, self.registries.detectors)
        return suite

    # ----------------------------------------------------------------- models

    def load_model(self, spec: str | dict[str, Any] | ModelSpec) -> Model:
        parsed = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec)
        key = str(parsed)
        if key not in self._models:
            provider_cls = self.registries.models.get(parsed.provider, field="model")
            plugin = self.registries.models.entry(parsed.provider).plugin
            try:
                self._models[key] = provider_cls().load(parsed, self.config)
            except (UsageError, PluginError):
                raise
            except Exception as exc:
                raise PluginError(
                    plugin, f"provider {parsed.provider!r} failed to load {key!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
        return self._models[key]

    # ----------------------------------------------------------------- running

    def scorers(self, suites: Sequence[Suite]) -> dict[str, list[Evaluator]]:
        return {
            s.name: s.build_scorers(self.registries.evaluators, self.registries.detectors)
            for s in suites
        }

    def run(
        self,
        models: dict[str, Model],
        suites: Sequence[Suite],
        *,
        run_id: str,
        specs: dict[str, str],
        progress: bool = True,
        extra: dict[str, Any] | None = None,
        close_models: bool = True,
    ) -> tuple[list[CaseResult], RunStats]:
        """Run ``models`` on the cases of ``suites``; ``close_models=False`` keeps them loaded
        for another run (the pytest plugin runs in batches), until :meth:`close_models`."""
        cache = Cache(self.config.path(self.config.cache))
        hook = self.host.hook
        try:
            runner = Runner(
                config=self.config.runner,
                cache=cache,
                scorers=self.scorers(suites),
                eval_context=EvalContext(
                    config=self.config, cache=cache, load_model=self.load_model, extra=extra or {}
                ),
                on_result=lambda r: hook.gatekeeper_case_result(result=r),
                progress=progress,
            )
            hook.gatekeeper_run_start(
                run_id=run_id, models=specs, cases=[c for s in suites for c in s.cases]
            )
            results = runner.run([ModelRun(label, m) for label, m in models.items()], suites)
        finally:
            cache.close()
            if close_models:
                self.close_models()
        return results, runner.stats

    def close_models(self) -> None:
        asyncio.run(self._close_models())

    async def _close_models(self) -> None:
        for model in self._models.values():
            await model.aclose()
        self._models.clear()

    # ----------------------------------------------------------------- reports

    def write_reports(
        self, record: dict[str, Any], out_dir: Path, formats: Sequence[str] | None = None
    ) -> list[Path]:
        """Write every registered report format (or ``formats``) into ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        registry = self.registries.reporters
        names = list(formats) if formats else registry.names()
        written = []
        for name in names:
            reporter: Reporter = registry.get(name, field="--format")()
            try:
                written.append(reporter.write(record, out_dir))
            except (UsageError, PluginError):
                raise
            except Exception as exc:
                plugin = registry.entry(name).plugin
                raise PluginError(plugin, f"reporter {name!r} failed: {type(exc).__name__}: {exc}") from None
        return written


def read_record(path: Path) -> dict[str, Any]:
    """Read a results.json or decision.json (or the run directory holding one)."""
    if path.is_dir():
        for name in ("decision.json", "results.json"):
            if (path / name).is_file():
                path = path / name
                break
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise UsageError("no decision.json or results.json here", file=str(path)) from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"invalid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
