"""Claims of an answer and the evidence for each in a context: the part of claim-level
hallucination detection every verifier shares.

A claim-level detector splits an answer into atomic claims, finds for each the context
windows most likely to confirm or refute it, and asks a verifier (an LLM judge in the
built-in ``claim_verification`` detector, an NLI cross-encoder in gatekeeper-hf's
``nli_grounding``) about each claim against its evidence. Both detectors use this module,
so a claim and its evidence are the same whichever verifier reads them, and a third-party
plugin can reuse it: it is part of the public contract and needs only the standard library.

- :func:`split_claims` — sentences of the answer (semicolons split too), with exact
  offsets; a short claim that only means something with the question ("Delhi", "No.") is
  marked ``fragment`` and :meth:`Claim.statement` puts the question in front of it.
- :func:`context_windows` — every sentence of the context and every run of ``size``
  adjacent sentences (facts often span two), with offsets.
- :func:`retrieve` — the best ``k`` windows for a claim by BM25 over content words, so a
  verifier reads a few sentences instead of a long context.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Claim",
    "Evidence",
    "Segment",
    "content_words",
    "context_windows",
    "merge",
    "retrieve",
    "split_claims",
    "split_sentences",
]

FRAGMENT_WORDS = 4
"""A claim with fewer content words than this is a fragment: an answer to the question
("Delhi", "Yes, he did") rather than a statement that can be checked on its own."""


@dataclass(frozen=True)
class Segment:
    """A piece of a text with its exact offsets: ``text == source[start:end]``."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Claim:
    """One atomic claim of an answer. ``start``/``end`` locate it in the answer (``None``
    for a claim a judge reworded beyond recognition)."""

    text: str
    start: int | None
    end: int | None
    fragment: bool = False

    def statement(self, question: str = "") -> str:
        """The claim as a verifier should read it: a fragment gets the question in front
        ("Which city? Delhi"), since "Delhi" alone states nothing."""
        if self.fragment and question.strip():
            return f"{question.strip()} {self.text}"
        return self.text


@dataclass(frozen=True)
class Evidence:
    """A context window retrieved for a claim, with its BM25 score (0 when no content word
    is shared)."""

    text: str
    start: int
    end: int
    score: float


# --------------------------------------------------------------------------- sentences

_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd", "co",
    "no", "fig", "approx", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
})
# End of a sentence: . ! ? (and closing quotes or brackets) before white space, the end of the
# text, or a capitalised word glued on (knowledge bases often lose the space: "century.First").
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|[A-Z][a-z]|$)|\n")
_LAST_WORD = re.compile(r"(\S+)$")
_INITIALISM = re.compile(r"(?:[a-z]\.)+[a-z]")
_WORD = re.compile(r"\d+(?:[.,]\d+)*[A-Za-z]*|[^\W\d_][\w'\-]*")

_STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most my
myself nor now of off on once only or other our ours ourselves out over own same she should so some
such than that the their theirs them themselves then there these they this those through to too under
until up very was we were what when where which while who whom why will with would you your yours
yourself yourselves also sure well may might must shall many much
""".split())  # noqa: SIM905 - a word list reads better as text
# "no", "not", "yes", numbers and "one" are kept: a flipped yes/no or negation is a claim.


def split_sentences(text: str) -> list[Segment]:
    """Sentences of ``text`` with exact offsets (blank pieces dropped), not split after an
    abbreviation, an initial or an initialism ("Dr.", "J.", "U.S.")."""
    segments: list[Segment] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if match.group() == "\n":
            _add(text, start, match.start(), segments)
        elif _ends_sentence(text, match):
            _add(text, start, match.end(), segments)
        else:
            continue
        start = match.end()
    _add(text, start, len(text), segments)
    return segments


def _ends_sentence(text: str, match: re.Match[str]) -> bool:
    found = _LAST_WORD.search(text[: match.start()])
    word = found.group(1).lower().lstrip("(\"'") if found else ""
    glued = match.end() < len(text) and not text[match.end()].isspace()
    if glued:
        return bool(word) and word[-1].isalnum() and word not in _ABBREVIATIONS and not _INITIALISM.fullmatch(word)
    if match.group().startswith("."):
        return not (word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()) or _INITIALISM.fullmatch(word))
    return True


def _add(text: str, start: int, end: int, out: list[Segment]) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if stripped:
        offset = start + piece.index(stripped)
        out.append(Segment(stripped, offset, offset + len(stripped)))


def content_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` that carry content (stop words dropped; "no", "not",
    "yes" and numbers kept)."""
    return [w for w in (m.group().lower() for m in _WORD.finditer(text)) if w not in _STOPWORDS]


