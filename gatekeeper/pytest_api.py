"""What the pytest plugin shares between items: the gatekeeper session, the batched runs,
and the Python API of the ``gatekeeper_eval`` fixture.

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
    from gatekeeper.session import Session
    from gatekeeper.suites import Suite

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


def _fmt(value: float | None) -> str:
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
                f"  {s.metric:<22} {_fmt(s.value):>7}  {threshold_text(thresholds.get(s.metric)):<10} "
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
        self.worker_parts: list[dict[str, Any]] = []
        self.written: list[Path] = []
        self.check: Any = None  # gatekeeper.pytest_check.CheckRun, in check mode
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
        from gatekeeper.config import find_config_file

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
        from gatekeeper.config import load_config
        from gatekeeper.plugins import PluginHost
        from gatekeeper.session import Session

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
                self.session.registries["models"].get(ModelSpec.parse(spec).provider, field="--gatekeeper-model")
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
        from gatekeeper.results import new_run_id

        session = self.session
        model = session.load_model(spec)
        results, stats = session.run(
            {spec: model}, suites, run_id=new_run_id(), specs={spec: spec}, progress=False, close_models=False,
        )
        self.stats.append(stats)
        from gatekeeper.results import identity_entry

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

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Case mode with --gatekeeper-out: the session's run record and reports."""
        out = self.config.getoption("--gatekeeper-out")
        if self.check_mode or not out or not self.active:
            return
        from gatekeeper.pytest_record import WORKER_KEY, local_part, write_record

        part = local_part(self) if self.results else None
        if self.is_worker:
            if part is not None:
                self.config.workeroutput[WORKER_KEY] = part  # type: ignore[attr-defined]
            return
        parts = [p for p in [part, *self.worker_parts] if p is not None]
        if parts:
            try:
                self.written = write_record(self, parts, Path(out))
            except GatekeeperError as exc:
                raise pytest.UsageError(f"gatekeeper: {exc}") from None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from gatekeeper.pytest_check import summarize_decision

        lines = summarize_decision(terminalreporter.stats)
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
        if self.check_mode and not self.is_worker:
            # The controller (or the only process) removes what the workers shared.
            from gatekeeper.pytest_check import shared_record_path

            try:
                shared = shared_record_path(self)
            except pytest.UsageError:
                return
            for path in (shared, Path(f"{shared}.lock")):
                path.unlink(missing_ok=True)


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


# --------------------------------------------------------------------------- Python API


@dataclasses.dataclass
class Verdict:
    """What :meth:`EvalResult.passed` returns: true when the metric passed; its ``repr``
    (what pytest shows for a failing ``assert``) gives value, threshold and reason."""

    metric: str
    ok: bool
    text: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return self.text


@dataclasses.dataclass
class EvalResult:
    """A model's answer to one case and its scores (one :class:`CaseResult` per epoch)."""

    case: Case
    model: str
    results: list[CaseResult]
    thresholds: dict[str, Threshold]

    @property
    def output(self) -> str:
        return self.results[0].generation.text

    @property
    def error(self) -> str | None:
        return self.results[0].generation.error

    @property
    def scores(self) -> dict[str, Score]:
        return {s.metric: s for s in self.results[0].scores}

    def __getitem__(self, metric: str) -> Score:
        try:
            return self.scores[metric]
        except KeyError:
            raise KeyError(f"no metric {metric!r} (scored: {', '.join(self.scores) or 'none'})") from None

    def value(self, metric: str) -> float | None:
        """The metric's value, averaged over epochs (``None`` when no epoch has one)."""
        values = [s.value for r in self.results for s in r.scores if s.metric == metric and s.value is not None]
        return sum(values) / len(values) if values else None

    def passed(self, metric: str | None = None, *, threshold: float | None = None) -> Verdict:
        """Did ``metric`` (every metric, when ``None``) pass? ``threshold`` overrides the
        suite's; a metric without a threshold needs one here."""
        if metric is None:
            decidable = [m for m, s in self.scores.items() if m in self.thresholds or s.passed is not None]
            verdicts = [self.passed(m) for m in decidable]
            failed = [v for v in verdicts if not v]
            text = "; ".join(v.text for v in failed) if failed else f"all metrics passed: {self}"
            return Verdict("*", not failed and self.error is None, text)
        score = self[metric]
        where = f"{self.case.key} on {self.model}"
        if self.error is not None:
            return Verdict(metric, False, f"{metric} ERROR on {where}: no output: {self.error}")
        if score.status == "error" or score.value is None:
            return Verdict(metric, False, f"{metric} {score_verdict(score)} on {where}: {score.reason}")
        limit: Threshold | None = (
            (threshold, self._lower(metric)) if threshold is not None else self.thresholds.get(metric)
        )
        if limit is None:
            if score.passed is None:
                return Verdict(metric, False, f"{metric} has no threshold on {where} (value {score.value:.3f}): "
                               f"give one, e.g. passed({metric!r}, threshold=0.5)")
            ok = all(s.passed for r in self.results for s in r.scores if s.metric == metric)
        else:
            values = [s.value for r in self.results for s in r.scores if s.metric == metric and s.value is not None]
            ok = all(v <= limit[0] if limit[1] else v >= limit[0] for v in values)
        value = self.value(metric)
        text = (f"{metric} {'PASSED' if ok else 'FAILED'} on {where}: value {_fmt(value)}, threshold "
                f"{threshold_text(limit)}; reason: {score.reason or '-'}; output: {self.output[:200]!r}")
        return Verdict(metric, ok, text)

    def _lower(self, metric: str) -> bool:
        known = self.thresholds.get(metric)
        return known[1] if known else False

    def __repr__(self) -> str:
        return "\n" + describe_results(self.case, self.model, self.results, self.thresholds)


