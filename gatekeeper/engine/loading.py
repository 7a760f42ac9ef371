"""Loading a model by its spec through the provider registry, with a provider's crash
reported as that plugin's error. The session (one invocation) and an engine's workers
(one partition) both load models this way."""

from __future__ import annotations

from typing import Any

from gatekeeper.kinds import Model
from gatekeeper.types import Config, ModelSpec, PluginError, UsageError


def load_model(spec: ModelSpec, registries: Any, config: Config) -> Model:
    """``spec``'s provider loads it; UsageError and PluginError pass, anything else becomes
    a PluginError naming the provider's plugin."""
    provider_cls = registries.models.get(spec.provider, field="model")
    plugin = registries.models.entry(spec.provider).plugin
    try:
        return provider_cls().load(spec, config)
    except (UsageError, PluginError):
        raise
    except Exception as exc:
        raise PluginError(
            plugin, f"provider {spec.provider!r} failed to load {str(spec)!r}: {type(exc).__name__}: {exc}"
        ) from None
