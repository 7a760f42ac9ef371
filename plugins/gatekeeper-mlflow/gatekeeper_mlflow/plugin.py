"""The plugin module named by the ``gatekeeper`` entry point: registers the ``mlflow`` target."""

from __future__ import annotations

from gatekeeper import hookimpl
from gatekeeper.kinds import DeployTarget, Register


@hookimpl
def gatekeeper_register_deploy_targets(register: Register[DeployTarget]) -> None:
    from gatekeeper_mlflow.target import MlflowRegistry

    register(MlflowRegistry)
