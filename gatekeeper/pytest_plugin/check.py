"""``pytest --gatekeeper-check``: the gate as pytest items.

The policy file becomes a collector with one item per metric (and per slice value of the
metrics that declare slices) and a final ``decision`` item. The first item to run runs
the check — :func:`gatekeeper.gate.check.run_check`, the code ``gatekeeper check``
runs, reports and audit record included — once for the whole session: pytest-xdist
workers share it through a file under the cache directory, guarded by a lock.

Outcomes: a verdict that is one of the reasons of a failing decision fails its item; a
FAIL the policy tolerates (a non-critical metric) is an expected failure (xfail); an
INCONCLUSIVE, NODATA or ERROR verdict that decides nothing is skipped with its reason.
The ``decision`` item fails on REJECT (and on the decisions in ``--gatekeeper-fail-on``)
and on ERROR, is skipped on HOLD and INCONCLUSIVE, and passes on PROMOTE; so the session
fails exactly when ``gatekeeper check`` would exit 1 (or 5).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from gatekeeper.pytest_plugin.state import STATE, GatekeeperState, item_nodeid
from gatekeeper.types import GatekeeperError, UsageError

DECISION_ITEM = "decision"


class CheckFailed(AssertionError):
    """A verdict or the decision failed; ``str()`` is what the user sees."""


def shared_record_path(state: GatekeeperState) -> Path:
    config = state.session.config
    return config.path(config.cache).parent / "pytest" / f"check-{state.run_uid}.json"


class CheckRun:
    """Runs the check once per pytest session and hands every item the decision record."""

    def __init__(self, state: GatekeeperState) -> None:
        self.state = state
        self.record: dict[str, Any] | None = None
        self.written: list[str] = []

    def get(self) -> dict[str, Any]:
        if self.record is None:
            self.record = self._shared() if self.state.is_worker else self._run()
        return self.record

    def _run(self) -> dict[str, Any]:
        from gatekeeper.gate.check import run_check

        option = self.state.config.getoption
        models = option("--gatekeeper-model") or []
        if len(models) > 1:
            raise UsageError("takes one model, the candidate", field="--gatekeeper-model")
        out = option("--gatekeeper-out")
        provenance = option("--gatekeeper-provenance")
        record, written = run_check(
            self.state.session, paths=[str(p) for p in self.state.suite_paths],
            candidate=models[0] if models else None, baseline=option("--gatekeeper-baseline"),
            policy_path=self.state.policy_path(), out=Path(out) if out else None,
            provenance=Path(provenance) if provenance else None, progress=False,
        )
        record["_written"] = [str(p) for p in written]
        return record

    def _verified(self, record: dict[str, Any], path: Path) -> dict[str, Any]:
        """A record another worker shared, once the audit trail vouches for it."""
        from gatekeeper.engine.record import attach
        from gatekeeper.gate.integrity import require_intact

        config = self.state.session.config
        decision = next((Path(p) for p in record.get("_written") or [] if Path(p).name == "decision.json"), None)
        if decision is not None:  # record format 2: the per-case files beside it are checked too
            attach(record, decision.parent, path)
        require_intact(record, Path(config.path(config.audit_log)), where=path)
        return record

    def _shared(self) -> dict[str, Any]:
        from filelock import FileLock

        path = shared_record_path(self.state)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"):
            if path.is_file():
                return self._verified(dict(json.loads(path.read_text(encoding="utf-8"))), path)
            from gatekeeper.engine.record import stored_body

            record = self._run()
            shared = {**stored_body(record), "_written": record.get("_written")}  # the per-case files stay on disk
            path.write_text(json.dumps(shared, default=str), encoding="utf-8")
            return record


class PolicyFile(pytest.File):
    """The policy as a collector of verdict items (built by the plugin, not by discovery)."""

    def collect(self) -> Iterator[pytest.Item]:
        from gatekeeper.gate.policy import load_policy
        from gatekeeper.host import yamlfile

        state: GatekeeperState = self.config.stash[STATE]
        suites = [state.suites[p] for p in state.suite_paths]
        policy = load_policy(self.path, suite_names=[s.name for s in suites])
        _, locator = yamlfile.load(self.path)
        state.check = CheckRun(state)
        wanted = set(policy.performance_evaluation.suites)
        for index, spec in enumerate(policy.performance_evaluation.metrics):
            line = locator.line(("performance_evaluation", "metrics", index)) or 1
            yield MetricItem.from_parent(self, name=spec.name, metric=spec.name, slice_=None, line=line)
            cases = [c for s in suites if s.name in wanted and spec.suite in (None, s.name) for c in s.cases]
            for field in spec.slices:
                for value in sorted({c.slices[field] for c in cases if field in c.slices}):
                    name = f"{spec.name}[{field}={value}]"
                    yield MetricItem.from_parent(
                        self, name=name, nodeid=item_nodeid(self, name), metric=spec.name,
                        slice_={"field": field, "value": value}, line=line,
                    )
        yield DecisionItem.from_parent(self, name=DECISION_ITEM, line=locator.line(("gate",)) or 1)


class _CheckItem(pytest.Item):
    record: dict[str, Any]

    def __init__(self, *, line: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.line = line

    def load_record(self) -> None:
        state: GatekeeperState = self.config.stash[STATE]
        try:
            self.record = state.check.get()
        except GatekeeperError as exc:
            raise CheckFailed(f"gatekeeper check could not run: {exc}") from None

    def fail_on(self) -> set[str]:
        given = str(self.config.getoption("--gatekeeper-fail-on") or "REJECT")
        return {d.strip().upper() for d in given.split(",") if d.strip()} | {"ERROR"}

    def failing(self) -> bool:
        return str(self.record["decision"]) in self.fail_on()

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | Any:
        if isinstance(excinfo.value, CheckFailed | GatekeeperError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, self.line - 1, f"{self.path.name}::{self.name}"


def skip(reason: str) -> NoReturn:
    """Skip, reported at the policy clause (the item's location) rather than this module."""
    raise pytest.skip.Exception(reason, _use_item_location=True)


class MetricItem(_CheckItem):
    """One verdict row of the decision record: a metric overall or in one slice."""

    def __init__(self, *, metric: str, slice_: dict[str, str] | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metric = metric
        self.slice = slice_

    def runtest(self) -> None:
        self.load_record()
        row = next(
            (m for m in self.record["metrics"] if m["name"] == self.metric and m["slice"] == self.slice), None
        )
        if row is None:
            skip(f"{self.name}: no case has paired scores for this slice")
        for key in ("verdict", "delta", "ci_low", "ci_high", "n"):
            self.user_properties.append((f"gatekeeper.{key}", row[key]))
        verdict = row["verdict"]
        deciding = {r["clause"] for r in self.record["reasons"]}
        if verdict == "PASS":
            return
        if self.failing() and row["clause"] in deciding:
            raise CheckFailed(f"{verdict}: {row['reason']}\n(decision {self.record['decision']}; "
                              f"policy clause {row['clause']})")
        if verdict == "FAIL":
            pytest.xfail(f"FAIL tolerated by the policy (decision {self.record['decision']}): {row['reason']}")
        skip(f"{verdict}: {row['reason']}")


class DecisionItem(_CheckItem):
    """The gate's decision: fails on REJECT (and ``--gatekeeper-fail-on``) and on ERROR."""

    def runtest(self) -> None:
        self.load_record()
        record = self.record
        decision = str(record["decision"])
        self.user_properties.extend([
            ("gatekeeper.decision", decision), ("gatekeeper.run_id", record["run_id"]),
            ("gatekeeper.policy", f"{record['policy']['id']} v{record['policy']['version']}"),
            ("gatekeeper.reports", ", ".join(record.get("_written", []))),
            *((f"gatekeeper.reason.{n}", f"[{r['clause']}] {r['text']}") for n, r in enumerate(record["reasons"], 1)),
        ])
        reasons = "\n".join(f"  - [{r['clause']}] {r['text']}" for r in record["reasons"])
        head = (f"decision: {decision} (policy {record['policy']['id']} v{record['policy']['version']}, "
                f"run {record['run_id']})")
        if self.failing():
            raise CheckFailed(f"{head}\n{reasons}")
        if decision != "PROMOTE":
            skip(f"{head}: " + "; ".join(r["text"] for r in record["reasons"]))


def summarize_decision(stats: dict[str, list[Any]]) -> list[str]:
    """The decision and its reasons, from the decision item's report (xdist-safe)."""
    for reports in stats.values():
        for report in reports:
            props = dict(getattr(report, "user_properties", None) or [])
            if getattr(report, "when", "call") == "call" and "gatekeeper.decision" in props:
                lines = [f"decision: {props['gatekeeper.decision']} (policy {props['gatekeeper.policy']}, "
                         f"run {props['gatekeeper.run_id']})"]
                lines += [f"  - {v}" for k, v in props.items() if k.startswith("gatekeeper.reason.")]
                if props.get("gatekeeper.reports"):
                    lines.append(f"reports: {props['gatekeeper.reports']}")
                return lines
    return []


class CheckPlugin:
    """Registered only with ``--gatekeeper-check``: adds the policy's verdict items before
    ``-k``/``-m``/``--lf`` see the items, prints the decision, and removes the record the
    xdist workers shared."""

    def __init__(self, state: GatekeeperState) -> None:
        self.state = state

    @pytest.hookimpl(wrapper=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> Iterator[None]:
        if self.state.suite_paths:
            try:
                policy_file = PolicyFile.from_parent(session, path=self.state.policy_path())
                verdicts: list[pytest.Item | pytest.Collector] = list(policy_file.collect())
            except GatekeeperError as exc:
                raise pytest.UsageError(f"gatekeeper: {exc}") from None
            items.extend(v for v in verdicts if isinstance(v, pytest.Item))
            # Reported like any collector's result, so "collected N items" counts them.
            config.hook.pytest_collectreport(report=pytest.CollectReport(
                policy_file.nodeid, "passed", None, verdicts))
        return (yield)

    @pytest.hookimpl(tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        self.state.summary_lines[:0] = summarize_decision(terminalreporter.stats)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.state.is_worker:
            return
        # The controller (or the only process) removes what the workers shared.
        try:
            shared = shared_record_path(self.state)
        except pytest.UsageError:
            return
        for path in (shared, Path(f"{shared}.lock")):
            path.unlink(missing_ok=True)
