"""LLM judge evaluators: ``rubric`` (G-Eval), ``pairwise`` and ``reference_match``.

Any model can judge (``judge: openai:gpt-4o-mini?base_url=...``, ``hf:smollm2``,
``python:mod:fn``); calls go through the runner's cache. Replies are parsed strictly with
repair-and-retry (see :mod:`gatekeeper.engine.judging`); an unusable reply is NODATA, a judge that
could not answer at all is ERROR. ``docs/judges.md`` describes each evaluator.

``pairwise`` compares the scored model's answer with another model's answer to the same
request (:meth:`gatekeeper.kinds.EvalContext.output_of`): in ``gatekeeper check`` the
candidate is compared with the baseline and the baseline with the candidate; both orders
(A/B and B/A) are asked, so the baseline's prompts are the candidate's, found in the cache.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from gatekeeper import hookimpl
from gatekeeper.builtin.scoring.evaluators import ReferenceEvaluator, ReferenceParams
from gatekeeper.engine.judging import (
    Judge,
    JudgeParams,
    PromptTemplate,
    ReplyFormat,
    Verdict,
    case_variables,
    load_template,
    majority,
    prompt_hash,
    unusable,
    vote_summary,
)
from gatekeeper.kinds import EvalContext, Evaluator, Model, Register
from gatekeeper.types import Case, Generation, Message, ModelSpec, Score


class JudgeEvaluator(Evaluator):
    """Base of the judge evaluators: the prompt template, loaded once, and sync refusal."""

    system_prompt: ClassVar[str]
    user_template: ClassVar[str]
    params: JudgeParams
    _template: PromptTemplate | None = None

    def prompt(self, ctx: EvalContext) -> PromptTemplate:
        if self._template is None:
            self._template = load_template(
                self.params.template, (("system", self.system_prompt), ("user", self.user_template)),
                ctx.config, system=self.system_prompt,
            )
        return self._template

    def score(self, case: Case, generation: Generation) -> Score:
        return self.result(None, reason=f"{self.name} needs a judge model: it scores only inside a run")


# --------------------------------------------------------------------------- rubric

RUBRIC_SYSTEM = (
    "You are a careful, impartial evaluator of answers written by an AI assistant. "
    "You grade one answer against the given criteria, following the evaluation steps."
)
RUBRIC_USER = """\
Evaluation criteria:
{{ criteria }}

Evaluation steps:
{% for step in steps %}{{ loop.index }}. {{ step }}
{% endfor %}
{% if context %}Context:
{{ context }}

{% endif %}{% if input %}Question:
{{ input }}

{% endif %}{% if expected %}Reference answer:
{{ expected }}

{% endif %}Answer to evaluate:
{{ output }}

