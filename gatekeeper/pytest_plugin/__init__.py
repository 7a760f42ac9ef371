"""gatekeeper's pytest plugin (entry point ``pytest11``): suites as pytest items.

``pytest suites/ --gatekeeper-model replay:rec.jsonl`` collects every gatekeeper suite file
(a file the ``gatekeeper_load_suite`` hook reads as a suite) and makes one item per case ×
model, named ``CASE_ID[MODEL_SPEC]`` and marked with the case's tags, so ``-k``, ``-m``,
``-x``, ``--lf``, ``-n`` (pytest-xdist) and ``--junitxml`` work as they do for tests. An
item fails when one of its scores fails its threshold or could not be computed.

``pytest suites/ --gatekeeper-check`` runs the gate instead (the same code path as
``gatekeeper check``) and makes one item per policy metric and slice, plus a ``decision``
item that fails exactly when ``gatekeeper check`` would REJECT (or stop on ERROR).

Fixtures: ``gatekeeper_eval`` (run a model on a case from a test function, see
:class:`gatekeeper.pytest_plugin.state.Evaluate`) and ``gatekeeper_project`` (a throwaway project
with an in-process CLI, see :mod:`gatekeeper.testing`). ``docs/pytest.md`` has the details.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.pytest_plugin.check import CheckPlugin
from gatekeeper.pytest_plugin.evaluation import Evaluate
from gatekeeper.pytest_plugin.record import RecordPlugin
from gatekeeper.pytest_plugin.state import STATE, CaseFailed, GatekeeperState, describe_results, item_nodeid
from gatekeeper.testing import Project
from gatekeeper.types import Case, GatekeeperError


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gatekeeper", "gatekeeper: suites as tests (docs/pytest.md)")
    group.addoption("--gatekeeper-model", action="append", default=[], metavar="SPEC",
                    help="model to evaluate on every suite case (repeatable: one item per case × model; "
                    "default: config 'model'); with --gatekeeper-check, the candidate")
    group.addoption("--gatekeeper-check", action="store_true",
                    help="run the gate (as `gatekeeper check`): one item per policy metric and slice, "
                    "and a 'decision' item that fails on REJECT")
    group.addoption("--gatekeeper-baseline", metavar="SPEC", help="baseline for --gatekeeper-check "
                    "(default: config 'baseline')")
    group.addoption("--gatekeeper-policy", metavar="PATH", help="PCCP policy for --gatekeeper-check "
                    "(default: config 'policy')")
    group.addoption("--gatekeeper-out", metavar="DIR", help="write the session's run record and reports "
                    "there; with --gatekeeper-check, the decision record and reports (default: config 'out')")
    group.addoption("--gatekeeper-provenance", metavar="PATH",
                    help="the candidate's provenance.json for --gatekeeper-check")
    group.addoption("--gatekeeper-fail-on", default="REJECT", metavar="DECISIONS",
                    help="comma-separated decisions that fail the 'decision' item besides ERROR "
                    "(default: REJECT; e.g. REJECT,INCONCLUSIVE,HOLD)")
    group.addoption("--gatekeeper-config", metavar="PATH", help="gatekeeper.yaml or pyproject.toml to use")
    group.addoption("--gatekeeper-plugin", action="append", default=[], metavar="NAME",
                    help="like `gatekeeper -p NAME`: load a gatekeeper plugin module; no:NAME blocks one")
    group.addoption("--gatekeeper-trace-plugins", action="store_true",
                    help="print every gatekeeper hook call (or GATEKEEPER_TRACE_PLUGINS=1)")


def pytest_configure(config: pytest.Config) -> None:
    state = GatekeeperState(config)
    config.stash[STATE] = state
    config.pluginmanager.register(state, "gatekeeper-state")
    if state.active:
        state.validate()
    # Optional features are plugins registered only when asked for (pytest's junitxml way).
    if state.check_mode:
        config.pluginmanager.register(CheckPlugin(state), "gatekeeper-check")
    elif config.getoption("--gatekeeper-out"):
        config.pluginmanager.register(RecordPlugin(state, Path(config.getoption("--gatekeeper-out"))),
                                      "gatekeeper-record")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(state), "gatekeeper-xdist")


class XdistHooks:
    """Hands the controller's run id to every worker, so one check serves them all."""

    def __init__(self, state: GatekeeperState) -> None:
        self.state = state

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["gatekeeper_run"] = self.state.run_uid


