"""``gatekeeper check`` (the gate) and ``gatekeeper status`` (a decision after approvals)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.builtin.commands import add_selection_arguments, print_usage
from gatekeeper.kinds import Command, Model
from gatekeeper.types import ModelSpec, UsageError

DECISION_SCHEMA = "gatekeeper.decision/1"


def find_provenance(spec: str, explicit: Path | None, session: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The candidate's declared change: --provenance, ?provenance=, the adapter's or recording's."""
    parsed = ModelSpec.parse(spec)
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(explicit)
    if "provenance" in parsed.params:
        candidates.append(session.config.path(parsed.params["provenance"]))
    if "adapter" in parsed.params:
        candidates.append(session.config.path(parsed.params["adapter"]) / "provenance.json")
    if parsed.provider == "replay":
        rec = session.config.path(parsed.name)
        candidates.append(rec.with_name(rec.stem + ".provenance.json"))
    for i, path in enumerate(candidates):
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8")), str(path)
            except json.JSONDecodeError as exc:
                raise UsageError(f"invalid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
        if i == 0 and explicit is not None:
            raise UsageError("provenance file not found", file=str(path), field="--provenance")
    return None, None


def prior_uses(suites: list[Any], audit: Any) -> dict[str, int]:
    """How many earlier checks evaluated each suite's exact content (from the audit trail)."""
    history = audit.records() if audit.path.exists() else []
    return {
        s.name: sum(1 for r in history if r["action"] == "check" and r["refs"].get(f"suite:{s.name}") == s.hash)
        for s in suites
    }


class CheckCommand(Command):
    name = "check"
    help = "run the policy's suites on candidate and baseline, compare, decide, record"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        add_selection_arguments(parser)
        parser.add_argument("--candidate", help="candidate model spec (default: config 'candidate')")
        parser.add_argument("--baseline", help="baseline model spec (default: config 'baseline')")
        parser.add_argument("--policy", type=Path, help="PCCP policy YAML (default: config 'policy')")
        parser.add_argument("--out", type=Path, help="output directory (default: config 'out')")
        parser.add_argument("--provenance", type=Path,
                            help="the candidate's provenance.json (default: next to its adapter/recording)")
        parser.add_argument("--format", action="append", dest="formats", help="report format (repeatable)")
        parser.epilog = (
            "exit codes: 0 PROMOTE, 1 REJECT, 2 HOLD (needs signed approval), 3 INCONCLUSIVE, "
            "4 usage or configuration error, 5 harness error"
        )

    def run(self, args: argparse.Namespace, session: Any) -> int:
        from gatekeeper.decision import EXIT_CODES

        record, written = run_check(
            session, paths=args.paths, keyword=args.keyword, marker=args.marker,
            candidate=args.candidate, baseline=args.baseline, policy_path=args.policy, out=args.out,
            provenance=args.provenance, formats=args.formats, progress=not args.no_progress,
        )
        print_decision(session, record)
        session.echo("wrote " + ", ".join(str(p) for p in written))
        return int(EXIT_CODES[record["decision"]])


def run_check(
    session: Any, *, paths: list[str] | None = None, keyword: str | None = None, marker: str | None = None,
    candidate: str | dict[str, Any] | None = None, baseline: str | dict[str, Any] | None = None,
    policy_path: Path | None = None,
    out: Path | None = None, provenance: Path | None = None, formats: list[str] | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], list[Path]]:
    """The whole gate, shared by ``gatekeeper check`` and ``pytest --gatekeeper-check``.

    Collects, runs candidate and baseline, decides, writes the reports and the audit
    record; returns the decision record and the report files written. ``None`` arguments
    fall back to the configuration.
    """
    from gatekeeper.approvals import record_hash
    from gatekeeper.audit import AuditLog
    from gatekeeper.decision import EXIT_CODES, GateInputs, Reason, decide, evaluate_metrics
    from gatekeeper.policy import check_scope, check_sequestered, load_policy, required_approvals
    from gatekeeper.reports.context import policy_content, with_attestations
    from gatekeeper.results import identity_entry, new_run_id, run_record

    config = session.config
    candidate = candidate or config.candidate
    baseline = baseline or config.baseline
    policy_path = policy_path or (config.path(config.policy) if config.policy else None)
    for value, flag in ((candidate, "--candidate"), (baseline, "--baseline"), (policy_path, "--policy")):
        if not value:
            raise UsageError(f"missing {flag} (or set it in gatekeeper.yaml)", field=flag)
    assert policy_path is not None
    if not policy_path.is_file():
        raise UsageError("policy file not found", file=str(policy_path), field="--policy")

    collected = session.collect(paths, keyword=keyword, marker=marker)
    policy = load_policy(policy_path, suite_names=[s.name for s in collected])
    wanted = set(policy.performance_evaluation.suites)
    suites = [s for s in collected if s.name in wanted]
    audit = AuditLog(config.path(config.audit_log))
    reuse_counts = prior_uses(suites, audit)
    reuse_violations = [
        Reason(text.split(":", 1)[0], "DEVIATION", text)
        for text in check_sequestered(
            policy, {s.name: [s.hash, *s.datasets.values()] for s in suites}, reuse_counts
        )
    ]
    provenance_record, provenance_path = find_provenance(str(candidate), provenance, session)
    scope = check_scope(policy, provenance_record)

    models: dict[str, Model] = {
        "candidate": session.load_model(candidate), "baseline": session.load_model(baseline)
    }
    specs = {"candidate": str(candidate), "baseline": str(baseline)}
    run_id = new_run_id()
    results, stats = session.run(models, suites, run_id=run_id, specs=specs,
                                 progress=progress)
    record = run_record(
        run_id=run_id,
        models={k: identity_entry(specs[k], m.identity) for k, m in models.items()},
        suites=suites, results=results, stats=stats, versions=session.host.versions(),
        selection={"paths": paths, "k": keyword, "m": marker},
    )
    metrics = evaluate_metrics(policy, record["cases"], record["case_index"])
    error_rate = sum(1 for r in record["cases"] if r["error"]) / max(1, len(record["cases"]))
    approvals = required_approvals(policy, [scope.modification_id] if scope.modification_id else [])
    decision, reasons = decide(policy, metrics, GateInputs(
        scope=scope, reuse_violations=reuse_violations, generation_error_rate=error_rate,
        approvals_required=[f"{a.role} ({a.meaning})" for a in approvals],
    ))
    record.update({
        "schema": DECISION_SCHEMA,
        "kind": "check",
        "decision": decision,
        "exit_code": EXIT_CODES[decision],
        "reasons": [vars(r) for r in reasons],
        "metrics": metrics,
        "policy": {
            "id": policy.metadata.id, "title": policy.metadata.title,
            "version": policy.metadata.version, "path": str(policy_path), "sha256": policy.hash,
            "pccp": policy_content(policy),
        },
        "scope": {
            "modification": scope.modification_id, "deviations": scope.deviations,
            "provenance": provenance_record, "provenance_file": provenance_path,
        },
        "test_sets": {s.name: {"sha256": s.hash, "datasets": s.datasets,
                               "previous_uses": reuse_counts.get(s.name, 0)} for s in suites},
        "approvals": {"required": [
            {"role": a.role, "meaning": a.meaning, "public_keys": [str(p) for p in a.public_keys]}
            for a in approvals
        ]},
    })
    session.host.hook.gatekeeper_decision_made(record=record)
    out = out or config.path(config.out)
    refs = {
        "policy": policy.hash, "decision": record_hash(record),
        **{f"suite:{s.name}": s.hash for s in suites},
        **{f"dataset:{Path(p).name}": h for s in suites for p, h in s.datasets.items()},
        **{f"model:{k}": m.identity.digest for k, m in models.items()},
    }
    audit.append("check", subject=run_id, refs=refs, data={
        "decision": decision, "policy": policy.metadata.id, "candidate": specs["candidate"],
        "baseline": specs["baseline"], "out": str(out),
    })
    # After the audit record, so the reports can show it; approvals cannot exist yet.
    written = session.write_reports(with_attestations(record, run_dir=None, audit_log=audit.path), out, formats)
    return record, written


