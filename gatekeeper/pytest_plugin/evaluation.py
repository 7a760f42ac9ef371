"""The ``gatekeeper_eval`` fixture's Python API: run a model on a suite or inline case and
assert on its scores with readable messages."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gatekeeper.pytest_plugin.state import (
    GatekeeperState,
    Threshold,
    describe_results,
    fmt_value,
    score_verdict,
    suite_thresholds,
    threshold_text,
)
from gatekeeper.types import Case, CaseResult, GatekeeperError, Score

if TYPE_CHECKING:
    from gatekeeper.engine.suites import Suite


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
        text = (f"{metric} {'PASSED' if ok else 'FAILED'} on {where}: value {fmt_value(value)}, threshold "
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
            known = merged[s.name].cases
            merged[s.name].cases = [*known, *(c for c in s.cases if c not in known)]
        else:
            merged[s.name] = dataclasses.replace(s, cases=list(s.cases))
    return list(merged.values())


__all__ = ["EvalResult", "Evaluate", "Verdict"]
