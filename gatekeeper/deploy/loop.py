"""The signals loop (``gatekeeper loop``): the whole signals flywheel in one command.

history signals → curated training data and a regression suite → ``tune`` a LoRA adapter →
``check`` it against the version in production → ``promote`` to the canary stage →
``monitor`` the canary on a second window of signals → full promotion, or rollback.

Every step is the same code the single commands run (curation functions, the ``tune``
command, :func:`~gatekeeper.gate.check.run_check`, :func:`promote_run`,
:func:`run_monitor`), prints one numbered line with its outcome and leaves its record in
the audit trail. A step that does not allow the next one ends the loop with that step's
exit code; ``gatekeeper audit show`` tells the story afterwards. docs/deploy.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from gatekeeper.types import ModelSpec, UsageError

BUNDLED_HISTORY = "suites/signals/window1.parquet"


BUNDLED_WINDOW2 = {"better": "suites/signals/window2-better.parquet",
                   "worse": "suites/signals/window2-worse.parquet"}


BUNDLED_POLICY = "policies/support-assistant-loop.yaml"


REGRESSION_SUITE = "signals-regression"


# Regression cases checked by default: the history yields hundreds; 40 keep the check within
# minutes on two CPU cores (--cases signals-regression=N changes it).
DEFAULT_REGRESSION_CASES = 40


STEPS = ("registry", "curate", "tune", "check", "canary", "monitor", "full")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def run_command(session: Any, name: str, argv: list[str], *, quiet: bool = True) -> tuple[int, str]:
    """Run a registered command in this process, as ``gatekeeper NAME ARGV`` would."""
    command = session.registries.commands.get(name)()
    parser = _Parser(prog=f"gatekeeper {name}")
    command.configure(parser)
    args = parser.parse_args(argv)
    captured = io.StringIO()
    out = session.out
    session.out = captured if quiet else out
    try:
        code = int(command.run(args, session))
    finally:
        session.out = out
    return code, captured.getvalue()


@dataclass
class LoopReport:
    steps: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def add(self, step: str, outcome: str, **facts: Any) -> None:
        self.steps.append({"step": step, "outcome": outcome, **facts})


class Loop:
    """One run of the flywheel; each method is one numbered step."""

    def __init__(self, session: Any, args: argparse.Namespace) -> None:
        from gatekeeper.deploy.promotion import model_and_alias, open_target
        from gatekeeper.gate.policy import load_policy

        self.session, self.args, self.config = session, args, session.config
        self.work: Path = args.work or self.config.path(self.config.out) / (
            "loop-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
        self.policy_path = self.config.path(args.policy or BUNDLED_POLICY)
        if not self.policy_path.is_file():
            raise UsageError("policy file not found", file=str(self.policy_path), field="--policy")
        self.policy = load_policy(self.policy_path)
        self.model, self.production = model_and_alias(self.policy, args.model)
        self.history = self._location(args.history)
        window2 = BUNDLED_WINDOW2.get(args.window2, args.window2)
        self.window2 = self._location(window2)
        self.target = open_target(session, args.target, args.registry or str(self.work / "registry"))
        self.report = LoopReport()
        self.number = 0

    def _location(self, value: str) -> str:
        path = self.config.path(value)
        return str(path) if path.exists() else value

    # ----------------------------------------------------------------- output

    def step(self, name: str, outcome: str, detail: str = "", **facts: Any) -> None:
        self.number += 1
        self.report.add(name, outcome, **facts)
        took = time.perf_counter() - self.report.started
        self.session.echo(f"[{self.number}/{len(STEPS)}] {name:<9} {outcome:<13} {detail}  ({took:.0f} s)")

    # ----------------------------------------------------------------- steps

    def ensure_production(self) -> str:
        current = self.target.get_alias(self.model, self.production)
        if current is not None:
            spec = str(self.target.versions(self.model)[current]["spec"])
            self.step("registry", "ok", f"{self.model}@{self.production} = version {current} ({spec})",
                      version=current, spec=spec)
            return spec
        base = str(ModelSpec.parse(self.args.base))
        run_command(self.session, "registry", [
            "register", base, "--model", self.model, "--alias", self.production, "--target", self.args.target,
            "--registry", str(self.target.location), "--reason", "the model in production before the loop"])
        version = self.target.get_alias(self.model, self.production)
        self.step("registry", "registered", f"{self.model}@{self.production} = version {version} ({base})",
                  version=version, spec=base)
        return base

    def curate(self) -> tuple[Path, Path]:
        from gatekeeper.gate.audit import AuditLog
        from gatekeeper.signals.curation import (
            MANIFEST_FILE,
            SFT_FILE,
            CurationOptions,
            build_dataset,
            build_suite,
            file_sha256,
            holdout_prompt_hashes,
        )
        from gatekeeper.signals.records import read_signals

        audit = AuditLog(self.config.path(self.config.audit_log))
        bundled = self.session.collect(self.suite_paths())
        filters = {"model": self.model}
        suite_file = self.work / "suites" / f"{REGRESSION_SUITE}.yaml"
        history = list(read_signals(self.history, self.session.registries, model=self.model))
        suite = build_suite(history, suite_file,
                            name=REGRESSION_SUITE, sources=[self.history], filters=filters,
                            options=CurationOptions(pii_allow_context=self.args.pii_allow_context))
        manifest = suite.manifest
        audit.append("signals.build-suite", subject=REGRESSION_SUITE, refs={
            "suite": manifest["suite_file"]["sha256"], "dataset": manifest["dataset_file"]["sha256"],
            "manifest": file_sha256(suite_file.with_name(f"{suite_file.stem}.manifest.json"))},
            data={"sources": [self.history], "cases": manifest["dataset_file"]["rows"],
                  "pii_removed": manifest["pii"]["total"], "loop": str(self.work)})
        data_dir = self.work / "data"
        dataset = build_dataset(history, data_dir,
                                sources=[self.history], filters=filters,
                                options=CurationOptions(holdout_hashes=holdout_prompt_hashes(bundled),
                                                        pii_allow_context=self.args.pii_allow_context))
        files = dataset.manifest["files"]
        audit.append("signals.build-dataset", subject=str(data_dir), refs={
            "manifest": file_sha256(data_dir / MANIFEST_FILE),
            **{name.split(".")[0]: f["sha256"] for name, f in files.items()}},
            data={"sources": [self.history], "pii_removed": dataset.manifest["pii"]["total"],
                  **{name.split(".")[0]: f["rows"] for name, f in files.items()}, "loop": str(self.work)})
        self.step("curate", "built", f"{manifest['dataset_file']['rows']} regression cases, "
                  f"{files[SFT_FILE]['rows']} SFT examples; PII removed: {dataset.manifest['pii']['total']}",
                  regression_cases=manifest["dataset_file"]["rows"], sft_examples=files[SFT_FILE]["rows"])
        return suite_file, data_dir / SFT_FILE

    def tune(self, data: Path) -> str:
        adapter = self.work / "adapter"
        params = [f"max_steps={self.args.steps}", f"seed={self.args.seed}", *self.args.param]
        argv = ["--tuner", self.args.tuner, "--base", str(ModelSpec.parse(self.args.base)), "--data", str(data),
                "--out", str(adapter), "--policy", str(self.policy_path)]
        for item in params:
            argv += ["--param", item]
        run_command(self.session, "tune", argv)
        provenance = json.loads((adapter / "provenance.json").read_text(encoding="utf-8"))
        training = provenance.get("training") or {}
        self.step("tune", "trained", f"{self.args.tuner} adapter, {training.get('steps', '?')} steps, loss "
                  f"{training.get('loss_first', float('nan')):.3f} -> {training.get('loss_last', float('nan')):.3f}",
                  adapter=str(adapter), digest=(provenance.get("adapter") or {}).get("digest"))
        base = ModelSpec.parse(self.args.base)
        return str(ModelSpec(base.provider, base.name, {**base.params, "adapter": str(adapter)}))

    def suite_paths(self) -> list[str]:
        return list(self.args.suites) or [str(self.config.path(p)) for p in self.config.suites]

    def case_limits(self) -> dict[str | None, int]:
        """``--cases N`` (every suite) and ``--cases SUITE=N`` → suite name (None: any) → limit."""
        limits: dict[str | None, int] = {}
        for item in self.args.cases or [f"{REGRESSION_SUITE}={DEFAULT_REGRESSION_CASES}"]:
            name, sep, number = item.rpartition("=")
            try:
                limit = int(number)
            except ValueError:
                limit = 0
            if limit < 1:
                raise UsageError(f"--cases {item!r}: give N or SUITE=N with N >= 1", field="--cases")
            limits[name if sep else None] = limit
        return limits

    def sample_keyword(self, paths: list[str]) -> str | None:
        """A ``-k`` expression naming at most ``--cases`` cases of a suite, chosen by the hash of their id."""
        limits = self.case_limits()
        if not limits:
            return None
        ids: list[str] = []
        for suite in self.session.collect(paths):
            limit = limits.get(suite.name, limits.get(None))
            ranked = sorted(suite.cases, key=lambda c: hashlib.sha256(c.id.encode()).hexdigest())
            ids += [c.id for c in ranked[:limit]]
        return " or ".join(ids)

    def check(self, baseline: str, candidate: str, regression: Path) -> dict[str, Any]:
        from gatekeeper.gate.check import run_check

        paths = [*self.suite_paths(), str(regression)]
        record, _ = run_check(
            self.session, paths=paths, keyword=self.sample_keyword(paths), candidate=candidate,
            baseline=baseline, policy_path=self.policy_path, out=self.work / "check",
            progress=not self.args.no_progress,
        )
        decisive = [m for m in record["metrics"] if m["slice"] is None]
        summary = ", ".join(f"{m['name']} {m['verdict']}" for m in decisive)
        self.step("check", record["decision"], f"{summary}; {record['stats']['model_calls']} model calls",
                  decision=record["decision"], run_id=record["run_id"])
        for reason in record["reasons"]:
            self.session.echo(f"      - [{reason['clause']}] {reason['text']}")
        return record

    def promote(self, name: str, stage: str | None) -> Any:
        from gatekeeper.deploy.promotion import promote_run

        p = promote_run(self.session, self.work / "check", target=self.target, model=self.model, stage=stage,
                        skip_reason=f"gatekeeper loop --stage {stage}: the operator starts the rollout there"
                        if stage else None)
        self.step(name, "promoted", f"version {p.version} -> @{p.alias} at stage {p.stage} ({p.traffic:.0%})"
                  + (f"; skipped {', '.join(p.skipped)}" if p.skipped else ""),
                  version=p.version, alias=p.alias, stage=p.stage)
        return p

    def replayed_window(self) -> str:
        """The bundled second window, replayed as the canary's own window.

        A stage counts only signals recorded after the version entered it; the bundled files
        were recorded in the past, so the loop shifts their times to start just after the
        canary began (and says so). Other telemetry (``--window2 LOCATION``) is used as it is.
        """
        import polars as pl

        from gatekeeper.deploy.promotion import CANDIDATE, _stage_start

        start = _stage_start(self.target.aliases(self.model).get(CANDIDATE, {}))
        frame = pl.read_parquet(self.window2)
        if start is None or frame.is_empty():
            return self.window2
        earliest: datetime = frame["time"].min()  # type: ignore[assignment]  # a UTC datetime column
        shift = start - earliest + timedelta(seconds=1)
        replay = self.work / "window2-replayed.parquet"
        frame.with_columns(pl.col("time") + shift).write_parquet(replay)
        self.session.echo(f"      bundled window 2 replayed as the canary's window: times shifted by {shift} "
                          f"to follow the canary's start ({start.isoformat()})")
        return str(replay)

    def monitor(self) -> Any:
        from gatekeeper.deploy.promotion import run_monitor

        bundled = {Path(path).name for path in BUNDLED_WINDOW2.values()}
        signals = self.replayed_window() if Path(self.window2).name in bundled else self.window2
        outcome = run_monitor(self.session, target=self.target, policy=self.policy, signals=signals,
                              model=self.model, reference=self.history, out=self.work / "monitor")
        record = outcome.record
        metrics = ", ".join(f"{m['name']} {m['previous'] or 0:.3f}->{m['new'] or 0:.3f} {m['verdict']}"
                            for m in record["metrics"])
        rolled = ""
        if outcome.rolled_back:
            rolled = "; rolled back: " + (f"@{record['alias']} -> version {outcome.rolled_back_to}"
                                          if outcome.rolled_back_to else f"@{record['alias']} removed")
        self.step("monitor", record["decision"], f"{record['signals']['new']} vs {record['signals']['previous']} "
                  f"signals; {metrics}{rolled}", decision=record["decision"])
        for reason in record["reasons"]:
            self.session.echo(f"      - {reason}")
        drift = record["drift"].get("window", {})
        for what, test in drift.items():
            if isinstance(test, dict) and test.get("p_value") is not None:
                self.session.echo(f"      drift vs history, {what}: {'DRIFT' if test['drift'] else 'no drift'} "
                                  f"({test['test']} p={test['p_value']:.3g})")
        return outcome

    # ----------------------------------------------------------------- the run

    def run(self) -> int:
        from gatekeeper.deploy.promotion import PromotionRefused
        from gatekeeper.gate.approvals import promotable, required_from_record
        from gatekeeper.gate.decision import EXIT_CODES

        self.work.mkdir(parents=True, exist_ok=True)
        self.session.echo(f"gatekeeper loop: {self.model} on {self.args.base}; policy {self.policy.metadata.id} "
                          f"v{self.policy.metadata.version}; work in {self.work}")
        baseline = self.ensure_production()
        regression, data = self.curate()
        candidate = self.tune(data)
        record = self.check(baseline, candidate, regression)
        required = required_from_record(record)
        if not promotable(self.work / "check", required)[0]:
            return self.finish(int(EXIT_CODES[record["decision"]]), "stopped at the gate: nothing was promoted")
        try:
            self.promote("canary", self.args.stage)
            outcome = self.monitor()
            if outcome.record["decision"] != "OK":
                ending = ("rolled back" if outcome.rolled_back else "left at the canary stage: not enough evidence")
                return self.finish(int(outcome.exit_code), ending)
            self.promote("full", None)
        except PromotionRefused as exc:
            self.step("promote", "refused", exc.message)
            return self.finish(exc.exit_code, "promotion refused")
        return self.finish(0, f"{self.model}@{self.production} is the new version")

    def finish(self, code: int, ending: str) -> int:
        from gatekeeper.gate.audit import AuditLog

        audit = AuditLog(self.config.path(self.config.audit_log))
        wall = time.perf_counter() - self.report.started
        audit.append("loop", subject=self.model, data={
            "model": self.model, "outcome": ending, "exit_code": code, "work": str(self.work),
            "wall_s": round(wall, 1), "steps": [{"step": s["step"], "outcome": s["outcome"]}
                                                for s in self.report.steps],
        })
        summary = {"model": self.model, "outcome": ending, "exit_code": code, "wall_s": round(wall, 1),
                   "steps": self.report.steps, "registry": str(self.target.location)}
        (self.work / "loop.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
        verified = audit.verify()
        self.session.echo(f"loop: {ending} (exit {code}) in {wall:.0f} s; audit trail "
                          f"{'OK' if verified.ok else 'BROKEN'}: {verified.count} records "
                          f"(`gatekeeper audit show` tells the story; registry {self.target.location})")
        return code
