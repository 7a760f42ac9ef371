"""The check use case: collect, run candidate and baseline, decide under the policy, record.

``gatekeeper check``, ``pytest --gatekeeper-check`` and ``gatekeeper loop`` all call
:func:`run_check`; the commands only parse arguments and print.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gatekeeper.kinds import Model
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
    from gatekeeper.engine.results import identity_entry, new_run_id, run_record
    from gatekeeper.gate.approvals import record_hash
    from gatekeeper.gate.attestations import policy_content, with_attestations
    from gatekeeper.gate.audit import AuditLog
    from gatekeeper.gate.decision import EXIT_CODES, GateInputs, Reason, decide, evaluate_metrics
    from gatekeeper.gate.policy import check_scope, check_sequestered, load_policy, required_approvals

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
