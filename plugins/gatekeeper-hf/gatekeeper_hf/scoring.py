"""Embedding-based scoring: ``semantic_similarity``, ``embedding_grounding``, ``self_consistency``.

All three use all-MiniLM-L6-v2 (see :mod:`gatekeeper_hf.embeddings`), loaded once per
process. Embedding work runs in a worker thread so the runner's event loop stays free.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field

from gatekeeper.kinds import Detector, EvalContext, Evaluator, ScoringParams
from gatekeeper.types import Case, Generation, GenerationRequest, Score, Span
from gatekeeper_hf.embeddings import (
    Segment,
    content_words,
    context_windows,
    get_encoder,
    split_sentences,
)

_NUMBER = re.compile(r"\d")
FRAGMENT_WORDS = 4
"""A claim with fewer content words than this is a fragment ("Delhi", "more than 1,600"): it
only means something with the question, so it is not retrieved or gated by its own
embedding; its words are looked for in the whole context."""
_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
     "ninety": "90", "hundred": "100", "thousand": "1000"}


class SemanticSimilarityParams(ScoringParams):
    threshold: float | None = Field(0.7, ge=0, le=1)
    """Pass when the cosine similarity is at least this."""


class SemanticSimilarity(Evaluator):
    """Cosine similarity of the output and ``expected`` in all-MiniLM-L6-v2 space, clipped to 0..1."""

    name = "semantic_similarity"
    description = "cosine similarity of output and expected answer (all-MiniLM-L6-v2 embeddings)"
    value_range: ClassVar[str] = "0..1, higher is better"
    Params = SemanticSimilarityParams

    def score(self, case: Case, generation: Generation) -> Score:
        if case.expected is None:
            return self.result(None, reason="the case has no expected answer")
        if not generation.text.strip() or not case.expected.strip():
            return self.result(0.0, reason="empty output or expected answer")
        cosine = float(get_encoder().similarity([generation.text], [case.expected])[0, 0])
        value = min(max(cosine, 0.0), 1.0)
        return self.result(value, reason=f"cosine similarity {cosine:.3f}", details={"cosine": cosine})

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        return await asyncio.to_thread(self.score, case, generation)


# --------------------------------------------------------------------------- grounding


class EmbeddingGroundingParams(ScoringParams):
    word_similarity: float = Field(0.9, gt=0, le=1)
    """A new word the context lacks is accepted when a context word is at least this similar
    (inflections and close synonyms: magazine/magazines 0.91, bought/purchased 0.91;
    Monday/Tuesday 0.87 and Mumbai/Delhi 0.64 are not). Numbers must appear exactly."""
    min_sentence_similarity: float = Field(0.1, ge=-1, le=1)
    """A claim whose best cosine with any context window is below this is off-topic, hence
    unsupported, whatever its words."""
    top_k: int = Field(3, ge=1)
    """New words are looked for in the ``top_k`` context windows most similar to the claim."""
    window: int = Field(2, ge=1)
    """Context windows: each sentence and each run of this many adjacent sentences."""


@dataclass
class ClaimCheck:
    """How well one claim (a sentence of the output) is supported by the context."""

    segment: Segment
    sentence_similarity: float
    evidence: str
    word_support: float
    unsupported_words: list[str]
    supported: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.segment.text,
            "start": self.segment.start,
            "end": self.segment.end,
            "sentence_similarity": round(self.sentence_similarity, 4),
            "word_support": round(self.word_support, 4),
            "unsupported_words": self.unsupported_words,
            "evidence": self.evidence,
            "supported": self.supported,
        }


class EmbeddingGrounding(Detector):
    """Flags output sentences that bring in information the context does not contain.

    Each sentence of the output with content words is a claim. Its words that the prompt
    did not already give are its new information; each must be found in the context
    windows most similar to the claim (retrieved by sentence embedding): verbatim, or as
    a context word whose embedding is at least ``word_similarity`` close. A claim whose
    best window is below ``min_sentence_similarity`` is off-topic. Value 1.0 when any
    claim is unsupported. Sentence embeddings alone cannot catch a swapped entity ("based
    in Mumbai" against "head office in Delhi" scores high); the word check does.
    """

    name = "embedding_grounding"
    description = "claims whose new words are not found in the context (MiniLM retrieval + word match)"
    Params = EmbeddingGroundingParams

    def score(self, case: Case, generation: Generation) -> Score:
        if not case.context or not case.context.strip():
            return self.result(None, reason="the case has no context to check against")
        params = self.params
        assert isinstance(params, EmbeddingGroundingParams)
        claims = [s for s in split_sentences(generation.text) if content_words(s.text)]
        if not claims:
            return self.result(0.0, reason="no claims in the output", details={"support": 1.0, "claims": []})
        given = set(_prompt_words(case))
        checks = check_claims(claims, case.context, given, params)
        unsupported = [c for c in checks if not c.supported]
        spans = [
            Span(c.segment.text, c.segment.start, c.segment.end, kind="claim", reason=_reason(c))
            for c in unsupported
        ]
        support = 1 - len(unsupported) / len(checks)
        reason = (
            f"{len(unsupported)} of {len(checks)} claims unsupported: {spans[0].reason}"
            if unsupported else f"all {len(checks)} claims supported by the context"
        )
        return self.result(
            1.0 if unsupported else 0.0,
            reason=reason,
            spans=spans,
            details={"support": support, "claims": [c.as_dict() for c in checks]},
        )

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        return await asyncio.to_thread(self.score, case, generation)


def _prompt_words(case: Case) -> list[str]:
    """Words the prompt gave the model (repeating them is not new information)."""
    texts = [m.get("content", "") for m in case.messages if m.get("role") != "assistant"]
    question = case.vars.get("question") if isinstance(case.vars, dict) else None
    if isinstance(question, str):
        texts.append(question)
    return [w for text in texts for w in content_words(text)]


def _reason(check: ClaimCheck) -> str:
    if check.unsupported_words:
        return f"not in the context: {', '.join(check.unsupported_words)}"
    return f"off-topic: best context similarity {check.sentence_similarity:.2f}"


def check_claims(
    claims: Sequence[Segment], context: str, given: set[str], params: EmbeddingGroundingParams
) -> list[ClaimCheck]:
    """Check each claim against the context (see :class:`EmbeddingGrounding`)."""
    encoder = get_encoder()
    windows = context_windows(split_sentences(context), params.window) or [context]
    similarity = encoder.similarity([c.text for c in claims], windows)
    context_vocabulary = set(content_words(context))
    checks = []
    for i, claim in enumerate(claims):
        ranked = similarity[i].argsort(descending=True)[: params.top_k].tolist()
        best = float(similarity[i, ranked[0]])
        words = content_words(claim.text)
        fragment = len(words) < FRAGMENT_WORDS
        nearby = context_vocabulary if fragment else {w for j in ranked for w in content_words(windows[j])}
        new_words = list(dict.fromkeys(w for w in words if w not in given))
        word_support, missing = _word_support(new_words, nearby or context_vocabulary, params.word_similarity)
        supported = not missing and (fragment or best >= params.min_sentence_similarity)
        checks.append(ClaimCheck(claim, best, windows[ranked[0]], word_support, missing, supported))
    return checks


def _word_support(words: list[str], vocabulary: set[str], threshold: float) -> tuple[float, list[str]]:
    """(least support among ``words``, the words below ``threshold``); 1.0 for a verbatim match,
    0.0 for an absent number, else the best embedding similarity to a vocabulary word."""
    known = {_normal(v) for v in vocabulary}
    absent = [w for w in words if _normal(w) not in known]
    if not absent:
        return 1.0, []
    supports: dict[str, float] = {w: 0.0 for w in absent if _NUMBER.search(w)}
    lexical = [w for w in absent if w not in supports]
    candidates = sorted(v for v in vocabulary if not _NUMBER.search(v))
    if lexical and candidates:
        best = get_encoder().similarity(lexical, candidates).max(dim=1).values.tolist()
        supports |= dict(zip(lexical, best, strict=True))
    else:
        supports |= {w: 0.0 for w in lexical}
    missing = [w for w in absent if supports[w] < threshold]
    return min(supports.values()), missing


def _normal(word: str) -> str:
    """Compare words without a possessive, hyphens or digit grouping, and small number words
    as digits: "Magazine's" ~ "magazine", "1,600" ~ "1600", "nine" ~ "9"."""
    word = word.lower().removesuffix("'s").replace("-", "")
    word = re.sub(r"(?<=\d),(?=\d{3})", "", word)
    return _NUMBER_WORDS.get(word, word)


# --------------------------------------------------------------------------- self-consistency


class SelfConsistencyParams(ScoringParams):
    samples: int = Field(5, ge=1, le=50)
    """Extra answers sampled from the model being scored (temperature 1.0, seeds 1..N)."""
    temperature: float = Field(1.0, gt=0)
    max_tokens: int = Field(128, ge=1)
    min_support: float = Field(0.5, ge=-1, le=1)
    """A sentence is flagged when its mean best cosine over the samples is below this."""


class SelfConsistency(Detector):
    """SelfCheckGPT-style (Manakul et al., 2023): sentences the model's own samples do not back.

    Samples ``samples`` more answers to the case's messages from the model being scored,
    through the runner (cached). Each sentence of the output gets, per sample, its best
    cosine similarity with that sample's sentences (all-MiniLM-L6-v2); its support is the
    mean over samples. Sentences below ``min_support`` are flagged: a fact the model
    states only sometimes is likely made up. Needs no context. Value 1.0 when any
    sentence is flagged; NODATA when the host gives no model to sample from.
    """

    name = "self_consistency"
    description = "sentences that the model's own resampled answers do not support (SelfCheckGPT)"
    Params = SelfConsistencyParams

    def score(self, case: Case, generation: Generation) -> Score:
        return self.result(None, reason="self_consistency needs the model being scored (async scoring)")

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        params = self.params
        assert isinstance(params, SelfConsistencyParams)
        if ctx.model is None or ctx.generate is None:
            return self.result(None, reason="no model to sample from: self_consistency needs the scored model")
        sentences = [s for s in split_sentences(generation.text) if content_words(s.text)]
        if not sentences:
            return self.result(0.0, reason="no sentences in the output", details={"support": 1.0, "claims": []})
        model, generate = ctx.model, ctx.generate
        requests = [
            GenerationRequest(case=case, messages=case.messages, max_tokens=params.max_tokens,
                              temperature=params.temperature, seed=seed)
            for seed in range(1, params.samples + 1)
        ]
        samples = await asyncio.gather(*(generate(model, r) for r in requests))
        texts = [s.text for s in samples if s.error is None]
        if not texts:
            return self.result(None, reason=f"every sample failed: {samples[0].error}")
        support = await asyncio.to_thread(sentence_support, [s.text for s in sentences], texts)
        return self._verdict(sentences, support, texts)

    def _verdict(self, sentences: list[Segment], support: list[float], samples: list[str]) -> Score:
        params = self.params
        assert isinstance(params, SelfConsistencyParams)
        flagged = [(s, v) for s, v in zip(sentences, support, strict=True) if v < params.min_support]
        spans = [Span(s.text, s.start, s.end, kind="claim", reason=f"sample support {v:.2f}") for s, v in flagged]
        claims = [
            {"text": s.text, "start": s.start, "end": s.end, "support": round(v, 4), "flagged": v < params.min_support}
            for s, v in zip(sentences, support, strict=True)
        ]
        reason = (
            f"{len(flagged)} of {len(sentences)} sentences not backed by {len(samples)} samples"
            if flagged else f"all {len(sentences)} sentences backed by {len(samples)} samples"
        )
        return self.result(
            1.0 if flagged else 0.0,
            reason=reason,
            spans=spans,
            details={"support": 1 - len(flagged) / len(sentences), "claims": claims, "samples": len(samples)},
        )


def sentence_support(sentences: Sequence[str], samples: Sequence[str]) -> list[float]:
    """For each sentence, the mean over samples of its best cosine with the sample's sentences."""
    encoder = get_encoder()
    totals = [0.0] * len(sentences)
    for sample in samples:
        parts = [s.text for s in split_sentences(sample)] or [sample or " "]
        best = encoder.similarity(list(sentences), parts).max(dim=1).values.tolist()
        totals = [t + b for t, b in zip(totals, best, strict=True)]
    return [t / len(samples) for t in totals]
