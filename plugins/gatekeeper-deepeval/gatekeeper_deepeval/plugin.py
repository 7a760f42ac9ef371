"""The gatekeeper-deepeval plugin: registers deepeval's metrics.

Loaded through the ``gatekeeper`` entry-point group. Importing this module does not import
deepeval (which takes seconds and reads its settings on import); the metric classes import
it, with telemetry off, when they first score.
"""

from __future__ import annotations

from typing import Any

from gatekeeper import hookimpl
from gatekeeper_deepeval.metrics import DETECTORS, EVALUATORS

gatekeeper_api = ">=1.0,<2"


@hookimpl
def gatekeeper_register_evaluators(register: Any) -> None:
    for cls in EVALUATORS:
        register(cls)


@hookimpl
def gatekeeper_register_detectors(register: Any) -> None:
    for cls in DETECTORS:
        register(cls)
