"""The check use case: collect, run candidate and baseline, decide under the policy, record.

``gatekeeper check``, ``pytest --gatekeeper-check`` and ``gatekeeper loop`` all call
:func:`run_check`; the commands only parse arguments and print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gatekeeper.gate import outdir
from gatekeeper.gate.integrity import ANCHOR_KEY
from gatekeeper.gate.provenance import (
    claims_as_dicts,
    find_provenance,
    scope_summary,
    training_warning,
    verify_claims,
)
from gatekeeper.kinds import Model
from gatekeeper.types import UsageError

DECISION_SCHEMA = "gatekeeper.decision/1"


def policy_version_conflict(policy_id: str, version: str, digest: str, audit: Any) -> str | None:
    """Why this policy body may not be used under its version: an earlier check in the audit
    trail used the same id and version with different content (``None`` when it did not)."""
    if not audit.path.is_file():
        return None
    for entry in audit.records():
        data = entry.get("data") or {}
        if (entry.get("action") == "check" and data.get("policy") == policy_id
                and str(data.get("policy_version")) == str(version) and entry["refs"].get("policy") != digest):
            return (f"policy {policy_id} v{version} was used by check {entry['subject']} with different content "
                    f"(sha256 {str(entry['refs'].get('policy'))[:12]}, now {digest[:12]})")
    return None


def prior_uses(suites: list[Any], audit: Any) -> dict[str, int]:
    """How many earlier checks evaluated each suite's exact content (from the audit trail)."""
    from gatekeeper.gate.outdir import voided_runs

    history = audit.records() if audit.path.exists() else []
    voided = voided_runs(history)  # checks whose reports were never published do not count
    return {
        s.name: sum(1 for r in history if r["action"] == "check" and r["refs"].get(f"suite:{s.name}") == s.hash
                    and r["subject"] not in voided)
        for s in suites
    }


