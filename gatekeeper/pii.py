"""Personal data in text, as plugins see it: what a finding is, the interface of a PII
detector (a plugin kind, registered with ``gatekeeper_register_pii_detectors``), and the
built-in ``patterns`` detector with the regular expressions gatekeeper has always scrubbed
with — emails, phone numbers, Luhn-checked card numbers, mod-97-checked IBANs, IPv4/IPv6
addresses, US SSNs and UK NI numbers.

The patterns are part of the contract so that a model-backed detector (the presidio plugin)
can run them as its own recognizers and never find less than the fallback did. Nothing
here imports a heavy library.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


def normalize_text(text: str) -> str:
    """Case-folded, whitespace collapsed: two texts equal after this are duplicates."""
    return " ".join(text.casefold().split())


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters → 10..35, mod 97 == 1."""
    raw = text.replace(" ", "").upper()
    if not 15 <= len(raw) <= 34:
        return False
    rearranged = raw[4:] + raw[:4]
    numeric = "".join(str(int(c, 36)) for c in rearranged)
    return int(numeric) % 97 == 1


def _ipv6_valid(text: str) -> bool:
    # At least three hex groups: "::" and "a::b" in prose are not addresses worth hiding.
    if sum(1 for group in text.split(":") if group) < 3:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class PiiKind:
    name: str
    placeholder: str
    pattern: re.Pattern[str]
    valid: Callable[[str], bool] | None = None


PII_KINDS: tuple[PiiKind, ...] = (
    # Order matters: the longer, checked identifiers go before the looser phone pattern.
    PiiKind("email", "[EMAIL]",
            re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")),
    PiiKind("iban", "[IBAN]", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), iban_valid),
    PiiKind("card_number", "[CARD]", re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])"),
            lambda t: 13 <= len(re.sub(r"\D", "", t)) <= 19 and luhn_valid(re.sub(r"\D", "", t))),
    PiiKind("us_ssn", "[SSN]", re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")),
    PiiKind("uk_ni", "[NI_NUMBER]", re.compile(
        r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")),
    PiiKind("ipv6", "[IP]", re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"), _ipv6_valid),
    PiiKind("ipv4", "[IP]", re.compile(
        r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\.?\d)")),
    PiiKind("phone", "[PHONE]", re.compile(
        r"(?<![\w+.\-])(?:\+\d{1,3}[ .-]?|1[ .-])?(?:\(\d{2,4}\)[ .-]?|\d{2,3}[ .-])\d{3,4}[ .-]?\d{4}(?![\w-])"),
        lambda t: 10 <= len(re.sub(r"\D", "", t)) <= 15),
)
PII_TYPES = tuple(dict.fromkeys(k.name for k in PII_KINDS))


# --------------------------------------------------------------------------- the kind


@dataclass(frozen=True)
class PiiFinding:
    """One piece of personal data a :class:`PiiDetector` found: its type and where it is in
    the text analysed (character offsets), never the value itself."""

    type: str
    start: int
    end: int
    score: float = 1.0
    recognizer: str = ""


PII_PLACEHOLDERS: dict[str, str] = {
    "email": "[EMAIL]", "phone": "[PHONE]", "card_number": "[CARD]", "iban": "[IBAN]", "ipv4": "[IP]",
    "ipv6": "[IP]", "us_ssn": "[SSN]", "uk_ni": "[NI_NUMBER]", "person": "[PERSON]", "organization": "[ORG]",
    "location": "[LOCATION]", "address": "[ADDRESS]", "national_id": "[ID]",
}


def pii_placeholder(pii_type: str) -> str:
    """What replaces a finding of ``pii_type`` in scrubbed text: ``[EMAIL]``, ``[PERSON]``..."""
    return PII_PLACEHOLDERS.get(pii_type, f"[{pii_type.upper()}]")


class PiiDetector:
    """Finds personal data in text, for curated signals and generated data.

    Built with ``options`` (``ner_model``: a spaCy package name or directory, or a
    transformers token-classification directory, for detectors backed by a model).
    ``entities`` lists the types it can find, using gatekeeper's names (``email``, ``phone``,
    ``card_number``, ``iban``, ``ipv4``, ``ipv6``, ``us_ssn``, ``uk_ni``, ``national_id``,
    ``person``, ``organization``, ``location``, ``address``). :meth:`describe` is what
    records keep about it: its name, libraries and model with versions and licence.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    entities: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    def analyze(self, text: str) -> list[PiiFinding]:
        raise NotImplementedError

    def analyze_many(self, texts: Sequence[str]) -> list[list[PiiFinding]]:
        """:meth:`analyze` for each text; a model-backed detector overrides it to batch."""
        return [self.analyze(t) for t in texts]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "entities": list(self.entities)}

    def anonymize(self, text: str, findings: Sequence[PiiFinding]) -> str:
        """``text`` with every finding replaced by its placeholder (the earlier, then the
        longer of two overlapping findings wins)."""
        chosen: list[PiiFinding] = []
        for f in sorted(findings, key=lambda f: (f.start, -(f.end - f.start))):
            if not chosen or f.start >= chosen[-1].end:
                chosen.append(f)
        for f in reversed(chosen):
            text = text[:f.start] + pii_placeholder(f.type) + text[f.end:]
        return text


class PatternDetector(PiiDetector):
    """The original scrubber's patterns, each with its check (Luhn, mod 97, address ranges).

    Kinds are tried in order and a match overlapping an earlier kind's is dropped, so a card
    number is never also counted as a phone number (the order the scrubber always used)."""

    name = "patterns"
    description = "regular expressions with checksums: email, phone, card, IBAN, IP, US SSN, UK NI (no names)"
    entities = PII_TYPES

    def analyze(self, text: str) -> list[PiiFinding]:
        found: list[PiiFinding] = []
        for kind in PII_KINDS:
            for match in kind.pattern.finditer(text):
                start, end = match.span()
                if kind.valid is not None and not kind.valid(match.group(0)):
                    continue
                if any(start < f.end and f.start < end for f in found):
                    continue
                found.append(PiiFinding(kind.name, start, end, 1.0, f"pattern:{kind.name}"))
        return sorted(found, key=lambda f: f.start)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "patterns", "entities": list(self.entities),
                "ner_model": None, "note": "pattern fallback: person names, addresses and organisations "
                "are not detected (install llm-gatekeeper-presidio)"}
