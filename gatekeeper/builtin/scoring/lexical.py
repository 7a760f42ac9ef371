"""The words, numbers, dates and names of a text, as the lexical detectors compare them.

Shared by the ``grounding`` detector (is each item of the output in the context?) and the
``structural`` checks (do the context's sentences say what the output says with their
words?): a stop-word list, case and accent folding with a light stemmer, and a scanner
that finds numbers by value (digits, number words, money, percentages, dates) and
capitalised name sequences. Standard library only.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache

# --------------------------------------------------------------------------- vocabulary


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that carry no checkable claim: function words (in the spirit of the NLTK and
# SMART lists), answer fillers ("yes", "actually"), light verbs ("get", "make") and the
# currency and percent words that stand beside a number (checked itself), and words about
# the task rather than the world ("according to the passage", "the information provided"),
# and hedging or time-frame adverbs ("roughly", "usually", "eventually") that rephrase.
STOPWORDS = _wordset(
    """
    a about above across after afterwards again against all almost alone along already also
    although always am among amongst an and another any anyone anything anyway anywhere are
    around as at back be became because become becomes been before beforehand being below
    beside besides between beyond both but by can cannot could did do does doing done down
    during each either else elsewhere enough etc even ever every everyone everything
    everywhere except few for former formerly from further furthermore had has have having
    he hence her here hereby herein hers herself him himself his how however i ie eg if in
    indeed instead into is it its itself just latter latterly least less many may me
    meanwhile might mine more moreover most mostly much must my myself namely neither never
    nevertheless next no nobody none noone nor not nothing now nowhere of off often on once
    one only onto or other others otherwise our ours ourselves out over own per perhaps
    please quite rather re really same several she should since so some somehow someone
    something sometime sometimes somewhere still such than that the their theirs them
    themselves then thence there thereafter thereby therefore therein thereupon these they
    this those though through throughout thru thus to together too toward towards under
    until up upon us very via was we well were what whatever when whence whenever where
    whereafter whereas whereby wherein whereupon wherever whether which while whither who
    whoever whole whom whose why will with within without would yet you your yours yourself
    yourselves yes yeah ok okay sure answer actually certainly definitely indeed likely
    probably simply basically generally specifically namely called known named according s t
    d ll m o re ve y get gets got getting gotten make makes made making use uses used using
    give gives gave given take takes took taken go goes went gone come comes came let lets
    say says said thing things way ways lot lots dollar dollars usd eur euro euros gbp
    percent pct cent cents context passage document text source information provided
    question mentioned stated roughly approximately nearly usually typically normally mainly
    largely primarily mostly currently recently originally initially eventually finally
    later soon overall especially particularly respectively fully entirely completely
    totally
    """
)

# Lower-case words that may sit inside a name: "Bank of America", "Ludwig van Beethoven".
NAME_CONNECTORS = _wordset("of the de da di du del della der den van von la le las los y al bin")

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90,
}
_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
    "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
    "nineteenth": 19, "twentieth": 20, "thirtieth": 30, "fortieth": 40, "fiftieth": 50,
    "sixtieth": 60, "seventieth": 70, "eightieth": 80, "ninetieth": 90, "hundredth": 100,
    "thousandth": 1000, "millionth": 1_000_000,
}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_NUMBER_WORDS = frozenset(_UNITS) | frozenset(_ORDINALS) | frozenset(_SCALES)
# Alone, these are rarely a stated quantity ("one of the", "first aired", "a second time").
_WEAK_NUMBER_WORDS = frozenset({"one", "first", "second"})

_MONTHS = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9,
    "oct": 10, "nov": 11, "dec": 12,
}
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>[12]\d{3})"
_DATE_PATTERNS = (
    re.compile(r"(?<![\w-])(?P<year>[12]\d{3})-(?P<mon>[01]?\d)-(?P<day>[0-3]?\d)(?![\w-])"),
    re.compile(rf"\b(?P<mon>{_MONTH})\s+{_DAY}\b(?:,?\s+{_YEAR}\b)?"),
    re.compile(rf"\b{_DAY}\s+(?:of\s+)?(?P<mon>{_MONTH})(?![\w])(?:,?\s+{_YEAR}\b)?"),
    re.compile(rf"\b(?P<mon>{_MONTH})\s*,?\s+{_YEAR}\b"),
)
_NUMBER = re.compile(
    r"(?<![\w.])(?P<currency>[$€£¥₹])?\s?"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?P<ordinal>st|nd|rd|th)?"
    r"(?:(?P<scale>\s?(?:thousand|million|billion|trillion)\b)|(?P<short_scale>bn|[kKmMbB])(?!\w))?"
    r"(?P<percent>\s?%|\s?percent\b|\s?per\s?cent\b)?"
)
_SHORT_SCALES = {"k": 10**3, "m": 10**6, "b": 10**9, "bn": 10**9}
_TOKEN = re.compile(r"(?:[^\W\d_]\.){2,}|[^\W_]+(?:['’][^\W_]+)*")
_SENTENCE_BREAK = re.compile(r"[.!?:;\n]|^\s*[-*•]\s")
_NAME_GAP = re.compile(r"\s*(?:-|&)?\s*")


# --------------------------------------------------------------------------- normalising


_CLITICS = ("n't", "'s", "'ll", "'re", "'ve", "'m", "'d")


@lru_cache(maxsize=1 << 16)
def fold(word: str) -> str:
    """Casefold, strip accents and dots, drop a possessive or clitic ("Miller's" -> "miller",
    "don't" -> "do"): the form words are compared in."""
    if word.isascii():
        word = word.lower()
    else:
        word = unicodedata.normalize("NFKD", word.casefold().replace("’", "'"))
        word = "".join(ch for ch in word if not unicodedata.combining(ch))
    word = word.replace(".", "")
    for clitic in _CLITICS:
        if word.endswith(clitic):
            word = word[: -len(clitic)]
            break
    return word.rstrip("'")


_PLURAL_RULES = (("ies", "y"), ("sses", "ss"), ("xes", "x"), ("ches", "ch"), ("shes", "sh"), ("zes", "z"))
_SUFFIXES = ("ing", "ions", "ion", "ers", "ed", "er", "ors", "or", "ly", "ness", "ment")


@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """A light suffix stripper (plural, -ing, -ed, -ion, -er, -ly ...) for matching only.

    Deliberately cruder than Porter: it needs to map "based"/"base", "located"/"location",
    "directed"/"director" together, never to produce a readable stem.
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, replacement in _PLURAL_RULES:
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            word = word[: -len(suffix)] + replacement
            break
    else:
        if word.endswith("s") and not word.endswith(("ss", "us", "is")):
            word = word[:-1]
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]
    return word