def run_check(
    session: Any, *, paths: list[str] | None = None, keyword: str | None = None, marker: str | None = None,
    candidate: str | dict[str, Any] | None = None, baseline: str | dict[str, Any] | None = None,
    policy_path: Path | None = None,
    out: Path | None = None, provenance: Path | None = None, formats: list[str] | None = None,
    progress: bool = True, policy_change: str | None = None, confirm_load_rate: bool = False,
) -> tuple[dict[str, Any], list[Path]]:
    """The whole gate, shared by ``gatekeeper check`` and ``pytest --gatekeeper-check``.

    Collects, runs candidate and baseline, decides, writes the reports and the audit
    record; returns the decision record and the report files written. ``None`` arguments
    fall back to the configuration.
    """
    from gatekeeper.engine import record as rec
    from gatekeeper.engine.results import identity_entry, new_run_id, row_sink, run_record
    from gatekeeper.gate.approvals import RequiredApproval, record_hash
    from gatekeeper.gate.attestations import policy_content, with_attestations
    from gatekeeper.gate.audit import AuditLog
    from gatekeeper.gate.decision import EXIT_CODES, GateInputs, Reason, decide, evaluate_metrics
    from gatekeeper.gate.policy import (
        check_scope,
        check_sequestered,
        evaluation_origin,
        load_policy,
        required_approvals,
    )
    from gatekeeper.gate.slo_load import check_load_safety, run_load_suites, select_load_suites

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
    out = out or config.path(config.out)
    outdir.require_writable(out)  # before any model is called
    outdir.void_orphan(out, audit)
    changed_under_version = policy_version_conflict(policy.metadata.id, policy.metadata.version, policy.hash, audit)
    if changed_under_version and not policy_change:
        raise UsageError(f"{changed_under_version}; give the plan a new version, or pass "
                         "--accept-policy-change REASON (recorded in the audit trail)", file=str(policy_path),
                         field="metadata.version")
    reuse_counts = prior_uses(suites, audit)
    reuse_violations = [
        Reason(text.split(":", 1)[0], "DEVIATION", text)
        for text in check_sequestered(
            policy, {s.name: [s.hash, *s.datasets.values()] for s in suites}, reuse_counts
        )
    ]
    origin, synthetic_deviations = evaluation_origin(policy, suites)  # real vs synthetic cases (synth)
    reuse_violations += [Reason(t.split(":", 1)[0], "DEVIATION", t) for t in synthetic_deviations]
    provenance_record, provenance_path = find_provenance(str(candidate), provenance, config)
    scope = check_scope(policy, provenance_record)

    models: dict[str, Model] = {
        "candidate": session.load_model(candidate), "baseline": session.load_model(baseline)
    }
    claims = verify_claims(provenance_record, models["candidate"].identity, config) if provenance_record else []
    scope.deviations.extend(f"provenance.{c.field}: {c.detail}" for c in claims if c.status == "mismatch")
    diverged = training_warning(provenance_record)
    if diverged and policy.gate.scope.block_training_divergence:
        scope.deviations.append(f"gate.scope.block_training_divergence: {diverged}")
    load_suites = select_load_suites(session, paths, policy)  # the policy's slo section: load runs
    check_load_safety(load_suites, models, config, confirm_rate=confirm_load_rate)  # refused before any call
    specs = {"candidate": str(candidate), "baseline": str(baseline)}
    run_id = new_run_id()
    outdir.begin(out, run_id, _report_names(session, formats))
    staging = outdir.staging_dir(out, run_id)
    writer = rec.CaseWriter(staging, _max_inline_bytes(config))  # rows stream to staging/cases.jsonl
    try:
        _, stats = session.run(models, suites, run_id=run_id, specs=specs, progress=progress,
                               sink=row_sink(writer))
    except BaseException:
        writer.abort()
        raise
    record = run_record(
        run_id=run_id,
        models={k: identity_entry(specs[k], m.identity) for k, m in models.items()},
        suites=suites, stats=stats, versions=session.host.versions(),
        selection={"paths": paths, "k": keyword, "m": marker}, writer=writer,
    )
    scores = rec.score_columns(record)  # kept from writing: no re-read
    metrics = evaluate_metrics(policy, scores, rec.case_index(record))
    slo_section, load_files = run_load_suites(
        load_suites, models, config, policy, staging, confirm_rate=confirm_load_rate,
        echo=session.echo if progress else None) if load_suites else (None, [])
    error_rate = int(scores.error.sum()) / max(1, len(scores))
    approvals = required_approvals(policy, [scope.modification_id] if scope.modification_id else [])
    decision, reasons = decide(policy, [*metrics, *(slo_section or {}).get("rows", [])], GateInputs(
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
            "checked": provenance_record is not None, "claims": claims_as_dicts(claims),
            "summary": scope_summary(provenance_record is not None, claims, provenance_path)
            + (f"; WARNING: {diverged}" if diverged else ""),
            "training_warning": diverged,
        },
        "test_sets": {s.name: {"sha256": s.hash, "datasets": s.datasets,
                               "previous_uses": reuse_counts.get(s.name, 0)} for s in suites},
        "approvals": {"required": [RequiredApproval(a.role, a.meaning, [Path(p) for p in a.public_keys]).record_entry()
                                   for a in approvals]},
    })
    record["data_origin"] = origin  # synthetic and real cases apart, overall and per slice
    if slo_section is not None:
        record["slo"] = slo_section  # service-level guardrails (gate/slo_check.py)
    session.host.hook.gatekeeper_decision_made(record=record)
    head = audit.head() if audit.path.is_file() else None
    record[ANCHOR_KEY] = {"seq": head["seq"], "head": head["hash"]} if head else {"seq": 0, "head": None}
    refs = {
        "policy": policy.hash, "decision": record_hash(rec.stored_body(record)),
        **{f"suite:{s.name}": s.hash for s in suites},
        **{f"load:{s.name}": s.hash for s in load_suites},
        **{f"dataset:{Path(p).name}": h for s in suites for p, h in s.datasets.items()},
        **{f"model:{k}": m.identity.digest for k, m in models.items()},
    }
    try:
        staged = [staging / p for p in rec.file_paths(record)]  # per-case files, published before the record
        staged += load_files  # load-<suite>.jsonl: every load request measured
        staged += session.write_reports(record, staging, ["json"])  # the record, before its audit record
    except Exception as exc:
        outdir.fail(out, run_id, f"writing the decision record failed: {exc}")
        raise
    entry = audit.append("check", subject=run_id, refs=refs, data={
        "decision": decision, "policy": policy.metadata.id, "policy_version": policy.metadata.version,
        "candidate": specs["candidate"], "baseline": specs["baseline"], "out": str(out),
        **({"policy_change": {"reason": policy_change, "was": changed_under_version}} if changed_under_version else {}),
        **({"load_rate_confirmed": True} if confirm_load_rate and load_suites else {}),
    })
    try:
        # After the audit record, so the reports can show it; approvals cannot exist yet.
        rest = [name for name in (formats or session.registries.reporters.names()) if name != "json"]
        staged += session.write_reports(with_attestations(record, run_dir=None, audit_log=audit.path), staging,
                                        rest)
        written = outdir.publish(out, run_id, staged)
        rec.relocate(record, out)
    except BaseException as exc:
        why = f"{type(exc).__name__}: {exc}"
        outdir.fail(out, run_id, f"publishing the reports failed after the audit record: {why}")
        try:
            outdir.void(audit, run_id, entry["hash"], out, f"its reports were never published ({why})")
        except Exception:
            pass
        raise
    return record, written


def _max_inline_bytes(config: Any) -> int:
    """``record.max_inline_bytes`` of the configuration (outputs longer are stored as blobs)."""
    from gatekeeper.engine.record import DEFAULT_MAX_INLINE_BYTES

    section = getattr(config, "record", None)
    return int(getattr(section, "max_inline_bytes", DEFAULT_MAX_INLINE_BYTES))


def _report_names(session: Any, formats: list[str] | None) -> list[str]:
    """The file names the reporters will write (their previous versions are removed first)."""
    registry = session.registries.reporters
    names = []
    for name in formats or registry.names():
        filename = getattr(registry.get(name, field="--format"), "filename", None)
        if isinstance(filename, str):
            names.append(filename)
    return names
