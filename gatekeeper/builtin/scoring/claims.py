"""The ``claim_verification`` hallucination detector: each claim checked against its evidence.

Claim-level verification in the manner of ragas faithfulness and FActScore, through
gatekeeper's judge machinery (:mod:`gatekeeper.engine.judging`: any provider, K votes,
the runner's cache, repair, NODATA on an unusable reply):

1. the answer is split into atomic claims — its sentences (:func:`gatekeeper.claims.split_claims`,
   no model call), or the judge's own decomposition (``claims: judge``, one cached call);
2. for each claim the ``evidence`` best context windows are retrieved by BM25
   (:func:`gatekeeper.claims.retrieve`), so the judge reads a few sentences, not the whole
   context, and a long context costs no more per claim than a short one;
3. the judge says for each claim, separately, whether the evidence ``supported``,
   ``contradicted`` it or gives ``not_enough_info`` — K votes per claim;
4. a claim's hallucination probability is the share of its usable votes that are not
   ``supported``; the value aggregates them over the claims (``max`` by default: an answer
   is as hallucinated as its worst claim; ``mean`` is 1 − ragas faithfulness).

The unsupported and contradicted claims are in ``details`` and as spans.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from gatekeeper import hookimpl
from gatekeeper.builtin.scoring.judge_grounding import EXTRACT_SYSTEM, EXTRACT_USER, atomic_claims_format, locate
from gatekeeper.builtin.scoring.judges import JudgeEvaluator
from gatekeeper.builtin.scoring.scores import DetectorScoreParams, detector_score
from gatekeeper.claims import Claim, Evidence, context_windows, merge, retrieve, split_claims
from gatekeeper.engine.judging import (
    Judge,
    JudgeParams,
    PromptTemplate,
    ReplyFormat,
    Verdict,
    case_variables,
    fleiss_kappa,
    load_template,
    majority,
    prompt_hash,
    unusable,
)
from gatekeeper.kinds import Detector, EvalContext, Register
from gatekeeper.types import Case, Generation, Score, Span

VERDICTS = ("supported", "contradicted", "not_enough_info")

VERIFY_SYSTEM = (
    "You check one claim against evidence taken from a context. The verdict is \"supported\" when "
    "the evidence states the claim or it follows directly from the evidence; \"contradicted\" when "
    "the evidence states something that cannot be true together with the claim (another person, "
    "place, date, number or answer; a negation; the other option of a comparison); "
    "\"not_enough_info\" when the evidence says neither. General knowledge does not count."
)
VERIFY_USER = """\
Evidence:
{{ evidence }}
{% if input %}
The claim comes from an answer to this question: {{ input }}
{% endif %}
Claim: {{ claim }}