def _canonical(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# --------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class NumberMention:
    """A number or date in a text. ``value`` is canonical (``"1200"``); ``quantum`` is the
    unit of its last written digit (0.1 for ``6.2``), for approximate matches; a date has
    ``date`` = (year, month, day) with ``None`` for parts not written."""

    text: str
    start: int
    end: int
    value: Decimal | None = None
    quantum: Decimal | None = None
    date: tuple[int | None, int | None, int | None] | None = None


@dataclass(frozen=True, slots=True)
class Token:
    """A word of a text. ``initial``: the first word of a sentence, whose capital says
    nothing about being a name. ``capitalised`` also holds for words with digits ("MP3")."""

    text: str
    start: int
    end: int
    norm: str
    initial: bool
    capitalised: bool
    acronym: bool

    @classmethod
    def make(cls, text: str, start: int, end: int, initial: bool) -> Token:
        capitalised = text[0].isupper() or (not text.isalpha() and any(ch.isdigit() for ch in text))
        acronym = capitalised and text.isupper() and sum(ch.isalpha() for ch in text) >= 2
        return cls(text, start, end, fold(text), initial, capitalised, acronym)


@dataclass
class Scan:
    """A text cut into numbers (with dates) and the word tokens outside them."""

    text: str
    numbers: list[NumberMention] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)


def _month(name: str) -> int:
    return _MONTHS[name.lower().rstrip(".")[:3]]


def _find_dates(text: str) -> list[NumberMention]:
    found: list[NumberMention] = []
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            if any(m.start() < d.end and d.start < m.end() for d in found):
                continue
            groups = m.groupdict()
            month = _month(groups["mon"]) if not groups["mon"].isdigit() else int(groups["mon"])
            day = int(groups["day"]) if groups.get("day") else None
            year = int(groups["year"]) if groups.get("year") else None
            if not 1 <= month <= 12 or (day is not None and not 1 <= day <= 31):
                continue
            found.append(NumberMention(m.group(0), m.start(), m.end(), date=(year, month, day)))
    return found


def _find_digit_numbers(text: str, taken: list[NumberMention]) -> list[NumberMention]:
    found: list[NumberMention] = []
    for m in _NUMBER.finditer(text):
        start = m.start("currency") if m.group("currency") else m.start("digits")
        end = m.end()
        if any(start < d.end and d.start < end for d in taken):
            continue
        digits = m.group("digits").replace(",", "")
        value = Decimal(digits)
        quantum = Decimal(1).scaleb(-len(digits.partition(".")[2]))
        scale = 1
        if m.group("scale"):
            scale = _SCALES[m.group("scale").strip().lower()]
        elif m.group("short_scale"):
            if m.group("currency"):
                scale = _SHORT_SCALES[m.group("short_scale").lower()]
            else:  # "6 m" is six metres, not six million; keep the unit out of the mention
                end = m.start("short_scale")
        if scale > 1:
            value, quantum = value * scale, quantum * scale
        elif "." not in digits:
            quantum = Decimal(0)  # a whole number is matched exactly
        found.append(NumberMention(text[start:end], start, end, value, quantum))
    return found