Put your brief reasoning in "reasoning", then the "score": an integer from {{ scale_min }} \
(worst) to {{ scale_max }} (best)."""

DEFAULT_STEPS = (
    "Read the question{context} and the answer carefully.",
    "Check how well the answer meets each part of the criteria; note what is missing or wrong.",
    "Assign a score on the scale: the lowest for an answer that fails the criteria, the highest "
    "for one that meets them fully.",
)

Include = Literal["input", "context", "expected"]


class RubricParams(JudgeParams):
    threshold: float | None = 0.5
    criteria: str = Field(min_length=1)
    """What is graded, e.g. ``Coherence: the answer is well structured and easy to follow.``"""
    steps: list[str] = Field(default_factory=list)
    """G-Eval evaluation steps (chain of thought) shown to the judge; default: generic ones."""
    scale: tuple[int, int] = (1, 5)
    """The lowest and highest score; the value is normalized to 0..1."""
    include: list[Include] = Field(default_factory=lambda: list[Include](["input", "context"]))
    """What the judge sees besides the answer."""
    logprobs: bool = False
    """Weight the score by the judge's token probabilities (G-Eval): the expected score over
    the top alternatives of the score token, when the endpoint returns logprobs."""
    top_logprobs: int = Field(20, ge=2, le=20)

    @field_validator("scale")
    @classmethod
    def _ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] >= value[1]:
            raise ValueError(f"scale {list(value)} must go from a lower to a higher score")
        if value[1] - value[0] > 100:
            raise ValueError("scale spans more than 100 points")
        return value


_INT = re.compile(r"^\s*(\d+)\s*$")


def _token_logprobs(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    raw = metadata.get("logprobs")
    if isinstance(raw, dict):
        raw = raw.get("content")
    return [t for t in raw or [] if isinstance(t, dict) and "token" in t]


def score_probabilities(generation: Generation, lo: int, hi: int) -> dict[int, float] | None:
    """The judge's probability of each score, from the top alternatives of the token that
    holds the ``score`` value (``None`` when the reply carries no usable logprobs)."""
    tokens = _token_logprobs(generation.metadata)
    if not tokens:
        return None
    text = "".join(str(t["token"]) for t in tokens)
    match = re.search(r'"score"\s*:\s*"?(\d+)', text)
    if match is None:
        return None
    pos = 0
    for token in tokens:
        end = pos + len(str(token["token"]))
        if pos <= match.start(1) < end:
            alternatives = token.get("top_logprobs") or [token]
            probs: dict[int, float] = {}
            for alt in alternatives:
                m = _INT.match(str(alt.get("token", "")))
                if m and lo <= int(m.group(1)) <= hi:
                    s = int(m.group(1))
                    probs[s] = probs.get(s, 0.0) + math.exp(float(alt["logprob"]))
            total = sum(probs.values())
            return {s: p / total for s, p in sorted(probs.items())} if total > 0 else None
        pos = end
    return None


class Rubric(JudgeEvaluator):
    """G-Eval-style grading: criteria and evaluation steps, a score on a scale, normalized."""

    name = "rubric"
    description = "LLM judge grades the output against criteria on a scale (G-Eval), normalized to 0..1"
    Params = RubricParams
    params: RubricParams
    system_prompt = RUBRIC_SYSTEM
    user_template = RUBRIC_USER

    def reply_format(self) -> ReplyFormat:
        lo, hi = self.params.scale
        return ReplyFormat.choice("rubric_score", "score", range(lo, hi + 1), json_type="integer", convert=int)

    def settings(self) -> dict[str, Any]:
        p = self.params
        return {"criteria": p.criteria, "steps": self.steps(), "scale": list(p.scale), "include": p.include}

    def steps(self) -> list[str]:
        if self.params.steps:
            return list(self.params.steps)
        context = " (and its context)" if "context" in self.params.include else ""
        return [s.format(context=context) for s in DEFAULT_STEPS]

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        p = self.params
        lo, hi = p.scale
        fmt = self.reply_format()
        template = self.prompt(ctx)
        judge = Judge.load(p, ctx)
        variables = case_variables(case, generation)
        for name in ("input", "context", "expected"):
            if name not in p.include:
                variables[name] = ""
        variables.update(criteria=p.criteria, steps=self.steps(), scale_min=lo, scale_max=hi)
        messages = template.render(variables, fmt)
        verdicts = await judge.poll(case, messages, fmt, top_logprobs=p.top_logprobs if p.logprobs else None)
        provenance = judge.provenance(prompt_hash(template, fmt, self.settings()))
        bad = unusable(self, verdicts, provenance)
        if bad is not None:
            return bad
        usable = [v for v in verdicts if v.ok]
        raw = [int(v.value) for v in usable]
        values = [(s - lo) / (hi - lo) for s in raw]
        details: dict[str, Any] = {**provenance, **vote_summary(verdicts), "scores": raw, "scale": [lo, hi]}
        how = ""
        if p.logprobs:
            weighted = [self._weighted(v, lo, hi) for v in usable]
            if all(w is not None for w in weighted):
                expected = [w for w in weighted if w is not None]
                values = [(e - lo) / (hi - lo) for e in expected]
                details["weighted_scores"] = [round(e, 4) for e in expected]
                how = ", logprob-weighted"
            else:
                details["logprobs"] = "the judge returned no usable logprobs; the plain score is used"
        value = sum(values) / len(values)
        mode, agreement = majority(raw)
        if len(usable) > 1:
            details["agreement"] = agreement
        votes = f"; {len(usable)} votes, {agreement:.0%} agree on {mode}" if len(usable) > 1 else ""
        shown = f"{raw[0]}" if len(raw) == 1 else f"mean of {raw}"
        return self.result(
            round(value, 6), details=details,
            reason=f"score {shown} on {lo}..{hi}{how} → {value:.3f}{votes}",
        )

    @staticmethod
    def _weighted(verdict: Verdict, lo: int, hi: int) -> float | None:
        assert verdict.generation is not None
        probs = score_probabilities(verdict.generation, lo, hi)
        return None if probs is None else sum(s * q for s, q in probs.items())


# --------------------------------------------------------------------------- pairwise

PAIRWISE_SYSTEM = (
    "You are an impartial judge comparing two answers to the same request. Judge only "
    "their substance against the criteria: the order in which they are shown, their length "
    "and their style must not sway you."
)
PAIRWISE_USER = """\
Criteria:
{{ criteria }}

