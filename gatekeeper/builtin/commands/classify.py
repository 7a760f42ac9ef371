"""``gatekeeper classify``: label conversations at scale and compare model versions
(docs/spark.md). The pipeline lives in :mod:`gatekeeper.signals.classify`; this module
parses flags, prints, and writes the report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.kinds import Command, Register, Session

EPILOG = ("exit codes: 0 labelled (and every policy metric passed), 1 agreement below the floor "
          "(nothing labelled) or a policy metric failed, 4 usage error (bad spec, missing column, label "
          "outside the taxonomy), 5 harness error (judge down, engine or executor failure, model package missing)")


def _versions(value: str | None) -> tuple[str, str] | None:
    from gatekeeper.types import UsageError

    if value is None:
        return None
    base, sep, cand = value.partition(",")
    if not sep or not base.strip() or not cand.strip():
        raise UsageError(f"--compare {value!r} is not BASELINE,CANDIDATE (two model versions)", field="--compare")
    return base.strip(), cand.strip()


class ClassifyCommand(Command):
    name = "classify"
    help = "label every conversation with an embedding classifier trained on LLM labels; compare versions"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        from gatekeeper.builtin.commands.signals import _add_filters

        actions = parser.add_subparsers(dest="classify_action", metavar="ACTION", required=True)
        label = actions.add_parser(
            "label", help="sample → LLM labels → embedding classifier (agreement) → label every row",
            description="Label a stratified sample with the LLM classifier, train a calibrated logistic "
            "regression on MiniLM embeddings, check its agreement, then label every row.", epilog=EPILOG)
        label.add_argument("location", help="signals (see `gatekeeper signals summarize`), e.g. data/*.parquet")
        label.add_argument("--spec", required=True, type=Path, help="the classify specification (YAML)")
        label.add_argument("--out", required=True,
                           help="the labelled table: FILE.parquet (one machine), a directory (Spark) or delta:PATH")
        label.add_argument("--engine", metavar="NAME", help="label on an engine plugin, e.g. spark (default: Polars)")
        label.add_argument("--report", type=Path, help="report JSON (default: OUT.classify.json beside --out)")
        _add_compare(label)
        _add_filters(label)

        compare = actions.add_parser(
            "compare", help="label distributions per version and the A/B comparison of a labelled table",
            epilog=EPILOG)
        compare.add_argument("location", help="a labelled table (Parquet file or directory, delta:PATH)")
        compare.add_argument("--spec", required=True, type=Path, help="the classify specification (its taxonomy)")
        compare.add_argument("--report", type=Path, help="also write the report JSON here")
        compare.add_argument("--json", action="store_true", help="print the report as JSON")
        _add_compare(compare)

    def run(self, args: argparse.Namespace, session: Session) -> int:
        from gatekeeper.files import write_atomic
        from gatekeeper.signals.classify.pipeline import classify, compare_labelled

        versions = _versions(args.compare)
        if args.classify_action == "compare":
            report, code = compare_labelled(session, args.location, args.spec, versions, args.policy)
        else:
            from gatekeeper.builtin.commands.signals import _filters

            session.use_engine(args.engine)
            report, code = classify(session, args.location, args.spec, out=args.out, filters=_filters(args),
                                    engine=session.engine, versions=versions, policy=args.policy)
            if args.report is None:
                args.report = Path(f"{args.out.removeprefix('delta:').rstrip('/')}.classify.json")
        if args.report is not None:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(args.report, json.dumps(report, indent=2, default=str) + "\n")
        if getattr(args, "json", False):
            session.echo(json.dumps(report, indent=2, default=str))
        else:
            for line in format_report(report):
                session.echo(line)
            if args.report is not None:
                session.echo(f"report: {args.report}")
        return code


def _add_compare(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compare", metavar="BASELINE,CANDIDATE",
                        help="compare the label distributions of two model versions (A/B)")
    parser.add_argument("--policy", type=Path,
                        help="gate the comparison on the policy's `measure: distribution` metrics (needs --compare)")


def _pct(share: float | None, low: float | None = None, high: float | None = None) -> str:
    if share is None:
        return "-"
    text = f"{share * 100:5.1f}%"
    return text + (f" [{low * 100:4.1f}, {high * 100:4.1f}]" if low is not None and high is not None else "")


def format_report(report: dict[str, Any]) -> list[str]:
    """The report as text: agreement, refusal or labelled rows, distributions, comparison."""
    lines: list[str] = []
    if "classifier" in report:
        clf, sample = report["classifier"], report["sample"]
        lines.append(f"classifier {clf['version']} ({clf['embedding']['name']} + logistic regression), "
                     f"trained on {clf['trained_on']} of {sample['size']} LLM-labelled rows "
                     f"({sample['labelled']} labelled by the LLM)")
        for task, scores in report["agreement"].items():
            lines.append(f"  agreement with the LLM on {scores['n']} held-out rows, task {task}: accuracy "
                         f"{scores['accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f}, kappa {scores['kappa']:.3f}")
    if report.get("refused"):
        lines.append(f"REFUSED: {report['reason']}")
        return lines
    if "labelled" in report:
        done = report["labelled"]
        lines.append(f"labelled {done['rows']} rows → {done['out']} ({done['format']})")
    for task, per_version in report.get("distributions", {}).items():
        lines.append(f"task {task}: label shares per model version [95% Wilson interval]")
        for version, dist in sorted(per_version.items()):
            shares = ", ".join(f"{lab} {_pct(d['share'], d['low'], d['high'])}" for lab, d in dist["labels"].items())
            lines.append(f"  version {version} (n={dist['n']}): {shares}")
    comparison = report.get("comparison")
    if comparison:
        for task, result in comparison["tasks"].items():
            chi, jsd = result["chi_square"], result["jensen_shannon"]
            lines.append(f"task {task}: version {comparison['candidate_version']} vs {comparison['baseline_version']}: "
                         f"chi-square {chi['statistic']:.2f} (dof {chi['dof']}, p = {chi['p_value']:.3g}), "
                         f"Jensen-Shannon distance {jsd['distance']:.4f} [{jsd['low']:.4f}, {jsd['high']:.4f}]")
            for label, d in result["labels"].items():
                lines.append(f"  {label:<20} {d['delta'] * 100:+6.2f} points [{d['low'] * 100:+.2f}, "
                             f"{d['high'] * 100:+.2f}]")
    for row in report.get("verdicts", []):
        lines.append(f"{row['verdict']}: {row['reason']}")
    return lines


@hookimpl
def gatekeeper_register_commands(register: Register[Command]) -> None:
    register(ClassifyCommand)
