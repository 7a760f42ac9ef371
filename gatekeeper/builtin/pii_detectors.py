"""The built-in PII detector: the ``patterns`` fallback, always registered, so curation and
``gatekeeper synth`` work (and say so in their records) without the presidio plugin."""

from __future__ import annotations

from gatekeeper import hookimpl
from gatekeeper.kinds import Register
from gatekeeper.pii import PatternDetector, PiiDetector


@hookimpl
def gatekeeper_register_pii_detectors(register: Register[PiiDetector]) -> None:
    register(PatternDetector)
