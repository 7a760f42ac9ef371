"""One invocation of gatekeeper: configuration, plugins, and the operations commands share.

Commands receive a :class:`Session`; it collects suites, loads models and runs them, so
``run``, ``check`` and the pytest plugin all take the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from gatekeeper.engine.cache import Cache
from gatekeeper.engine.loading import load_model
from gatekeeper.engine.runner import ModelRun, Runner, RunStats
from gatekeeper.engine.suites import DatasetCases, Suite, discover, select
from gatekeeper.host import secrets
from gatekeeper.host.code_specs import code_providers, refuse_code_specs
from gatekeeper.host.plugins import PluginHost
from gatekeeper.host.visible import visible
from gatekeeper.kinds import EvalContext, Evaluator, Model, Registries, Reporter
from gatekeeper.types import CaseResult, Config, ModelSpec, PluginError, UsageError


class Session:
    def __init__(self, config: Config, host: PluginHost, *, out: Any = None) -> None:
        self.config = config
        self.host = host
        self.out = out or sys.stdout
        secrets.register_config(config)
        self._models: dict[str, Model] = {}
        self.engine: Any = None

    def use_engine(self, name: str | None) -> None:
        """Run data-sized work on the engine plugin ``name`` (``--engine``); None: in process."""
        if name:
            self.engine = self.registries["engines"].get(name, field="--engine")(self.config)

    @property
    def registries(self) -> Registries:
        return self.host.registries

    def echo(self, text: str = "") -> None:
        """One line for the user; control and bidi characters from outputs are shown, not obeyed."""
        print(visible(secrets.redact(text)), file=self.out)

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
        hook = self.host.hook.gatekeeper_collection_modifyitems
        streamed = [s for s in suites if isinstance(s.cases, DatasetCases)]
        if streamed and not hook.get_hookimpls():
            # A large dataset's cases stay in their file: -k/-m keep the positions they select.
            for suite in streamed:
                assert isinstance(suite.cases, DatasetCases)
                if keyword or marker:
                    suite.cases = suite.cases.take(
                        i for i, case in enumerate(suite.cases) if select([case], keyword, marker))
            in_memory = [s for s in suites if not isinstance(s.cases, DatasetCases)]
        else:
            in_memory = suites  # a collection hook gets every case as a list, as it always has
        cases = select([c for s in in_memory for c in s.cases], keyword, marker)
        if in_memory:
            hook(cases=cases, config=self.config)
        by_suite: dict[str, list[Any]] = {s.name: [] for s in in_memory}
        for case in cases:
            by_suite.setdefault(case.suite, []).append(case)
        for suite in in_memory:
            suite.cases = by_suite[suite.name]
        selected = [s for s in suites if s.cases]
        if not selected:
            # Zero cases checks nothing, and nothing must not pass (exit 0 on an empty run).
            what = " and ".join(f"{flag} {expr!r}" for flag, expr in (("-k", keyword), ("-m", marker)) if expr)
            raise UsageError(f"no case selected{' by ' + what if what else ''} in {len(suites)} suite(s)",
                             field="-k/-m" if what else None)
        return selected

    def load_suite(self, path: Path) -> Suite | None:
        """Load one file through the ``gatekeeper_load_suite`` hook and validate its scorers;
        ``None`` when no plugin reads it as a suite."""
        suite: Suite | None = self.host.hook.gatekeeper_load_suite(path=path, config=self.config)
        if suite is not None:
            self._refuse_code(suite)
            suite.build_scorers(self.registries.evaluators, self.registries.detectors)
        return suite

    def _refuse_code(self, suite: Suite) -> None:
        """A scorer parameter naming a code-loading model (``judge: python:mod:fn``) needs
        ``--allow-code`` / ``allow_code: true``: suites are data (see host.code_specs)."""
        providers = code_providers(self.registries.models)
        for spec in suite.scorers:
            file, _, line = spec.source.rpartition(":")
            refuse_code_specs(
                spec.params, providers=providers, allowed=self.config.allow_code, file=file,
                line_of=lambda _at, line=line: int(line) if line.isdigit() else None,  # type: ignore[misc]
                field=lambda at, spec=spec: ".".join([f"{spec.kind}s", spec.name, *map(str, at)]),  # type: ignore[misc]
            )

    # ----------------------------------------------------------------- models

    def load_model(self, spec: str | dict[str, Any] | ModelSpec) -> Model:
        parsed = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec)
        key = str(parsed)
        if key not in self._models:
            self._models[key] = load_model(parsed, self.registries, self.config)
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
        engine: bool = True,
        sink: Callable[[CaseResult], None] | None = None,
    ) -> tuple[list[CaseResult], RunStats]:
        """Run ``models`` on the cases of ``suites``; ``close_models=False`` keeps them loaded
        for another run (the pytest plugin runs in batches), until :meth:`close_models`.
        With a ``sink``, results go to it in order as they are ready and are not returned
        (the check streams them into the run record; an engine's results go to it at the end).
        With an engine (:meth:`use_engine`) the cases run there, unless ``engine=False``
        (what the engine's own workers, and in-process work such as classify's sample, ask)."""
        if engine and self.engine is not None:
            from gatekeeper.engine.distributed import run_on_engine

            try:
                results, stats = run_on_engine(self, self.engine, models, suites, run_id=run_id, specs=specs,
                                               extra=extra)
                if sink is None:
                    return results, stats
                for result in results:
                    sink(result)
                return [], stats
            finally:
                if close_models:
                    self.close_models()
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
                # The per-result hook only when a plugin implements it: a pluggy call per
                # result is most of a second per 100,000 results.
                on_result=(lambda r: hook.gatekeeper_case_result(result=r))
                if hook.gatekeeper_case_result.get_hookimpls() else None,
                progress=progress,
                sink=sink,
            )
            if hook.gatekeeper_run_start.get_hookimpls():  # a list of every case: only when wanted
                hook.gatekeeper_run_start(run_id=run_id, models=specs, cases=[c for s in suites for c in s.cases])
            with few_collections():
                freeze_loaded()  # the suites and models: not traversed by each full collection of the run
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


@contextlib.contextmanager
def few_collections(young: int = 50_000) -> Iterator[None]:
    """Python's cycle collector tuned for a run over many objects: a young collection every
    ``young`` allocations instead of 700 (a run makes and drops millions of small objects),
    and what is alive so far moved out of the collector's way (:func:`freeze_loaded`).
    At 100,000 cases the default settings spent a third of the check in the collector."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], young), old[1], old[2])
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def freeze_loaded() -> None:
    """Move every object alive now (the loaded suites, models, plugins) to the collector's
    permanent generation: later full collections do not traverse them again."""
    gc.freeze()


def read_record(path: Path) -> dict[str, Any]:
    """Read a results.json or decision.json (or the run directory holding one); a record newer
    than this version reads is refused (exit 4), format 2's cases stream from ``cases.jsonl``."""
    if path.is_dir():
        for name in ("decision.json", "results.json"):
            if (path / name).is_file():
                path = path / name
                break
    if path.is_dir():
        unfinished = " (CHECK_INCOMPLETE: the last check into it did not finish)" if (
            path / "CHECK_INCOMPLETE").is_file() else ""
        raise UsageError(f"no decision.json or results.json here{unfinished}", file=str(path))
    try:
        record = dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise UsageError("no decision.json or results.json here", file=str(path)) from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"invalid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
    from gatekeeper.engine.record import attach

    return attach(record, path.parent, path)  # format check; per-case files streamed (format 2)