class Evaluate:
    """The ``gatekeeper_eval`` fixture: ``gatekeeper_eval(MODEL_SPEC, CASE, ...)``.

    ``CASE`` is a suite case (``"suite::id"``, or a bare id when it is unique among the
    project's suites), an inline case (a mapping with ``id``, ``input`` and any field a
    suite row has), or a list of those (one batched run; a list of results comes back).
    Inline cases are scored by ``evaluators``/``detectors`` (as a suite lists them) and
    prompted by ``prompt`` (chat messages, or one user template; default ``{{ input }}``).
    """

    def __init__(self, state: GatekeeperState, workdir: Path) -> None:
        self.state = state
        self.workdir = workdir
        self._inline = 0

    def __call__(
        self, model: str, case: str | dict[str, Any] | Sequence[str | dict[str, Any]], *,
        evaluators: Sequence[str | dict[str, Any]] = (), detectors: Sequence[str | dict[str, Any]] = (),
        prompt: str | Sequence[dict[str, str]] | None = None,
    ) -> Any:
        single = isinstance(case, str | dict)
        wanted = [case] if single else list(case)
        suites: list[Suite] = []
        picked: list[Case] = []
        for one in wanted:
            suite, chosen = (
                self._inline_case(one, evaluators, detectors, prompt) if isinstance(one, dict)
                else self._suite_case(str(one))
            )
            suites.append(dataclasses.replace(suite, cases=[chosen]))
            picked.append(chosen)
        merged = _merge_suites(suites)
        try:
            results = self.state.run_suites(model, merged)
        except GatekeeperError as exc:
            raise pytest.UsageError(f"gatekeeper: {exc}") from None
        by_key: dict[str, list[CaseResult]] = defaultdict(list)
        for r in results:
            by_key[r.case.key].append(r)
        out = [
            EvalResult(c, model, sorted(by_key[c.key], key=lambda r: r.epoch), self._thresholds(suites, c))
            for c in picked
        ]
        return out[0] if single else out

    def _thresholds(self, suites: Sequence[Suite], case: Case) -> dict[str, Threshold]:
        return suite_thresholds(self.state.session, next(s for s in suites if s.name == case.suite))

    def _suite_case(self, ref: str) -> tuple[Suite, Case]:
        suite_name, sep, case_id = ref.rpartition("::")
        found = [
            (s, c) for s in self.state.project_suites() for c in s.cases
            if c.id == case_id and (not sep or s.name == suite_name)
        ]
        if len(found) != 1:
            known = "no such case" if not found else "several suites have it; write SUITE::ID"
            raise pytest.UsageError(f"gatekeeper_eval: case {ref!r}: {known}")
        return found[0]

    def _inline_case(
        self, row: dict[str, Any], evaluators: Sequence[Any], detectors: Sequence[Any],
        prompt: str | Sequence[dict[str, str]] | None,
    ) -> tuple[Suite, Case]:
        import yaml

        self._inline += 1
        messages = (
            [{"role": "user", "content": prompt if prompt is not None else "{{ input }}"}]
            if prompt is None or isinstance(prompt, str) else [dict(m) for m in prompt]
        )
        doc = {
            "suite": f"inline-{self._inline}", "prompt": {"messages": messages}, "cases": [dict(row)],
            "evaluators": list(evaluators), "detectors": list(detectors),
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / f"inline-{self._inline}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
        try:
            suite = self.state.session.load_suite(path)
        except GatekeeperError as exc:
            raise pytest.UsageError(f"gatekeeper_eval: {exc}") from None
        assert suite is not None
        return suite, suite.cases[0]


def _merge_suites(suites: Sequence[Suite]) -> list[Suite]:
    merged: dict[str, Suite] = {}
    for s in suites:
        if s.name in merged:
            merged[s.name].cases.extend(c for c in s.cases if c not in merged[s.name].cases)
        else:
            merged[s.name] = dataclasses.replace(s, cases=list(s.cases))
    return list(merged.values())


__all__ = ["STATE", "CaseFailed", "EvalResult", "Evaluate", "GatekeeperState", "Verdict"]
