"""``gatekeeper signals``: summarize production signals, build a regression suite and
training data from them (docs/signals.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.kinds import Command, Register, Session


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="TIME", help="only signals at or after TIME (ISO 8601, UTC if no offset)")
    parser.add_argument("--until", metavar="TIME", help="only signals before TIME")
    parser.add_argument("--model", help="only signals of this model name")
    parser.add_argument("--model-version", help="only signals of this model version")
    parser.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE[,VALUE]",
                        help="only signals whose attribute FIELD has one of the values (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_curation(parser: argparse.ArgumentParser) -> None:
    from gatekeeper.signals import DEFAULT_EVAL_FRACTION, DEFAULT_SALT, DEFAULT_SOURCE_ID

    parser.add_argument("--eval-fraction", type=float, default=DEFAULT_EVAL_FRACTION,
                        help="share of prompts (by content hash) reserved for evaluation "
                        f"(default {DEFAULT_EVAL_FRACTION})")
    parser.add_argument("--salt", default=DEFAULT_SALT, help="salt of the sequestration split (keep it fixed)")
    parser.add_argument("--pii-allow", action="append", default=[], metavar="VALUE",
                        help="a value the PII scrubber keeps, e.g. the company's support phone (repeatable)")
    parser.add_argument("--pii-allow-context", action="store_true",
                        help="keep PII-like values that also appear in the retrieval context (knowledge-base text)")
    parser.add_argument("--pii-detector", default="auto", metavar="NAME",
                        help="the PII detector: presidio (names, addresses, organisations; plugin "
                        "llm-gatekeeper-presidio), patterns (built in), or auto: presidio when installed "
                        "(default auto; the manifest names the one that ran)")
    parser.add_argument("--pii-types", default=None, metavar="TYPE,...",
                        help="the PII types to find and replace (presidio detector; default: every personal "
                        "type, i.e. all but organization and location)")
    parser.add_argument("--ner-model", default=None, metavar="NAME_OR_DIR",
                        help="the PII detector's NER model: an installed spaCy package, a spaCy pipeline "
                        "directory or a transformers token-classification directory (docs/privacy.md)")
    parser.add_argument("--exclude-retention", action="append", default=[], metavar="CLASS",
                        help="leave out signals of this retention class, e.g. legal-hold (repeatable)")
    parser.add_argument("--source-id", default=DEFAULT_SOURCE_ID,
                        help=f"the data source id recorded in the provenance (default {DEFAULT_SOURCE_ID})")


def _where(items: list[str]) -> dict[str, list[str]]:
    from gatekeeper.types import UsageError

    where: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--where {item!r} is not FIELD=VALUE", field="--where")
        where.setdefault(key.strip(), []).extend(v.strip() for v in value.split(","))
    return where


def _filters(args: argparse.Namespace) -> Any:
    from gatekeeper.signals.records import SignalFilter

    return SignalFilter.make(since=args.since, until=args.until, model=args.model,
                             model_version=args.model_version, where=_where(args.where))


def _filter_record(args: argparse.Namespace) -> dict[str, Any]:
    return {"since": args.since, "until": args.until, "model": args.model, "model_version": args.model_version,
            "where": _where(args.where)}


def _options(args: argparse.Namespace, session: Session, holdout: frozenset[str] = frozenset(),
             min_rating: float | None = None) -> Any:
    from gatekeeper.signals.curation import CurationOptions, Sequestration
    from gatekeeper.signals.privacy import pii_detector

    options = {k: v for k, v in (("ner_model", args.ner_model), ("entities", args.pii_types)) if v}
    detector = pii_detector(session.registries, args.pii_detector, options=options)
    return CurationOptions(
        sequestration=Sequestration(args.eval_fraction, args.salt), pii_allow=tuple(args.pii_allow),
        pii_allow_context=args.pii_allow_context, exclude_retention=tuple(args.exclude_retention),
        holdout_hashes=holdout, min_rating=min_rating, source_id=args.source_id, pii_detector=detector,
    )


def _signals(locations: list[str], session: Any, filters: Any) -> Any:
    from gatekeeper.signals.records import iter_signals

    for location in locations:
        yield from iter_signals(location, session.registries, filters)


def _echo_counts(session: Any, manifest: dict[str, Any]) -> None:
    counts = manifest["counts"]
    session.echo("  " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()))
    pii = manifest["pii"]
    removed = ", ".join(f"{k} {v}" for k, v in pii["by_type"].items() if v) or "none found"
    session.echo(f"  PII removed: {pii['total']} ({removed}) in {pii['signals_changed']} signals "
                 f"(detector: {pii['detector']['name']})")


def _audit(session: Any, action: str, subject: str, refs: dict[str, str], data: dict[str, Any]) -> None:
    from gatekeeper.gate.audit import AuditLog

    AuditLog(session.config.path(session.config.audit_log)).append(action, subject=subject, refs=refs, data=data)


class SignalsCommand(Command):
    name = "signals"
    help = "production signals: summarize feedback, build a regression suite or training data"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="signals_action", metavar="ACTION", required=True)
        summarize = actions.add_parser(
            "summarize", help="acceptance, edit and rejection rates, ratings and flags per model version and slice",
            description="Rates with Wilson confidence intervals, per model version (and slice with --by).")
        summarize.add_argument("location", help="signals: FILE.jsonl|.csv|.parquet, a directory or glob, "
                               "sqlite:///DB?table=T, postgresql://...?table=T, otlp:TRACES.json")
        _add_filters(summarize)
        summarize.add_argument("--by", action="append", default=[], metavar="FIELD",
                               help="also per value of this attribute, e.g. topic (repeatable or comma-separated)")
        summarize.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
        summarize.add_argument("--baseline-version", metavar="VERSION",
                               help="also show each other version's difference from this one (Newcombe interval)")
        summarize.add_argument("--engine", metavar="NAME",
                               help="count on an engine plugin, e.g. spark (docs/spark.md); default: Polars")

        suite = actions.add_parser(
            "build-suite", help="regression cases from corrected and rejected answers (the edit is expected)",
            description="Write a gatekeeper suite (YAML + dataset JSONL + manifest) from signals whose users "
            "consented to evaluation use and whose prompt falls on the evaluation side of the split.")
        suite.add_argument("locations", nargs="+", metavar="LOCATION", help="signal locations (see summarize)")
        suite.add_argument("--out", required=True, type=Path,
                           help="the suite file to write, e.g. suites/regression.yaml")
        suite.add_argument("--name", help="suite name (default: the file's stem)")
        suite.add_argument("--slice", action="append", dest="slices", metavar="FIELD",
                           help="slice field of the cases (repeatable; default: topic)")
        suite.add_argument("--evaluator", action="append", dest="evaluators", metavar="NAME",
                           help="evaluator of the suite (repeatable; default: rouge_l and token_f1)")
        suite.add_argument("--include-uncorrected", action="store_true",
                           help="also rejected answers without a correction (scored by not repeating them)")
        _add_filters(suite)
        _add_curation(suite)

        dataset = actions.add_parser(
            "build-dataset", help="SFT examples and preference pairs for gatekeeper tune",
            description="Write DIR/sft.jsonl (lora tuner), DIR/preference.jsonl (dpo tuner) and "
            "DIR/manifest.json from signals whose users consented to training, minus every prompt on "
            "the evaluation side of the split and every prompt of the --holdout suites.")
        dataset.add_argument("locations", nargs="+", metavar="LOCATION", help="signal locations (see summarize)")
        dataset.add_argument("--out", required=True, type=Path, help="output directory")
        dataset.add_argument("--holdout", action="append", default=[], metavar="SUITE",
                             help="a suite file or directory whose prompts never enter training (repeatable)")
        dataset.add_argument("--min-rating", type=float, help="leave out answers rated below this (1..5)")
        _add_filters(dataset)
        _add_curation(dataset)
        parser.epilog = "exit codes: 0 done, 4 usage error or bad signal row (file:line: field), 5 internal error"

    def run(self, args: argparse.Namespace, session: Session) -> int:
        handlers = {"summarize": self._summarize, "build-suite": self._build_suite,
                    "build-dataset": self._build_dataset}
        return handlers[args.signals_action](args, session)

    # ------------------------------------------------------------------ summarize

    def _summarize(self, args: argparse.Namespace, session: Session) -> int:
        from gatekeeper.signals.summary import format_table, summarize
        from gatekeeper.types import UsageError

        if not 0 < args.level < 1:
            raise UsageError("the confidence level must be between 0 and 1", field="--level")
        by = [f.strip() for item in args.by for f in item.split(",") if f.strip()]
        session.use_engine(args.engine)
        summary = summarize(args.location, session.registries, _filters(args), by=by, level=args.level,
                            baseline_version=args.baseline_version, engine=session.engine)
        if args.json:
            session.echo(json.dumps(summary, indent=2, default=str))
        else:
            for line in format_table(summary):
                session.echo(line)
        return 0

    # ------------------------------------------------------------------ build-suite

    def _build_suite(self, args: argparse.Namespace, session: Session) -> int:
        from gatekeeper.signals.curation import build_suite, file_sha256
        from gatekeeper.types import UsageError

        out: Path = args.out
        if out.suffix not in (".yaml", ".yml"):
            raise UsageError("the suite file must end in .yaml or .yml", file=str(out), field="--out")
        name = args.name or out.stem
        built = build_suite(
            _signals(args.locations, session, _filters(args)), out, name=name, sources=args.locations,
            filters=_filter_record(args), options=_options(args, session), slices=args.slices or ["topic"],
            evaluators=args.evaluators, include_uncorrected=args.include_uncorrected,
        )
        manifest = built.manifest
        _audit(session, "signals.build-suite", name,
               {"suite": manifest["suite_file"]["sha256"], "dataset": manifest["dataset_file"]["sha256"],
                "manifest": file_sha256(out.with_name(f"{out.stem}.manifest.json"))},
               {"sources": list(args.locations), "cases": manifest["dataset_file"]["rows"],
                "pii_removed": manifest["pii"]["total"]})
        if args.json:
            session.echo(json.dumps(manifest, indent=2, default=str))
            return 0
        session.echo(f"wrote suite {name!r}: {built.suite_path} ({manifest['dataset_file']['rows']} cases in "
                     f"{built.dataset_path})")
        _echo_counts(session, manifest)
        session.echo(f"  test set sha256 {manifest['dataset_file']['sha256']} (pin it under "
                     "data_management.sequestered_test_sets to count its reuse)")
        return 0

    # ------------------------------------------------------------------ build-dataset

    def _build_dataset(self, args: argparse.Namespace, session: Session) -> int:
        from gatekeeper.signals.curation import MANIFEST_FILE, build_dataset, file_sha256, holdout_prompt_hashes

        holdout: frozenset[str] = frozenset()
        if args.holdout:
            holdout = holdout_prompt_hashes(session.collect(args.holdout))
        built = build_dataset(
            _signals(args.locations, session, _filters(args)), args.out, sources=args.locations,
            filters=_filter_record(args), options=_options(args, session, holdout, args.min_rating),
        )
        manifest = built.manifest
        _audit(session, "signals.build-dataset", str(args.out),
               {"manifest": file_sha256(args.out / MANIFEST_FILE),
                **{name.split(".")[0]: f["sha256"] for name, f in manifest["files"].items()}},
               {"sources": list(args.locations), "pii_removed": manifest["pii"]["total"],
                **{name.split(".")[0]: f["rows"] for name, f in manifest["files"].items()}})
        if args.json:
            session.echo(json.dumps(manifest, indent=2, default=str))
            return 0
        files = manifest["files"]
        session.echo(f"wrote {args.out}: {files['sft.jsonl']['rows']} SFT examples (sft.jsonl, for the lora tuner), "
                     f"{files['preference.jsonl']['rows']} preference pairs (preference.jsonl, for dpo)")
        _echo_counts(session, manifest)
        return 0


@hookimpl
def gatekeeper_register_commands(register: Register[Command]) -> None:
    register(SignalsCommand)
