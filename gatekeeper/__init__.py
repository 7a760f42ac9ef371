"""gatekeeper: a continuous evaluation and rollout gate for fine-tuned language models.

Plugin authors need :data:`hookimpl`, the interfaces in :mod:`gatekeeper.kinds` (plugin kinds
and the typed host: ``Register``, ``Registries``, ``Session``), the data types of
:mod:`gatekeeper.types`, the file helpers of :mod:`gatekeeper.files` and, in tests,
:mod:`gatekeeper.testing`. Everything else is internal (docs/architecture.md).
"""

from __future__ import annotations

import pluggy

from gatekeeper.kinds import (
    Command,
    DeployTarget,
    Detector,
    Engine,
    EvalContext,
    Evaluator,
    Host,
    Model,
    ModelProvider,
    Params,
    Register,
    Registries,
    Registry,
    Reporter,
    ScoringParams,
    Session,
    SignalSource,
    Tuner,
)
from gatekeeper.types import (
    Case,
    CaseResult,
    Config,
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

PLUGIN_API_VERSION = "1.0"
"""The plugin API this gatekeeper provides: the major number is bumped when a hook or an
interface changes incompatibly, the minor one when something is added. A plugin declares
what it supports with a module attribute ``gatekeeper_api = ">=1.0,<2"``; a plugin whose
range excludes this version is refused at start-up, by name (exit code 4)."""

__all__ = [
    "PLUGIN_API_VERSION",
    "Case",
    "CaseResult",
    "Command",
    "Config",
    "DeployTarget",
    "Detector",
    "Engine",
    "EvalContext",
    "Evaluator",
    "Generation",
    "GenerationRequest",
    "Host",
    "Model",
    "ModelIdentity",
    "ModelProvider",
    "ModelSpec",
    "Params",
    "PluginError",
    "ProviderError",
    "RateLimited",
    "Register",
    "Registries",
    "Registry",
    "Reporter",
    "Score",
    "ScoringParams",
    "Session",
    "SignalSource",
    "Span",
    "Tuner",
    "UsageError",
    "hookimpl",
]
