"""What the pytest plugin shares between items: the gatekeeper session and the batched runs.

Models run once per pytest process on every case that process is about to run (its share
under pytest-xdist), in one batch through the runner and its cache, not one call per item.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import secrets
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gatekeeper.types import Case, CaseResult, GatekeeperError, Score, UsageError

if TYPE_CHECKING:
    from gatekeeper.engine.session import Session
    from gatekeeper.engine.suites import Suite

STATE = pytest.StashKey["GatekeeperState"]()
Threshold = tuple[float, bool]  # (threshold, lower_is_better)
_SUITE_KEY = re.compile(r"^suite\s*:", re.M)


def item_nodeid(parent: Any, name: str) -> str:
    """An item's node id, given as a string: pytest parses ``NAME[PARAMS]`` ids back into
    name and params (``--lf``, ``--deselect``), so an item whose name has brackets must be
    built from the same string for the two to match."""
    return f"{parent.nodeid}::{name}"


class CaseFailed(AssertionError):
    """A case item's scores failed; ``str()`` is the table shown to the user."""


# --------------------------------------------------------------------------- messages


def suite_thresholds(session: Session, suite: Suite) -> dict[str, Threshold]:
    """Metric → (threshold, lower is better) for the suite's scorers that have one."""
    return {
        scorer.metric: (scorer.params.threshold, scorer.lower_is_better)
        for scorer in session.scorers([suite])[suite.name] if scorer.params.threshold is not None
    }


def fmt_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def threshold_text(threshold: Threshold | None) -> str:
    if threshold is None:
        return "-"
    value, lower = threshold
    return f"{'<=' if lower else '>='} {value:g}"  # ASCII: pytest escapes other characters in asserts


def score_verdict(score: Score) -> str:
    if score.status == "error":
        return "ERROR"
    if score.value is None:
        return "NODATA"
    return {True: "PASS", False: "FAIL", None: "-"}[score.passed]


