"""The ``judge_grounding`` hallucination detector: an LLM judge checks each claim.

Two judge calls per output (both cached by the runner): the first extracts the output's
atomic claims (short, self-contained factual statements); the second gets the context and
every claim, numbered, and says for each whether the context supports it. Unsupported
claims become spans, located in the output by exact, case-insensitive or fuzzy (rapidfuzz)
match. The score (``details["score"]``, 0..1) is :func:`.scores.rule_score` of the
unsupported share against ``max_unsupported_fraction`` (default 0: any unsupported claim):
above 0.5 exactly when the share exceeds it, so the default threshold 0.5 flags what that
rule flags; ``details["support"]`` is the supported share. ``value`` is the verdict (1.0
hallucinated, else 0.0) or, with ``emit: score``, the score.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from gatekeeper import hookimpl
from gatekeeper.builtin.scoring.judges import JudgeEvaluator
from gatekeeper.builtin.scoring.scores import DEFAULT_THRESHOLD, detector_score, rule_score
from gatekeeper.engine.judging import (
    Judge,
    JudgeParams,
    PromptTemplate,
    ReplyError,
    ReplyFormat,
    Verdict,
    case_variables,
    fleiss_kappa,
    load_template,
    majority,
    object_schema,
    prompt_hash,
    unusable,
    vote_summary,
)
from gatekeeper.kinds import Detector, EvalContext, Register
from gatekeeper.types import Case, Generation, Score, Span

EXTRACT_SYSTEM = (
    "You split a text into atomic factual claims: each claim states exactly one fact, is "
    "understandable on its own, and keeps the text's own wording where possible. Opinions, "
    "greetings and questions are not claims."
)
EXTRACT_USER = """\
{% if input %}The text answers this request:
{{ input }}

{% endif %}Text:
{{ output }}

List its atomic factual claims in "claims" (an empty list when it makes none)."""

VERIFY_SYSTEM = (
    "You check claims against a context. A claim is supported only when the context states "
    "it or it follows directly from the context; general knowledge does not count."
)
VERIFY_USER = """\
Context:
{{ context }}

