"""The optional judge filter: the built-in ``rubric`` judge scores each surviving row on the
user's criteria, through the runner like any judge call (cached, retried, rate-limited).
A row below the threshold is dropped as ``judge_rejected`` and the judge's reason is kept
(counted in the report); a row the judge gave no verdict for is dropped as
``judge_no_verdict`` — an unjudged row is not a passed one.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.synth.seeds import row_text
from gatekeeper.types import Case

if TYPE_CHECKING:
    from gatekeeper.synth.state import Candidate, SynthOptions

SUITE = "synth-judge"
EVALUATOR = "rubric"
_REASON = 160


def _output(row: dict[str, Any], kind: str) -> str:
    """What the judge reads as the answer: the expected answer, the SFT answer, the chosen one."""
    for key in ("expected", "answer", "chosen"):
        if row.get(key):
            return str(row[key])
    messages = row.get("messages") or []
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def judge_filter(session: Any, candidates: list[Candidate], options: SynthOptions, kind: str) -> dict[str, Any]:
    from gatekeeper.engine.results import new_run_id
    from gatekeeper.engine.suites import ScorerSpec, Suite
    from gatekeeper.signals.classify.llm_labels import RecordedAnswers

    alive = [c for c in candidates if c.dropped is None]
    summary: dict[str, Any] = {"evaluator": EVALUATOR, "criteria": options.judge_criteria,
                               "judge": options.judge or str(getattr(session.config, "judge", None)),
                               "threshold": options.judge_threshold, "judged": len(alive), "passed": 0,
                               "rejected": 0, "no_verdict": 0, "rejection_reasons": {}}
    if not alive:
        return summary
    params: dict[str, Any] = {"criteria": options.judge_criteria, "threshold": options.judge_threshold}
    if options.judge:
        params["judge"] = options.judge
    cases = [Case(id=c.id, suite=SUITE, messages=({"role": "user", "content": row_text(c.row)},),
                  vars={**{k: v for k, v in c.row.items() if isinstance(v, str)}, "input": row_text(c.row)},
                  context=str(c.row.get("context") or "") or None, expected=c.row.get("expected"),
                  source=f"synth {c.id}") for c in alive]
    suite = Suite(name=SUITE, path=Path(SUITE), cases=cases,
                  scorers=[ScorerSpec(EVALUATOR, "synth_judge", params, "evaluator", "--judge-filter:1")])
    model = RecordedAnswers({c.id: _output(c.row, kind) for c in alive})
    results, _ = session.run({"synth": model}, [suite], run_id=new_run_id(), specs={"synth": "synth"},
                             progress=False, close_models=False, engine=False)
    by_id = {r.case.id: r for r in results}
    reasons: Counter[str] = Counter()
    for c in alive:
        result = by_id.get(c.id)
        score = result.scores[0] if result is not None and result.scores else None
        if score is None or score.status != "ok" or score.value is None:
            why = score.reason if score is not None else "no score"
            c.drop("judge_no_verdict", why)
            c.filters["judge"] = {"verdict": None, "reason": why[:_REASON]}
            summary["no_verdict"] += 1
            continue
        why = str(score.details.get("reasoning") or score.reason)[:_REASON]  # the judge's own words
        c.filters["judge"] = {"value": score.value, "passed": bool(score.passed), "score": score.reason,
                              "reason": why}
        if score.passed:
            summary["passed"] += 1
        else:
            summary["rejected"] += 1
            reasons[why] += 1
            c.drop("judge_rejected", f"{score.reason}: {why}")
    summary["rejection_reasons"] = dict(reasons.most_common(10))
    return summary
