"""The hand-written records the demo generator turns into suite, recording and training files."""

from __future__ import annotations

from dataclasses import dataclass

MODELS = ("baseline", "better", "worse")
"""The three simulated model versions, in the order of an ``EvalCase.plan``."""


@dataclass(frozen=True)
class EvalCase:
    """One evaluation case and what each simulated model answered.

    ``docs`` names the policy passages the case's context holds (the first is its
    ``doc_id``, the cluster key). ``plan`` says, for baseline, candidate-better and
    candidate-worse in that order, whether the answer was written to state every fact
    ("1") or not ("0"); the generator checks the written answers against it.
    """

    id: str
    docs: tuple[str, ...]
    topic: str
    difficulty: str
    tags: tuple[str, ...]
    input: str
    expected: str
    facts: tuple[str, ...]
    plan: str
    baseline: str
    better: str
    worse: str

    def output(self, model: str) -> str:
        """The answer ``model`` (one of :data:`MODELS`) gave to this case."""
        return {"baseline": self.baseline, "better": self.better, "worse": self.worse}[model]


@dataclass(frozen=True)
class TrainingExample:
    """One curated question with its ideal answer; ``rejected`` makes it a preference pair too."""

    docs: tuple[str, ...]
    question: str
    answer: str
    rejected: str | None = None