def print_decision(session: Any, record: dict[str, Any]) -> None:
    session.echo(f"decision: {record['decision']}  (policy {record['policy']['id']} "
                 f"v{record['policy']['version']}, run {record['run_id']})")
    for reason in record["reasons"]:
        session.echo(f"  - [{reason['clause']}] {reason['text']}")
    session.echo(f"  {'metric':<28} {'n':>5} {'baseline':>9} {'candidate':>9} {'delta':>8}  verdict")
    for m in record["metrics"]:
        name = m["name"] + (f"[{m['slice']['field']}={m['slice']['value']}]" if m["slice"] else "")
        f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
        d = "-" if m["delta"] is None else f"{m['delta']:+.3f}"
        session.echo(f"  {name:<28} {m['n']:>5} {f(m['baseline']):>9} {f(m['candidate']):>9} {d:>8}  {m['verdict']}")
    st = record["stats"]
    session.echo(f"model calls: {st['model_calls']} (cache hits: {st['cache_hits']}) in {st['wall_s']:.1f} s")
    print_usage(session, st)


class StatusCommand(Command):
    name = "status"
    help = "show a check's decision, counting signed approvals; exit 0 when it may be promoted"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", type=Path, help="the check's output directory")

    def run(self, args: argparse.Namespace, session: Any) -> int:
        from gatekeeper.approvals import RequiredApproval, check_approvals, promotable
        from gatekeeper.decision import EXIT_CODES
        from gatekeeper.session import read_record

        record = read_record(args.run)
        if record.get("kind") != "check":
            raise UsageError("not a decision record (run 'gatekeeper check')", file=str(args.run))
        required = [
            RequiredApproval(a["role"], a["meaning"], [Path(p) for p in a["public_keys"]])
            for a in record.get("approvals", {}).get("required", [])
        ]
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
def gatekeeper_register_commands(register: Any) -> None:
    register(CheckCommand)
    register(StatusCommand)
