"""Embedding-based scoring: ``semantic_similarity``, ``embedding_grounding``, ``self_consistency``.

All three use all-MiniLM-L6-v2 (see :mod:`gatekeeper_hf.embeddings`), loaded once per
process. Embedding work runs in a worker thread so the runner's event loop stays free.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from gatekeeper.kinds import Detector, EvalContext, Evaluator, ScoringParams
from gatekeeper.types import Case, Generation, GenerationRequest, Score, Span
from gatekeeper_hf.embeddings import (
    STOPWORDS,
    WORD_PATTERN,
    Segment,
    content_words,
    context_windows,
    get_encoder,
    split_sentences,
)

_NUMBER = re.compile(r"\d")
FRAGMENT_WORDS = 4
"""A claim with fewer content words than this is a fragment ("Delhi", "more than 1,600"): it
only means something with the question, so it is not gated by its own embedding."""
_SMALL_NUMBERS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
)
_NUMBER_WORDS = {word: str(value) for value, word in enumerate(_SMALL_NUMBERS.split(" "))} | {
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
    "ninety": "90", "hundred": "100", "thousand": "1000",
}


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


def rule_score(measured: float, limit: float, maximum: float) -> float:
    """A score in [0, 1] for the rule "``measured`` above ``limit`` is hallucinated": up to the
    limit it rises from 0 to 0.5, past it from just above 0.5 to 1.0 at ``maximum``; so it is
    above 0.5 exactly when the rule fires (as gatekeeper's built-in detectors build theirs)."""
    measured = min(max(measured, 0.0), maximum)
    if measured <= limit:
        return 0.5 * measured / limit if limit > 0 else 0.0
    return 0.5 + 0.5 * (measured - limit) / (maximum - limit)


class DetectorScoreParams(ScoringParams):
    """The score convention of gatekeeper's detectors (docs/evaluators.md, "Scores")."""

    threshold: float | None = Field(0.5, ge=0, le=1)
    """Flag the output when its score (0..1, 1 = hallucinated) is above this; null: no verdict."""
    emit: Literal["verdict", "score"] = "verdict"
    """What ``value`` holds: the verdict (1.0 flagged / 0.0) or the score itself."""


def detector_score(detector: Evaluator, score: float, *, reason: str = "", spans: list[Span] | None = None,
                   details: dict[str, Any] | None = None) -> Score:
    """value (verdict or score), ``passed`` and ``details`` score/threshold/flagged for ``score``."""
    score = round(min(max(float(score), 0.0), 1.0), 6)  # as recorded: the verdict is of this number
    threshold = detector.params.threshold
    flagged = None if threshold is None else score > threshold
    details = {**(details or {}), "score": score, "threshold": threshold, "flagged": flagged}
    emit = getattr(detector.params, "emit", "verdict")
    value = score if flagged is None or emit == "score" else float(flagged)
    return detector.result(value, reason=reason, passed=None if flagged is None else not flagged, spans=spans,
                           details=details)


class EmbeddingGroundingParams(DetectorScoreParams):
    word_similarity: float = Field(0.9, gt=0, le=1)
    """A new name the context lacks is accepted when a context word is at least this similar
    (magazine/magazines 0.91; Monday/Tuesday 0.87 and Mumbai/Delhi 0.64 are not). Numbers
    must appear exactly."""
    synonym_similarity: float = Field(0.6, gt=0, le=1)
    """A new ordinary word is supported by a context word at least this similar."""
    max_unsupported_fraction: float = Field(0.34, ge=0, le=1)
    """A claim's new ordinary words may lack support up to this fraction of them, and one
    such word is always allowed unless this is 0 (paraphrase brings words of its own); any
    unsupported number or name is one too many."""
    min_sentence_similarity: float = Field(0.3, ge=-1, le=1)
    """A claim of four or more content words whose best cosine with any context window is
    below this is off-topic, hence unsupported, whatever its words."""
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
    score: float = 0.0
    """0..1, above 0.5 exactly when the claim is unsupported (:func:`rule_score` of each test)."""

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
            "score": round(self.score, 4),
        }