Claims:
{% for claim in claims %}{{ loop.index }}. {{ claim }}
{% endfor %}
For every claim give {"claim": its number, "supported": true or false, "reason": a few words} \
in "verdicts", one entry per claim, in order."""


class JudgeGroundingParams(JudgeParams):
    threshold: float | None = Field(DEFAULT_THRESHOLD, ge=0, le=1)
    """Flag the output when its score (0..1, 1 = hallucinated) is above this; null: no verdict."""
    emit: Literal["verdict", "score"] = "verdict"
    """What ``value`` holds: the verdict (1.0 flagged / 0.0) or the score itself."""
    max_unsupported_fraction: float = Field(0.0, ge=0, lt=1)
    """Hallucinated when more than this share of the claims is unsupported."""
    max_claims: int = Field(30, ge=1, le=200)
    """At most this many claims are checked (the first ones)."""
    question_as_support: bool = True
    """Show the question with the context (claims restating it count as supported)."""
    min_span_similarity: float = Field(80.0, ge=0, le=100)
    """rapidfuzz partial ratio an unsupported claim needs to be located in the output."""
    verify_template: str | None = None
    """The verification prompt (``template`` is the extraction prompt)."""


def locate(claim: str, output: str, min_similarity: float) -> tuple[int, int] | None:
    """Where ``claim`` is in ``output``: exact, case-insensitive, then the best fuzzy window."""
    text = claim.strip().rstrip(".")
    if not text:
        return None
    at = output.find(text)
    if at < 0:
        at = output.lower().find(text.lower())
    if at >= 0:
        return at, at + len(text)
    from rapidfuzz import fuzz

    found = fuzz.partial_ratio_alignment(text, output, score_cutoff=min_similarity)
    if found is None:
        return None
    return found.dest_start, found.dest_end


def atomic_claims_format(max_claims: int) -> ReplyFormat:
    """The reply of a claim-extraction call: ``{"claims": [...]}``, whitespace-normalised,
    de-duplicated, at most ``max_claims`` (shared with ``claim_verification``)."""
    schema = object_schema({"claims": {"type": "array", "items": {"type": "string"}}})

    def check(obj: dict[str, Any]) -> list[str]:
        claims = [" ".join(str(c).split()) for c in obj["claims"]]
        return list(dict.fromkeys(c for c in claims if c))[:max_claims]

    return ReplyFormat("atomic_claims", schema, check)


class JudgeGrounding(JudgeEvaluator, Detector):
    """Atomic claims of the output, each checked against the context by an LLM judge."""

    name = "judge_grounding"
    description = "LLM judge extracts the output's atomic claims and checks each against the context"
    Params = JudgeGroundingParams
    params: JudgeGroundingParams
    system_prompt = EXTRACT_SYSTEM
    user_template = EXTRACT_USER
    _verify_template: PromptTemplate | None = None

    def verify_prompt(self, ctx: EvalContext) -> PromptTemplate:
        if self._verify_template is None:
            self._verify_template = load_template(
                self.params.verify_template, (("system", VERIFY_SYSTEM), ("user", VERIFY_USER)),
                ctx.config, system=VERIFY_SYSTEM,
            )
        return self._verify_template

    def extract_format(self) -> ReplyFormat:
        return atomic_claims_format(self.params.max_claims)

    def verify_format(self, n_claims: int) -> ReplyFormat:
        schema = object_schema({"verdicts": {"type": "array", "items": object_schema({
            "claim": {"type": "integer"}, "supported": {"type": "boolean"}, "reason": {"type": "string"},
        })}})

        def check(obj: dict[str, Any]) -> tuple[tuple[bool, str], ...]:
            found: dict[int, tuple[bool, str]] = {}
            for item in obj["verdicts"]:
                index = int(item["claim"])
                if not 1 <= index <= n_claims:
                    raise ReplyError(f"verdicts: claim {index} does not exist (there are {n_claims})")
                found.setdefault(index, (bool(item["supported"]), str(item["reason"])))
            missing = [i for i in range(1, n_claims + 1) if i not in found]
            if missing:
                raise ReplyError(f"verdicts: no verdict for claim(s) {', '.join(map(str, missing))}")
            return tuple(found[i] for i in range(1, n_claims + 1))

        return ReplyFormat("claim_verdicts", schema, check)

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        if not case.context or not case.context.strip():
            return self.result(None, reason="the case has no context to check the output against")
        p = self.params
        judge = Judge.load(p, ctx)
        variables = case_variables(case, generation)
        extract_t, verify_t = self.prompt(ctx), self.verify_prompt(ctx)
        extract_fmt = self.extract_format()
        # Extraction is asked once; the votes are on the verification.
        one_vote = Judge(judge.model, judge.spec, p.model_copy(update={"votes": 1, "temperature": 0.0}), ctx)
        (extracted,) = await one_vote.poll(case, extract_t.render(variables, extract_fmt), extract_fmt)
        hash_ = prompt_hash(extract_t, extract_fmt, {"verify": verify_t.messages, "max_claims": p.max_claims})
        provenance = one_vote.provenance(hash_)
        bad = unusable(self, [extracted], provenance)
        if bad is not None:
            bad.reason = "claim extraction: " + bad.reason
            return bad
        claims: list[str] = extracted.value
        if not claims:
            return detector_score(self, 0.0, reason="grounded: the output makes no factual claims",
                                  details={**provenance, "support": 1.0, "claims": []})
        context = case.context
        if p.question_as_support and variables["input"]:
            context = f"{context}\n\n(The question asked: {variables['input']})"
        verify_fmt = self.verify_format(len(claims))
        verdicts = await judge.poll(case, verify_t.render({**variables, "context": context, "claims": claims},
                                                          verify_fmt), verify_fmt)
        provenance = judge.provenance(hash_)
        provenance["judge_calls"] += one_vote.calls
        provenance["judge_cache_hits"] += one_vote.cached
        bad = unusable(self, verdicts, provenance)
        if bad is not None:
            bad.reason = "claim verification: " + bad.reason
            return bad
        return self.verdict(generation.text, claims, [v for v in verdicts if v.ok], verdicts, provenance)

    def verdict(self, output: str, claims: list[str], usable: list[Verdict], verdicts: list[Verdict],
                provenance: dict[str, Any]) -> Score:
        p = self.params
        rows: list[dict[str, Any]] = []
        spans: list[Span] = []
        agreement: list[float] = []
        for i, claim in enumerate(claims):
            supported, share = majority([v.value[i][0] for v in usable])
            agreement.append(share)
            reason = next(v.value[i][1] for v in usable if v.value[i][0] == supported)
            where = locate(claim, output, p.min_span_similarity)
            rows.append({"claim": claim, "supported": supported, "reason": reason,
                         "p_unsupported": sum(not v.value[i][0] for v in usable) / len(usable),
                         "start": where[0] if where else None, "end": where[1] if where else None})
            if not supported and where is not None:
                spans.append(Span(output[where[0]:where[1]], where[0], where[1], "claim", reason or "not supported"))
        unsupported = [r["claim"] for r in rows if not r["supported"]]
        share = len(unsupported) / len(claims)
        score = rule_score(share, p.max_unsupported_fraction, 1.0)
        hallucinated = share > p.max_unsupported_fraction
        details: dict[str, Any] = {
            **provenance, **vote_summary(verdicts), "support": 1 - share, "claims": rows,
            "unsupported": unsupported,
            "unlocated": [r["claim"] for r in rows if not r["supported"] and r["start"] is None],
        }
        if len(usable) > 1:
            details["agreement"] = sum(agreement) / len(agreement)
            details["fleiss_kappa"] = fleiss_kappa([[v.value[i][0] for v in usable] for i in range(len(claims))])
        listing = "; ".join(repr(c) for c in unsupported[:3]) + (" …" if len(unsupported) > 3 else "")
        if hallucinated:
            reason = f"hallucinated: {len(unsupported)} of {len(claims)} claims not supported by the context: {listing}"
        elif unsupported:
            reason = (f"grounded: {len(unsupported)} of {len(claims)} claims unsupported, within "
                      f"max_unsupported_fraction {p.max_unsupported_fraction:g}: {listing}")
        else:
            reason = f"grounded: all {len(claims)} claims supported by the context"
        return detector_score(self, score, reason=reason, spans=spans, details=details)


@hookimpl
def gatekeeper_register_detectors(register: Register[Detector]) -> None:
    """Register the ``judge_grounding`` detector."""
    register(JudgeGrounding)
