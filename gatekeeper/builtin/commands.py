"""Built-in commands: ``run`` (evaluate one model) and ``plugins`` (what is installed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.kinds import Command
from gatekeeper.results import identity_entry, new_run_id, run_record


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", help="suite files or directories (default: config 'suites')")
    parser.add_argument("-k", dest="keyword", metavar="EXPR",
                        help="only cases whose id, suite or tag matches EXPR (and/or/not)")
    parser.add_argument("-m", dest="marker", metavar="TAG", help="only cases tagged TAG (and/or/not)")
    parser.add_argument("--no-progress", action="store_true", help="plain progress lines")


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

    reasons = Counter(row["error"] for row in record["cases"] if row.get("error"))
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

    def run(self, args: argparse.Namespace, session: Any) -> int:
        from gatekeeper.types import UsageError

        spec = args.model or session.config.model
        if not spec:
            raise UsageError("no model: give --model PROVIDER:NAME or set 'model' in gatekeeper.yaml",
                             field="--model")
        suites = session.collect(args.paths, keyword=args.keyword, marker=args.marker)
        model = session.load_model(spec)
        run_id = new_run_id()
        label = str(spec)
        results, stats = session.run(
            {label: model}, suites, run_id=run_id, specs={label: str(spec)}, progress=not args.no_progress
        )
        record = run_record(
            run_id=run_id, models={label: identity_entry(str(spec), model.identity)}, suites=suites,
            results=results, stats=stats, versions=session.host.versions(),
            selection={"paths": args.paths, "k": args.keyword, "m": args.marker},
        )
        session.host.hook.gatekeeper_run_finish(run_id=run_id, record=record)
        out = args.out or session.config.path(session.config.out)
        written = session.write_reports(record, out, args.formats)
        print_summary(session, record)
        session.echo("wrote " + ", ".join(str(p) for p in written))
        if stats.generation_errors or stats.scorer_errors:
            return 5
        failed = any(s["failed"] for m in record["summary"].values() for s in m.values())
        return 1 if failed else 0


class PluginsCommand(Command):
    name = "plugins"
    help = "list plugins with their distribution, version, hooks and what they register"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args: argparse.Namespace, session: Any) -> int:
        infos = sorted(session.host.info.values(), key=lambda i: (i.source != "builtin", i.name))
        if args.json:
            session.echo(json.dumps([vars(i) for i in infos], indent=2))
            return 0
        for info in infos:
            dist = f"{info.distribution} {info.version}".strip() or "-"
            session.echo(f"{info.name}  [{info.source}]  {dist}")
            if info.api:
                session.echo(f"    plugin API: {info.api}")
            session.echo(f"    hooks: {', '.join(info.hooks) or '-'}")
            for kind, names in sorted(info.registered.items()):
                if names:
                    session.echo(f"    {kind}: {', '.join(names)}")
        return 0


def parse_params(items: list[str]) -> dict[str, Any]:
    """``--param rank=8 --param target_modules=q_proj,v_proj`` → typed values."""
    import yaml

    from gatekeeper.types import UsageError

    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {item!r} is not KEY=VALUE", field="--param")
        params[key] = [v for v in value.split(",") if v] if "," in value else yaml.safe_load(value)
    return params


class TuneCommand(Command):
    name = "tune"
    help = "make a candidate: train with a tuner plugin, write it with its provenance"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--tuner", required=True, help="tuner name (see gatekeeper plugins)")
        parser.add_argument("--base", required=True, help="base model spec, e.g. hf:smollm2")
        parser.add_argument("--data", required=True, type=Path, help="training data (JSONL)")
        parser.add_argument("--out", required=True, type=Path, help="output directory")
        parser.add_argument("--policy", type=Path, help="bound hyperparameters by this policy's retraining section")
        parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                            help="hyperparameter (repeatable), e.g. --param rank=8")

    def run(self, args: argparse.Namespace, session: Any) -> int:
        from gatekeeper.types import ModelSpec, PluginError, UsageError

        tuner_cls = session.registries["tuners"].get(args.tuner, field="--tuner")
        bounds = None
        if args.policy:
            from gatekeeper.policy import load_policy

            policy = load_policy(args.policy)
            bounds = policy.retraining.hyperparameters.model_dump(exclude_none=True)
        if not args.data.is_file():
            raise UsageError("training data not found", file=str(args.data), field="--data")
        from gatekeeper.curation import dataset_provenance, merge_dataset_provenance

        data_card = dataset_provenance(args.data)  # built from signals: its manifest vouches for it
        try:
            provenance = tuner_cls().tune(
                ModelSpec.parse(args.base), args.data, args.out, parse_params(args.param),
                session.config, bounds,
            )
        except (UsageError, PluginError):
            raise
        except Exception as exc:
            plugin = session.registries["tuners"].entry(args.tuner).plugin
            raise PluginError(plugin, f"tuner {args.tuner!r} failed: {type(exc).__name__}: {exc}") from None
        provenance = merge_dataset_provenance(provenance, data_card, args.out)
        from gatekeeper.audit import AuditLog
        from gatekeeper.types import stable_hash

        AuditLog(session.config.path(session.config.audit_log)).append(
            "tune", subject=str(args.out),
            refs={"provenance": stable_hash(provenance),
                  **({"data": provenance["data"]["sha256"]} if provenance.get("data", {}).get("sha256") else {})},
            data={"tuner": args.tuner, "base": args.base, "out": str(args.out)},
        )
        session.echo(f"tuned {args.tuner} adapter written to {args.out}")
        session.echo(json.dumps({k: provenance.get(k) for k in ("modification", "hyperparameters", "data")},
                                indent=1, default=str))
        return 0


@hookimpl
def gatekeeper_register_commands(register: Any) -> None:
    register(RunCommand)
    register(PluginsCommand)
    register(TuneCommand)
