"""gatekeeper-mlflow: the MLflow model registry as a gatekeeper deploy target (``--target mlflow``).

``from gatekeeper_mlflow import MlflowRegistry`` imports the target (and mlflow's client
code) on first use, not when the plugin loads.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MlflowRegistry"]


def __getattr__(name: str) -> Any:
    if name == "MlflowRegistry":
        from gatekeeper_mlflow.target import MlflowRegistry

        return MlflowRegistry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
