"""The gatekeeper-presidio plugin: registers the ``presidio`` PII detector.

Loaded through the ``gatekeeper`` entry-point group. Registration is by import path, so
neither presidio nor spaCy is imported until a command actually scrubs or checks text
(``gatekeeper --help`` and runs that never touch PII pay nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatekeeper import hookimpl

if TYPE_CHECKING:
    from gatekeeper.kinds import PiiDetector, Register

gatekeeper_api = ">=1.0,<2"


@hookimpl
def gatekeeper_register_pii_detectors(register: Register[PiiDetector]) -> None:
    register("gatekeeper_presidio.detector:PresidioDetector", name="presidio")
