"""gatekeeper-mlflow: the MLflow model registry as a gatekeeper deploy target (``--target mlflow``)."""

from gatekeeper_mlflow.target import MlflowRegistry

__all__ = ["MlflowRegistry"]