class EmbeddingGrounding(Detector):
    """Flags output sentences that the context does not support.

    Each sentence of the output with content words is a claim, checked two ways:

    - meaning: its best cosine similarity (all-MiniLM-L6-v2) with any context window (a
      sentence, or ``window`` adjacent sentences) must reach ``min_sentence_similarity``;
      this accepts paraphrase and catches off-topic claims. Fragments (fewer than four
      content words, such as "Delhi") are not judged by their own embedding, which means
      little without the question.
    - new words (content words the prompt did not already give): every number must be in
      the context, every name (a capitalised word after the first) too, or a context word
      at least ``word_similarity`` close; of the ordinary words, one, or at most a
      ``max_unsupported_fraction`` of them, may lack a context word ``synonym_similarity``
      close.
      Sentence embeddings alone cannot catch a swapped name or number ("based in Mumbai"
      against "head office in Delhi" scores high); this check does.

    The score (``details["score"]``) is the highest claim score: each test's measure
    (1 − the weakest name's similarity, the unsupported ordinary words, 1 − the sentence
    similarity) against its limit, above 0.5 exactly when the claim fails a test, so the
    default threshold 0.5 flags when any claim is unsupported. Spans are the unsupported
    sentences.
    """

    name = "embedding_grounding"
    description = "claims off-topic for the context or with new names, numbers or words (MiniLM embeddings)"
    Params = EmbeddingGroundingParams

    def score(self, case: Case, generation: Generation) -> Score:
        if not case.context or not case.context.strip():
            return self.result(None, reason="the case has no context to check against")
        params = self.params
        assert isinstance(params, EmbeddingGroundingParams)
        claims = [s for s in split_sentences(generation.text) if content_words(s.text)]
        if not claims:
            return detector_score(self, 0.0, reason="no claims in the output", details={"support": 1.0, "claims": []})
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
        return detector_score(
            self,
            max(c.score for c in checks),
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


def specific_words(text: str) -> list[str]:
    """Numbers and names in ``text``, lower-cased: words with a digit, number words, and
    capitalised words other than the first of the sentence (or with an inner capital)."""
    found = []
    for position, match in enumerate(WORD_PATTERN.finditer(text)):
        word = match.group()
        lower = word.lower()
        if lower in STOPWORDS:
            continue
        name = word[:1].isupper() and position > 0
        if _NUMBER.search(word) or lower in _NUMBER_WORDS or name or any(c.isupper() for c in word[1:]):
            found.append(lower)
    return found


def check_claims(
    claims: Sequence[Segment], context: str, given: set[str], params: EmbeddingGroundingParams
) -> list[ClaimCheck]:
    """Check each claim against the context (see :class:`EmbeddingGrounding`)."""
    windows = context_windows(split_sentences(context), params.window) or [context]
    similarity = get_encoder().similarity([c.text for c in claims], windows)
    vocabulary = set(content_words(context))
    checks = []
    for i, claim in enumerate(claims):
        best_window = int(similarity[i].argmax())
        best = float(similarity[i, best_window])
        words = content_words(claim.text)
        specific = set(specific_words(claim.text))
        new_words = list(dict.fromkeys(w for w in words if w not in given))
        names = [w for w in new_words if w in specific]
        ordinary = [w for w in new_words if w not in specific]
        name_support, missing_names = _word_support(names, vocabulary, params.word_similarity)
        word_support, missing_words = _word_support(ordinary, vocabulary, params.synonym_similarity)
        allowed = params.max_unsupported_fraction * len(ordinary)
        limit = max(1.0, allowed) if params.max_unsupported_fraction > 0 else 0.0
        too_many = len(missing_words) > limit
        missing = missing_names + (missing_words if too_many else [])
        fragment = len(words) < FRAGMENT_WORDS
        supported = not missing and (fragment or best >= params.min_sentence_similarity)
        score = max(
            rule_score(1 - name_support, 1 - params.word_similarity, 1.0) if missing_names or names else 0.0,
            rule_score(len(missing_words), limit, max(len(ordinary), limit + 1)),
            0.0 if fragment else rule_score(1 - best, 1 - params.min_sentence_similarity, 2.0),
        )
        checks.append(ClaimCheck(claim, best, windows[best_window], min(name_support, word_support), missing,
                                 supported, score))
    return checks


def _word_support(words: list[str], vocabulary: set[str], threshold: float) -> tuple[float, list[str]]:
    """(least support among ``words``, the words below ``threshold``); 1.0 for a verbatim match,
    0.0 for an absent number, else the best embedding similarity to a vocabulary word."""
    known = {_normal(v) for v in vocabulary}
    absent = [w for w in words if _normal(w) not in known]
    if not absent:
        return 1.0, []
    supports: dict[str, float] = {w: 0.0 for w in absent if _NUMBER.search(_normal(w))}
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
    """Compare words without a possessive, plural -s, hyphens or digit grouping, and small
    number words as digits: "Magazines'" ~ "magazine", "1,600" ~ "1600", "nine" ~ "9"."""
    word = word.lower().removesuffix("'s").rstrip("'").replace("-", "")
    word = re.sub(r"(?<=\d),(?=\d{3})", "", word)
    if word in _NUMBER_WORDS:
        return _NUMBER_WORDS[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


# --------------------------------------------------------------------------- self-consistency


class SelfConsistencyParams(ScoringParams):
    threshold: float | None = 0.0
    """Verdict: passed when the value (1.0 some sentence flagged, 0.0 none) is at most this."""
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