Put a brief reason in "reasoning", then the "verdict": supported, contradicted or not_enough_info."""


class ClaimVerificationParams(JudgeParams, DetectorScoreParams):
    threshold: float | None = Field(0.5, ge=0, le=1)
    """Flag the output when its score (the claims' hallucination probability) is above this."""
    max_tokens: int = Field(256, ge=1)
    claims: Literal["sentences", "judge"] = "sentences"
    """How the answer is split: its sentences (no call), or the judge's atomic claims (one call)."""
    evidence: int = Field(3, ge=0, le=20)
    """Context windows retrieved per claim (BM25); 0 shows the judge the whole context."""
    window: int = Field(2, ge=1, le=10)
    """Sentences per context window (each sentence, and each run of this many)."""
    max_claims: int = Field(30, ge=1, le=200)
    aggregate: Literal["max", "mean"] = "max"
    """``max``: the worst claim's probability; ``mean``: 1 − faithfulness (ragas)."""
    question_as_support: bool = True
    """The question is shown with the evidence: a claim restating it is supported."""
    extract_template: str | None = None
    """The decomposition prompt for ``claims: judge`` (``template`` is the verification prompt)."""
    min_span_similarity: float = Field(80.0, ge=0, le=100)
    """How close a judge's reworded claim must be to a part of the answer to be located."""


class ClaimVerification(JudgeEvaluator, Detector):
    """Each claim of the output, with its retrieved evidence, verified by an LLM judge."""

    name = "claim_verification"
    description = "each claim checked by an LLM judge against its best evidence windows (K votes per claim)"
    value_range = ("1 flagged / 0 (emit: verdict), or the score: the claims' hallucination probability "
                   "(share of judge votes not 'supported'); lower is better")
    Params = ClaimVerificationParams
    params: ClaimVerificationParams
    system_prompt = VERIFY_SYSTEM
    user_template = VERIFY_USER
    _extract_template: PromptTemplate | None = None

    def verify_format(self) -> ReplyFormat:
        return ReplyFormat.choice("claim_verdict", "verdict", VERDICTS)

    def extract_format(self) -> ReplyFormat:
        return atomic_claims_format(self.params.max_claims)

    def extract_prompt(self, ctx: EvalContext) -> PromptTemplate:
        if self._extract_template is None:
            self._extract_template = load_template(
                self.params.extract_template, (("system", EXTRACT_SYSTEM), ("user", EXTRACT_USER)),
                ctx.config, system=EXTRACT_SYSTEM,
            )
        return self._extract_template

    def settings(self) -> dict[str, Any]:
        p = self.params
        return {"claims": p.claims, "evidence": p.evidence, "window": p.window, "max_claims": p.max_claims,
                "question_as_support": p.question_as_support, "aggregate": p.aggregate}

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        if not case.context or not case.context.strip():
            return self.result(None, reason="the case has no context to check the output against")
        p = self.params
        judge = Judge.load(p, ctx)
        variables = case_variables(case, generation)
        verify_t, verify_fmt = self.prompt(ctx), self.verify_format()
        settings = self.settings()
        if p.claims == "judge":
            settings["extract"] = self.extract_prompt(ctx).messages
        hash_ = prompt_hash(verify_t, verify_fmt, settings)
        extra_calls = [0, 0]
        if p.claims == "judge":
            found = await self._judge_claims(case, generation, ctx, judge, variables, extra_calls)
            if isinstance(found, Score):
                return found
            claims = found
        else:
            claims = split_claims(generation.text, max_claims=p.max_claims)
        if not claims:
            return detector_score(self, 0.0, reason="grounded: the output makes no factual claims",
                                  details={**judge.provenance(hash_), "faithfulness": 1.0, "claims": [],
                                           "unsupported": [], "contradicted": []})
        import asyncio  # here: asyncio is not needed to register the detector (gatekeeper --help)

        question = variables["input"] or ""
        evidence = [self.evidence(case.context, claim, question) for claim in claims]
        polls = await asyncio.gather(*(
            judge.poll(case, verify_t.render({
                **variables, "claim": claim.statement(question), "evidence": text,
                "input": question if p.question_as_support else "",
            }, verify_fmt), verify_fmt)
            for claim, (text, _) in zip(claims, evidence, strict=True)
        ))
        provenance = judge.provenance(hash_)
        provenance["judge_calls"] += extra_calls[0]
        provenance["judge_cache_hits"] += extra_calls[1]
        for claim, verdicts in zip(claims, polls, strict=True):
            bad = unusable(self, verdicts, provenance)
            if bad is not None:
                bad.reason = f"claim {claim.text!r}: {bad.reason}"
                return bad
        return self.verdict(generation.text, claims, evidence, polls, provenance)

    def evidence(self, context: str, claim: Claim, question: str) -> tuple[str, list[Evidence]]:
        """The text the judge is shown for ``claim`` and the windows it was made of."""
        p = self.params
        if p.evidence == 0:
            return context.strip(), []
        windows = context_windows(context, p.window) or []
        found = retrieve(claim.statement(question), windows, p.evidence, related=question)
        return "\n…\n".join(s.text for s in merge(context, found)) or context.strip(), found

    async def _judge_claims(self, case: Case, generation: Generation, ctx: EvalContext, judge: Judge,
                            variables: dict[str, Any], counts: list[int]) -> list[Claim] | Score:
        """The judge's atomic claims (asked once, at temperature 0), located in the output."""
        p = self.params
        fmt = self.extract_format()
        one = Judge(judge.model, judge.spec, p.model_copy(update={"votes": 1, "temperature": 0.0}), ctx)
        (extracted,) = await one.poll(case, self.extract_prompt(ctx).render(variables, fmt), fmt)
        counts[0], counts[1] = one.calls, one.cached
        bad = unusable(self, [extracted], one.provenance(""))
        if bad is not None:
            bad.reason = "claim extraction: " + bad.reason
            return bad
        claims = []
        for text in extracted.value:
            where = locate(text, generation.text, p.min_span_similarity)
            claims.append(Claim(text, where[0] if where else None, where[1] if where else None))
        return claims

    def verdict(self, output: str, claims: list[Claim], evidence: list[tuple[str, list[Evidence]]],
                polls: list[list[Verdict]], provenance: dict[str, Any]) -> Score:
        p = self.params
        rows: list[dict[str, Any]] = []
        spans: list[Span] = []
        agreement: list[float] = []
        for claim, (_, windows), verdicts in zip(claims, evidence, polls, strict=True):
            usable = [v for v in verdicts if v.ok]
            labels = [str(v.value) for v in usable]
            label, share = majority(labels)
            agreement.append(share)
            reason = next(str(v.reply.get("reasoning", "")) for v in usable if v.value == label)
            row = {
                "text": claim.text, "start": claim.start, "end": claim.end, "verdict": label,
                "p_unsupported": sum(lab != "supported" for lab in labels) / len(labels),
                "p_contradicted": sum(lab == "contradicted" for lab in labels) / len(labels),
                "votes": labels, "reason": reason,
                "evidence": [{"text": w.text, "start": w.start, "end": w.end, "bm25": w.score} for w in windows],
            }
            rows.append(row)
            if label != "supported" and claim.start is not None and claim.end is not None:
                spans.append(Span(output[claim.start:claim.end], claim.start, claim.end, "claim",
                                  f"{label.replace('_', ' ')}: {reason}" if reason else label.replace("_", " ")))
        probabilities = [r["p_unsupported"] for r in rows]
        value = max(probabilities) if p.aggregate == "max" else sum(probabilities) / len(probabilities)
        unsupported = [r["text"] for r in rows if r["verdict"] != "supported"]
        contradicted = [r["text"] for r in rows if r["verdict"] == "contradicted"]
        details: dict[str, Any] = {
            **provenance, "faithfulness": 1 - len(unsupported) / len(rows), "support": 1 - len(unsupported) / len(rows),
            "claims": rows, "unsupported": unsupported, "contradicted": contradicted,
            "unlocated": [r["text"] for r in rows if r["start"] is None], "votes": p.votes,
            "agreement": sum(agreement) / len(agreement),
        }
        if p.votes > 1:
            details["fleiss_kappa"] = fleiss_kappa([r["votes"] for r in rows])
        hallucinated = p.threshold is not None and value > p.threshold
        listing = "; ".join(repr(c) for c in unsupported[:3]) + (" …" if len(unsupported) > 3 else "")
        counts = f"{len(unsupported)} of {len(rows)} claims not supported ({len(contradicted)} contradicted)"
        if hallucinated:
            reason = f"hallucinated ({value:.2f} > {p.threshold:g}): {counts}: {listing}"
        elif p.threshold is None:
            reason = f"score {value:.2f}: {counts}" + (f": {listing}" if unsupported else "")
        elif unsupported:
            reason = f"grounded ({value:.2f}): {counts}, within the threshold: {listing}"
        else:
            reason = f"grounded ({value:.2f}): all {len(rows)} claims supported by their evidence"
        return detector_score(self, value, reason=reason, spans=spans, details=details)


@hookimpl
def gatekeeper_register_detectors(register: Register[Detector]) -> None:
    """Register the ``claim_verification`` detector."""
    register(ClaimVerification)
