"""The coverage report of a synth run: per taxonomy cell the target, the candidates, what
each filter dropped and why, the rows kept and the shortfall; near-duplicates, privacy,
the judge's rejection reasons, diversity against the seeds and the generation cost.
JSON (``synth-report.json``, schema ``gatekeeper.synth-report/1``) and Markdown
(``synth-report.md``). Neither holds a generated text except the privacy section's
closest pairs, which an auditor needs to see (truncated, in the Markdown only).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gatekeeper.synth.seeds import Seeds
    from gatekeeper.synth.spec import Plan
    from gatekeeper.synth.state import KindResult, SynthOptions

REPORT_SCHEMA = "gatekeeper.synth-report/1"
REPORT_JSON = "synth-report.json"
REPORT_MD = "synth-report.md"
EXAMPLES_PER_REASON = 3
_ERROR_QUOTE = 200


def coverage(result: KindResult, plan: Plan) -> dict[str, Any]:
    cells = []
    total: Counter[str] = Counter()
    for cell in plan.cells:
        mine = [c for c in result.candidates if c.cell is cell]
        dropped = Counter(c.dropped for c in mine if c.dropped and c.dropped != "over_target")
        kept = sum(1 for c in result.kept if c.cell is cell)
        total.update(dropped)
        cells.append({
            "cell": cell.key, "topic": cell.topic, "scenario": cell.scenario, "target": cell.target,
            "candidates": len(mine), "valid": sum(1 for c in mine if c.value is not None),
            "dropped": dict(sorted(dropped.items())), "kept": kept,
            "surplus": sum(1 for c in mine if c.dropped == "over_target"),
            "shortfall": max(0, cell.target - kept),
        })
    return {"cells": cells, "dropped": dict(sorted(total.items())),
            "target": sum(c["target"] for c in cells), "kept": sum(c["kept"] for c in cells),
            "shortfall": sum(c["shortfall"] for c in cells)}


def drop_examples(result: KindResult) -> dict[str, list[dict[str, str]]]:
    """The first few reasons given per drop reason (errors and judge reasons; no row text)."""
    out: dict[str, list[dict[str, str]]] = {}
    for c in result.candidates:
        if c.dropped and c.dropped != "over_target" and len(out.setdefault(c.dropped, [])) < EXAMPLES_PER_REASON:
            out[c.dropped].append({"id": c.id, "why": c.error[:_ERROR_QUOTE]})
    return {k: v for k, v in out.items() if v}


def build_report(options: SynthOptions, seeds: Seeds, plan: Plan, kinds: dict[str, KindResult],
                 files: dict[str, Any]) -> dict[str, Any]:
    per_kind: dict[str, Any] = {}
    shortfall: dict[str, dict[str, int]] = {}
    for kind, result in kinds.items():
        cov = coverage(result, plan)
        per_kind[kind] = {
            "coverage": cov,
            "drop_examples": drop_examples(result),
            "schema_repairs": {"repaired": sum(1 for c in result.candidates if c.filters.get("schema") == "repaired"),
                               "json_extracted": sum(1 for c in result.candidates
                                                     if c.filters.get("schema") == "extracted")},
            "deduplication": result.dedup,
            "privacy": result.privacy["record"] if result.privacy else None,
            "judge": result.judge,
            "diversity": result.diversity,
            "usage": result.usage.as_dict(),
            "template": {"origin": result.template.origin, "sha256": result.template.sha256},
        }
        short = {c["cell"]: c["shortfall"] for c in cov["cells"] if c["shortfall"]}
        if short:
            shortfall[kind] = short
    return {
        "schema": REPORT_SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "name": options.name,
        "generator": options.generator,
        "seeds": {"path": str(seeds.path), "rows": len(seeds.rows)},
        "kinds": per_kind,
        "files": {name: {k: v for k, v in entry.items() if k != "privacy"} for name, entry in files.items()},
        "short": bool(shortfall),
        "shortfall": shortfall,
        "allow_short": options.allow_short,
    }


def _pct(value: Any) -> str:
    return "—" if value is None else f"{value:.1%}"


def render_markdown(report: dict[str, Any], kinds: dict[str, KindResult]) -> str:
    lines = [f"# Synthetic data: {report['name']}", "",
             f"Generator `{report['generator']}`, seeds `{report['seeds']['path']}` ({report['seeds']['rows']} rows).",
             ""]
    if report["short"]:
        lines += ["**SHORT**: some cells did not reach their target"
                  + (" (allowed with --allow-short)." if report["allow_short"] else "."), ""]
    for kind, section in report["kinds"].items():
        cov = section["coverage"]
        lines += [f"## {kind}: coverage", "",
                  f"{cov['kept']} rows kept of {cov['target']} planned; shortfall {cov['shortfall']}.", "",
                  "| cell | topic | target | candidates | valid | kept | shortfall | dropped |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for c in cov["cells"]:
            dropped = ", ".join(f"{k} {v}" for k, v in c["dropped"].items()) or "—"
            lines.append(f"| {c['cell']} | {c['topic']} | {c['target']} | {c['candidates']} | {c['valid']} | "
                         f"{c['kept']} | {'**' + str(c['shortfall']) + '**' if c['shortfall'] else 0} | {dropped} |")
        if section["drop_examples"]:
            lines += ["", "Why rows were dropped (first examples per reason):", ""]
            for reason, examples in section["drop_examples"].items():
                for e in examples:
                    why = e["why"].replace("|", "\\|").replace("\n", " ")
                    lines.append(f"- `{reason}` {e['id']}: {why}")
        dd = section["deduplication"]
        lines += ["", f"Near-duplicates: method **{dd['method']}**"
                  + (f" (threshold {dd['threshold']})" if dd["threshold"] is not None else "")
                  + f", {dd['dropped']} dropped. Schema: {section['schema_repairs']['repaired']} repaired by the "
                  f"model, {section['schema_repairs']['json_extracted']} extracted from surrounding text."]
        judge = section.get("judge")
        if judge:
            lines += ["", f"Judge filter ({judge['evaluator']}, judge `{judge['judge']}`): {judge['passed']} passed, "
                          f"{judge['rejected']} rejected, {judge['no_verdict']} without a verdict.", ""]
            for reason, n in judge["rejection_reasons"].items():
                lines.append(f"- {n}× {reason}")
        div = section.get("diversity")
        if div:
            lines += ["", "Diversity (all-MiniLM-L6-v2, cosine distance): generated spread "
                      f"{div['generated_spread']}, seed spread {div['seed_spread']} (ratio {div['spread_ratio']}); "
                      f"nearest-seed similarity mean {div.get('nearest_seed_similarity_mean')}, "
                      f"max {div.get('nearest_seed_similarity_max')}."]
        else:
            lines += ["", "Diversity: not computed (the MiniLM model is not installed or --no-diversity)."]
        usage = section["usage"]
        lines += ["", f"Generation: {usage['requests']} requests, {usage['cache_hits']} from the cache, "
                      f"{usage['model_calls']} model calls, {usage['retries']} retries, cost ${usage['cost']:.4f}.", ""]
        privacy = kinds[kind].privacy
        if privacy:
            lines += [privacy["markdown"].replace("## Privacy", f"## {kind}: privacy", 1)]
    lines += ["## Files", "", "| file | kind | rows | synthetic share | sha256 |", "|---|---|---:|---:|---|"]
    for name, entry in report["files"].items():
        lines.append(f"| {name} | {entry['kind']} | {entry['rows']} | {_pct(entry['synthetic']['share'])} | "
                     f"{entry['sha256'][:12]}… |")
    return "\n".join(lines) + "\n"
