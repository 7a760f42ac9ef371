"""``gatekeeper classify``: Semantic Telemetry at scale, end to end.

1. a stratified sample of the signals (default 2,000 rows) is labelled by the LLM
   classifier through the runner (:mod:`.llm_labels`);
2. a calibrated logistic regression on MiniLM sentence embeddings learns those labels, and
   its agreement with the LLM is measured on a held-out part (:mod:`.text_model`); below
   the configured floor nothing is labelled (exit 1) and the report says why;
3. every row is labelled — streamed through Polars on one machine (:mod:`.label_local`), or
   by an engine plugin across executors (``--engine spark``) — into a table carrying the
   classifier's version;
4. the label distributions per model version, and the A/B comparison of two versions
   (:mod:`.compare`), gated by the policy's ``measure: distribution`` metrics when a
   policy is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from gatekeeper.types import UsageError

REPORT_SCHEMA = "gatekeeper.classify/1"
EXIT_REFUSED = 1


def _table_columns(session: Any, location: str, filters: Any, engine: Any) -> list[str]:
    if engine is not None:
        return list(engine.signal_columns(location))
    from gatekeeper.signals.records import scan_signals

    return scan_signals(location, session.registries, filters).collect_schema().names()


def _require(columns: Sequence[str], needed: Sequence[str], location: str) -> None:
    for name in dict.fromkeys(needed):
        if name not in columns:
            raise UsageError(f"the table has no {name!r} column (classify needs {', '.join(dict.fromkeys(needed))})",
                             file=location, field=name)


def sample_rows(session: Any, location: str, filters: Any, spec: Any, engine: Any,
                columns: Sequence[str]) -> list[dict[str, Any]]:
    from gatekeeper.signals.classify.sample import allocate, stratified_sample

    if engine is not None:
        frame = engine.sample_signals(location, filters, size=spec.sample, strata=spec.stratify,
                                      columns=columns, seed=spec.seed, quota=partial(allocate, size=spec.sample))
    else:
        from gatekeeper.signals.records import scan_signals

        frame = stratified_sample(scan_signals(location, session.registries, filters), size=spec.sample,
                                  strata=spec.stratify, columns=columns, seed=spec.seed)
    return list(frame.iter_rows(named=True))


def label_table(session: Any, location: str, filters: Any, labeller: Any, out: str, engine: Any) -> dict[str, Any]:
    if engine is not None:
        return dict(engine.label_table(location, filters, labeller, out))
    from gatekeeper.signals.classify.label_local import label_local
    from gatekeeper.signals.records import scan_signals

    return label_local(scan_signals(location, session.registries, filters), labeller, out)


def classify(
    session: Any, location: str, spec_path: Path, *, out: str, filters: Any, engine: Any = None,
    versions: tuple[str, str] | None = None, policy: Path | None = None,
) -> tuple[dict[str, Any], int]:
    """Run the pipeline (module docstring); the report and the exit code (0, or 1 refused /
    a policy metric failed)."""
    from gatekeeper.signals.classify.embedding import get_encoder, model_identity
    from gatekeeper.signals.classify.llm_labels import llm_label
    from gatekeeper.signals.classify.spec import load_spec
    from gatekeeper.signals.classify.text_model import PASSTHROUGH, Labeller, below_floor, row_text, text_columns, train

    spec = load_spec(spec_path, session.registries)
    taxonomy = spec.tasks()
    columns = _table_columns(session, location, filters, engine)
    needed = ["id", "model_version", *spec.stratify, *text_columns(spec.target)]
    _require(columns, needed, location)
    rows = sample_rows(session, location, filters, spec, engine, list(dict.fromkeys(needed)))
    if len(rows) < 10:
        raise UsageError(f"only {len(rows)} signals match: too few to train a classifier", file=location)
    labels, usage = llm_label(session, rows, spec.classifier, str(spec_path), list(taxonomy))
    texts = [row_text(r.get("messages"), r.get("answer"), spec.target) for r in rows]
    vectors = get_encoder().encode(texts, spec.batch_size)
    classifier, agreement = train(vectors, labels, taxonomy, target=spec.target, holdout=spec.holdout,
                                  seed=spec.seed, C=spec.C, embedding=model_identity())
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA, "location": location, "spec": str(spec_path),
        "engine": getattr(engine, "name", "polars"),
        "classifier": {"version": classifier.version, "embedding": classifier.embedding, "target": spec.target,
                       "trained_on": classifier.trained_on, "tasks": taxonomy},
        "sample": {"size": len(rows), "stratify": spec.stratify, "seed": spec.seed, **usage},
        "agreement": agreement,
        "min_agreement": spec.min_agreement.model_dump(),
    }
    failures = below_floor(agreement, spec.min_agreement.model_dump())
    if failures:
        report.update(refused=True, reason="the embedding classifier agrees too little with the LLM: "
                      + "; ".join(failures) + " (nothing was labelled)")
        return report, EXIT_REFUSED
    labeller = Labeller(classifier, [c for c in PASSTHROUGH if c in columns], batch_size=spec.batch_size)
    written = label_table(session, location, filters, labeller, out, engine)
    report.update(refused=False, labelled=written)
    report.update(summarize_counts(written["counts"], taxonomy, out, versions, policy))
    return report, report.get("exit_code", 0)


def summarize_counts(counts: Mapping[str, Any], taxonomy: Mapping[str, Sequence[str]], where: str,
                     versions: tuple[str, str] | None, policy: Path | None, level: float = 0.95) -> dict[str, Any]:
    """Distributions per task and version; the A/B comparison and the policy's verdicts."""
    from gatekeeper.signals.classify.compare import check_taxonomy, compare_versions, distributions

    check_taxonomy(counts, taxonomy, where)
    out: dict[str, Any] = {"distributions": {t: distributions(counts.get(t, {}), taxonomy[t], level)
                                             for t in taxonomy}}
    if versions is None:
        return out
    base, cand = versions
    comparison: dict[str, Any] = {"baseline_version": base, "candidate_version": cand, "tasks": {}}
    for task in taxonomy:
        per = counts.get(task, {})
        for version in (base, cand):
            if version not in per:
                raise UsageError(f"no rows of model version {version!r} in the labelled table "
                                 f"(versions: {', '.join(sorted(per)) or 'none'})", file=where, field="--compare")
        comparison["tasks"][task] = compare_versions(per[base], per[cand], taxonomy[task], level=level)
    out["comparison"] = comparison
    if policy is not None:
        out["verdicts"] = policy_verdicts(policy, counts, versions, taxonomy)
        out["exit_code"] = 1 if any(v["verdict"] == "FAIL" for v in out["verdicts"]) else 0
    return out


