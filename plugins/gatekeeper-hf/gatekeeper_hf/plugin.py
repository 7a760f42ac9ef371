"""The gatekeeper-hf plugin: registers its provider, tuners, evaluator and detectors.

Loaded through the ``gatekeeper`` entry-point group. Classes are registered by import path
(docs/architecture.md, "Registering lazily"): start-up imports only this module, and a class's
module (with torch, transformers, peft or TRL behind it) is imported when a run first uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatekeeper import hookimpl

if TYPE_CHECKING:
    from gatekeeper.kinds import Detector, Evaluator, ModelProvider, Register, Tuner

gatekeeper_api = ">=1.0,<2"


@hookimpl
def gatekeeper_register_models(register: Register[ModelProvider]) -> None:
    register("gatekeeper_hf.provider:HFProvider", name="hf")


@hookimpl
def gatekeeper_register_tuners(register: Register[Tuner]) -> None:
    register("gatekeeper_hf.tuning:LoraTuner", name="lora")
    register("gatekeeper_hf.tuning:DpoTuner", name="dpo")
    register("gatekeeper_hf.grpo:GrpoTuner", name="grpo")
    register("gatekeeper_hf.distill:DistillTuner", name="distill")
    register("gatekeeper_hf.dp_lora:DpLoraTuner", name="dp-lora")


@hookimpl
def gatekeeper_register_evaluators(register: Register[Evaluator]) -> None:
    register("gatekeeper_hf.scoring:SemanticSimilarity", name="semantic_similarity")


@hookimpl
def gatekeeper_register_detectors(register: Register[Detector]) -> None:
    register("gatekeeper_hf.scoring:EmbeddingGrounding", name="embedding_grounding")
    register("gatekeeper_hf.scoring:SelfConsistency", name="self_consistency")
    register("gatekeeper_hf.nli:NLIGrounding", name="nli_grounding")
