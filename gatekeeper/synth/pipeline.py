"""The synth use case: plan → prompts → generation (through the runner) → filters → files.

:func:`synthesize` is what ``gatekeeper synth`` calls. For each requested kind it plans
``ceil(target × oversample)`` candidates per taxonomy cell (personas in turn, seed rows in
turn), renders the generator's prompt, generates structured rows through the session's
runner, and passes every candidate through the filters in a fixed order — schema, exact and
near duplicates, PII, memorization, the optional judge — before the per-cell quota keeps
the first ``target`` survivors. Every candidate that does not make it is counted under
the reason it was dropped; every row that does carries its provenance.
"""

from __future__ import annotations

from typing import Any

from gatekeeper.synth import filters, privacy
from gatekeeper.synth.generate import StructuredModel, Usage, structured_round
from gatekeeper.synth.prompts import Template, builtin_template, format_instructions, load_template
from gatekeeper.synth.seeds import NOT_INHERITED, Seeds, load_seeds, row_text
from gatekeeper.synth.spec import Persona, Plan, load_personas, load_plan, load_schema, select_seeds
from gatekeeper.synth.state import (
    Candidate,
    HarnessFailure,
    KindResult,
    SynthOptions,
    SynthResult,
    response_format,
    seed_view,
)
from gatekeeper.types import UsageError

ID_PREFIX = {"cases": "syn", "sft": "sft", "preference": "pref"}
__all__ = ["HarnessFailure", "SynthOptions", "SynthResult", "synthesize"]


def synthesize(session: Any, options: SynthOptions) -> SynthResult:
    """Run the whole synth; raises :class:`UsageError` on bad input before any model call."""
    for kind in options.kinds:
        if kind not in ID_PREFIX:
            raise UsageError(f"unknown kind {kind!r} (cases, sft, preference)", field="--kind")
    for kind in options.schemas:
        if kind not in options.kinds:
            raise UsageError(f"--schema for {kind!r}, which is not a generated --kind", field="--schema")
    if options.turns and not options.candidate:
        raise UsageError("a multi-turn conversation (--turns) needs the --candidate model that answers",
                         field="--candidate")
    if options.turns and "preference" in options.kinds:
        raise UsageError("multi-turn generation makes cases or sft conversations, not preference pairs",
                         field="--turns")
    seeds = load_seeds(options.seeds, session)
    personas = load_personas(options.personas)
    plan = load_plan(options.plan, personas, seeds.rows)
    template = load_template(options.template) if options.template else None
    dedup_method = filters.choose_method(options.dedup)
    detector = privacy.detector(session, options.pii, options.pii_detector)
    planned: dict[str, tuple[dict[str, Any], Template, list[Candidate]]] = {}
    for kind in options.kinds:  # every prompt renders before any model is loaded or called
        schema = load_schema(options.schemas.get(kind), kind)
        tmpl = template or builtin_template(kind)
        candidates = plan_candidates(kind, plan, personas, seeds)
        prepare_prompts(candidates, tmpl, schema, kind, options)
        planned[kind] = (schema, tmpl, candidates)
    generator = session.load_model(options.generator)

    from gatekeeper.synth import outputs

    kinds: dict[str, KindResult] = {}
    for kind, (schema, tmpl, candidates) in planned.items():
        usage = Usage()
        if options.turns:
            from gatekeeper.synth.conversation import converse

            converse(session, candidates, generator, options, seeds, kind, usage)
        else:
            model = StructuredModel(generator, response_format(schema, options.json_mode))
            round_ = structured_round(session, model, options.generator, [(c.id, c.messages) for c in candidates],
                                      schema, options.sampling, usage, repair=options.repair,
                                      progress=options.progress)
            for c in candidates:
                if c.id in round_.values:
                    c.value = round_.values[c.id]
                    c.filters["schema"] = ("repaired" if c.id in round_.repaired
                                           else "extracted" if c.id in round_.extracted else "valid")
                else:
                    c.drop(*round_.dropped[c.id])
        if candidates and all(c.dropped == "generation_error" for c in candidates):
            raise HarnessFailure(f"every generation failed ({len(candidates)} of {len(candidates)}); "
                                 f"the first: {candidates[0].error}")
        for c in candidates:
            if c.value is not None:
                c.row = build_row(c, plan.slice, generator, options, tmpl, schema)
        dedup = apply_dedup(candidates, dedup_method, options.near_duplicate_threshold)
        privacy_record = privacy.apply(detector, candidates, seeds, options)
        judge = None
        if options.judge_criteria:
            from gatekeeper.synth.judge_filter import judge_filter

            judge = judge_filter(session, candidates, options, kind)
        kept = apply_quota(candidates, plan)
        diversity = _diversity(kept, seeds, options)
        kinds[kind] = KindResult(kind, candidates, kept, usage, dedup, privacy_record, judge, diversity, tmpl, schema)
    session.close_models()
    return outputs.write(session, options, seeds, plan, personas, kinds, generator)


