"""gatekeeper: a continuous evaluation and rollout gate for fine-tuned language models.

Plugin authors need :data:`hookimpl`, the interfaces in :mod:`gatekeeper.kinds` and the
data types re-exported here. Everything else is internal.
"""

from __future__ import annotations

import pluggy

from gatekeeper.kinds import (
    Command,
    DeployTarget,
    Detector,
    EvalContext,
    Evaluator,
    Model,
    ModelProvider,
    Params,
    Reporter,
    ScoringParams,
    SignalSource,
    Tuner,
)
from gatekeeper.types import (
    Case,
    CaseResult,
    Generation,
    GenerationRequest,
    ModelIdentity,
    ModelSpec,
    PluginError,
    ProviderError,
    RateLimited,
    Score,
    Span,
    UsageError,
)

hookimpl = pluggy.HookimplMarker("gatekeeper")
"""Decorator for hook implementations: ``@hookimpl def gatekeeper_register_models(...)``."""

PLUGIN_API_VERSION = 1
"""Bumped when a hook or interface changes incompatibly."""

__all__ = [
    "PLUGIN_API_VERSION",
    "Case",
    "CaseResult",
    "Command",
    "DeployTarget",
    "Detector",
    "EvalContext",
    "Evaluator",
    "Generation",
    "GenerationRequest",
    "Model",
    "ModelIdentity",
    "ModelProvider",
    "ModelSpec",
    "Params",
    "PluginError",
    "ProviderError",
    "RateLimited",
    "Reporter",
    "Score",
    "ScoringParams",
    "SignalSource",
    "Span",
    "Tuner",
    "UsageError",
    "hookimpl",
]
