"""Structural checks: wrong answers built from the context's own words.

The lexical ``grounding`` detector looks each number, name and word of an output up in the
context. It cannot see an answer whose every word is there but whose claim is not: the
other option of a comparison, a flipped yes/no, an added negation, a name put together
from two people, or a name taken from a part of the context that says nothing about what
was asked. These checks read the question and the context's sentences to catch those:

- ``comparison``: "Who was born first, A or B?" answered with the option that the dates
  (or, for "more"/"larger" questions, the numbers) of the context put second;
- ``yes_no``: "Are both A and B P?" answered yes when a word of P is in A's sentences and
  absent from B's (or the reverse), or answered no when every word of P is in both;
- ``negation``: a wh-question answered by denying what it asks ("which kingdom were they
  monarchs of?" -> "they were never monarchs"), the context stating it without a negation;
- ``name_order``: a name of two or more words whose words are all in the context, but
  never together in that order (a first name of one person with another's surname);
- ``relation``: in answer to a wh-question, a name of the answer (not of the question) that
  occurs in the context only in sentences that share nothing with the question.

Each check decides only when the text has the shape it reads, and stays silent otherwise:
answers to yes/no and how-questions, where a negation is a restriction ("cannot be
returned"), and refusals ("the passage does not say") are left alone. Figures (recall gained,
false alarms on faithful paraphrases and on held-out rows) are in docs/benchmarks.md.
Standard library only. The ``structural`` detector runs them alone; the ``grounding``
detector runs them too with ``structural: true``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from pydantic import Field

from gatekeeper import hookimpl
from gatekeeper.builtin.scoring.lexical import (
    STOPWORDS,
    Token,
    fold,
    name_sequences,
    name_words,
    scan,
    stem,
)
from gatekeeper.builtin.scoring.scores import DetectorScoreParams, detector_score
from gatekeeper.kinds import Detector, Register
from gatekeeper.types import Case, Generation, Score, Span

CheckName = Literal["comparison", "yes_no", "negation", "name_order", "relation"]
CHECKS: tuple[CheckName, ...] = ("comparison", "yes_no", "negation", "name_order", "relation")

# How much each kind of finding says that the output is hallucinated: set by hand, in the
# order of how direct each check's evidence is (two dates compared is near proof; a name seen
# only in unrelated sentences is weaker). All are above 0.5, so any finding flags at the
# default threshold, and a lower threshold keeps them flagged.
CONFIDENCE: dict[CheckName, float] = {
    "comparison": 0.9, "yes_no": 0.85, "negation": 0.75, "name_order": 0.8, "relation": 0.7,
}

_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s+(?=[^a-z])|(?=[A-Z\"“(]))|\n+")
_ABBREVIATION = re.compile(r"(?:\b[A-Z]\.|\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Mt|vs|No|Co|Inc|Ltd)\.)$")
_NEGATION = frozenset({"not", "never", "no", "none", "neither", "nor", "nobody", "nothing", "nowhere", "cannot"})
# An answer that says the context does not tell is a refusal, not a negated claim.
_REFUSAL = re.compile(
    r"\b(?:not|n't|never)\s+(?:\w+\s+)?(?:say|says|said|mention\w*|state\w*|specif\w*|provid\w*|giv\w*|"
    r"includ\w*|contain\w*|cover\w*|address\w*|answer\w*|list\w*|tell|discuss\w*|indicat\w*|know|sure|clear|"
    r"found|available|enough|possible)\b|\bno\s+(?:information|mention|data|"
    r"details?|record)\b|\bcannot\s+(?:be\s+)?(?:determin\w*|answer\w*|tell|say|find)\b|\bunclear\b",
    re.IGNORECASE,
)
_IRREGULAR = {"women": "woman", "men": "man", "children": "child", "people": "person", "feet": "foot"}
_EARLY = re.compile(r"\b(?:first|earlier|earliest|older|oldest|before|sooner|elder|eldest)\b", re.IGNORECASE)
_LATE = re.compile(r"\b(?:last|later|latest|younger|youngest|after|newer|newest|most recent|more recent)\b",
                   re.IGNORECASE)
_MORE = re.compile(r"\b(?:more|most|larger|largest|bigger|biggest|taller|tallest|longer|longest|higher|highest|"
                   r"greater|greatest)\b", re.IGNORECASE)
_LESS = re.compile(r"\b(?:fewer|fewest|less|least|smaller|smallest|shorter|shortest|lower|lowest)\b",
                   re.IGNORECASE)
_YES_NO_START = re.compile(
    r"^\s*(?:\w+,\s*)?(?:are|is|was|were|do|does|did|can|could|has|have|had|will|would|should|may)\b",
    re.IGNORECASE)
_WH = re.compile(r"\b(?:what|which|who|whom|whose|where|when|how many|how much|how long|how old|name)\b",
                 re.IGNORECASE)
_SAME = re.compile(r"\b(?:same|similar|common|alike|together)\b", re.IGNORECASE)


# --------------------------------------------------------------------------- text pieces


@dataclass(frozen=True)
class Sentence:
    """A sentence of a text, with its offsets and its compared word forms."""

    text: str
    start: int
    end: int
    words: frozenset[str]
    negated: bool


def norm(word: str) -> str:
    """The form words are compared in here: folded, irregular plurals singular, stemmed."""
    folded = fold(word)
    return stem(_IRREGULAR.get(folded, folded))


def _negated(text: str) -> bool:
    return any(fold(m.group()) in _NEGATION or m.group().lower().endswith("n't")
               for m in re.finditer(r"[\w']+", text))


@lru_cache(maxsize=1024)
def sentences(text: str) -> tuple[Sentence, ...]:
    """``text`` cut at sentence ends, including HaluEval's glued ones ("century.First")."""
    found: list[Sentence] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        piece = text[start : m.start()]
        if _ABBREVIATION.search(piece) or not piece.strip():
            continue
        found.append(_sentence(text, start, m.start()))
        start = m.end()
    if text[start:].strip():
        found.append(_sentence(text, start, len(text)))
    return tuple(found)


