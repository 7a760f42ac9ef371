"""The gatekeeper-deepeval plugin: registers deepeval's metrics.

Loaded through the ``gatekeeper`` entry-point group. The metric classes are registered by
import path (docs/architecture.md, "Registering lazily"): start-up imports only this module;
gatekeeper_deepeval.metrics is imported when a suite first uses one, and deepeval itself
(seconds, and it reads its settings on import) when a metric first scores, telemetry off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatekeeper import hookimpl

# deepeval's opt-outs (telemetry, .env loading, its state folder) go into the environment when
# the plugin loads, before anything in the process can import deepeval: a light module.
from gatekeeper_deepeval import _library  # noqa: F401

if TYPE_CHECKING:
    from gatekeeper.kinds import Detector, Evaluator, Register

gatekeeper_api = ">=1.0,<2"

METRICS = "gatekeeper_deepeval.metrics"
EVALUATORS: tuple[tuple[str, str], ...] = (
    ("deepeval_geval", "GEval"),
    ("deepeval_answer_relevancy", "AnswerRelevancy"),
    ("deepeval_contextual_precision", "ContextualPrecision"),
    ("deepeval_contextual_recall", "ContextualRecall"),
    ("deepeval_contextual_relevancy", "ContextualRelevancy"),
    ("deepeval_bias", "Bias"),
    ("deepeval_toxicity", "Toxicity"),
    ("deepeval_json_correctness", "JsonCorrectness"),
    ("deepeval_exact_match", "ExactMatch"),
    ("deepeval_pattern_match", "PatternMatch"),
    ("deepeval_bleu", "Bleu"),
    ("deepeval_rouge", "Rouge"),
)
DETECTORS: tuple[tuple[str, str], ...] = (
    ("deepeval_hallucination", "Hallucination"),
    ("deepeval_faithfulness", "Faithfulness"),
)


@hookimpl
def gatekeeper_register_evaluators(register: Register[Evaluator]) -> None:
    for name, cls in EVALUATORS:
        register(f"{METRICS}:{cls}", name=name)


@hookimpl
def gatekeeper_register_detectors(register: Register[Detector]) -> None:
    for name, cls in DETECTORS:
        register(f"{METRICS}:{cls}", name=name)
