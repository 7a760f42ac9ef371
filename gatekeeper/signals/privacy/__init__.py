"""Privacy assurance for curated and generated data: PII detection (a plugin kind, with the
built-in patterns as the fallback), the memorization check against source rows, and the
record and report section an auditor reads (docs/privacy.md).

Importing this package is cheap: presidio, spaCy and torch are imported by the detector or
the embedding model that needs them, when it is first used.
"""

from __future__ import annotations

from gatekeeper.signals.privacy.memorization import (
    ClosePair,
    MemorizationReport,
    check_memorization,
    embedding_encoder,
)
from gatekeeper.signals.privacy.pii import (
    AUTO,
    FALLBACK,
    PatternDetector,
    PiiScan,
    anonymize_rows,
    pii_detector,
    replace_findings,
    scan_rows,
)
from gatekeeper.signals.privacy.record import SCHEMA, check_privacy, privacy_record, render_privacy_markdown

__all__ = [
    "AUTO", "FALLBACK", "SCHEMA", "ClosePair", "MemorizationReport", "PatternDetector", "PiiScan", "anonymize_rows",
    "check_memorization", "check_privacy", "embedding_encoder", "pii_detector", "privacy_record",
    "render_privacy_markdown", "replace_findings", "scan_rows",
]
