"""The gatekeeper-hf plugin: registers its provider, tuners, evaluator and detectors.

Loaded through the ``gatekeeper`` entry-point group. Only this module and the light
modules it names are imported at start-up; torch, transformers and peft are imported
inside the classes' methods when they run.
"""

from __future__ import annotations

from gatekeeper import hookimpl
from gatekeeper.kinds import Detector, Evaluator, ModelProvider, Register, Tuner
from gatekeeper_hf.distill import DistillTuner
from gatekeeper_hf.grpo import GrpoTuner
from gatekeeper_hf.provider import HFProvider
from gatekeeper_hf.scoring import EmbeddingGrounding, SelfConsistency, SemanticSimilarity
from gatekeeper_hf.tuning import DpoTuner, LoraTuner

gatekeeper_api = ">=1.0,<2"


@hookimpl
def gatekeeper_register_models(register: Register[ModelProvider]) -> None:
    register(HFProvider)


@hookimpl
def gatekeeper_register_tuners(register: Register[Tuner]) -> None:
    register(LoraTuner)
    register(DpoTuner)
    register(GrpoTuner)
    register(DistillTuner)


@hookimpl
def gatekeeper_register_evaluators(register: Register[Evaluator]) -> None:
    register(SemanticSimilarity)


@hookimpl
def gatekeeper_register_detectors(register: Register[Detector]) -> None:
    register(EmbeddingGrounding)
    register(SelfConsistency)
