"""Built-in hallucination detector ``grounding``: is every claim in the output in the context?

A lexical check, fast and without models: it pulls three kinds of checkable items out of
the output and looks each up in the case's context (and, by default, the question):

- **numbers**: digits, money, percentages, number words and dates, compared by value
  ("30 days" = "thirty days", "$1,200" = "1200", "March 2, 1991" = "1991-03-02");
- **entities**: capitalised word sequences (not a lone capitalised first word of a
  sentence) and acronyms; every word of an entity must occur in the context;
- **content words**: words that are not stop words, compared after light stemming.

One unsupported number or entity makes the output hallucinated; content words flip the
verdict only past a count or a fraction (paraphrase uses words the context lacks). With
``structural`` (the default) the checks of :mod:`.structural` run too: the other option
of a comparison, a flipped yes/no, an added negation, a name put together from two.

The score (``details["score"]``, 0..1) grows with the evidence: the unsupported share of
the output below the limits, how far past a limit it is above them; it exceeds 0.5
exactly when a limit is passed or a structural check fires (:func:`.scores.rule_score`).
The figures on HaluEval QA and the reasons for the defaults are in ``docs/benchmarks.md``.
Only the standard library is used; thousands of cases are checked per second.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from pydantic import Field

from gatekeeper import hookimpl
from gatekeeper.builtin.scoring.lexical import (
    _ORDINALS,
    _UNITS,
    _WEAK_NUMBER_WORDS,
    NAME_CONNECTORS,
    STOPWORDS,
    NumberMention,
    Scan,
    Token,
    _canonical,
    fold,
    name_sequences,
    name_words,
    scan,
    stem,
)
from gatekeeper.builtin.scoring.scores import DetectorScoreParams, detector_score, rule_score
from gatekeeper.builtin.scoring.structural import CHECKS, CheckName, find
from gatekeeper.kinds import Detector, Register
from gatekeeper.types import Case, Generation, Score, Span

__all__ = [
    "NAME_CONNECTORS", "STOPWORDS", "Grounding", "GroundingParams", "NumberMention", "Scan", "SupportIndex",
    "Token", "fold", "name_sequences", "name_words", "scan", "stem", "support_index",
]

ClaimKind = Literal["number", "entity", "word"]

# --------------------------------------------------------------------------- support


class SupportIndex:
    """What the context (and question) support: word forms, stems and their prefixes,
    number values, dates, and the initials of their names ("United States" -> "us")."""

    def __init__(self, texts: Iterable[str], prefix_length: int) -> None:
        self.prefix_length = prefix_length
        self.words: set[str] = set()
        self.prefixes: set[str] = set()
        self.numbers: list[Decimal] = []
        self.dates: list[tuple[int | None, int | None, int | None]] = []
        for text in texts:
            self._add(text)
        self.number_set = set(self.numbers)

    def _add(self, text: str) -> None:
        found = scan(text)
        for number in found.numbers:
            if number.date is not None:
                self.dates.append(number.date)
                year, _, day = number.date
                self.numbers.extend(Decimal(part) for part in (year, day) if part is not None)
            elif number.value is not None:
                self.numbers.append(number.value)
        for token in found.tokens:
            self.words.add(token.norm)
            stemmed = stem(token.norm)
            self.words.add(stemmed)
            if token.norm in _WEAK_NUMBER_WORDS:  # in the context even "one" states a number
                self.numbers.append(Decimal(_UNITS.get(token.norm) or _ORDINALS[token.norm]))
            if self.prefix_length and len(stemmed) >= self.prefix_length:
                self.prefixes.add(stemmed[: self.prefix_length])
        for run in name_sequences(found.tokens, text):
            initials = "".join(t.norm[0] for t in run if t.norm not in NAME_CONNECTORS and t.norm)
            if len(initials) >= 2:
                self.words.add(initials)

    def has_word(self, norm: str, *, prefix: bool = True) -> bool:
        """Whether the folded word ``norm`` (or its stem, or with ``prefix`` the first
        letters of its stem) occurs in the support. Names are checked without prefixes:
        "Robertson" is not "Roberts"."""
        if norm in self.words:
            return True
        stemmed = stem(norm)
        if stemmed in self.words:
            return True
        p = self.prefix_length
        return prefix and bool(p) and len(stemmed) >= p and stemmed[:p] in self.prefixes

    def has_number(self, number: NumberMention) -> bool:
        if number.date is not None:
            return any(
                all(part is None or part == other for part, other in zip(number.date, date, strict=True))
                for date in self.dates
            )
        assert number.value is not None
        if number.value in self.number_set:
            return True
        if not number.quantum:
            return False
        half = number.quantum / 2
        return any(abs(number.value - known) <= half for known in self.numbers)


@lru_cache(maxsize=256)
def support_index(texts: tuple[str, ...], prefix_length: int) -> SupportIndex:
    """The (cached) index of ``texts``: candidate and baseline, and every epoch, of one
    case share a context, so each context is scanned once."""
    return SupportIndex(texts, prefix_length)


# --------------------------------------------------------------------------- detector


@dataclass(frozen=True)
class Claim:
    """One checked item of the output and whether the support index holds it."""

    kind: ClaimKind
    key: str
    span: Span
    supported: bool


class GroundingParams(DetectorScoreParams):
    question_as_support: bool = True
    """Count the question (``vars.input`` or the last user message) as support too."""
    check_numbers: bool = True
    check_entities: bool = True
    check_words: bool = True
    max_unsupported_numbers: int = Field(default=0, ge=0)
    """Hallucinated when more distinct numbers than this are unsupported."""
    max_unsupported_entities: int = Field(default=0, ge=0)
    """Hallucinated when more distinct names than this are unsupported."""
    max_unsupported_words: int | None = Field(default=None, ge=0)
    """Hallucinated when more distinct content words than this are unsupported, however
    long the output (``None``: no such limit; the fraction below still applies)."""
    max_unsupported_word_fraction: float = Field(default=0.3, ge=0, le=1)
    """Hallucinated when unsupported content words make up more than this fraction of the
    distinct checked items (numbers, names and content words)."""
    prefix_match: int = Field(default=6, ge=0)
    """A word also counts as supported when a context word shares its first N letters
    (after stemming); 0 turns this off."""
    structural: bool = True
    """Also run the structural checks (comparisons, yes/no, negation, names)."""
    structural_checks: list[CheckName] = Field(default_factory=lambda: list(CHECKS), min_length=1)
    """Which structural checks to run."""


def _listing(claims: list[Claim], limit: int = 5) -> str:
    texts = list(dict.fromkeys(c.span.text for c in claims))
    shown = ", ".join(repr(text) for text in texts[:limit])
    return shown + (f" and {len(texts) - limit} more" if len(texts) > limit else "")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


class Grounding(Detector):
    """Flags numbers, names and content words of the output that the context lacks."""

    name = "grounding"
    description = "numbers, names and content words of the output that the case's context does not contain"
    Params = GroundingParams
    params: GroundingParams

    def claims(self, output: str, support: SupportIndex) -> list[Claim]:
        """Every checked item of ``output``, in order, with its support."""
        found = scan(output)
        claims: list[Claim] = []
        if self.params.check_numbers:
            for number in found.numbers:
                ok = support.has_number(number)
                why = "" if ok else "value not in the context"
                key = str(number.date) if number.date else _canonical(number.value or Decimal(0))
                claims.append(Claim("number", key, Span(number.text, number.start, number.end, "number", why), ok))
        in_names: set[int] = set()
        for run in name_sequences(found.tokens, output):
            in_names.update(t.start for t in run)
            if not self.params.check_entities:
                continue
            words = name_words(run)
            missing = [t.text for t in words if not support.has_word(t.norm, prefix=False)]
            start, end = run[0].start, run[-1].end
            why = f"not in the context: {', '.join(repr(w) for w in missing)}" if missing else ""
            key = " ".join(t.norm for t in words)
            claims.append(Claim("entity", key, Span(output[start:end], start, end, "entity", why), not missing))
        if self.params.check_words:
            for token in found.tokens:
                if token.start in in_names or token.norm in STOPWORDS or len(token.norm) < 3:
                    continue
                if not token.norm.replace("'", "").isalpha():
                    continue
                ok = support.has_word(token.norm)
                span = Span(token.text, token.start, token.end, "word", "" if ok else "not in the context")
                claims.append(Claim("word", stem(token.norm), span, ok))
        claims.sort(key=lambda c: c.span.start)
        return claims

    def verdict(self, claims: list[Claim]) -> tuple[list[str], list[str]]:
        """``(broken, tolerated)``: what makes the output hallucinated (empty when it is
        grounded), and the unsupported items that stayed within the limits."""
        broken, tolerated, _ = self.assess(claims)
        return broken, tolerated

    def assess(self, claims: list[Claim]) -> tuple[list[str], list[str], float]:
        """:meth:`verdict` and the score: the highest :func:`rule_score` of the limits, so
        above 0.5 exactly when some limit is passed."""
        p = self.params
        broken: list[str] = []
        tolerated: list[str] = []
        score = 0.0
        for kind, noun, limit in (
            ("number", "number", p.max_unsupported_numbers), ("entity", "name", p.max_unsupported_entities),
        ):
            bad = [c for c in claims if c.kind == kind and not c.supported]
            distinct = len({c.key for c in bad})
            checked = len({c.key for c in claims if c.kind == kind})
            score = max(score, rule_score(distinct, limit, max(checked, limit + 1)))
            if distinct > limit:
                broken.append(f"{_count(distinct, noun)} not in the context: {_listing(bad)}")
            elif bad:
                tolerated.append(f"{_count(distinct, noun)} ({_listing(bad)})")
        words = [c for c in claims if c.kind == "word"]
        bad_words = [c for c in words if not c.supported]
        n_words, n_bad = len({c.key for c in words}), len({c.key for c in bad_words})
        if not n_bad:
            return broken, tolerated, score
        # Names and numbers are content too: the share is of all distinct checked items.
        n_items = len({(c.kind, c.key) for c in claims})
        share = n_bad / n_items
        score = max(score, rule_score(share, p.max_unsupported_word_fraction, 1.0))
        if p.max_unsupported_words is not None:
            score = max(score, rule_score(n_bad, p.max_unsupported_words, max(n_words, p.max_unsupported_words + 1)))
        what = f"{n_bad} of {_count(n_words, 'content word')} not in the context"
        if p.max_unsupported_words is not None and n_bad > p.max_unsupported_words:
            broken.append(f"{what} (limit {p.max_unsupported_words}): {_listing(bad_words)}")
        elif share > p.max_unsupported_word_fraction:
            broken.append(
                f"{what}, {share:.0%} of the checked items (limit {p.max_unsupported_word_fraction:.0%}): "
                f"{_listing(bad_words)}"
            )
        else:
            tolerated.append(f"{n_bad} of {_count(n_words, 'content word')} ({_listing(bad_words)})")
        return broken, tolerated, score

    def score(self, case: Case, generation: Generation) -> Score:
        if not case.context or not case.context.strip():
            return self.result(None, reason="the case has no context to check the output against")
        texts = (case.context, case.question) if self.params.question_as_support else (case.context,)
        support = support_index(texts, self.params.prefix_match)
        claims = self.claims(generation.text, support)
        unsupported = [c for c in claims if not c.supported]
        broken, tolerated, score = self.assess(claims)
        spans = [c.span for c in unsupported]
        findings = find(case.question, case.context, generation.text, self.params.structural_checks) \
            if self.params.structural else []
        for finding in findings:
            broken.append(f"{finding.check}: {finding.span.reason}")
            score = max(score, finding.confidence)
            spans.append(finding.span)
        checked = len(claims)
        details = {
            "support": (checked - len(unsupported)) / checked if checked else 1.0,
            "checked": checked,
            "unsupported": [c.span.text for c in unsupported],
            "unsupported_by_kind": {
                kind: [c.span.text for c in unsupported if c.kind == kind] for kind in ("number", "entity", "word")
            },
        }
        if self.params.structural:
            details["structural"] = [{"check": f.check, "text": f.span.text, "reason": f.span.reason}
                                     for f in findings]
        also = f"; within the limits: {'; '.join(tolerated)}" if tolerated else ""
        if broken:
            reason = f"hallucinated: {'; '.join(broken)}{also}"
        elif tolerated:
            reason = f"grounded: {checked - len(unsupported)} of {checked} checked items supported{also}"
        elif checked:
            reason = f"grounded: all {_count(checked, 'checked item')} are in the context"
        else:
            reason = "grounded: the output has no numbers, names or content words to check"
        spans.sort(key=lambda s: (s.start, s.end))
        return detector_score(self, score, reason=reason, spans=spans, details=details)


@hookimpl
def gatekeeper_register_detectors(register: Register[Detector]) -> None:
    """Register the built-in ``grounding`` detector."""
    register(Grounding)
