"""Label the sample with the LLM classifier, through gatekeeper's runner.

The sampled conversations become cases of an in-memory suite whose one scorer is the
``classifier`` evaluator with the specification's parameters (template, label
normalization, several tasks in one prompt, K votes); the "model" is the recorded answers
themselves, so nothing is generated, and the judge calls go through the runner like any
judge's: cached, retried, rate-limited, counted and priced.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gatekeeper.kinds import Model
from gatekeeper.types import Case, Generation, GenerationRequest, ModelIdentity

SUITE = "classify-sample"


class RecordedAnswers(Model):
    """The answers the signals recorded, served as a model (no call is made)."""

    max_batch_size = 4096

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        digest = hashlib.sha256(json.dumps(answers, sort_keys=True).encode()).hexdigest()
        self.identity = ModelIdentity(provider="signals", name="recorded-answers", digest=digest,
                                      version=f"{len(answers)} recorded answers")

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return [Generation(text=self.answers[r.case.id]) for r in requests]


def _messages(value: Any) -> tuple[dict[str, str], ...]:
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    turns = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in value or [])
    return turns or ({"role": "user", "content": ""},)


def llm_label(session: Any, rows: list[dict[str, Any]], params: dict[str, Any], source: str,
              tasks: Sequence[str]) -> tuple[dict[str, list[str | None]], dict[str, Any]]:
    """``{task: [label or None per row]}`` and the run's counters (calls, cost, NODATA)."""
    from gatekeeper.engine.results import new_run_id
    from gatekeeper.engine.suites import ScorerSpec, Suite

    cases = [Case(id=str(r["id"]), suite=SUITE, messages=_messages(r.get("messages")),
                  vars={"answer": r.get("answer") or ""}, source=f"{source} (id {r['id']})") for r in rows]
    suite = Suite(name=SUITE, path=Path(source), cases=cases,
                  scorers=[ScorerSpec(name="classifier", metric="label", params=params, kind="evaluator",
                                      source=f"{source}:1")])
    model = RecordedAnswers({c.id: str(r.get("answer") or "") for c, r in zip(cases, rows, strict=True)})
    results, stats = session.run({"signals": model}, [suite], run_id=new_run_id(), specs={"signals": "signals"},
                                 progress=False, engine=False)
    by_id = {r.case.id: r for r in results}
    labels: dict[str, list[str | None]] = {t: [] for t in tasks}
    reasons: dict[str, int] = {}
    for case in cases:
        score = by_id[case.id].scores[0] if case.id in by_id and by_id[case.id].scores else None
        found = (score.details.get("labels") or {}) if score is not None and score.status == "ok" else {}
        if not found and score is not None:
            reasons[score.reason[:120]] = reasons.get(score.reason[:120], 0) + 1
        for task in tasks:
            labels[task].append(found.get(task))
    usage = {"rows": len(rows), "labelled": sum(1 for v in next(iter(labels.values())) if v is not None),
             "judge_calls": stats.model_calls, "cache_hits": stats.cache_hits, "retries": stats.retries,
             "cost": stats.cost, "unlabelled_reasons": reasons}
    return labels, usage
