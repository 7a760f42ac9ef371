"""``gatekeeper synth``: generate evaluation cases and training data from seed rows, personas
and a coverage plan, with quality and privacy filters and a coverage report (docs/synthetic.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.kinds import Command, Register, Session


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _schemas(items: list[str], kinds: list[str]) -> dict[str, Path]:
    """``--schema FILE`` (one kind) or ``--schema KIND=FILE`` (repeatable)."""
    from gatekeeper.types import UsageError

    out: dict[str, Path] = {}
    for item in items:
        kind, sep, path = item.partition("=")
        if not sep:
            if len(kinds) != 1:
                raise UsageError(f"--schema {item!r}: with several kinds, say which: --schema KIND=FILE",
                                 field="--schema")
            kind, path = kinds[0], item
        out[kind] = Path(path)
    return out


class SynthCommand(Command):
    name = "synth"
    help = "generate evaluation cases and training data from seeds, personas and a coverage plan"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--seeds", required=True, type=Path, help="seed rows: a suite (.yaml) or a JSONL file")
        parser.add_argument("--personas", required=True, type=Path,
                            help="personas YAML (id, role, goal, expertise, tone, locale, constraints)")
        parser.add_argument("--plan", required=True, type=Path,
                            help="coverage plan YAML: taxonomy cells (topic, scenario) with target counts")
        parser.add_argument("--generator", required=True, metavar="MODEL", help="the model that writes rows")
        parser.add_argument("--out", required=True, type=Path, help="output directory")
        parser.add_argument("--name", help="suite name (default: the output directory's name)")
        parser.add_argument("--kind", action="append", choices=("cases", "sft", "preference"),
                            help="what to generate (repeatable; default cases)")
        parser.add_argument("--template", type=Path, help="generator prompt: a jinja2 file or a .prompty file")
        parser.add_argument("--schema", action="append", default=[], metavar="[KIND=]FILE",
                            help="JSON Schema of a generated row (default: per kind); KIND= when several kinds")
        parser.add_argument("--json-mode", default="json_schema", choices=("json_schema", "json_object", "off"),
                            help="structured output asked of the provider (replies are validated in every mode)")
        parser.add_argument("--repair", default="model", choices=("model", "extract"),
                            help="an invalid reply: one repair turn through the model (default), or only the "
                            "deterministic extraction of the JSON object in it")
        parser.add_argument("--temperature", type=float, default=0.8)
        parser.add_argument("--seed", type=int, default=0, help="sampling seed")
        parser.add_argument("--max-tokens", type=int, default=400)
        parser.add_argument("--turns", type=int, default=0,
                            help="multi-turn: the persona simulator talks with --candidate for N turns")
        parser.add_argument("--candidate", metavar="MODEL", help="the model the simulated user talks to (--turns)")
        parser.add_argument("--dedup", default="auto", choices=("auto", "minhash", "embedding", "exact"),
                            help="near-duplicate method (auto: minhash when datasketch is installed)")
        parser.add_argument("--near-duplicate-threshold", type=_share, default=0.8,
                            help="Jaccard (minhash) or cosine (embedding) at or above which a row is a near-duplicate")
        parser.add_argument("--pii", default="scrub", choices=("scrub", "drop", "off"),
                            help="PII in generated rows: anonymize (default), drop the row, or do not check")
        parser.add_argument("--pii-detector", default="auto", help="auto, patterns or presidio")
        parser.add_argument("--max-ngram-overlap", type=_share, default=0.5,
                            help="memorization: a row above this character 5-gram Jaccard with a seed is dropped")
        parser.add_argument("--max-embedding-similarity", type=_share, default=0.95,
                            help="memorization: a row above this MiniLM cosine with a seed is dropped")
        parser.add_argument("--no-embedding-memorization", action="store_true",
                            help="check memorization on n-grams only")
        parser.add_argument("--diversity", action=argparse.BooleanOptionalAction, default=None,
                            help="embedding spread vs the seeds (default: when the MiniLM model is installed)")
        parser.add_argument("--judge-filter", metavar="CRITERIA",
                            help="keep only rows a rubric judge scores at or above --judge-threshold on CRITERIA")
        parser.add_argument("--judge", metavar="MODEL", help="the judge model (default: judge in gatekeeper.yaml)")
        parser.add_argument("--judge-threshold", type=_share, default=0.5)
        parser.add_argument("--include-seeds", action="store_true",
                            help="also write the seed rows (origin: real) into the suite / SFT file")
        parser.add_argument("--inherit", action="append", metavar="FIELD",
                            help="seed fields a generated row copies (repeatable; default every field it does "
                            "not generate)")
        parser.add_argument("--source-id", default="synthetic", help="data source id written on training rows")
        parser.add_argument("--policy", type=Path,
                            help="check the result against this policy's data_management (privacy, synthetic share)")
        parser.add_argument("--allow-short", action="store_true",
                            help="exit 0 even when a cell has fewer rows than its target")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def run(self, args: argparse.Namespace, session: Session) -> int:
        from gatekeeper.synth.generate import Sampling
        from gatekeeper.synth.pipeline import SynthOptions, synthesize
        from gatekeeper.synth.policy_check import policy_deviations

        name = args.name or args.out.resolve().name
        kinds = list(dict.fromkeys(args.kind or ["cases"]))
        options = SynthOptions(
            seeds=args.seeds, personas=args.personas, plan=args.plan, generator=args.generator, out=args.out,
            name=name, kinds=kinds, template=args.template,
            schemas=_schemas(args.schema, kinds), sampling=Sampling(args.max_tokens, args.temperature, args.seed),
            repair=args.repair, json_mode=args.json_mode, dedup=args.dedup,
            near_duplicate_threshold=args.near_duplicate_threshold, pii=args.pii, pii_detector=args.pii_detector,
            max_ngram_overlap=args.max_ngram_overlap,
            max_embedding_similarity=None if args.no_embedding_memorization else args.max_embedding_similarity,
            diversity=args.diversity, judge_criteria=args.judge_filter, judge=args.judge,
            judge_threshold=args.judge_threshold, turns=args.turns, candidate=args.candidate,
            include_seeds=args.include_seeds, inherit=args.inherit, allow_short=args.allow_short,
            source_id=args.source_id,
        )
        deviations = policy_deviations(args.policy, None) if args.policy else []  # a bad policy fails first
        result = synthesize(session, options)
        if args.policy:
            deviations = policy_deviations(args.policy, result)
        _audit(session, result)
        if args.json:
            session.echo(json.dumps({**result.report, "policy_deviations": deviations}, indent=1, default=str))
        else:
            _print(session, result, deviations)
        if deviations:
            return 1
        return 1 if result.short and not args.allow_short else 0


def _print(session: Any, result: Any, deviations: list[str]) -> None:
    for kind, section in result.report["kinds"].items():
        cov = section["coverage"]
        dropped = ", ".join(f"{k} {v}" for k, v in cov["dropped"].items()) or "none"
        session.echo(f"{kind}: {cov['kept']} of {cov['target']} rows kept; dropped: {dropped}")
        for cell in cov["cells"]:
            if cell["shortfall"]:
                session.echo(f"  SHORT {cell['cell']}: {cell['kept']} of {cell['target']} "
                             f"(short by {cell['shortfall']})")
    for name, entry in result.files.items():
        session.echo(f"  wrote {result.options.out / name} ({entry['rows']} rows)")
    session.echo(f"  report: {result.options.out / 'synth-report.md'}")
    for d in deviations:
        session.echo(f"  POLICY {d}")
    if result.short and not result.options.allow_short:
        session.echo("the data set is short of its plan (see the cells above); rerun with more oversample, "
                     "fix the causes in the report, or pass --allow-short")


def _audit(session: Any, result: Any) -> None:
    from gatekeeper.gate.audit import AuditLog

    AuditLog(session.config.path(session.config.audit_log)).append(
        "synth", subject=str(result.options.out),
        refs={"manifest": result.report["manifest"]["sha256"],
              **{f"file:{n}": e["sha256"] for n, e in result.files.items()}},
        data={"name": result.options.name, "generator": result.manifest["generator"]["spec"],
              "complete": result.manifest["complete"]},
    )


@hookimpl
def gatekeeper_register_commands(register: Register[Command]) -> None:
    register(SynthCommand)
