"""Built-in commands: ``run`` (evaluate one model) and ``plugins`` (what is installed)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.kinds import Command, Register, Session


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", help="suite files or directories (default: config 'suites')")
    parser.add_argument("-k", dest="keyword", metavar="EXPR",
                        help="only cases whose id, suite or tag matches EXPR (and/or/not)")
    parser.add_argument("-m", dest="marker", metavar="TAG", help="only cases tagged TAG (and/or/not)")
    parser.add_argument("--no-progress", action="store_true", help="plain progress lines")
    parser.add_argument("--engine", metavar="NAME",
                        help="run the cases on an engine plugin, e.g. spark (docs/spark.md); default: in process")


def print_summary(session: Any, record: dict[str, Any]) -> None:
    """A metric table per model, plus the call counters."""
    for label, metrics in record["summary"].items():
        session.echo(f"{label}: {record['models'][label]['spec']}")
        session.echo(f"  {'metric':<24} {'mean':>8} {'passed':>7} {'failed':>7} {'nodata':>7} {'error':>6}")
        for metric, s in metrics.items():
            mean = "-" if s["mean"] is None else f"{s['mean']:.3f}"
            session.echo(
                f"  {metric:<24} {mean:>8} {s['passed']:>7} {s['failed']:>7} {s['nodata']:>7} {s['error']:>6}"
            )
    st = record["stats"]
    session.echo(
        f"model calls: {st['model_calls']} (cache hits: {st['cache_hits']}, retries: {st['retries']}, "
        f"generation errors: {st['generation_errors']}) in {st['wall_s']:.1f} s"
    )
    print_usage(session, st)
    print_generation_errors(session, record)


def print_usage(session: Any, stats: dict[str, Any]) -> None:
    """Tokens and dollars this run paid for (nothing when no provider reports usage)."""
    if stats.get("prompt_tokens") or stats.get("completion_tokens"):
        cost = f", cost ${stats['cost']:.6f}" if stats.get("cost") else ""  # local models cost nothing
        session.echo(f"tokens: {stats['prompt_tokens']} prompt + {stats['completion_tokens']} completion{cost}")


def print_generation_errors(session: Any, record: dict[str, Any], limit: int = 3) -> None:
    """The distinct reasons outputs are missing, most frequent first, so exit 5 is explained."""
    from collections import Counter

    from gatekeeper.engine.record import score_columns

    reasons = Counter(score_columns(record).errors.values())
    for reason, n in reasons.most_common(limit):
        session.echo(f"error ({n} case{'s' if n != 1 else ''}): {reason}")
    if len(reasons) > limit:
        session.echo(f"... and {len(reasons) - limit} other errors (see results.json)")


class RunCommand(Command):
    name = "run"
    help = "evaluate one model on suites; write results.json, junit.xml, summary.md"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        add_selection_arguments(parser)
        parser.add_argument("--model", help="model spec PROVIDER:NAME[?k=v] (default: config 'model')")
        parser.add_argument("--out", type=Path, help="output directory (default: config 'out')")
        parser.add_argument("--format", action="append", dest="formats",
                            help="report format to write (repeatable; default: all)")
        parser.epilog = (
            "exit codes: 0 every score passed, 1 some score failed its threshold, "
            "4 usage or configuration error, 5 generation or plugin errors"
        )

    def run(self, args: argparse.Namespace, session: Session) -> int:
        from gatekeeper.engine.record import CaseWriter
        from gatekeeper.engine.results import identity_entry, new_run_id, row_sink, run_record
        from gatekeeper.engine.session import few_collections
        from gatekeeper.types import UsageError

        session.use_engine(args.engine)
        spec = args.model or session.config.model
        if not spec:
            raise UsageError("no model: give --model PROVIDER:NAME or set 'model' in gatekeeper.yaml",
                             field="--model")
        suites = session.collect(args.paths, keyword=args.keyword, marker=args.marker)
        model = session.load_model(spec)
        run_id = new_run_id()
        label = str(spec)
        out = args.out or session.config.path(session.config.out)
        writer = CaseWriter(out, session.config.record.max_inline_bytes)  # rows stream to out/cases.jsonl
        try:
            with few_collections():
                _, stats = session.run({label: model}, suites, run_id=run_id, specs={label: str(spec)},
                                       progress=not args.no_progress, sink=row_sink(writer))
        except BaseException:
            writer.abort()
            raise
        record = run_record(
            run_id=run_id, models={label: identity_entry(str(spec), model.identity)}, suites=suites,
            stats=stats, versions=session.host.versions(),
            selection={"paths": args.paths, "k": args.keyword, "m": args.marker}, writer=writer,
        )
        session.host.hook.gatekeeper_run_finish(run_id=run_id, record=record)
        written = session.write_reports(record, out, args.formats)
        print_summary(session, record)
        session.echo("wrote " + ", ".join(str(p) for p in written))
        if stats.generation_errors or stats.scorer_errors:
            return 5
        failed = any(s["failed"] for m in record["summary"].values() for s in m.values())
        return 1 if failed else 0








@hookimpl
def gatekeeper_register_commands(register: Register[Command]) -> None:
    register(RunCommand)