def _sentence(text: str, start: int, end: int) -> Sentence:
    while start < end and text[start].isspace():
        start += 1
    piece = text[start:end]
    words = frozenset(norm(w) for w in re.findall(r"[^\W_]+(?:['’][^\W_]+)*", piece))
    return Sentence(piece, start, end, words, _negated(piece))


def content(text: str) -> list[str]:
    """The compared forms of the content words of ``text``, in order, without repeats."""
    words = (fold(w) for w in re.findall(r"[^\W\d_]+(?:['’][^\W_]+)*", text))
    return list(dict.fromkeys(norm(w) for w in words if w not in STOPWORDS and w not in _NEGATION and len(w) > 2))


@dataclass(frozen=True)
class Name:
    """A name in a text: its tokens, offsets and the compared forms of its words."""

    text: str
    start: int
    end: int
    words: tuple[str, ...]
    run: tuple[str, ...] = ()
    """Every token of the name, connectors included ("king", "of", "leon")."""


@lru_cache(maxsize=1024)
def names(text: str) -> tuple[Name, ...]:
    """The names (capitalised sequences) of ``text``."""
    found = scan(text)
    out: list[Name] = []
    for run in name_sequences(found.tokens, text):
        words = tuple(norm(t.text) for t in name_words(run))
        if words:
            out.append(Name(text[run[0].start : run[-1].end], run[0].start, run[-1].end, words,
                            tuple(norm(t.text) for t in run)))
    return tuple(out)


def trimmed(name: Name, text: str, context_tokens: list[str]) -> Name:
    """``name`` cut to its longest start that the context writes as one name: the question's
    "Kings of Leon American" is "Kings of Leon" (then "American", a property)."""
    for k in range(len(name.run), 0, -1):
        head = list(name.run[:k])
        if any(context_tokens[i : i + k] == head for i in range(len(context_tokens) - k + 1)):
            if k == len(name.run):
                return name
            tokens = [t for t in _tokens(text[name.start : name.end])][:k]
            end = name.start + tokens[-1].end
            words = tuple(norm(t.text) for t in name_words(tokens)) or (norm(tokens[-1].text),)
            return Name(text[name.start : end], name.start, end, words, tuple(head))
    return name


@lru_cache(maxsize=1024)
def _tokens(text: str) -> tuple[Token, ...]:
    return tuple(scan(text).tokens)


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """One structural miss: which check, where in the output, and why."""

    check: CheckName
    span: Span

    @property
    def confidence(self) -> float:
        return CONFIDENCE[self.check]


def _span(output: str, start: int, end: int, check: CheckName, reason: str) -> Span:
    return Span(output[start:end], start, end, check, reason)


def _whole(output: str, check: CheckName, reason: str) -> Span:
    start = len(output) - len(output.lstrip())
    end = len(output.rstrip())
    return _span(output, start, max(end, start), check, reason)


# --------------------------------------------------------------------------- comparison


