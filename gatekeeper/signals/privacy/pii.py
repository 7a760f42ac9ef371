"""Personal data in text: which detector runs, what it found, and a scan over rows.

Two detectors exist. ``patterns`` is built in and always there: the regular expressions of
the original scrubber (emails, phone numbers, Luhn-checked cards, mod-97-checked IBANs, IP
addresses, US SSNs, UK NI numbers). It cannot see names, addresses or organisations. The
``presidio`` detector (plugin ``llm-gatekeeper-presidio``) runs the same patterns as
presidio recognizers plus a named-entity model and locale-specific identifiers; when it is
installed, ``auto`` picks it. Whichever ran is named in every record (:meth:`describe`), so
an auditor can tell a patterns-only scrub from a model-backed one.

Detectors are a plugin kind (:class:`gatekeeper.kinds.PiiDetector`); this module picks one
from the registries and applies it. It never returns the values it found, only their types
and offsets.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gatekeeper.pii import PatternDetector, PiiDetector, PiiFinding, normalize_text, pii_placeholder
from gatekeeper.types import UsageError

if TYPE_CHECKING:
    from gatekeeper.kinds import Registries

AUTO = "auto"
FALLBACK = "patterns"
# The best detector first: "auto" takes the first one installed.
PREFERENCE = ("presidio", FALLBACK)


def _patterns_take_no_options(options: Mapping[str, Any]) -> None:
    for key, flag in (("ner_model", "--ner-model"), ("entities", "--pii-types")):
        if options.get(key):
            raise UsageError(f"{flag} needs a model-backed PII detector (pip install llm-gatekeeper-presidio); "
                             "the built-in patterns detector takes no options", field=flag)


def pii_detector(registries: Registries | None, name: str = AUTO, *,
                 options: Mapping[str, Any] | None = None) -> PiiDetector:
    """The detector ``name`` from the registries, built with ``options`` (``ner_model``:
    a spaCy package or directory, or a transformers token-classification directory).

    ``auto`` takes the best one installed (presidio, else the patterns). A name that is not
    registered is a usage error naming the plugin to install. ``registries=None`` (library
    use without a host) gives the patterns."""
    options = dict(options or {})
    if registries is None or name == FALLBACK:
        if name not in (AUTO, FALLBACK):
            raise UsageError(f"PII detector {name!r} needs the plugin host", field="--pii-detector")
        _patterns_take_no_options(options)
        return PatternDetector(options)
    registry = registries.pii_detectors
    if name == AUTO:
        chosen = next((n for n in PREFERENCE if n in registry), None)
        if chosen is None:
            chosen = next((e.name for e in registry), FALLBACK)
        if chosen == FALLBACK:
            _patterns_take_no_options(options)
        name = chosen
    if name not in registry:
        known = ", ".join(sorted(e.name for e in registry)) or "none"
        hint = " (pip install llm-gatekeeper-presidio)" if name == "presidio" else ""
        raise UsageError(f"unknown PII detector {name!r}{hint}; installed: {known}", field="--pii-detector")
    cls = registry.get(name)
    return cls(options)


# --------------------------------------------------------------------------- applying one


def replace_findings(text: str, findings: Sequence[PiiFinding], keep: Iterable[str] = (),
                     detector: PiiDetector | None = None) -> tuple[str, Counter[str]]:
    """``text`` with each finding replaced by its placeholder (written by ``detector``'s
    :meth:`~gatekeeper.pii.PiiDetector.anonymize`), except values in ``keep`` (normalised);
    the count of what was replaced, by type. Overlaps: the earlier, then the longer wins."""
    kept = set(keep)
    chosen: list[PiiFinding] = []
    for f in sorted(findings, key=lambda f: (f.start, -(f.end - f.start))):
        if chosen and f.start < chosen[-1].end:
            continue
        if kept and normalize_text(text[f.start:f.end]) in kept:
            continue
        chosen.append(f)
    counts: Counter[str] = Counter(f.type for f in chosen)
    if not chosen:
        return text, counts
    if detector is not None:
        return detector.anonymize(text, chosen), counts
    for f in reversed(chosen):
        text = text[:f.start] + pii_placeholder(f.type) + text[f.end:]
    return text, counts


_PLACEHOLDER = re.compile(r"\[[A-Z_]+\]")


@dataclass
class PiiScan:
    """PII found in rows of text fields: per row a count by type, totals by type and field."""

    detector: dict[str, Any]
    rows: list[dict[str, Counter[str]]] = field(default_factory=list)

    @property
    def rows_with_pii(self) -> int:
        return sum(1 for row in self.rows if any(row.values()))

    def as_dict(self) -> dict[str, Any]:
        by_type: Counter[str] = Counter()
        by_field: dict[str, Counter[str]] = {}
        for row in self.rows:
            for name, counts in row.items():
                by_type.update(counts)
                if counts:
                    by_field.setdefault(name, Counter()).update(counts)
        return {
            "detector": self.detector,
            "rows": len(self.rows),
            "rows_with_pii": self.rows_with_pii,
            "rows_with_pii_index": [i for i, row in enumerate(self.rows) if any(row.values())],
            "total": sum(by_type.values()),
            "by_type": dict(sorted(by_type.items())),
            "by_field": {k: dict(sorted(v.items())) for k, v in sorted(by_field.items())},
        }


def scan_rows(detector: PiiDetector, rows: Sequence[Mapping[str, str]], *,
              allow: Iterable[str] = ()) -> PiiScan:
    """Analyse every text field of every row; values in ``allow`` (a business's own contact
    details) and placeholders left by an earlier scrub are not counted."""
    allowed = {normalize_text(a) for a in allow if a.strip()}
    scan = PiiScan(detector.describe())
    for row in rows:
        counts: dict[str, Counter[str]] = {}
        for name, text in row.items():
            if not isinstance(text, str) or not text:
                continue
            found: Counter[str] = Counter()
            for f in detector.analyze(text):
                value = text[f.start:f.end]
                if normalize_text(value) in allowed or _PLACEHOLDER.fullmatch(value.strip()):
                    continue
                found[f.type] += 1
            counts[name] = found
        scan.rows.append(counts)
    return scan


def anonymize_rows(detector: PiiDetector, rows: Sequence[Mapping[str, str]], *,
                   allow: Iterable[str] = ()) -> tuple[list[dict[str, str]], PiiScan]:
    """The rows with their PII replaced by placeholders, and the scan of what was replaced."""
    allowed = {normalize_text(a) for a in allow if a.strip()}
    scan = PiiScan(detector.describe())
    out: list[dict[str, str]] = []
    for row in rows:
        new: dict[str, str] = {}
        counts: dict[str, Counter[str]] = {}
        for name, text in row.items():
            if not isinstance(text, str) or not text:
                new[name] = text
                continue
            new[name], counts[name] = replace_findings(text, detector.analyze(text), allowed, detector)
        out.append(new)
        scan.rows.append(counts)
    return out, scan