def describe_results(
    case: Case, spec: str, results: Sequence[CaseResult], thresholds: dict[str, Threshold]
) -> str:
    """The failure message of a case: every metric with value, threshold, verdict, reason."""
    lines: list[str] = []
    for result in results:
        failed = [s for s in result.scores if s.passed is False or s.status == "error"]
        epoch = f" (epoch {result.epoch})" if len(results) > 1 else ""
        head = f"{case.key} on {spec}{epoch}"
        if result.generation.error is not None:
            lines.append(f"{head}: no output: {result.generation.error}")
            continue
        lines.append(f"{head}: {len(failed)} of {len(result.scores)} metric(s) failed")
        lines.append(f"  {'metric':<22} {'value':>7}  {'threshold':<10} {'verdict':<7} reason")
        for s in result.scores:
            reason = s.reason.replace("\n", " ")
            lines.append(
                f"  {s.metric:<22} {fmt_value(s.value):>7}  {threshold_text(thresholds.get(s.metric)):<10} "
                f"{score_verdict(s):<7} {reason}"
            )
        text = result.generation.text.replace("\n", " ")
        lines.append(f"  output: {text[:300]!r}{'…' if len(text) > 300 else ''}")
    lines.append(f"  case defined at {case.source}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- state


class GatekeeperState:
    """One per pytest process: options, the lazily built gatekeeper session, results."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        option = config.getoption
        self.check_mode: bool = bool(option("--gatekeeper-check"))
        self._models: list[str] = list(option("--gatekeeper-model") or [])
        workerinput = getattr(config, "workerinput", None)
        self.run_uid: str = (workerinput or {}).get("gatekeeper_run") or secrets.token_hex(8)
        self.is_worker = workerinput is not None
        self._session: Session | None = None
        self._project_suites: list[Suite] | None = None
        self.suites: dict[Path, Suite] = {}
        self.suite_paths: list[Path] = []
        self.thresholds: dict[str, dict[str, Threshold]] = {}
        self.results: dict[tuple[str, str], list[CaseResult]] = {}
        self.stats: list[Any] = []
        self.identities: dict[str, dict[str, Any]] = {}
        self.written: list[Path] = []
        self.summary_lines: list[str] = []
        """Lines the optional plugins (check, record) add to the terminal summary."""
        self.check: Any = None  # gatekeeper.pytest_plugin.check.CheckRun, in check mode
        self._markers: set[str] = set()
        self._names: dict[str, Path] = {}
        self.active = self._decide_active()

    # ----------------------------------------------------------------- set-up

    def _explicit(self) -> bool:
        option = self.config.getoption
        return bool(self._models or self.check_mode or option("--gatekeeper-config"))

    def _decide_active(self) -> bool:
        """Suites are collected when asked for on the command line, or when the project's
        gatekeeper configuration names a model to evaluate."""
        if self._explicit():
            return True
        from gatekeeper.host.config import find_config_file

        if find_config_file(Path.cwd()) is None:
            return False
        try:
            return bool(self.session.config.model)
        except pytest.UsageError as exc:  # not asked for: a broken config must not stop unrelated tests
            self.config.issue_config_time_warning(
                pytest.PytestConfigWarning(f"{exc}; gatekeeper suites are not collected"), stacklevel=2)
            return False

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = self._build_session()
        return self._session

    def _build_session(self) -> Session:
        from gatekeeper.engine.session import Session
        from gatekeeper.host.config import load_config
        from gatekeeper.host.plugins import PluginHost

        option = self.config.getoption
        explicit = option("--gatekeeper-config")
        names = list(option("--gatekeeper-plugin") or [])
        try:
            config = load_config(Path(explicit) if explicit else None)
            host = PluginHost(
                config, blocked=[n[3:] for n in names if n.startswith("no:")],
                extra=[n for n in names if not n.startswith("no:")],
                trace=True if option("--gatekeeper-trace-plugins") else None,
            )
        except GatekeeperError as exc:
            raise pytest.UsageError(f"gatekeeper: {exc}") from None
        return Session(config, host)

    @property
    def models(self) -> list[str]:
        """Model specs for case items: --gatekeeper-model, else the config's ``model``."""
        if not self._models:
            configured = self.session.config.model
            if configured is None:
                raise pytest.UsageError("gatekeeper: --gatekeeper-model: no model: give --gatekeeper-model SPEC "
                                        "or set 'model' in gatekeeper.yaml")
            from gatekeeper.types import ModelSpec

            self._models = [str(ModelSpec.parse(configured))]
        return self._models

    def validate(self) -> None:
        """Fail the session at start-up, as a usage error, on a model spec no provider
        handles (or no model at all), instead of failing every item later."""
        from gatekeeper.types import ModelSpec

        option = self.config.getoption
        config = self.session.config
        specs = (
            [*self._models, *filter(None, [option("--gatekeeper-baseline")])] if self.check_mode
            else self.models
        )
        try:
            for spec in specs:
                self.session.registries.models.get(ModelSpec.parse(spec).provider, field="--gatekeeper-model")
        except GatekeeperError as exc:
            raise pytest.UsageError(f"gatekeeper: {exc}") from None
        decisions = {"PROMOTE", "REJECT", "HOLD", "INCONCLUSIVE", "ERROR"}
        fail_on = {d.strip().upper() for d in str(option("--gatekeeper-fail-on") or "").split(",") if d.strip()}
        if fail_on - decisions:
            raise pytest.UsageError(f"gatekeeper: --gatekeeper-fail-on: unknown decision "
                                    f"{sorted(fail_on - decisions)[0]!r} (known: {', '.join(sorted(decisions))})")
        if self.check_mode and not (self._models or config.candidate):
            raise pytest.UsageError("gatekeeper: --gatekeeper-model: give the candidate (or set 'candidate' "
                                    "in gatekeeper.yaml)")

    def policy_path(self) -> Path:
        given = self.config.getoption("--gatekeeper-policy")
        config = self.session.config
        if given:
            return Path(given).resolve()
        if config.policy:
            return config.path(config.policy)
        raise UsageError("missing --gatekeeper-policy (or set 'policy' in gatekeeper.yaml)",
                         field="--gatekeeper-policy")

    def register_marker(self, tag: str) -> None:
        if tag not in self._markers:
            self._markers.add(tag)
            self.config.addinivalue_line("markers", f"{tag}: gatekeeper case tag")

    # ----------------------------------------------------------------- suites

    def collects(self, path: Path) -> bool:
        if not self.active:
            return False
        patterns = self.session.config.suite_patterns
        return any(fnmatch.fnmatch(path.name, p) for p in patterns)

    def try_load_suite(self, path: Path) -> tuple[Suite | None, GatekeeperError | None]:
        """The suite in ``path``; a file that is not a suite is ``(None, None)``. An error in
        a file that declares ``suite:`` is returned, to be shown as a collection error."""
        if path in self.suites:
            return self.suites[path], None
        try:
            suite = self.session.load_suite(path)
        except GatekeeperError as exc:
            try:
                declares = bool(_SUITE_KEY.search(path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError):
                declares = False
            return None, exc if declares else None
        if suite is not None:
            self.suites[path] = suite
        return suite, None

    def register_suite(self, path: Path) -> Suite:
        suite = self.suites[path]
        if suite.name in self._names and self._names[suite.name] != path:
            raise UsageError(f"suite name {suite.name!r} is also used by {self._names[suite.name]}",
                             file=str(path), field="suite")
        self._names[suite.name] = path
        if path not in self.suite_paths:
            self.suite_paths.append(path)
        self.thresholds[suite.name] = suite_thresholds(self.session, suite)
        return suite

    def suite_of(self, case: Case) -> Suite:
        for suite in self.suites.values():
            if suite.name == case.suite:
                return suite
        raise KeyError(case.suite)

    # ----------------------------------------------------------------- case runs

    def case_results(self, item: Any) -> list[CaseResult]:
        """The results of ``item``'s case on its model, running this process's pending
        share of cases in one batch when they are not there yet."""
        key = (item.case.key, item.spec)
        if key not in self.results:
            batch = [i for i in pending_items(item) if hasattr(i, "case") and (i.case.key, i.spec) not in self.results]
            by_spec: dict[str, list[Case]] = defaultdict(list)
            for i in [item, *batch]:
                if i.case not in by_spec[i.spec]:
                    by_spec[i.spec].append(i.case)
            for spec, cases in by_spec.items():
                self.run_cases(spec, cases)
        return self.results[key]

    def run_cases(self, spec: str, cases: Sequence[Case]) -> list[CaseResult]:
        suites = []
        for suite in {id(s): s for s in map(self.suite_of, cases)}.values():
            wanted = {c.key for c in cases}
            suites.append(dataclasses.replace(suite, cases=[c for c in suite.cases if c.key in wanted]))
        return self.run_suites(spec, suites)

    def run_suites(self, spec: str, suites: Sequence[Suite]) -> list[CaseResult]:
        from gatekeeper.engine.results import new_run_id

        session = self.session
        model = session.load_model(spec)
        results, stats = session.run(
            {spec: model}, suites, run_id=new_run_id(), specs={spec: spec}, progress=False, close_models=False,
        )
        self.stats.append(stats)
        from gatekeeper.engine.results import identity_entry

        self.identities[spec] = identity_entry(spec, model.identity)
        grouped: dict[tuple[str, str], list[CaseResult]] = defaultdict(list)
        for result in results:
            grouped[(result.case.key, spec)].append(result)
        for key, rows in grouped.items():
            self.results[key] = sorted(rows, key=lambda r: r.epoch)
        return results

    def project_suites(self) -> list[Suite]:
        """The project's configured suites (``suites`` in gatekeeper.yaml), for case lookup."""
        if self._project_suites is None:
            self._project_suites = self.session.collect()
        return self._project_suites

    # ----------------------------------------------------------------- pytest hooks

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = list(self.summary_lines)
        if self.stats:
            calls = sum(s.model_calls for s in self.stats)
            hits = sum(s.cache_hits for s in self.stats)
            lines.append(f"model calls: {calls} (cache hits: {hits}) in {len(self.stats)} batch(es)")
        if self.written:
            lines.append("wrote " + ", ".join(str(p) for p in self.written))
        if lines:
            terminalreporter.write_sep("-", "gatekeeper")
            for line in lines:
                terminalreporter.write_line(line)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._session is not None:
            self._session.close_models()


def pending_items(item: Any) -> list[Any]:
    """The items this process will still run, ``item`` first: under xdist the worker's
    queue, else the rest of the session's items."""
    items = item.session.items
    queue = _xdist_queue(item.config)
    if queue is not None:
        try:
            with queue.lock() as pending:
                indices = [i for i in pending if isinstance(i, int)]
            return [item, *(items[i] for i in indices)]
        except (AttributeError, IndexError, TypeError):
            pass  # an xdist whose queue looks different: fall back to the session's order
    try:
        start = items.index(item)
    except ValueError:
        return [item]
    return items[start:]


def _xdist_queue(config: pytest.Config) -> Any:
    if not hasattr(config, "workerinput"):
        return None
    for plugin in config.pluginmanager.get_plugins():
        if type(plugin).__name__ == "WorkerInteractor":
            return getattr(plugin, "torun", None)
    return None