{% if context %}Context:
{{ context }}

{% endif %}Request:
{{ input }}

[Answer A]
{{ answer_a }}
[End of answer A]

[Answer B]
{{ answer_b }}
[End of answer B]

Put your brief reasoning in "reasoning", then the "winner": "A" or "B"\
{% if allow_ties %}, or "tie" when neither is better{% endif %}."""

POINTS = {"win": 1.0, "tie": 0.5, "loss": 0.0}


class PairwiseParams(JudgeParams):
    threshold: float | None = 0.5
    against: str | None = None
    """The other model: a label of this run (``baseline``, ``candidate``) or a model spec.
    Default: in a two-model run (``gatekeeper check``) the other model."""
    criteria: str = (
        "Which answer responds better to the request: correct, complete, faithful to the "
        "context, and helpful?"
    )
    allow_ties: bool = True


class Pairwise(JudgeEvaluator):
    """Candidate vs. another model's answer, judged in both orders to cancel position bias."""

    name = "pairwise"
    description = "LLM judge prefers this answer or another model's (both orders; win 1, tie 0.5, loss 0)"
    value_range = "0..1: 1 wins in both orders, 0.5 tie (or orders disagree), 0 loses"
    Params = PairwiseParams
    params: PairwiseParams
    system_prompt = PAIRWISE_SYSTEM
    user_template = PAIRWISE_USER

    def reply_format(self) -> ReplyFormat:
        winners = ["A", "B", "tie"] if self.params.allow_ties else ["A", "B"]
        return ReplyFormat.choice("pairwise_winner", "winner", winners)

    def other_model(self, ctx: EvalContext) -> tuple[str, Model] | str:
        """``(label, model)`` of the model compared with, or why there is none."""
        against = self.params.against
        if against is None:
            others = [label for label in ctx.peers if label != ctx.label]
            if len(others) != 1:
                return ("pairwise needs another model's answer: run it in 'gatekeeper check' or set "
                        "'against:' to a model spec")
            against = others[0]
        if against == ctx.label:
            return f"pairwise cannot compare {against!r} with itself"
        if against in ctx.peers:
            return against, ctx.peers[against]
        if ":" not in against:
            return f"'against: {against}' is neither a model of this run ({', '.join(ctx.peers)}) nor a model spec"
        if ctx.load_model is None:
            return "pairwise needs the runner to load the other model"
        return against, ctx.load_model(ModelSpec.parse(against))

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        p = self.params
        other = self.other_model(ctx)
        if isinstance(other, str):
            return self.result(None, reason=other)
        other_label, other_model = other
        theirs = await ctx.output_of(other_model)
        if theirs.error is not None:
            return self.result(None, reason=f"{other_label} has no answer to compare with: {theirs.error}")
        if theirs.text.strip() == generation.text.strip():
            return self.result(0.5, reason=f"identical to {other_label}'s answer: tie",
                               details={"against": other_label, "outcome": "tie", "identical": True})
        fmt = self.reply_format()
        template = self.prompt(ctx)
        judge = Judge.load(p, ctx)
        base = {**case_variables(case, generation), "criteria": p.criteria, "allow_ties": p.allow_ties}
        first = template.render({**base, "answer_a": generation.text, "answer_b": theirs.text}, fmt)
        second = template.render({**base, "answer_a": theirs.text, "answer_b": generation.text}, fmt)
        import asyncio  # here: asyncio is not needed to register the judges (gatekeeper --help)

        orders = await asyncio.gather(judge.poll(case, first, fmt), judge.poll(case, second, fmt))
        provenance = judge.provenance(prompt_hash(template, fmt, {"criteria": p.criteria, "ties": p.allow_ties}))
        bad = unusable(self, [*orders[0], *orders[1]], provenance)
        if bad is not None:
            return bad
        # Outcome for the scored answer: shown as A in the first order, as B in the second.
        outcomes = [
            [_outcome(v.value, ours="A") for v in orders[0] if v.ok],
            [_outcome(v.value, ours="B") for v in orders[1] if v.ok],
        ]
        points = [POINTS[o] for order in outcomes for o in order]
        value = sum(points) / len(points)
        per_order = [majority(o)[0] if o else None for o in outcomes]
        consistent = None not in per_order and per_order[0] == per_order[1]
        outcome = "win" if value > 0.5 else "loss" if value < 0.5 else "tie"
        details: dict[str, Any] = {
            **provenance, **vote_summary([*orders[0], *orders[1]]),
            "against": other_label, "outcome": outcome,
            "answer_first": outcomes[0], "answer_second": outcomes[1],
            "position_consistent": consistent,
        }
        all_votes = outcomes[0] + outcomes[1]
        if len(all_votes) > 2:
            details["agreement"] = majority(all_votes)[1]
        if consistent:
            why = f"{outcome} against {other_label} in both orders"
        elif None in per_order:
            why = f"{outcome} against {other_label} (one order gave no usable reply)"
        else:
            why = (f"orders disagree ({per_order[0]} when shown first, {per_order[1]} when shown second: "
                   f"position bias) → {outcome}")
        return self.result(round(value, 6), reason=f"{why}; value {value:.3f}", details=details)