def _options(question: str) -> tuple[Name, Name] | None:
    """The two options of "..., A or B?" (or "... A or B?"): the names either side of "or"."""
    at = re.search(r"\bor\b", question)
    if at is None:
        return None
    found = names(question)
    before = [n for n in found if n.end <= at.start()]
    after = [n for n in found if n.start >= at.end()]
    if not before or not after:
        return None
    first, second = before[-1], after[0]
    # "Which band was founded first, Hole, the band that Courtney Love fronted, or The
    # Wolfhounds?": the first option is the first name after the comma opening the options.
    comma = question.find(",", 0, at.start())
    opening = [n for n in before if n.start > comma] if comma >= 0 else []
    if opening:
        first = opening[0]
    if set(first.words) & set(second.words):
        return None
    return first, second


def _mentions(text_words: frozenset[str] | set[str], name: Name) -> bool:
    """Whether a sentence (its word forms) names ``name``: its last word (a surname, the
    head of a title) and at least half of its words."""
    hits = sum(w in text_words for w in name.words)
    return name.words[-1] in text_words and hits * 2 >= len(name.words)


def _measure(context: str, name: Name, *, dates: bool) -> Decimal | None:
    """The first date (year, as a number) or plain number stated after ``name`` in the
    first context sentence that names it."""
    for sentence in sentences(context):
        if not _mentions(sentence.words, name):
            continue
        found = scan(sentence.text)
        # Start after the name's last mention in the sentence, so "X (born 1971)" reads 1971.
        tokens = [t for t in found.tokens if norm(t.text) == name.words[-1]]
        after = tokens[0].end if tokens else 0
        for number in found.numbers:
            if number.start < after:
                continue
            if dates:
                if number.date is not None and number.date[0] is not None:
                    return Decimal(number.date[0] * 10000 + (number.date[1] or 0) * 100 + (number.date[2] or 0))
                if number.value is not None and number.quantum == 0 and 1000 <= number.value <= 2100:
                    return number.value * 10000
            elif number.date is None and number.value is not None and not 1000 <= number.value <= 2100:
                return number.value
        return None
    return None


def check_comparison(question: str, context: str, output: str) -> Finding | None:
    """A comparison question answered with the option the context's dates or numbers
    contradict. Decides only when the question has two options and a direction, each
    option has its measure in the context, and the output names exactly one option."""
    options = _options(question)
    if options is None:
        return None
    asked = question.lower()
    if _EARLY.search(asked) or _LATE.search(asked):
        dates, smaller_wins = True, _EARLY.search(asked) is not None and not _LATE.search(asked)
        if _EARLY.search(asked) and _LATE.search(asked):
            return None
    elif _MORE.search(asked) or _LESS.search(asked):
        if _MORE.search(asked) and _LESS.search(asked):
            return None
        dates, smaller_wins = False, _LESS.search(asked) is not None
    else:
        return None
    measures = [_measure(context, option, dates=dates) for option in options]
    if measures[0] is None or measures[1] is None or measures[0] == measures[1]:
        return None
    out_words = {norm(t.text) for t in _tokens(output)}
    named = [o for o in options if _mentions(out_words, o)]
    if len(named) != 1:
        return None
    pick = options.index(named[0])
    winner = 0 if (measures[0] < measures[1]) == smaller_wins else 1
    if pick == winner:
        return None
    chosen, other = options[pick], options[1 - pick]
    where = _locate_name(output, chosen)
    reason = (f"the context's {'dates' if dates else 'numbers'} favour {other.text!r}, "
              f"not {chosen.text!r}")
    span = _span(output, *where, "comparison", reason) if where else _whole(output, "comparison", reason)
    return Finding("comparison", span)


def _locate_name(output: str, name: Name) -> tuple[int, int] | None:
    tokens = [t for t in _tokens(output) if norm(t.text) in name.words]
    if not tokens:
        return None
    return tokens[0].start, tokens[-1].end


# --------------------------------------------------------------------------- yes / no


def answer_polarity(output: str) -> bool | None:
    """True for a yes, False for a no, None when the output says neither plainly."""
    head = output.strip().lower()
    if re.match(r"^(?:yes|yeah|yep|correct|true|indeed)\b", head):
        return True
    if re.match(r"^(?:no|nope|false|incorrect)\b", head):
        return False
    if _REFUSAL.search(output):
        return None
    if _negated(output) or re.search(r"\b(?:only one|different|differ|neither)\b", head):
        return False
    if re.search(r"\bboth\b", head):
        return True
    return None


