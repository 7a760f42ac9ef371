"""Promotion, staged rollout, rollback and monitoring flows, as library functions.

The rules live here, the storage in a deploy target: :func:`promote_run` refuses what the
gate did not allow, checks the decision record against the audit trail, registers the
candidate with its provenance and moves it through the policy's stages; :func:`run_monitor`
compares production signals of the new and the previous version and rolls back when the
policy's criteria trip; :func:`rollback_alias` restores the previous version. Every change
is recorded in the target's history and the audit trail. The ``promote``, ``rollback``,
``monitor`` and ``loop`` commands are thin wrappers (docs/deploy.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.kinds import DeployTarget
from gatekeeper.types import UsageError

if TYPE_CHECKING:
    from gatekeeper.gate.policy import Policy, Stage

PRODUCTION = "production"


CANDIDATE = "candidate"


FULL_STAGE = "full"


EXIT_STAGE_NOT_READY = 3


def open_target(session: Any, name: str, location: str | None) -> DeployTarget:
    cls = session.registries.deploy_targets.get(name, field="--target")
    target: DeployTarget = cls(session.config, location)
    return target


def model_and_alias(policy: Policy | None, explicit: str | None) -> tuple[str, str]:
    """The registered model name and its production alias, from ``--model`` or the policy.

    The policy's ``comparators.last_authorized`` names them as ``MODEL@ALIAS``.
    """
    reference = policy.performance_evaluation.comparators.last_authorized if policy else None
    model, alias = (reference.split("@", 1) if isinstance(reference, str) and "@" in reference
                    else (None, PRODUCTION))
    model = explicit or model
    if not model:
        raise UsageError("which registered model? give --model NAME (or set the policy's "
                         "performance_evaluation.comparators.last_authorized to MODEL@ALIAS)", field="--model")
    return model, alias


def load_policy_of(session: Any, path: Path | str | None) -> Policy | None:
    from gatekeeper.gate.policy import load_policy

    config = session.config
    chosen = path or config.policy
    if not chosen:
        return None
    resolved = config.path(chosen)
    if not resolved.is_file():
        raise UsageError("policy file not found", file=str(resolved), field="--policy")
    return load_policy(resolved)


def policy_stages(policy: Policy | None) -> list[Stage]:
    from gatekeeper.gate.policy import Stage

    stages = list(policy.update_procedures.stages) if policy else []
    if not stages or stages[-1].traffic < 1.0:
        stages.append(Stage(name=FULL_STAGE, traffic=1.0))
    return stages


def audit_log(session: Any) -> Any:
    from gatekeeper.gate.audit import AuditLog

    return AuditLog(session.config.path(session.config.audit_log))


class PromotionRefused(UsageError):
    """The run may not be promoted; ``exit_code`` follows the decision (1 REJECT, 2 HOLD, 3 INCONCLUSIVE)."""

    def __init__(self, message: str, exit_code: int = 4) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Promotion:
    model: str
    version: str
    alias: str
    stage: str
    traffic: float
    previous: str | None
    registered: bool
    skipped: list[str]


def verified_decision(run: Path, session: Any) -> tuple[dict[str, Any], str]:
    """The run's decision record and its hash, once the audit trail vouches for both.

    :raises PromotionRefused: the record is not a check, the audit chain is broken, or no
        ``check`` record of this run carries this hash (the file was edited afterwards).
    """
    from gatekeeper.gate.approvals import load_decision
    from gatekeeper.gate.integrity import check_record

    record = load_decision(run)
    if record.get("kind") != "check":
        raise PromotionRefused(f"{run}: not a decision record of `gatekeeper check`")
    verdict = check_record(record, audit_log(session).path, run_dir=Path(run))
    if not verdict.ok:
        raise PromotionRefused(f"{run}: {verdict.detail}")
    assert verdict.digest is not None
    digest = verdict.digest
    return record, digest


def require_promotable(run: Path, record: dict[str, Any]) -> str:
    """Why the decision allows promotion; refuse (with the decision's exit code) otherwise."""
    from gatekeeper.gate.approvals import promotable, required_from_record
    from gatekeeper.gate.decision import EXIT_CODES

    required = required_from_record(record)
    ok, why = promotable(run, required)
    if not ok:
        raise PromotionRefused(f"not promoted: {why}", int(EXIT_CODES.get(str(record.get("decision")), 4)))
    return why


def decision_policy(session: Any, record: dict[str, Any]) -> Policy:
    """The policy the decision was made under, refused if the file changed since."""
    from gatekeeper.gate.policy import load_policy

    ref = record.get("policy") or {}
    path = session.config.path(ref.get("path", ""))
    if not ref.get("path") or not path.is_file():
        raise PromotionRefused(f"the decision's policy file {ref.get('path')!r} is not found")
    policy = load_policy(path)
    if policy.hash != ref.get("sha256"):
        raise PromotionRefused(f"the policy {path} changed since the check (hash {policy.hash[:12]}…, the "
                               f"decision used {str(ref.get('sha256'))[:12]}…); run the check again")
    return policy


def identity_of(entry: dict[str, Any]) -> dict[str, Any]:
    """A model entry of a decision record (``{"spec", "identity": {...}}``), flattened."""
    return {"spec": entry.get("spec"), **(entry.get("identity") or {})}


def version_provenance(record: dict[str, Any], digest: str) -> dict[str, Any]:
    """What the registry keeps about a promoted version: where it came from and who allowed it."""
    models = record.get("models", {})
    scope = record.get("scope", {})
    return {
        "decision": digest, "run_id": record.get("run_id"), "verdict": record.get("decision"),
        "policy": {k: record.get("policy", {}).get(k) for k in ("id", "version", "sha256")},
        "identity": identity_of(models.get("candidate", {})), "baseline": identity_of(models.get("baseline", {})),
        "modification": scope.get("modification"), "change": scope.get("provenance"),
    }


def find_version(target: DeployTarget, model: str, digest: str) -> str | None:
    for version, info in target.versions(model).items():
        if (info.get("provenance") or {}).get("decision") == digest:
            return version
    return None


def current_stage(aliases: dict[str, dict[str, Any]], version: str, production: str) -> str | None:
    if aliases.get(production, {}).get("version") == version:
        return FULL_STAGE
    info = aliases.get(CANDIDATE)
    return info.get("stage") if info and info.get("version") == version else None


def choose_stage(stages: list[Stage], current: str | None, wanted: str | None) -> tuple[Stage, list[str]]:
    """The stage to move to and the stages skipped on the way."""
    names = [s.name for s in stages]
    position = names.index(current) if current in names else -1
    if wanted is None:
        if position + 1 >= len(stages):
            raise PromotionRefused(f"already at the last stage ({current})", 0)
        return stages[position + 1], []
    if wanted not in names:
        raise PromotionRefused(f"unknown stage {wanted!r} (the policy's stages: {', '.join(names)})")
    index = names.index(wanted)
    if index <= position:
        raise PromotionRefused(f"the version is at stage {current!r}; {wanted!r} is not ahead of it "
                               "(use `gatekeeper rollback` to go back)")
    return stages[index], names[position + 1:index]


def stage_ready(target: DeployTarget, model: str, version: str, stage: Stage) -> tuple[bool, str]:
    """Whether a version may leave ``stage``: an OK monitoring result over its minimum window."""
    if not (stage.min_duration_hours or stage.min_signals):
        return True, f"stage {stage.name!r} has no minimum"
    monitors = [e for e in target.history(model) if e["action"] == "monitor" and e.get("version") == version
                and e.get("stage") == stage.name]
    need = f"{stage.min_duration_hours:g} h and {stage.min_signals} signals"
    if not monitors:
        return False, f"stage {stage.name!r} needs an OK `gatekeeper monitor` over {need}; none recorded"
    last = monitors[-1]
    if last.get("verdict") != "OK":
        return False, f"the last monitoring of version {version} at {stage.name!r} was {last.get('verdict')}"
    if last.get("signals_new", 0) < stage.min_signals or last.get("window_hours", 0) < stage.min_duration_hours:
        return False, (f"the last monitoring covered {last.get('signals_new', 0)} signals over "
                       f"{last.get('window_hours', 0):.1f} h; stage {stage.name!r} needs {need}")
    return True, (f"monitoring OK over {last.get('signals_new')} signals and {last.get('window_hours', 0):.1f} h "
                  f"(needs {need})")


def check_baseline_is_production(target: DeployTarget, model: str, production: str, record: dict[str, Any]) -> None:
    """The gate compared the candidate with a baseline; it must be what production serves now."""
    version = target.get_alias(model, production)
    if version is None:
        return
    info = target.versions(model).get(version, {})
    served = (info.get("provenance") or {}).get("identity", {}).get("digest")
    compared = identity_of(record.get("models", {}).get("baseline", {})).get("digest")
    if served and compared and served != compared:
        raise PromotionRefused(
            f"the check compared the candidate with {compared[:12]}…, but {model}@{production} is now version "
            f"{version} ({served[:12]}…): run the check again against the current production version"
        )


def promote_run(
    session: Any, run: Path, *, target: DeployTarget, model: str | None = None, stage: str | None = None,
    force: bool = False, reason: str = "", skip_reason: str | None = None,
) -> Promotion:
    """Everything ``gatekeeper promote`` does; raises :class:`PromotionRefused` when it may not."""
    record, digest = verified_decision(run, session)
    why = require_promotable(run, record)
    policy = decision_policy(session, record)
    model_name, production = model_and_alias(policy, model)
    stages = policy_stages(policy)
    version = find_version(target, model_name, digest)
    registered = version is None
    aliases = target.aliases(model_name)
    at = current_stage(aliases, version, production) if version else None
    if at == FULL_STAGE:
        if aliases.get(CANDIDATE, {}).get("version") == version:  # a promotion cut off before its last step
            target.remove_alias(model_name, CANDIDATE, expected=version, reason=f"now {production}")
        raise PromotionRefused(f"{model_name} version {version} is already {production}", 0)
    next_stage, skipped = choose_stage(stages, at, stage)
    if skipped and not (force or skip_reason):
        raise PromotionRefused(
            f"not promoted: moving to stage {next_stage.name!r} skips {', '.join(map(repr, skipped))} and their "
            "minimums (or --force --reason TEXT, recorded in the audit trail)", EXIT_STAGE_NOT_READY)
    held = aliases.get(CANDIDATE)
    if held and held.get("version") != version:
        raise PromotionRefused(
            f"{model_name}@{CANDIDATE} holds version {held['version']} at stage {held.get('stage')!r}: "
            f"promote it to the end or roll it back "
            f"(`gatekeeper rollback {CANDIDATE} --model {model_name} --reason WHY`) first"
        )
    if at is not None:
        leaving = next(s for s in stages if s.name == at)
        ready, ready_why = stage_ready(target, model_name, str(version), leaving)
        if not ready and not force:
            raise PromotionRefused(f"not promoted: {ready_why} (or --force --reason TEXT)", EXIT_STAGE_NOT_READY)
    if not force:
        check_baseline_is_production(target, model_name, production, record)
    expected_production = aliases.get(production, {}).get("version")
    if version is None:
        version = target.register_version(model_name, record["models"]["candidate"]["spec"],
                                          version_provenance(record, digest))
    note = reason or why
    if next_stage.traffic >= 1.0:
        target.set_alias(model_name, production, version, traffic=1.0, stage=next_stage.name,
                         expected=expected_production, reason=note)
        if held:
            target.remove_alias(model_name, CANDIDATE, expected=version, reason=f"now {production}")
        promotion = Promotion(model_name, version, production, next_stage.name, 1.0, expected_production,
                              registered, skipped)
    else:
        target.set_alias(model_name, CANDIDATE, version, traffic=next_stage.traffic, stage=next_stage.name,
                         expected=held.get("version") if held else None, reason=note)
        promotion = Promotion(model_name, version, CANDIDATE, next_stage.name, next_stage.traffic,
                              held.get("version") if held else None, registered, skipped)
    candidate_digest = identity_of(record["models"]["candidate"]).get("digest")
    audit_log(session).append("promote", subject=str(record["run_id"]), refs={
        "decision": digest, "policy": policy.hash,
        **({"model:candidate": str(candidate_digest)} if candidate_digest else {}),
    }, data={
        "model": model_name, "version": version, "alias": promotion.alias, "stage": promotion.stage,
        "traffic": promotion.traffic, "previous": promotion.previous, "target": target.name,
        "run": str(run), "decision": record.get("decision"), "skipped_stages": skipped,
        **({"skip_reason": skip_reason or reason} if skipped else {}),
        **({"forced": True, "reason": reason} if force else {}),
    })
    return promotion


def rollback_alias(session: Any, target: DeployTarget, model: str, alias: str, *, to: str | None, reason: str,
                   automatic: bool = False, refs: dict[str, str] | None = None) -> str | None:
    before = target.get_alias(model, alias)
    if before is None:
        raise UsageError(f"{model} has no alias {alias!r} (see `gatekeeper registry show`)")
    restored = target.rollback(model, alias, to=to, reason=reason)
    audit_log(session).append("rollback", subject=alias, refs=refs or {}, data={
        "model": model, "alias": alias, "from": before, "to": restored, "reason": reason,
        "automatic": automatic, "target": target.name,
    })
    return restored


def watched_versions(target: DeployTarget, model: str, production: str) -> tuple[str, str, str, str | None]:
    """(alias under watch, new version, previous version, stage) from the registry."""
    aliases = target.aliases(model)
    if CANDIDATE in aliases:
        new = aliases[CANDIDATE]
        prev = aliases.get(production)
        if prev is None:
            raise UsageError(f"{model}@{CANDIDATE} is staged but there is no {production} version to compare with")
        return CANDIDATE, str(new["version"]), str(prev["version"]), new.get("stage")
    if production not in aliases:
        raise UsageError(f"{model} has no {production} or {CANDIDATE} alias to monitor")
    current = str(aliases[production]["version"])
    for event in reversed(target.history(model)):
        if event.get("alias") == production and event["action"] == "alias" and event.get("version") == current:
            if event.get("previous"):
                return production, current, str(event["previous"]), aliases[production].get("stage")
            break
    raise UsageError(f"{model}@{production} (version {current}) has no previous version to compare with; "
                     "give --new and --previous")


def window_hours(signals: list[Any]) -> float:
    if len(signals) < 2:
        return 0.0
    times = [s.time for s in signals]
    return (max(times) - min(times)).total_seconds() / 3600


@dataclass
class MonitorOutcome:
    record: dict[str, Any]
    exit_code: int
    rolled_back_to: str | None = None
    rolled_back: bool = False


def _stage_start(alias_info: dict[str, Any]) -> datetime | None:
    """When the alias took its current version and stage (the registry's ``since``), as UTC."""
    since = alias_info.get("since")
    if not since:
        return None
    moment = datetime.fromisoformat(str(since).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_monitor(
    session: Any, *, target: DeployTarget, policy: Policy, signals: str, model: str | None = None,
    since: str | None = None, until: str | None = None, new: str | None = None, previous: str | None = None,
    reference: str | None = None, drift_alpha: float = 0.01, dry_run: bool = False, out: Path | None = None,
) -> MonitorOutcome:
    """Everything ``gatekeeper monitor`` does, returning the monitor record."""
    from gatekeeper.deploy import monitoring
    from gatekeeper.signals.records import read_signals
    from gatekeeper.types import stable_hash

    model_name, production = model_and_alias(policy, model)
    if new and previous:
        aliases = target.aliases(model_name)
        alias = next((a for a, i in aliases.items() if str(i["version"]) == new), None)
        new_v, prev_v, stage_name = new, previous, aliases.get(alias or "", {}).get("stage")
    else:
        alias, new_v, prev_v, stage_name = watched_versions(target, model_name, production)
    window = list(read_signals(signals, session.registries, since=since, until=until, model=model_name))
    # A stage's evidence is the stage's own: signals from before the version entered it
    # (for either version, so both sides cover the same window) do not count.
    stage_start = _stage_start(target.aliases(model_name).get(alias or "", {})) if alias else None
    before = [s for s in window if stage_start is not None and s.time < stage_start]
    window = [s for s in window if not (stage_start is not None and s.time < stage_start)]
    new_signals = [s for s in window if s.model_version == new_v]
    prev_signals = [s for s in window if s.model_version == prev_v]
    stage = next((s for s in policy_stages(policy) if s.name == stage_name), None)
    result = monitoring.evaluate(policy, prev_signals, new_signals, stage=stage)
    drift: dict[str, Any] = {"versions": monitoring.drift_report(prev_signals, new_signals, alpha=drift_alpha)}
    if reference:
        ref_signals = list(read_signals(reference, session.registries, model=model_name))
        drift["window"] = monitoring.drift_report(ref_signals, window, alpha=drift_alpha)
        drift["window"]["reference"] = reference
    record: dict[str, Any] = {
        "schema": monitoring.MONITOR_SCHEMA, "kind": "monitor", "decision": result.decision,
        "exit_code": monitoring.MONITOR_EXIT_CODES[result.decision], "reasons": result.reasons,
        "model": model_name, "alias": alias, "stage": stage_name, "new_version": new_v, "previous_version": prev_v,
        "signals": {"location": signals, "since": since, "until": until, "window": len(window),
                    "new": len(new_signals), "previous": len(prev_signals),
                    "window_hours": round(window_hours(new_signals), 3),
                    "excluded": {"before_stage": len(before),
                                 "reason": (f"recorded before version {new_v} entered stage {stage_name!r} at "
                                            f"{stage_start.isoformat()}") if stage_start else None}},
        "metrics": result.metrics, "criteria": result.criteria, "drift": drift,
        "policy": policy.reference(), "time": datetime.now().astimezone().isoformat(timespec="seconds"),
        "dry_run": dry_run,
    }
    digest = stable_hash(record)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "monitor.json").write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    outcome = MonitorOutcome(record, record["exit_code"])
    if dry_run:
        return outcome
    target.record_event(model_name, "monitor", version=new_v, previous=prev_v, alias=alias, stage=stage_name,
                        verdict=result.decision, signals_new=len(new_signals), signals_previous=len(prev_signals),
                        window_hours=record["signals"]["window_hours"], record=digest)
    audit_log(session).append("monitor", subject=alias or f"{model_name}:{new_v}", refs={"monitor": digest,
                              "policy": policy.hash}, data={
        "model": model_name, "alias": alias, "version": new_v, "previous": prev_v, "stage": stage_name,
        "verdict": result.decision, "signals_new": len(new_signals), "signals_previous": len(prev_signals),
        "signals": signals,
    })
    if result.decision == "ROLLBACK" and alias is not None:
        outcome.rolled_back_to = rollback_alias(
            session, target, model_name, alias, to=None, reason="automatic: " + "; ".join(result.reasons),
            automatic=True, refs={"monitor": digest},
        )
        outcome.rolled_back = True
    return outcome