def policy_verdicts(policy_path: Path, counts: Mapping[str, Any], versions: tuple[str, str],
                    taxonomy: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """The policy's ``measure: distribution`` metrics whose ``task`` was classified, decided on
    the labelled table exactly as ``gatekeeper check`` decides them on a run."""
    from collections import Counter

    from gatekeeper.gate.decision import distribution_row
    from gatekeeper.gate.policy import load_policy

    policy = load_policy(policy_path)
    rows = []
    for index, spec in enumerate(policy.performance_evaluation.metrics):
        if spec.measure != "distribution" or spec.task is None or spec.task not in taxonomy:
            continue
        per = counts.get(spec.task, {})
        pair = {"baseline": Counter(per.get(versions[0], {})), "candidate": Counter(per.get(versions[1], {}))}
        rows.append(distribution_row(spec, pair, clause=f"performance_evaluation.metrics[{index}]"))
    if not rows:
        raise UsageError("the policy has no 'measure: distribution' metric for a classified task "
                         f"({', '.join(taxonomy)})", file=str(policy_path), field="performance_evaluation.metrics")
    return rows


def compare_labelled(session: Any, location: str, spec_path: Path, versions: tuple[str, str] | None,
                     policy: Path | None) -> tuple[dict[str, Any], int]:
    """The distributions and A/B comparison of an already labelled table (Parquet or Delta)."""
    import polars as pl

    from gatekeeper.signals.classify.spec import load_spec

    taxonomy = load_spec(spec_path, session.registries).tasks()
    if location.startswith("delta:"):
        frame = pl.scan_delta(location.removeprefix("delta:"))
    else:
        if not Path(location).exists():
            raise UsageError("labelled table not found", file=location)
        frame = pl.scan_parquet(location)
    names = frame.collect_schema().names()
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for task in taxonomy:
        if task not in names or "model_version" not in names:
            missing = task if task not in names else "model_version"
            raise UsageError(f"the labelled table has no {missing!r} column", file=location, field=missing)
        grouped = frame.group_by(["model_version", task]).agg(pl.len().alias("n")).collect(engine="streaming")
        for version, label, n in grouped.iter_rows():
            counts.setdefault(task, {}).setdefault(str(version), {})[str(label)] = int(n)
    versions_seen = sorted({v for per in counts.values() for v in per})
    report = {"schema": REPORT_SCHEMA, "location": location, "spec": str(spec_path), "versions": versions_seen,
              **summarize_counts(counts, taxonomy, location, versions, policy)}
    return report, int(report.get("exit_code", 0))
