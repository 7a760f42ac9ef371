"""Helpers for testing gatekeeper plugins, in the spirit of pytest's ``pytester``.

The ``gatekeeper_project`` fixture (registered by gatekeeper's pytest plugin) gives a
:class:`Project`: a throwaway directory to write suites, recordings and config into,
and a :meth:`Project.run` that runs the real CLI in-process and captures its output::

    def test_my_evaluator(gatekeeper_project):
        gatekeeper_project.write("suites/s.yaml", SUITE)
        gatekeeper_project.write_jsonl("rec.jsonl", [{"id": "a", "output": "hi"}])
        result = gatekeeper_project.run("run", "suites", "--model", "replay:rec.jsonl")
        assert result.exit_code == 0
        result.fnmatch_lines(["*shouty*1.000*"])
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class CLIResult:
    """What a CLI run printed and returned."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def lines(self) -> list[str]:
        return self.output.splitlines()

    def fnmatch_lines(self, patterns: Sequence[str]) -> None:
        """Assert each glob pattern matches some line, in order (like pytester)."""
        lines = self.lines
        pos = 0
        for pattern in patterns:
            for i in range(pos, len(lines)):
                if fnmatch.fnmatch(lines[i], pattern):
                    pos = i + 1
                    break
            else:
                raise AssertionError(
                    f"no line matching {pattern!r} after line {pos}; output was:\n{self.output}"
                )

    def json(self, path: str | Path) -> Any:
        return json.loads(Path(path).read_text(encoding="utf-8"))


class Project:
    """A throwaway gatekeeper project rooted at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, relpath: str, text: str) -> Path:
        target = self.path / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return target

    def write_jsonl(self, relpath: str, rows: Iterable[dict[str, Any]]) -> Path:
        return self.write(relpath, "".join(json.dumps(r) + "\n" for r in rows))

    def read_json(self, relpath: str) -> Any:
        return json.loads((self.path / relpath).read_text(encoding="utf-8"))

    def read_record(self, relpath: str) -> dict[str, Any]:
        """A ``decision.json`` / ``results.json`` (or its directory) as readers see it: in record
        format 2 the per-case files beside it are read back into ``cases`` (a list) and
        ``case_index`` (a dict), as the inline format 1 held them."""
        from gatekeeper.engine.record import load, materialized

        return materialized(load(self.path / relpath))

    def run(self, *args: str, env: dict[str, str] | None = None) -> CLIResult:
        """Run ``gatekeeper ARGS`` in-process with this project as the working directory."""
        from gatekeeper.cli import main

        out, err = io.StringIO(), io.StringIO()
        old_cwd = Path.cwd()
        old_env = {k: os.environ.get(k) for k in (env or {})}
        try:
            os.chdir(self.path)
            os.environ.update(env or {})
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(args))
        finally:
            os.chdir(old_cwd)
            for key, value in old_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return CLIResult(code, out.getvalue(), err.getvalue())

    def run_subprocess(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> CLIResult:
        """Run ``gatekeeper ARGS`` in a real child process (for start-up and signal tests)."""
        proc = subprocess.run(
            [sys.executable, "-m", "gatekeeper.cli", *args], cwd=self.path, capture_output=True,
            text=True, env={**os.environ, **(env or {})}, timeout=timeout,
        )
        return CLIResult(proc.returncode, proc.stdout, proc.stderr)


# --------------------------------------------------------------------------- a paired gate in a few lines

PAIRED_SUITE = """
suite: paired
prompt: {messages: [{role: user, content: "{{ input }}"}]}
dataset: cases.jsonl
slices: [topic]
evaluators:
  - {name: contains, as: facts, field: facts, mode: all}
"""
"""One binary metric, ``facts``: 1 when the output contains the case's ``facts`` (``yes``)."""

PAIRED_POLICY = """
metadata: {id: paired-pccp, title: Paired test plan, version: "1", effective_date: 2026-01-01, owner: qa}
modifications:
  - {id: M1, type: lora_adapter_retrain, description: adapter retrain, authorization: automatic,
     evaluation: [facts]}
performance_evaluation:
  suites: [paired]
  metrics:
    - {name: facts, metric: facts, direction: higher, hypothesis: non_inferiority, margin: {margin},
       alpha: 0.05, ci_method: tango, critical: true}
impact_assessment:
  intended_use: tests
  risks: [{id: R1, description: loses facts, mitigation: gate, metrics: [facts]}]
traceability:
  - {modification: M1, evaluations: [facts], rationale: the gate measures what the retrain may change}
"""
"""A non-inferiority plan on ``facts``; ``{margin}`` is filled in by :func:`write_paired_project`."""


def write_paired_project(
    project: Project, *, baseline: Sequence[bool], candidates: dict[str, Sequence[bool]], margin: float = 0.05,
    suite: str = PAIRED_SUITE, policy: str = PAIRED_POLICY, topics: Sequence[str] = ("a", "b", "c"),
    provenance: dict[str, Any] | None = None,
) -> Project:
    """The smallest real gate: a suite of binary cases, one replay recording per model and a policy.

    ``baseline`` and each of ``candidates`` (recording name → outcomes) say, case by case,
    whether that model answers right (``"yes"``) or wrong (``"no"``). Writes
    ``suites/paired.yaml``, ``suites/cases.jsonl`` (ids ``c000``..., a ``topic`` slice cycling
    through ``topics``), ``baseline.jsonl``, ``NAME.jsonl`` per candidate and ``policy.yaml``
    (``{margin}`` in ``policy`` is replaced). With ``provenance``, each candidate gets it as
    ``NAME.provenance.json`` (the declared change the gate's scope check reads). Run it with
    :func:`run_paired_check`.
    """
    n = len(baseline)
    if any(len(outcomes) != n for outcomes in candidates.values()):
        raise ValueError("every model needs one outcome per case")
    ids = [f"c{i:03d}" for i in range(n)]
    project.write("suites/paired.yaml", suite)
    project.write_jsonl("suites/cases.jsonl", [
        {"id": cid, "input": f"question {i}", "facts": ["yes"], "topic": topics[i % len(topics)]}
        for i, cid in enumerate(ids)
    ])
    for name, outcomes in {"baseline": baseline, **candidates}.items():
        project.write_jsonl(f"{name}.jsonl", [{"id": cid, "output": "yes" if ok else "no"}
                                              for cid, ok in zip(ids, outcomes, strict=True)])
    for name in candidates if provenance is not None else ():
        project.write(f"{name}.provenance.json", json.dumps(provenance, indent=1))
    project.write("policy.yaml", policy.replace("{margin}", str(margin)))
    return project


@dataclass
class CheckResult:
    """A ``gatekeeper check``: its exit code, decision record (``{}`` when none was written) and output."""

    exit_code: int
    record: dict[str, Any]
    output: str

    @property
    def decision(self) -> str | None:
        return self.record.get("decision")


def run_paired_check(project: Project, candidate: str = "candidate", *extra: str, baseline: str = "baseline",
                     policy: str = "policy.yaml", out: str = "out") -> CheckResult:
    """``gatekeeper check`` of ``replay:CANDIDATE.jsonl`` against ``replay:BASELINE.jsonl``."""
    result = project.run("check", "--baseline", f"replay:{baseline}.jsonl", "--candidate",
                         f"replay:{candidate}.jsonl", "--policy", policy, "--out", out, "--no-progress", *extra)
    decision = project.path / out / "decision.json"
    record = project.read_record(f"{out}/decision.json") if decision.exists() else {}
    return CheckResult(result.exit_code, record, result.output)
