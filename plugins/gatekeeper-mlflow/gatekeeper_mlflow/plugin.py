"""The plugin module named by the ``gatekeeper`` entry point: registers the ``mlflow`` target."""

from __future__ import annotations

from typing import Any

from gatekeeper import hookimpl


@hookimpl
def gatekeeper_register_deploy_targets(register: Any) -> None:
    from gatekeeper_mlflow.target import MlflowRegistry

    register(MlflowRegistry)