# --------------------------------------------------------------------------- planning


def plan_candidates(kind: str, plan: Plan, personas: list[Persona], seeds: Seeds) -> list[Candidate]:
    """The candidates of every cell, with their persona and seed rows (deterministic: ids,
    personas and seeds depend only on the plan and the files, so a rerun hits the cache)."""
    by_id = {p.id: p for p in personas}
    out: list[Candidate] = []
    for cell in plan.cells:
        cast = [by_id[p] for p in cell.personas] if cell.personas else personas
        pool = select_seeds(cell, seeds.rows, plan.slice)
        per = min(plan.seeds_per_prompt, len(pool))
        for k in range(plan.attempts(cell)):
            shown = [pool[(k * max(per, 1) + j) % len(pool)] for j in range(per)] if pool else []
            out.append(Candidate(f"{ID_PREFIX[kind]}-{cell.key}-{k + 1:03d}", cell, cast[k % len(cast)],
                                 shown, k + 1))
    return out


def prepare_prompts(candidates: list[Candidate], template: Template, schema: dict[str, Any], kind: str,
                    options: SynthOptions) -> None:
    instructions = format_instructions(schema)
    for c in candidates:
        views = [seed_view(s) for s in c.seeds]
        variables = {
            "persona": c.persona.model_dump(), "cell": c.cell.model_dump(), "seeds": views,
            "seed": views[0] if views else seed_view({}), "index": c.index, "count": 0, "kind": kind,
            "name": options.name, "row_id": c.id,
        }
        variables["count"] = sum(1 for o in candidates if o.cell is c.cell)
        c.messages = template.render(variables, "" if options.turns else instructions)


# --------------------------------------------------------------------------- rows


def build_row(c: Candidate, slice_field: str, generator: Any, options: SynthOptions, template: Template,
              schema: dict[str, Any]) -> dict[str, Any]:
    """The generated row: inherited seed fields, the generated fields, the cell's slice
    values, ``origin: synthetic`` and the row's provenance."""
    from gatekeeper.synth.provenance import row_provenance

    assert c.value is not None
    base = c.seeds[0] if c.seeds else {}
    generated = set(schema.get("properties") or {})
    wanted = options.inherit
    inherited = {k: v for k, v in base.items()
                 if k not in NOT_INHERITED and k not in generated and (wanted is None or k in wanted)}
    row: dict[str, Any] = {**inherited, **c.value, "id": c.id, "scenario": c.cell.scenario, "persona": c.persona.id}
    row[slice_field] = c.cell.topic
    row["origin"] = "synthetic"
    row["synthetic"] = True
    row["provenance"] = row_provenance(c, generator, options, template, schema)
    return row


def apply_dedup(candidates: list[Candidate], method: str, threshold: float) -> dict[str, Any]:
    alive = [c for c in candidates if c.dropped is None]
    texts = [row_text(c.row) for c in alive]
    result = filters.deduplicate(texts, method, threshold)
    for i, c in enumerate(alive):
        if i in result.duplicate_of:
            j, how, sim = result.duplicate_of[i]
            c.drop("duplicate" if how == "exact" else "near_duplicate", f"repeats {alive[j].id} (similarity {sim})")
            c.filters["dedup"] = {"duplicate_of": alive[j].id, "similarity": sim, "kind": how}
        else:
            c.filters["dedup"] = "unique"
    return {"method": method, "threshold": result.threshold, "dropped": len(result.duplicate_of)}


def apply_quota(candidates: list[Candidate], plan: Plan) -> list[Candidate]:
    """Keep the first ``target`` survivors of each cell (in id order); the rest are surplus."""
    kept: list[Candidate] = []
    for cell in plan.cells:
        alive = [c for c in candidates if c.cell is cell and c.dropped is None]
        for c in alive[cell.target:]:
            c.drop("over_target")
        kept.extend(alive[: cell.target])
    for c in kept:
        c.row["provenance"]["filters"] = dict(c.filters)
    return kept


def _diversity(kept: list[Candidate], seeds: Seeds, options: SynthOptions) -> dict[str, Any] | None:
    wanted = options.diversity if options.diversity is not None else filters.has_embeddings()
    if not wanted or not kept:
        return None
    vectors = filters.embed([row_text(c.row) for c in kept] + [row_text(r) for r in seeds.rows])
    return filters.diversity(vectors[: len(kept)], vectors[len(kept):])