def _outcome(winner: str, *, ours: str) -> str:
    if winner == "tie":
        return "tie"
    return "win" if winner == ours else "loss"


# --------------------------------------------------------------------------- reference_match

REFERENCE_SYSTEM = (
    "You are a careful grader. You decide whether an answer agrees in substance with a "
    "reference answer; wording, length and style do not matter, facts and conclusions do."
)
REFERENCE_USER = """\
{% if input %}Question:
{{ input }}

{% endif %}Reference answer{% if references|length > 1 %}s (agreeing with any one is enough){% endif %}:
{% for r in references %}- {{ r }}
{% endfor %}
Answer to grade:
{{ output }}

Put your brief reasoning in "reasoning", then the "verdict": "match" when the answer agrees with \
the reference in substance{% if allow_partial %}, "partial" when it agrees only in part or leaves \
out something the reference says{% endif %}, "mismatch" when it contradicts or misses it."""

VERDICT_VALUES = {"match": 1.0, "partial": 0.5, "mismatch": 0.0}


class ReferenceMatchParams(JudgeParams, ReferenceParams):
    threshold: float | None = 1.0
    allow_partial: bool = True
    """Let the judge answer ``partial`` (value 0.5)."""


class ReferenceMatch(JudgeEvaluator, ReferenceEvaluator):
    """The judge decides whether the output agrees with the expected answer."""

    name = "reference_match"
    description = "LLM judge: the output agrees with the reference answer (match 1, partial 0.5, mismatch 0)"
    Params = ReferenceMatchParams
    params: ReferenceMatchParams
    system_prompt = REFERENCE_SYSTEM
    user_template = REFERENCE_USER

    def reply_format(self) -> ReplyFormat:
        verdicts = ["match", "partial", "mismatch"] if self.params.allow_partial else ["match", "mismatch"]
        return ReplyFormat.choice("reference_verdict", "verdict", verdicts)

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        references = self.references(case)
        if not references:
            return self.missing_reference()
        fmt = self.reply_format()
        template = self.prompt(ctx)
        judge = Judge.load(self.params, ctx)
        messages: Sequence[Message] = template.render({
            **case_variables(case, generation), "references": references,
            "allow_partial": self.params.allow_partial,
        }, fmt)
        verdicts = await judge.poll(case, tuple(messages), fmt)
        provenance = judge.provenance(prompt_hash(template, fmt, {"partial": self.params.allow_partial}))
        bad = unusable(self, verdicts, provenance)
        if bad is not None:
            return bad
        labels = [str(v.value) for v in verdicts if v.ok]
        verdict, agreement = majority(labels)
        value = sum(VERDICT_VALUES[v] for v in labels) / len(labels)
        details: dict[str, Any] = {**provenance, **vote_summary(verdicts), "verdicts": labels, "verdict": verdict}
        votes = ""
        if len(labels) > 1:
            details["agreement"] = agreement
            votes = f"; {len(labels)} votes, {agreement:.0%} agree"
        return self.result(round(value, 6), details=details, reason=f"{verdict} with the reference{votes}")


# --------------------------------------------------------------------------- registration

JUDGE_EVALUATORS: tuple[type[Evaluator], ...] = (Rubric, Pairwise, ReferenceMatch)


@hookimpl
def gatekeeper_register_evaluators(register: Register[Evaluator]) -> None:
    """Register the judge evaluators."""
    for evaluator in JUDGE_EVALUATORS:
        register(evaluator)
