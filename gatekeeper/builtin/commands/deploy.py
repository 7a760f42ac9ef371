"""Built-in deploy commands: ``promote``, ``rollback``, ``monitor`` and ``registry``.

They work on any deploy target (``--target``, default ``local``). The rules live here, the
storage in the target: ``promote`` refuses what the gate did not allow, checks the decision
record against the audit trail, registers the candidate with its provenance and moves it
through the policy's stages; ``monitor`` compares production signals of the new and the
previous version and rolls back when the policy's criteria trip; ``rollback`` restores the
previous version. Every change is recorded in the target's history and the audit trail.
docs/deploy.md describes them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper import hookimpl
from gatekeeper.deploy.promotion import (
    FULL_STAGE,
    PRODUCTION,
    PromotionRefused,
    audit_log,
    load_policy_of,
    model_and_alias,
    open_target,
    promote_run,
    rollback_alias,
    run_monitor,
)
from gatekeeper.kinds import Command, DeployTarget, Register, Session
from gatekeeper.types import UsageError

if TYPE_CHECKING:
    pass



# --------------------------------------------------------------------------- shared options


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="local", help="deploy target (default: local; see gatekeeper plugins)")
    parser.add_argument("--registry", metavar="LOCATION",
                        help="the target's location (local: a directory; default: config 'registry')")
    parser.add_argument("--model", help="registered model name (default: the policy's comparators.last_authorized)")












# --------------------------------------------------------------------------- promote




























class PromoteCommand(Command):
    name = "promote"
    help = "promote a checked run to the next stage of the policy's rollout (or --stage NAME)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", type=Path, help="the output directory of `gatekeeper check`")
        add_target_arguments(parser)
        parser.add_argument("--stage", help="the stage to move to (default: the next one)")
        parser.add_argument("--force", action="store_true",
                            help="skip the stage's monitoring minimum and the baseline check (needs --reason)")
        parser.add_argument("--reason", default="", help="why (recorded in the registry and the audit trail)")
        parser.epilog = (
            "exit codes: 0 promoted (or already at that stage), 1 the decision is REJECT, 2 HOLD without its "
            "signatures, 3 INCONCLUSIVE or the current stage's monitoring minimum not met, 4 refused: decision "
            "record changed or unknown to the audit trail, policy changed, another promotion won, bad input"
        )

    def run(self, args: argparse.Namespace, session: Session) -> int:
        if args.force and not args.reason:
            raise UsageError("--force needs --reason TEXT", field="--force")
        target = open_target(session, args.target, args.registry)
        try:
            p = promote_run(session, args.run, target=target, model=args.model, stage=args.stage,
                            force=args.force, reason=args.reason)
        except PromotionRefused as exc:
            session.echo(exc.message)
            return exc.exit_code
        what = "registered and promoted" if p.registered else "promoted"
        session.echo(f"{what}: {p.model} version {p.version} -> {p.alias} at stage {p.stage} "
                     f"({p.traffic:.0%} of traffic){'; skipped ' + ', '.join(p.skipped) if p.skipped else ''}")
        return 0


# --------------------------------------------------------------------------- rollback




class RollbackCommand(Command):
    name = "rollback"
    help = "restore an alias to the version it had before (or --to VERSION), recording why"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("alias", help="the alias to roll back: production, candidate, ...")
        add_target_arguments(parser)
        parser.add_argument("--to", metavar="VERSION", help="the version to restore (default: the previous one)")
        parser.add_argument("--reason", required=True, help="why (recorded in the registry and the audit trail)")
        parser.add_argument("--policy", type=Path, help="policy naming the model (default: config 'policy')")
        parser.epilog = "exit codes: 0 rolled back, 4 unknown model, alias or version, or nothing to roll back to"

    def run(self, args: argparse.Namespace, session: Session) -> int:
        target = open_target(session, args.target, args.registry)
        model, _ = model_and_alias(load_policy_of(session, args.policy) if not args.model else None, args.model)
        before = target.get_alias(model, args.alias)
        restored = rollback_alias(session, target, model, args.alias, to=args.to, reason=args.reason)
        now = f"version {restored}" if restored else "removed (its traffic returns to the other aliases)"
        session.echo(f"rolled back {model}@{args.alias}: version {before} -> {now}")
        return 0


# --------------------------------------------------------------------------- monitor










def print_monitor(session: Any, record: dict[str, Any]) -> None:
    sig = record["signals"]
    session.echo(f"monitor: {record['decision']}  ({record['model']} version {record['new_version']}"
                 f"{' @' + record['alias'] if record['alias'] else ''}"
                 f"{' stage ' + record['stage'] if record['stage'] else ''} vs version {record['previous_version']}; "
                 f"{sig['new']} vs {sig['previous']} signals over {sig['window_hours']:.1f} h)")
    excluded = sig.get("excluded") or {}
    if excluded.get("before_stage"):
        session.echo(f"  excluded {excluded['before_stage']} signal(s): {excluded['reason']}")
    for reason in record["reasons"]:
        session.echo(f"  - {reason}")
    session.echo(f"  {'metric':<14} {'n new':>6} {'n prev':>6} {'previous':>9} {'new':>7} {'delta':>7} "
                 f"{'interval':>17}  verdict")
    for m in record["metrics"]:
        f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
        s = lambda x: "-" if x is None else f"{x:+.3f}"  # noqa: E731
        session.echo(f"  {m['name']:<14} {m['n_new']:>6} {m['n_previous']:>6} {f(m['previous']):>9} "
                     f"{f(m['new']):>7} {s(m['delta']):>7} {s(m['ci_low']) + '..' + s(m['ci_high']):>17}  "
                     f"{m['verdict']}")
    for scope, report in record["drift"].items():
        for what, test in report.items():
            if not isinstance(test, dict):
                continue
            p = test.get("p_value")
            flag = "DRIFT" if test.get("drift") else "no drift" if test.get("drift") is False else "n/a"
            label = "between versions" if scope == "versions" else "window vs reference"
            session.echo(f"  drift {label}, {what}: {flag}"
                         f"{'' if p is None else ' (' + str(test['test']) + f' p={p:.3g})'}")


class MonitorCommand(Command):
    name = "monitor"
    help = "compare production signals of the new version with the previous one; roll back when criteria trip"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--signals", required=True, metavar="LOCATION",
                            help="signal source: a JSONL/CSV/Parquet file or directory, or a database URL")
        parser.add_argument("--since", help="start of the window (ISO time)")
        parser.add_argument("--until", help="end of the window (ISO time)")
        add_target_arguments(parser)
        parser.add_argument("--policy", type=Path, help="PCCP policy (default: config 'policy')")
        parser.add_argument("--new", metavar="VERSION", help="the new version (default: from the registry aliases)")
        parser.add_argument("--previous", metavar="VERSION", help="the version it is compared with")
        parser.add_argument("--reference", metavar="LOCATION", help="an earlier window of signals, for drift")
        parser.add_argument("--drift-alpha", type=float, default=0.01, help="significance of drift tests")
        parser.add_argument("--dry-run", action="store_true", help="report only: no rollback, nothing recorded")
        parser.add_argument("--out", type=Path, help="write monitor.json here")
        parser.add_argument("--json", action="store_true", help="print the monitor record as JSON")
        parser.epilog = ("exit codes: 0 OK (no rollback criterion tripped), 1 ROLLBACK (rolled back unless "
                         "--dry-run), 3 INCONCLUSIVE (not enough signals), 4 usage or configuration error")

    def run(self, args: argparse.Namespace, session: Session) -> int:
        policy = load_policy_of(session, args.policy)
        if policy is None:
            raise UsageError("no policy: give --policy or set 'policy' in gatekeeper.yaml", field="--policy")
        if bool(args.new) != bool(args.previous):
            raise UsageError("give both --new and --previous, or neither", field="--new")
        target = open_target(session, args.target, args.registry)
        outcome = run_monitor(
            session, target=target, policy=policy, signals=args.signals, model=args.model, since=args.since,
            until=args.until, new=args.new, previous=args.previous, reference=args.reference,
            drift_alpha=args.drift_alpha, dry_run=args.dry_run, out=args.out,
        )
        if args.json:
            session.echo(json.dumps(outcome.record, indent=1, default=str))
        else:
            print_monitor(session, outcome.record)
        if outcome.rolled_back:
            to = f"version {outcome.rolled_back_to}" if outcome.rolled_back_to else "removed"
            session.echo(f"rolled back {outcome.record['model']}@{outcome.record['alias']}: "
                         f"version {outcome.record['new_version']} -> {to}")
        elif outcome.record["decision"] == "ROLLBACK":
            session.echo("dry run: not rolled back" if args.dry_run else "nothing to roll back (no alias)")
        return outcome.exit_code


# --------------------------------------------------------------------------- registry


class RegistryCommand(Command):
    name = "registry"
    help = "show, register into and check the model registry of a deploy target"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="registry_action", metavar="ACTION", required=True)
        show = actions.add_parser("show", help="versions and aliases with their stage and traffic share")
        history = actions.add_parser("history", help="every change, oldest first")
        register = actions.add_parser("register", help="register a model spec as a new version (e.g. the "
                                      "model in production before gatekeeper)")
        register.add_argument("spec", help="model spec, e.g. hf:smollm2")
        register.add_argument("--alias", help="also point this alias at it (e.g. production)")
        register.add_argument("--reason", default="", help="why (recorded)")
        check = actions.add_parser("check", help="is the registry readable and consistent? (exit 1 if not)")
        for sub in (show, history, register, check):
            add_target_arguments(sub)
            sub.add_argument("--policy", type=Path, help="policy naming the model (default: config 'policy')")
        for sub in (show, history):
            sub.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args: argparse.Namespace, session: Session) -> int:
        target = open_target(session, args.target, args.registry)
        policy = None if args.model else load_policy_of(session, args.policy)
        model, _ = model_and_alias(policy, args.model)
        action = args.registry_action
        if action == "register":
            return self._register(args, session, target, model)
        if action == "check":
            return self._check(session, target, model)
        if action == "history":
            events = target.history(model)
            if args.json:
                session.echo(json.dumps(events, indent=1, default=str))
            for e in [] if args.json else events:
                details = ", ".join(f"{k}={e[k]}" for k in ("version", "alias", "stage", "traffic", "previous",
                                                              "verdict", "reason") if e.get(k) not in (None, ""))
                session.echo(f"{e['seq']:>4} {e['time']} {e['actor']:<10} {e['action']:<12} {details}")
            return 0
        versions, aliases = target.versions(model), target.aliases(model)
        if args.json:
            session.echo(json.dumps({"model": model, "versions": versions, "aliases": aliases}, indent=1, default=str))
            return 0
        session.echo(f"{model} ({target.name})")
        staged = sum(float(i.get("traffic", 0)) for a, i in aliases.items() if float(i.get("traffic", 1)) < 1)
        for alias, info in sorted(aliases.items()):
            share = float(info.get("traffic", 1.0))
            effective = share if share < 1 else max(0.0, 1.0 - staged)
            session.echo(f"  @{alias:<11} -> version {info['version']:<4} stage {info.get('stage') or '-':<8} "
                         f"traffic {effective:.0%}  since {info.get('since', '-')}")
        for version, info in sorted(versions.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0):
            prov = info.get("provenance") or {}
            session.echo(f"  version {version:<4} {info.get('spec')}  decision "
                         f"{str(prov.get('decision') or '-')[:12]}  policy {(prov.get('policy') or {}).get('id', '-')}")
        return 0

    @staticmethod
    def _register(args: argparse.Namespace, session: Any, target: DeployTarget, model: str) -> int:
        from gatekeeper.types import ModelSpec, stable_hash

        spec = str(ModelSpec.parse(args.spec))
        identity = session.load_model(spec).identity
        provenance = {"identity": {"spec": spec, "provider": identity.provider, "name": identity.name,
                                   "digest": identity.digest, "version": identity.version},
                      "registered_by": "gatekeeper registry register", "reason": args.reason}
        version = target.register_version(model, spec, provenance)
        if args.alias:
            target.set_alias(model, args.alias, version, traffic=1.0,
                             stage=FULL_STAGE if args.alias == PRODUCTION else None, reason=args.reason)
        audit_log(session).append("register", subject=args.alias or f"{model}:{version}",
                                  refs={"provenance": stable_hash(provenance)},
                                  data={"model": model, "version": version, "spec": spec, "alias": args.alias,
                                        "target": target.name, "reason": args.reason})
        session.echo(f"registered {model} version {version} ({spec})"
                     + (f" as @{args.alias}" if args.alias else ""))
        return 0

    @staticmethod
    def _check(session: Any, target: DeployTarget, model: str) -> int:
        from gatekeeper.builtin.local_registry import LocalRegistry, consistency_problems

        if isinstance(target, LocalRegistry):
            state = target.load()
            problems, where = consistency_problems(state) + _against_audit(session, state), str(target.root)
        else:
            versions = target.versions(model)
            problems = [f"{model}: alias {a!r} points at missing version {i['version']!r}"
                        for a, i in target.aliases(model).items() if str(i["version"]) not in versions]
            where = f"{target.name} {model}"
        for problem in problems:
            session.echo(f"  {problem}")
        session.echo(f"registry {where}: {'INCONSISTENT' if problems else 'OK'}")
        return 1 if problems else 0


def _against_audit(session: Any, state: dict[str, Any]) -> list[str]:
    """The registry's story against the audit trail's (an empty log is not OK when there is history)."""
    from gatekeeper.deploy.crosscheck import audit_problems

    log = audit_log(session)
    if not state.get("history"):
        return []
    if not log.path.is_file():
        return [f"the registry has {len(state['history'])} history events but there is no audit trail at {log.path}"]
    verification = log.verify()
    if not verification.ok:
        return [f"the audit trail is broken at line {verification.first_bad}: {verification.reason}"]
    return audit_problems(state, log.records())


@hookimpl
def gatekeeper_register_commands(register: Register[Command]) -> None:
    register(PromoteCommand)
    register(RollbackCommand)
    register(MonitorCommand)
    register(RegistryCommand)