def _tokens(text: str, numbers: list[NumberMention]) -> list[Token]:
    """Word tokens outside number mentions, each marked when it starts a sentence."""
    spans = sorted((n.start, n.end) for n in numbers)
    tokens: list[Token] = []
    previous_end = 0
    index = 0
    for m in _TOKEN.finditer(text):
        start, end = m.span()
        while index < len(spans) and spans[index][1] <= start:
            previous_end = max(previous_end, spans[index][1])
            index += 1
        if index < len(spans) and spans[index][0] < end:
            continue  # inside a number or date
        gap = text[previous_end:start]
        first = not tokens and index == 0
        initial = first or (gap != " " and _SENTENCE_BREAK.search(gap) is not None)
        tokens.append(Token.make(m.group(), start, end, initial))
        previous_end = end
    return tokens


def _number_word_runs(tokens: list[Token], text: str) -> list[tuple[int, int, int]]:
    """``(first, last, value)`` token index ranges spelling a number ("thirty-two")."""
    runs: list[tuple[int, int, int]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.norm not in _NUMBER_WORDS or (token.capitalised and not token.initial):
            i += 1
            continue
        j = i
        while j + 1 < len(tokens):
            nxt = tokens[j + 1]
            gap = text[tokens[j].end : nxt.start]
            if nxt.norm in _NUMBER_WORDS and gap.strip() in ("", "-") and not nxt.text[0].isupper():
                j += 1
            elif (
                nxt.norm == "and" and j + 2 < len(tokens) and tokens[j + 2].norm in _NUMBER_WORDS
                and tokens[j].norm in _SCALES
            ):
                j += 2
            else:
                break
        words = [t.norm for t in tokens[i : j + 1] if t.norm != "and"]
        if not (len(words) == 1 and words[0] in _WEAK_NUMBER_WORDS):
            runs.append((i, j, _number_from_words(words)))
        i = j + 1
    return runs


def _number_from_words(words: list[str]) -> int:
    total = current = 0
    for word in words:
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _ORDINALS:
            value = _ORDINALS[word]
            current = current * value if value >= 100 and current else current + value
        elif word == "hundred":
            current = max(current, 1) * 100
        else:
            total += max(current, 1) * _SCALES[word]
            current = 0
    return total + current


def scan(text: str) -> Scan:
    """Find the numbers (digits, number words, dates) and word tokens of ``text``."""
    numbers = _find_dates(text)
    numbers += _find_digit_numbers(text, numbers)
    tokens = _tokens(text, numbers)
    runs = _number_word_runs(tokens, text)
    consumed: set[int] = set()
    for first, last, value in runs:
        start, end = tokens[first].start, tokens[last].end
        numbers.append(NumberMention(text[start:end], start, end, Decimal(value), Decimal(0)))
        consumed.update(range(first, last + 1))
    numbers.sort(key=lambda n: n.start)
    return Scan(text, numbers, [t for i, t in enumerate(tokens) if i not in consumed])


def name_sequences(tokens: list[Token], text: str) -> list[list[Token]]:
    """Runs of capitalised tokens (joined by spaces, hyphens, "&" or a connector such as
    "of") that name something. A sentence's capitalised first word starts a run only
    when a second capitalised word follows; a leading stop word ("The") is dropped."""
    runs: list[list[Token]] = []
    current: list[Token] = []

    def close() -> None:
        while current and (current[-1].norm in NAME_CONNECTORS or not current[-1].capitalised):
            current.pop()
        while current and current[0].norm in STOPWORDS and not current[0].acronym:
            current.pop(0)
        if current and not (len(current) == 1 and current[0].initial and not current[0].acronym):
            runs.append(list(current))
        current.clear()

    for token in tokens:
        if current:
            gap = text[current[-1].end : token.start]
            joined = _NAME_GAP.fullmatch(gap) is not None and not token.initial
            if joined and (token.capitalised or token.norm in NAME_CONNECTORS):
                current.append(token)
                continue
            close()
        if token.capitalised:
            current.append(token)
    close()
    return runs


def name_words(run: list[Token]) -> list[Token]:
    """The words of a name that must be supported: not connectors or stop words, except
    acronyms ("US" is a name even though "us" is a stop word)."""
    return [t for t in run if t.acronym or (t.norm not in NAME_CONNECTORS and t.norm not in STOPWORDS)]