# --------------------------------------------------------------------------- claims


def split_claims(answer: str, *, max_claims: int = 30) -> list[Claim]:
    """The answer's claims: its sentences, split again at semicolons, that carry a content
    word; the first ``max_claims``. A claim of fewer than four content words in an answer of
    one claim is a ``fragment`` (it answers the question rather than stating a fact)."""
    pieces: list[Segment] = []
    for sentence in split_sentences(answer):
        start = sentence.start
        for part in sentence.text.split(";"):
            _add(answer, start, start + len(part), pieces)
            start += len(part) + 1
    claims = [p for p in pieces if content_words(p.text)][:max_claims]
    alone = len(claims) == 1
    return [
        Claim(p.text, p.start, p.end, fragment=alone and len(content_words(p.text)) < FRAGMENT_WORDS)
        for p in claims
    ]


# --------------------------------------------------------------------------- evidence


def context_windows(context: str, size: int = 2) -> list[Segment]:
    """Each sentence of the context and each run of ``size`` adjacent sentences, with
    offsets into the context (a run's text is the context's own text across it)."""
    sentences = split_sentences(context)
    windows = list(sentences)
    if size > 1:
        for i in range(len(sentences) - size + 1):
            first, last = sentences[i], sentences[i + size - 1]
            windows.append(Segment(context[first.start : last.end], first.start, last.end))
    seen: set[tuple[int, int]] = set()
    unique = []
    for w in windows:
        if (w.start, w.end) not in seen:
            seen.add((w.start, w.end))
            unique.append(w)
    return unique


def _stem(word: str) -> str:
    word = word.removesuffix("'s").rstrip("'")
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _terms(text: str) -> list[str]:
    return [_stem(w) for w in content_words(text)]


def retrieve(query: str, windows: Sequence[Segment], k: int = 3, *, related: str = "",
             related_weight: float = 0.5, k1: float = 1.2, b: float = 0.75) -> list[Evidence]:
    """The ``k`` windows that best match ``query`` by BM25 (Robertson et al.) over content
    words, best first; ties keep the context's order. Words of ``related`` (the question)
    that the query lacks count ``related_weight`` as much: "B was started first" needs the
    window about A that the question names. Windows sharing no word score 0 and come last,
    so a verifier always gets ``k`` windows when there are."""
    if not windows or k <= 0:
        return []
    docs = [Counter(_terms(w.text)) for w in windows]
    lengths = [sum(d.values()) for d in docs]
    average = (sum(lengths) / len(lengths)) or 1.0
    n = len(docs)
    weights = dict.fromkeys(_terms(related), related_weight) | dict.fromkeys(_terms(query), 1.0)
    scores = []
    for doc, length in zip(docs, lengths, strict=True):
        total = 0.0
        for term, weight in weights.items():
            tf = doc.get(term, 0)
            if tf:
                df = sum(1 for d in docs if term in d)
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                total += weight * idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / average))
        scores.append(total)
    order = sorted(range(n), key=lambda i: (-scores[i], i))[:k]
    return [Evidence(windows[i].text, windows[i].start, windows[i].end, round(scores[i], 4)) for i in order]


def merge(context: str, evidence: Sequence[Evidence | Segment]) -> list[Segment]:
    """Overlapping or adjacent windows joined into excerpts of ``context``, in the context's
    order: what a verifier that reads all the evidence at once (an LLM judge) is shown."""
    spans = sorted((e.start, e.end) for e in evidence)
    joined: list[list[int]] = []
    for start, end in spans:
        if joined and start <= joined[-1][1] + 1:
            joined[-1][1] = max(joined[-1][1], end)
        else:
            joined.append([start, end])
    return [Segment(context[s:e], s, e) for s, e in joined]
