"""The plugin module named by the ``gatekeeper`` entry point: registers the ``mlflow`` target."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatekeeper import hookimpl

if TYPE_CHECKING:
    from gatekeeper.kinds import DeployTarget, Register


@hookimpl
def gatekeeper_register_deploy_targets(register: Register[DeployTarget]) -> None:
    register("gatekeeper_mlflow.target:MlflowRegistry", name="mlflow")
