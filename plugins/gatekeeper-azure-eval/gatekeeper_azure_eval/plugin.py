"""The gatekeeper-azure-eval plugin: registers azure-ai-evaluation's evaluators and detector.

Loaded through the ``gatekeeper`` entry-point group. The classes are registered by import
path (docs/architecture.md, "Registering lazily"): start-up imports only this module;
gatekeeper_azure_eval.evaluators is imported when a suite first uses one of them, and
azure-ai-evaluation itself when an evaluator first scores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatekeeper import hookimpl

if TYPE_CHECKING:
    from gatekeeper.kinds import Detector, Evaluator, Register

gatekeeper_api = ">=1.0,<2"

EVALUATORS_MODULE = "gatekeeper_azure_eval.evaluators"
EVALUATORS: tuple[tuple[str, str], ...] = (
    ("azure_groundedness", "Groundedness"),
    ("azure_relevance", "Relevance"),
    ("azure_coherence", "Coherence"),
    ("azure_fluency", "Fluency"),
    ("azure_similarity", "Similarity"),
    ("azure_retrieval", "Retrieval"),
    ("azure_f1", "F1"),
    ("azure_bleu", "Bleu"),
    ("azure_gleu", "Gleu"),
    ("azure_meteor", "Meteor"),
    ("azure_rouge", "Rouge"),
    ("azure_content_safety", "RefusedContentSafetyEvaluator"),
    ("azure_violence", "RefusedViolenceEvaluator"),
    ("azure_sexual", "RefusedSexualEvaluator"),
    ("azure_self_harm", "RefusedSelfHarmEvaluator"),
    ("azure_hate_unfairness", "RefusedHateUnfairnessEvaluator"),
    ("azure_protected_material", "RefusedProtectedMaterialEvaluator"),
    ("azure_indirect_attack", "RefusedIndirectAttackEvaluator"),
    ("azure_groundedness_pro", "RefusedGroundednessProEvaluator"),
    ("azure_ungrounded_attributes", "RefusedUngroundedAttributesEvaluator"),
    ("azure_code_vulnerability", "RefusedCodeVulnerabilityEvaluator"),
)
DETECTORS: tuple[tuple[str, str], ...] = (
    ("azure_groundedness", "GroundednessDetector"),
)


@hookimpl
def gatekeeper_register_evaluators(register: Register[Evaluator]) -> None:
    for name, cls in EVALUATORS:
        register(f"{EVALUATORS_MODULE}:{cls}", name=name)


@hookimpl
def gatekeeper_register_detectors(register: Register[Detector]) -> None:
    for name, cls in DETECTORS:
        register(f"{EVALUATORS_MODULE}:{cls}", name=name)