def asked(question: str) -> Literal["yes_no", "wh", "other"]:
    """What the question's last sentence asks for: a yes or no ("Honestly, can you ...?",
    "Are both ...?"), a thing (what, which, who, when ...), or something else (how, why)."""
    parts = [s.text for s in sentences(question) if any(ch.isalnum() for ch in s.text)]
    last = parts[-1] if parts else question
    if _YES_NO_START.search(last):
        return "yes_no"
    return "wh" if _WH.search(last) else "other"


def _windows_of(context: str, name: Name) -> list[Sentence]:
    return [s for s in sentences(context) if _mentions(s.words, name)]


def check_yes_no(question: str, context: str, output: str) -> Finding | None:
    """A yes/no question answered against the context (see the module's docstring)."""
    if asked(question) != "yes_no" or _SAME.search(question) or re.search(r"\bor\b", question):
        return None
    if not re.search(r"\bboth\b", question):
        return None
    polarity = answer_polarity(output)
    if polarity is None:
        return None
    ctx_tokens = [norm(t.text) for t in _tokens(context)]
    found = [trimmed(n, question, ctx_tokens) for n in names(question) if n.start > 0 or len(n.words) > 1]
    if len(found) != 2:
        return None
    return _check_both(question, context, output, found, polarity)


def _check_both(question: str, context: str, output: str, found: list[Name], says_yes: bool) -> Finding | None:
    """"Are both A and B P?": P's words against the sentences about A and about B."""
    first, second = found[0], found[1]
    prop = content(question[found[-1].end :])
    windows = [_windows_of(context, first), _windows_of(context, second)]
    if not prop or not windows[0] or not windows[1]:
        return None
    has = [{w for w in prop if any(w in s.words for s in win)} for win in windows]
    contrast = (has[0] ^ has[1])
    if says_yes and contrast:
        word = sorted(contrast)[0]
        lacking = second if word in has[0] else first
        reason = f"yes, but the context gives {word!r} to only one of them, not to {lacking.text!r}"
        return Finding("yes_no", _whole(output, "yes_no", reason))
    if not says_yes and has[0] == has[1] == set(prop):
        reason = f"no, but the context's sentences about both state {', '.join(repr(w) for w in prop)}"
        return Finding("yes_no", _whole(output, "yes_no", reason))
    return None


# --------------------------------------------------------------------------- negation


def check_negation(question: str, context: str, output: str) -> Finding | None:
    """A wh-question ("which Kingdom were they monarchs of?") answered by negating what it
    asks about ("they were never monarchs"), with the question's words, when the context
    states it without a negation. A negation that restricts ("only", "cannot be returned")
    answers yes/no and how-questions; those are left alone."""
    if asked(question) != "wh" or _negated(question) or _REFUSAL.search(output):
        return None
    ctx = sentences(context)
    q_words = set(content(question))
    for sentence in sentences(output):
        if not sentence.negated:
            continue
        words = content(sentence.text)
        if len(words) < 2 or sum(w in q_words for w in words) < len(words) * 0.6:
            continue  # not the question's own claim being denied
        support = set().union(*(s.words for s in ctx)) | {norm(w) for w in re.findall(r"\w+", question)}
        if sum(w in support for w in words) < len(words) * 0.75:
            continue  # the grounding check's business: new words
        best = max(ctx, key=lambda s: sum(w in s.words for w in words), default=None)
        if best is None or sum(w in best.words for w in words) < 2 or _negates(best.text, words):
            continue  # the context denies it too
        if _negated_as_prefix(sentence.text, best):
            continue
        reason = f"negates the context: {best.text.strip()[:80]!r}"
        return Finding("negation", _span(output, sentence.start, sentence.end, "negation", reason))
    return None


def _negates(text: str, words: list[str]) -> bool:
    """Whether ``text`` has a negation within three words before one of ``words``."""
    tokens = re.findall(r"[\w']+", text.replace("n't", " not"))
    for i, token in enumerate(tokens):
        if fold(token) in _NEGATION and {norm(t) for t in tokens[i + 1 : i + 4]} & set(words):
            return True
    return False


def _negated_as_prefix(text: str, context_sentence: Sentence) -> bool:
    """"you don't use" ~ "unused": the word after the negation appears negated by a prefix."""
    m = re.search(r"\b(?:not|never|no|n't)\s+(\w+)(?:\s+(\w+))?", text.replace("n't", " n't"), re.IGNORECASE)
    if m is None:
        return False
    forms = {norm(w) for w in m.groups() if w}
    prefixed = {w[len(p):] for w in context_sentence.words for p in ("un", "non", "in", "dis") if w.startswith(p)}
    return bool(forms & {stem(w) for w in prefixed} | forms & prefixed)


