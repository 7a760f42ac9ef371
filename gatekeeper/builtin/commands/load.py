"""``gatekeeper load``: run load suites against the candidate (and baseline) and record
every request, without deciding anything (``gatekeeper check`` gates on the SLOs)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.kinds import Command, Register, Session
from gatekeeper.types import UsageError


class LoadCommand(Command):
    name = "load"
    help = "send load suites' traffic to the candidate and baseline, interleaved; record latency per request"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("paths", nargs="*", help="load suite files or directories (default: config 'suites')")
        parser.add_argument("--candidate", help="candidate model spec (default: config 'candidate', else 'model')")
        parser.add_argument("--baseline", help="baseline model spec (default: config 'baseline'; none: only the "
                            "candidate is measured)")
        parser.add_argument("--only", metavar="NAME", action="append", help="only the load suite NAME (repeatable)")
        parser.add_argument("--out", type=Path, help="output directory (default: config 'out')")
        parser.add_argument("--confirm-load-rate", action="store_true",
                            help="send a rate (or concurrency) above load.max_rate (load.max_concurrency)")
        parser.epilog = ("exit codes: 0 ran, 4 usage or configuration error (also: a refused rate or endpoint), "
                         "5 harness error")

    def run(self, args: argparse.Namespace, session: Session) -> int:
        from gatekeeper.engine.load import check_safety, collect_load_suites, run_load

        config = session.config
        paths = args.paths or [str(config.path(p)) for p in config.suites]
        suites = collect_load_suites(paths, config, session.registries)
        if args.only:
            missing = sorted(set(args.only) - {s.name for s in suites})
            if missing:
                raise UsageError(f"no load suite named {', '.join(missing)} (found: "
                                 f"{', '.join(s.name for s in suites) or 'none'})", field="--only")
            suites = [s for s in suites if s.name in args.only]
        if not suites:
            raise UsageError("no load suite found (a YAML file with a top-level 'load:' key)", field="paths")
        candidate = args.candidate or config.candidate or config.model
        if not candidate:
            raise UsageError("give --candidate (or 'candidate' in gatekeeper.yaml)", field="--candidate")
        baseline = args.baseline or config.baseline
        models = {"candidate": session.load_model(candidate)}
        if baseline:
            models["baseline"] = session.load_model(baseline)
        for suite in suites:  # every suite is checked before the first request of any
            check_safety(suite, models, config, confirm_rate=args.confirm_load_rate)
        out = args.out or config.path(config.out)
        for suite in suites:
            session.echo(f"load {suite.name}: {suite.process}, {len(suite.steps)} step(s), "
                         f"{suite.planned_s:g} s planned ({suite.path})")
            run = run_load(suite, models, config, confirm_rate=args.confirm_load_rate, progress=session.echo)
            written = write_run(run, Path(out))
            print_run(session, run.to_record())
            session.echo("wrote " + ", ".join(str(p) for p in written))
        return 0


def write_run(run: Any, out: Path) -> list[Path]:
    """``load-NAME.jsonl`` (one line per request) and ``load-NAME.json`` (the run, without them)."""
    import json

    from gatekeeper.files import write_atomic

    record = run.to_record()
    record.pop("measurements")
    summary = out / f"load-{run.suite}.json"
    write_atomic(summary, json.dumps(record, indent=2) + "\n")
    return [run.write_jsonl(out / f"load-{run.suite}.jsonl"), summary]


def print_run(session: Any, record: dict[str, Any]) -> None:
    """Per model: requests by status, latency and TTFT quantiles of the ok ones, achieved rate."""
    import numpy as np

    stopped = f", stopped by {record['stopped_by']}" if record["stopped_by"] else ""
    lag = record["generator"]
    session.echo(f"  {record['wall_s']:.1f} s{stopped}; generator lag p50 {lag['lag_p50_ms']} ms, "
                 f"p99 {lag['lag_p99_ms']} ms")
    planned = sum(step["duration_s"] for step in record["steps"]) or 1.0
    session.echo(f"  {'model':<10} {'n':>5} {'ok':>5} {'429':>5} {'5xx':>4} {'t/o':>4} {'err':>4} "
                 f"{'p50 ms':>8} {'p95 ms':>8} {'ttft p50':>9} {'ok/s':>6}")
    for label, counts in record["counts"].items():
        rows = [m for m in record["measurements"] if m["model"] == label]
        ok = [m for m in rows if m["status"] == "ok"]
        lat = np.array([m["latency_ms"] for m in ok], dtype=float)
        ttft = np.array([m["ttft_ms"] for m in ok if m["ttft_ms"] is not None], dtype=float)

        def q(values: Any, p: float) -> str:
            return f"{float(np.quantile(values, p)):.0f}" if len(values) else "-"

        other = counts["error"] + counts["shed"] + counts["cancelled"]
        session.echo(f"  {label:<10} {len(rows):>5} {counts['ok']:>5} {counts['429']:>5} {counts['5xx']:>4} "
                     f"{counts['timeout']:>4} {other:>4} {q(lat, 0.5):>8} {q(lat, 0.95):>8} {q(ttft, 0.5):>9} "
                     f"{len(ok) / planned:>6.1f}")


@hookimpl
def gatekeeper_register_commands(register: Register[Command]) -> None:
    register(LoadCommand)
