"""``gatekeeper check`` (the gate) and ``gatekeeper status`` (a decision after approvals)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.builtin.commands.run import add_selection_arguments, print_usage
from gatekeeper.kinds import Command, Register, Session
from gatekeeper.types import UsageError


class CheckCommand(Command):
    name = "check"
    help = "run the policy's suites on candidate and baseline, compare, decide, record"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        add_selection_arguments(parser)
        parser.add_argument("--candidate", help="candidate model spec (default: config 'candidate')")
        parser.add_argument("--baseline", help="baseline model spec (default: config 'baseline')")
        parser.add_argument("--policy", type=Path, help="PCCP policy YAML (default: config 'policy')")
        parser.add_argument("--out", type=Path, help="output directory (default: config 'out')")
        parser.add_argument("--accept-policy-change", metavar="REASON",
                            help="use a policy whose content changed under a version already used (recorded "
                            "with REASON in the audit trail); better: give the plan a new version")
        parser.add_argument("--provenance", type=Path,
                            help="the candidate's provenance.json (default: next to its adapter/recording)")
        parser.add_argument("--format", action="append", dest="formats", help="report format (repeatable)")
        parser.add_argument("--confirm-load-rate", action="store_true",
                            help="let the policy's load suites send more than the configured load.max_rate / "
                            "load.max_concurrency (docs/load.md)")
        parser.epilog = (
            "exit codes: 0 PROMOTE, 1 REJECT, 2 HOLD (needs signed approval), 3 INCONCLUSIVE, "
            "4 usage or configuration error, 5 harness error"
        )

    def run(self, args: argparse.Namespace, session: Session) -> int:
        from gatekeeper.engine.session import few_collections
        from gatekeeper.gate.check import run_check
        from gatekeeper.gate.decision import EXIT_CODES

        session.use_engine(args.engine)
        with few_collections():
            record, written = run_check(
                session, paths=args.paths, keyword=args.keyword, marker=args.marker,
                candidate=args.candidate, baseline=args.baseline, policy_path=args.policy, out=args.out,
                provenance=args.provenance, formats=args.formats, progress=not args.no_progress,
                policy_change=args.accept_policy_change, confirm_load_rate=args.confirm_load_rate,
            )
        print_decision(session, record)
        session.echo("wrote " + ", ".join(str(p) for p in written))
        return int(EXIT_CODES[record["decision"]])


def print_decision(session: Any, record: dict[str, Any]) -> None:
    session.echo(f"decision: {record['decision']}  (policy {record['policy']['id']} "
                 f"v{record['policy']['version']} sha256 {str(record['policy'].get('sha256', ''))[:12]}, "
                 f"run {record['run_id']})")
    if (record.get("scope") or {}).get("summary"):
        session.echo(f"  {record['scope']['summary']}")
    for reason in record["reasons"]:
        session.echo(f"  - [{reason['clause']}] {reason['text']}")
    session.echo(f"  {'metric':<28} {'n':>5} {'baseline':>9} {'candidate':>9} {'delta':>8}  verdict")
    for m in record["metrics"]:
        name = m["name"] + (f"[{m['slice']['field']}={m['slice']['value']}]" if m["slice"] else "")
        f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
        d = "-" if m["delta"] is None else f"{m['delta']:+.3f}"
        session.echo(f"  {name:<28} {m['n']:>5} {f(m['baseline']):>9} {f(m['candidate']):>9} {d:>8}  {m['verdict']}")
    for g in (record.get("slo") or {}).get("rows", []):
        session.echo(f"  slo {g['name']:<24} {g['n']:>5} {g['limit']}: {g['verdict']}")
    st = record["stats"]
    session.echo(f"model calls: {st['model_calls']} (cache hits: {st['cache_hits']}) in {st['wall_s']:.1f} s")
    print_usage(session, st)


class StatusCommand(Command):
    name = "status"
    help = "show a check's decision, counting signed approvals; exit 0 when it may be promoted"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", type=Path, help="the check's output directory")

    def run(self, args: argparse.Namespace, session: Session) -> int:
        from gatekeeper.engine.session import read_record
        from gatekeeper.gate.approvals import check_approvals, promotable, required_from_record
        from gatekeeper.gate.decision import EXIT_CODES
        from gatekeeper.gate.integrity import require_intact

        record = read_record(args.run)
        if record.get("kind") != "check":
            raise UsageError("not a decision record (run 'gatekeeper check')", file=str(args.run))
        require_intact(record, Path(session.config.path(session.config.audit_log)), where=args.run)
        required = required_from_record(record)
        ok, why = promotable(args.run, required)
        session.echo(f"decision: {record['decision']} — {why}")
        if required:
            status = check_approvals(args.run, required)
            for approval in status.valid:
                session.echo(f"  signed: {approval['signer']} as {approval['role']} ({approval['meaning']}) "
                             f"at {approval['time']}")
            for problem in status.problems:
                session.echo(f"  refused: {problem}")
        if ok:
            session.echo("promotable: yes")
            return 0
        return int(EXIT_CODES.get(record["decision"], 5))


@hookimpl
def gatekeeper_register_commands(register: Register[Command]) -> None:
    register(CheckCommand)
    register(StatusCommand)
