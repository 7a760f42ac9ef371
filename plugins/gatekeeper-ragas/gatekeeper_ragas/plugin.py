"""The gatekeeper-ragas plugin: registers the ragas evaluators and the ragas detector.

Loaded through the ``gatekeeper`` entry-point group. The classes are registered by import
path (docs/architecture.md, "Registering lazily"): start-up imports only this module;
gatekeeper_ragas.evaluators is imported when a suite first uses one of its metrics, and
ragas itself (seconds, and langchain with it) when a metric first scores.
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any

from gatekeeper import hookimpl
from gatekeeper_ragas.library import ragas_version

if TYPE_CHECKING:
    from gatekeeper.kinds import Detector, Evaluator, Register

gatekeeper_api = ">=1.0,<2"

EVALUATORS = "gatekeeper_ragas.evaluators"
METRICS: tuple[str, ...] = (
    "faithfulness", "response_relevancy", "context_precision", "context_recall", "factual_correctness",
    "noise_sensitivity", "bleu", "chrf", "rouge", "exact_match", "string_presence", "string_similarity",
    "nonllm_context_precision", "nonllm_context_recall",
)
"""The metrics with an evaluator of their own, ``ragas_<metric>`` (the keys of
:data:`gatekeeper_ragas.metrics.METRICS`; a test keeps the two equal)."""


@hookimpl
def gatekeeper_register_evaluators(register: Register[Evaluator]) -> None:
    register(f"{EVALUATORS}:AnyRagasMetric", name="ragas")
    for metric in METRICS:
        register(f"{EVALUATORS}:Ragas_{metric}", name=f"ragas_{metric}")


@hookimpl
def gatekeeper_register_detectors(register: Register[Detector]) -> None:
    register(f"{EVALUATORS}:RagasHallucination", name="ragas_hallucination")


def identity() -> dict[str, Any]:
    """What the run record keeps about the scoring library: a new ragas is a visible change."""
    try:
        plugin_version = importlib.metadata.version("llm-gatekeeper-ragas")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        plugin_version = ""
    return {"gatekeeper-ragas": plugin_version, "ragas": ragas_version(), "telemetry": "off (RAGAS_DO_NOT_TRACK=true)"}


@hookimpl
def gatekeeper_run_finish(run_id: str, record: dict[str, Any]) -> None:
    uses = any(
        name == "ragas" or name.startswith("ragas_")
        for row in record.get("cases", []) for name in (row.get("scores") or {})
    )
    if uses:
        record.setdefault("plugins", {})["ragas"] = identity()
