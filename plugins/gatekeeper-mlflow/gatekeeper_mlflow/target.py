"""The ``mlflow`` deploy target: gatekeeper's versions, aliases and stages on an MLflow model registry.

Mapping (docs/deploy.md):

* a gatekeeper **version** is an MLflow *model version* of the registered model. Its source
  is an MLflow run (experiment ``gatekeeper``) that holds ``gatekeeper/provenance.json``, the
  full provenance, as an artifact; the version's tags carry what gatekeeper reads back
  (``gatekeeper.spec``, ``gatekeeper.decision``, ``gatekeeper.policy_id`` ...);
* an **alias** is an MLflow registered-model alias (``production``, ``candidate``); its traffic
  share, stage and time are the registered-model tag ``gatekeeper.alias.<alias>`` (JSON), and
  the model version serving it carries ``gatekeeper.stage`` / ``gatekeeper.traffic``;
* the **history** is one registered-model tag per event, ``gatekeeper.event.<seq>`` (JSON).

MLflow has no transactions: ``expected`` is checked right before each change, which refuses
any promotion that started from a stale view, but two changes racing within the same
instant are not serialised as in the ``local`` registry.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gatekeeper.kinds import UNSET, DeployTarget, Unset, check_expected, rollback_target
from gatekeeper.types import Config, PluginError, UsageError, default_actor, utc_now

PREFIX = "gatekeeper."
EVENT_PREFIX = PREFIX + "event."
ALIAS_PREFIX = PREFIX + "alias."
EXPERIMENT = "gatekeeper"
PROVENANCE_ARTIFACT = "gatekeeper/provenance.json"
MAX_TAG_TEXT = 500
VERSION_TAGS = {  # tag → path in the provenance
    "decision": ("decision",),
    "run_id": ("run_id",),
    "verdict": ("verdict",),
    "policy_id": ("policy", "id"),
    "policy_version": ("policy", "version"),
    "policy_sha256": ("policy", "sha256"),
    "identity_digest": ("identity", "digest"),
    "modification": ("modification",),
}


def _dig(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


class MlflowRegistry(DeployTarget):
    """An MLflow tracking server's model registry (``--registry URI``, else ``MLFLOW_TRACKING_URI``)."""

    name = "mlflow"
    description = "MLflow model registry: model versions, aliases, tags for decision, policy and stage"

    def __init__(self, config: Config, location: str | None = None) -> None:
        super().__init__(config, location)
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reporting from CI
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # our stdout is a report
        uri = location or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise UsageError("the mlflow target needs a tracking URI: --registry http://HOST:PORT "
                             "(or set MLFLOW_TRACKING_URI)", field="--registry")
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    # ----------------------------------------------------------------- errors

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            raise PluginError("mlflow", f"{what} on {self.uri} failed: {exc.error_code}: "
                              f"{str(exc.message).splitlines()[0]}") from None
        except OSError as exc:  # connection refused, DNS ...
            raise PluginError("mlflow", f"{what} on {self.uri} failed: {exc}") from None

    def _registered(self, model: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(model)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise PluginError("mlflow", f"reading {model!r} from {self.uri} failed: {exc.error_code}") from None

    def _require(self, model: str) -> Any:
        found = self._registered(model)
        if found is None:
            raise UsageError(f"no registered model {model!r} in the MLflow registry {self.uri}")
        return found

    # ----------------------------------------------------------------- reading

    def versions(self, model: str) -> dict[str, dict[str, Any]]:
        if self._registered(model) is None:
            return {}
        found = self._call("searching model versions", self.client.search_model_versions, f"name = '{model}'")
        out: dict[str, dict[str, Any]] = {}
        for mv in sorted(found, key=lambda v: int(v.version)):
            tags = dict(mv.tags or {})
            provenance: dict[str, Any] = {}
            for tag, path in VERSION_TAGS.items():
                value = tags.get(PREFIX + tag)
                if value is None:
                    continue
                node = provenance
                for key in path[:-1]:
                    node = node.setdefault(key, {})
                node[path[-1]] = value
            out[str(mv.version)] = {"spec": tags.get(PREFIX + "spec", mv.source), "provenance": provenance,
                                    "created": mv.creation_timestamp, "source": mv.source,
                                    "run_id": mv.run_id}
        return out

    def aliases(self, model: str) -> dict[str, dict[str, Any]]:
        registered = self._registered(model)
        if registered is None:
            return {}
        tags = dict(registered.tags or {})
        out = {}
        for alias, version in dict(registered.aliases or {}).items():
            info = json.loads(tags.get(ALIAS_PREFIX + alias, "{}"))
            out[alias] = {"version": str(version), "traffic": float(info.get("traffic", 1.0)),
                          "stage": info.get("stage"), "since": info.get("since")}
        return out

    def history(self, model: str) -> list[dict[str, Any]]:
        registered = self._registered(model)
        if registered is None:
            return []
        events = [json.loads(v) for k, v in (registered.tags or {}).items() if k.startswith(EVENT_PREFIX)]
        return sorted(events, key=lambda e: int(e["seq"]))

    def provenance(self, model: str, version: str) -> dict[str, Any]:
        """The full provenance logged with ``version`` (its run's artifact)."""
        import tempfile

        info = self.versions(model).get(version)
        if info is None:
            raise UsageError(f"{model} has no version {version!r}")
        with tempfile.TemporaryDirectory() as tmp:
            path = self._call("downloading the provenance", self.client.download_artifacts, info["run_id"],
                              PROVENANCE_ARTIFACT, tmp)
            return dict(json.loads(Path(path).read_text(encoding="utf-8")))

    # ----------------------------------------------------------------- writing

    def _append(self, model: str, action: str, **fields: Any) -> dict[str, Any]:
        seq = max((int(e["seq"]) for e in self.history(model)), default=0) + 1
        if isinstance(fields.get("reason"), str) and len(fields["reason"]) > MAX_TAG_TEXT:
            fields["reason"] = fields["reason"][: MAX_TAG_TEXT - 1] + "…"
        event = {"seq": seq, "time": utc_now(), "actor": default_actor(), "action": action, "model": model, **fields}
        self._call("recording the event", self.client.set_registered_model_tag, model, f"{EVENT_PREFIX}{seq:06d}",
                   json.dumps(event, sort_keys=True, default=str))
        return event

    def _experiment_id(self) -> str:
        found = self._call("reading the experiment", self.client.get_experiment_by_name, EXPERIMENT)
        if found is not None:
            return str(found.experiment_id)
        return str(self._call("creating the experiment", self.client.create_experiment, EXPERIMENT))

    def register_version(self, model: str, spec: str, provenance: dict[str, Any]) -> str:
        if self._registered(model) is None:
            self._call("creating the registered model", self.client.create_registered_model, model,
                       tags={PREFIX + "managed": "true"}, description="Versions promoted by gatekeeper")
        run = self._call("creating the provenance run", self.client.create_run, self._experiment_id(),
                         run_name=f"{model} provenance", tags={PREFIX + "spec": spec})
        run_id = run.info.run_id
        self._call("logging the provenance", self.client.log_dict, run_id, provenance, PROVENANCE_ARTIFACT)
        self._call("closing the provenance run", self.client.set_terminated, run_id)
        tags = {PREFIX + "spec": spec}
        for tag, path in VERSION_TAGS.items():
            value = _dig(provenance, path)
            if value is not None:
                tags[PREFIX + tag] = str(value)
        mv = self._call("creating the model version", self.client.create_model_version, model,
                        source=f"runs:/{run_id}/gatekeeper", run_id=run_id, tags=tags,
                        description=f"gatekeeper: {spec}", await_creation_for=0)
        version = str(mv.version)
        self._append(model, "register", version=version, spec=spec)
        return version

    def set_alias(
        self, model: str, alias: str, version: str, *, traffic: float = 1.0, stage: str | None = None,
        expected: str | Unset | None = UNSET, reason: str = "",
    ) -> None:
        if not 0.0 <= traffic <= 1.0:
            raise UsageError(f"traffic {traffic} is outside 0..1", field="traffic")
        self._require(model)
        if version not in self.versions(model):
            raise UsageError(f"{model} has no version {version!r}")
        current = self.aliases(model).get(alias)
        check_expected(alias, current["version"] if current else None, expected)
        self._point(model, alias, version, traffic, stage)
        self._append(model, "alias", alias=alias, version=version, traffic=traffic, stage=stage,
                     previous=current and current["version"], reason=reason)

    def _point(self, model: str, alias: str, version: str, traffic: float, stage: str | None) -> None:
        self._call("setting the alias", self.client.set_registered_model_alias, model, alias, version)
        self._call("tagging the alias", self.client.set_registered_model_tag, model, ALIAS_PREFIX + alias,
                   json.dumps({"traffic": traffic, "stage": stage, "since": utc_now()}))
        for key, value in (("stage", stage or ""), ("traffic", f"{traffic:g}"), ("alias", alias)):
            self._call("tagging the version", self.client.set_model_version_tag, model, version, PREFIX + key, value)

    def remove_alias(self, model: str, alias: str, *, expected: str | Unset | None = UNSET,
                     reason: str = "") -> None:
        current = self.aliases(model).get(alias)
        check_expected(alias, current["version"] if current else None, expected)
        if current is None:
            raise UsageError(f"{model} has no alias {alias!r}")
        self._unpoint(model, alias)
        self._append(model, "remove_alias", alias=alias, previous=current["version"], reason=reason)

    def _unpoint(self, model: str, alias: str) -> None:
        self._call("deleting the alias", self.client.delete_registered_model_alias, model, alias)
        self._call("deleting the alias tag", self.client.delete_registered_model_tag, model, ALIAS_PREFIX + alias)

    def rollback(self, model: str, alias: str, *, to: str | None = None, reason: str) -> str | None:
        current = self.aliases(model).get(alias)
        if current is None:
            raise UsageError(f"{model} has no alias {alias!r} to roll back")
        if to is not None:
            if to not in self.versions(model):
                raise UsageError(f"{model} has no version {to!r}", field="--to")
            target: dict[str, Any] | None = {"version": to, "traffic": current["traffic"], "stage": current["stage"]}
        else:
            target = rollback_target(self.history(model), alias, current)
        if target is None:
            self._unpoint(model, alias)
        else:
            self._point(model, alias, str(target["version"]), float(target["traffic"]), target["stage"])
        self._append(model, "rollback", alias=alias, previous=current["version"],
                     version=target and target["version"], traffic=target and target["traffic"],
                     stage=target and target["stage"], reason=reason)
        return None if target is None else str(target["version"])

    def record_event(self, model: str, action: str, **fields: Any) -> dict[str, Any]:
        self._require(model)
        return self._append(model, action, **fields)
