"""The gatekeeper-azure-eval plugin: registers azure-ai-evaluation's evaluators and detector.

Loaded through the ``gatekeeper`` entry-point group; azure-ai-evaluation itself is imported
only when an evaluator first scores.
"""

from __future__ import annotations

from typing import Any

from gatekeeper import hookimpl
from gatekeeper_azure_eval.evaluators import DETECTORS, EVALUATORS

gatekeeper_api = ">=1.0,<2"


@hookimpl
def gatekeeper_register_evaluators(register: Any) -> None:
    for cls in EVALUATORS:
        register(cls)


@hookimpl
def gatekeeper_register_detectors(register: Any) -> None:
    for cls in DETECTORS:
        register(cls)