# --------------------------------------------------------------------------- names


def check_name_order(question: str, context: str, output: str) -> Finding | None:
    """A name whose words are all in the context or question, but not together in order
    (up to two words between, for middle names): a first name of one with another's surname."""
    sources = [[norm(t.text) for t in _tokens(text)] for text in (context, question)]
    for name in names(output):
        if len(name.words) < 2 or len(set(name.words)) < len(name.words):
            continue
        if not all(any(w in src for src in sources) for w in name.words):
            continue  # an unsupported word: the grounding check reports it
        if any(_in_order(src, name.words) for src in sources):
            continue
        reason = f"the context has {', '.join(repr(w) for w in name.words)} but not together as this name"
        return Finding("name_order", _span(output, name.start, name.end, "name_order", reason))
    return None


def _in_order(tokens: list[str], words: tuple[str, ...], gap: int = 2) -> bool:
    for i, token in enumerate(tokens):
        if token != words[0]:
            continue
        at = i
        for word in words[1:]:
            window = tokens[at + 1 : at + 2 + gap]
            if word not in window:
                break
            at = at + 1 + window.index(word)
        else:
            return True
    return False


def check_relation(question: str, context: str, output: str) -> Finding | None:
    """A name of the answer, absent from the question, found in the context only in
    sentences that share no name or content word with the question."""
    q_words = set(content(question)) | {w for n in names(question) for w in n.words}
    if len(q_words) < 2 or asked(question) != "wh" or _REFUSAL.search(output):
        return None
    ctx = sentences(context)
    q_names = names(question)
    for name in names(output):
        if any(set(name.words) <= set(q.words) for q in q_names) or set(name.words) & q_words:
            continue
        where = [i for i, s in enumerate(ctx) if all(w in s.words for w in name.words)]
        if not where:
            continue
        # the name's sentence and its neighbours: "He ..." continues the previous one
        near = set().union(*(ctx[j].words for i in where for j in (i - 1, i, i + 1) if 0 <= j < len(ctx)))
        if q_words & (near - set(name.words)):
            continue
        reason = "in the context only where nothing the question asks about is mentioned"
        return Finding("relation", _span(output, name.start, name.end, "relation", reason))
    return None


CHECK_FUNCTIONS = {
    "comparison": check_comparison, "yes_no": check_yes_no, "negation": check_negation,
    "name_order": check_name_order, "relation": check_relation,
}


def find(question: str, context: str, output: str, checks: tuple[CheckName, ...] | list[CheckName] = CHECKS,
         ) -> list[Finding]:
    """Every structural miss of ``output``, one per check at most."""
    found = []
    for check in checks:
        finding = CHECK_FUNCTIONS[check](question, context, output)
        if finding is not None:
            found.append(finding)
    return found


# --------------------------------------------------------------------------- detector


class StructuralParams(DetectorScoreParams):
    checks: list[CheckName] = Field(default_factory=lambda: list(CHECKS), min_length=1)
    """Which checks to run."""


class Structural(Detector):
    """Wrong answers made of the context's own words: comparisons, yes/no, negation, names."""

    name = "structural"
    description = "answers that contradict the context with its own words: comparisons, yes/no, negation, names"
    value_range = "score 0..1 (1 = hallucinated) in details.score; value = verdict (or the score with emit: score)"
    Params = StructuralParams
    params: StructuralParams

    def score(self, case: Case, generation: Generation) -> Score:
        if not case.context or not case.context.strip():
            return self.result(None, reason="the case has no context to check the output against")
        findings = find(case.question, case.context, generation.text, self.params.checks)
        return structural_score(self, findings, self.params.checks)


def structural_score(detector: Detector, findings: list[Finding], checks: list[CheckName]) -> Score:
    score = max((f.confidence for f in findings), default=0.0)
    details = {"checks": list(checks), "findings": [{"check": f.check, "text": f.span.text, "reason": f.span.reason}
                                                     for f in findings]}
    if findings:
        reason = "hallucinated: " + "; ".join(f"{f.check}: {f.span.reason}" for f in findings)
    else:
        reason = f"no structural miss found ({', '.join(checks)})"
    return detector_score(detector, score, reason=reason, spans=[f.span for f in findings], details=details)


@hookimpl
def gatekeeper_register_detectors(register: Register[Detector]) -> None:
    """Register the built-in ``structural`` detector."""
    register(Structural)
