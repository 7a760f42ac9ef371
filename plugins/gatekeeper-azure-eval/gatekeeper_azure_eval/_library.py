"""Importing azure-ai-evaluation lazily, with a clear error naming the extra when it is missing.

azure's telemetry and result upload happen only through ``evaluate()`` with an Azure AI
project; the plugin never calls ``evaluate()``: it awaits each evaluator's async form.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType

from gatekeeper import PluginError

PLUGIN = "azure-eval"
EXTRA = "gatekeeper[azure-eval]"


def azure_eval() -> ModuleType:
    try:
        return importlib.import_module("azure.ai.evaluation")
    except ImportError as exc:
        raise PluginError(
            PLUGIN, f"azure-ai-evaluation is not installed ({exc}); install the extra: pip install '{EXTRA}'"
        ) from exc


def module(name: str) -> ModuleType:
    azure_eval()
    return importlib.import_module(name)


def version() -> str:
    try:
        return importlib.metadata.version("azure-ai-evaluation")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