# --------------------------------------------------------------------------- collection


@pytest.hookimpl(trylast=True)
def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    state: GatekeeperState = parent.config.stash[STATE]
    if not state.collects(file_path):
        return None
    suite, error = state.try_load_suite(file_path)
    if suite is None and error is None:
        return None
    return SuiteFile.from_parent(parent, path=file_path, error=error)


class SuiteFile(pytest.File):
    """A gatekeeper suite file: its cases × the models, or nothing in check mode."""

    def __init__(self, *, error: GatekeeperError | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def collect(self) -> Iterator[pytest.Item]:
        state: GatekeeperState = self.config.stash[STATE]
        if self.error is not None:
            raise self.CollectError(f"gatekeeper: {self.error}")
        try:
            suite = state.register_suite(self.path)
        except GatekeeperError as exc:
            raise self.CollectError(f"gatekeeper: {exc}") from None
        if state.check_mode:
            return  # the verdict items belong to the policy; see pytest_collection_modifyitems
        for case in suite.cases:
            for tag in case.tags:
                state.register_marker(tag)
            for spec in state.models:
                name = f"{case.id}[{spec}]"
                item = CaseItem.from_parent(self, name=name, nodeid=item_nodeid(self, name), case=case, spec=spec)
                for tag in case.tags:
                    item.add_marker(tag)
                yield item


class CaseItem(pytest.Item):
    """One case of a suite, answered by one model and scored by the suite's scorers."""

    def __init__(self, *, case: Case, spec: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.spec = spec

    def runtest(self) -> None:
        state: GatekeeperState = self.config.stash[STATE]
        results = state.case_results(self)
        thresholds = state.thresholds.get(self.case.suite, {})
        self.user_properties.append(("gatekeeper.model", self.spec))
        for score in results[0].scores:
            self.user_properties.append((f"gatekeeper.{score.metric}", score.value))
        failed = [
            s for r in results for s in r.scores if s.passed is False or s.status == "error"
        ] + [r for r in results if r.generation.error is not None]
        if failed:
            raise CaseFailed(describe_results(self.case, self.spec, results, thresholds))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | Any:
        if isinstance(excinfo.value, CaseFailed | GatekeeperError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        _, _, line = self.case.source.rpartition(":")
        return self.path, int(line) - 1 if line.isdigit() else None, f"{self.case.key} on {self.spec}"


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> Iterator[None]:
    """After the other plugins (``-k``/``-m`` applied; check mode's verdict items added by
    :class:`~gatekeeper.pytest_plugin.check.CheckPlugin` before them): the
    ``gatekeeper_collection_modifyitems`` hook may filter and reorder the cases."""
    state: GatekeeperState = config.stash[STATE]
    yield
    case_items = [i for i in items if isinstance(i, CaseItem)]
    if not case_items:
        return
    cases = list({i.case.key: i.case for i in case_items}.values())
    state.session.host.hook.gatekeeper_collection_modifyitems(cases=cases, config=state.session.config)
    order = {c.key: n for n, c in enumerate(cases)}
    dropped = [i for i in case_items if i.case.key not in order]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    kept = sorted((i for i in case_items if i.case.key in order), key=lambda i: order[i.case.key])
    items[:] = kept + [i for i in items if not isinstance(i, CaseItem)]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def gatekeeper_eval(request: pytest.FixtureRequest, tmp_path: Path) -> Evaluate:
    """Run a model on a suite case (``"suite::id"``) or an inline case and get its scores::

        def test_refund(gatekeeper_eval):
            result = gatekeeper_eval("replay:rec.jsonl", "support-assistant::refund-timing-01")
            assert result.passed("facts")
    """
    state: GatekeeperState = request.config.stash[STATE]
    return Evaluate(state, tmp_path / "gatekeeper_eval")


@pytest.fixture
def gatekeeper_project(tmp_path: Path) -> Project:
    """A throwaway gatekeeper project in ``tmp_path`` with an in-process CLI runner."""
    return Project(tmp_path)
