"""The built-in ``local`` deploy target: a model registry in a directory.

The whole registry is one JSON document, ``DIR/registry.json``: every model's versions
(with the spec that serves them and their provenance), its aliases (``production``,
``candidate``, ...) each with a traffic share and a stage name, and the history of every
change. A change is a transaction: take the lock ``DIR/.lock`` (a kernel lock, released
even when the process is killed), read, change, write a temporary file, fsync it and
``os.replace`` it over ``registry.json``. A reader therefore sees the state before or
after a change, never half of one; a writer killed mid-way leaves only a temporary file,
which is never read as state and is removed by the next writer.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.files import fsync_directory, loads_strict
from gatekeeper.kinds import UNSET, DeployTarget, Register, Unset, check_expected, rollback_target
from gatekeeper.types import Config, UsageError, default_actor, utc_now

REGISTRY_SCHEMA = "gatekeeper.registry/1"
STATE_FILE = "registry.json"
LOCK_FILE = ".lock"
TMP_PREFIX = f".{STATE_FILE}."
TMP_SUFFIX = ".tmp"
LOCK_TIMEOUT_S = 60.0


def empty_state() -> dict[str, Any]:
    return {"schema": REGISTRY_SCHEMA, "seq": 0, "models": {}, "history": []}


# --------------------------------------------------------------------------- rules shared by targets






def consistency_problems(state: dict[str, Any]) -> list[str]:
    """What is wrong with a registry document (empty list: consistent)."""
    problems: list[str] = []
    if state.get("schema") != REGISTRY_SCHEMA:
        problems.append(f"schema is {state.get('schema')!r}, expected {REGISTRY_SCHEMA!r}")
    for name, model in state.get("models", {}).items():
        for alias, info in model.get("aliases", {}).items():
            if str(info.get("version")) not in model.get("versions", {}):
                problems.append(f"{name}: alias {alias!r} points at missing version {info.get('version')!r}")
            if not 0.0 <= float(info.get("traffic", 1.0)) <= 1.0:
                problems.append(f"{name}: alias {alias!r} has traffic {info.get('traffic')!r} outside 0..1")
    seqs = [e.get("seq") for e in state.get("history", [])]
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append("history seq numbers are not 1, 2, 3, ...")
    if state.get("seq") != len(seqs):
        problems.append(f"seq {state.get('seq')} does not match {len(seqs)} history events")
    return problems


# --------------------------------------------------------------------------- the target


class LocalRegistry(DeployTarget):
    """A registry in a directory (default ``.gatekeeper/registry``; ``registry`` in the config)."""

    name = "local"
    description = "model registry in a local directory: versions, aliases, stages, history"

    def __init__(self, config: Config, location: str | None = None) -> None:
        from filelock import FileLock
        super().__init__(config, location)
        self.root = config.path(location or config.registry)
        self.path = self.root / STATE_FILE
        self._lock = FileLock(str(self.root / LOCK_FILE), timeout=LOCK_TIMEOUT_S)

    # ----------------------------------------------------------------- reading

    def load(self) -> dict[str, Any]:
        """The current registry document (an empty one when nothing was registered yet)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return empty_state()
        except UnicodeDecodeError as exc:
            raise UsageError(f"the registry is not UTF-8 text ({exc.reason})", file=str(self.path)) from None
        try:
            state = loads_strict(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"the registry is not valid JSON: {exc.msg}", file=str(self.path),
                             line=exc.lineno) from None
        except ValueError as exc:  # a duplicate key or NaN
            raise UsageError(f"the registry is not valid JSON: {exc}", file=str(self.path)) from None
        if not isinstance(state, dict) or state.get("schema") != REGISTRY_SCHEMA:
            raise UsageError(f"not a gatekeeper registry (schema {REGISTRY_SCHEMA})", file=str(self.path))
        return state

    def _model(self, state: dict[str, Any], model: str) -> dict[str, Any]:
        try:
            return dict(state["models"][model])
        except KeyError:
            known = ", ".join(sorted(state["models"])) or "none"
            raise UsageError(f"no model {model!r} in the registry {self.root} (known: {known})") from None

    def models(self) -> list[str]:
        return sorted(self.load()["models"])

    def aliases(self, model: str) -> dict[str, dict[str, Any]]:
        models = self.load()["models"]
        return dict(models[model]["aliases"]) if model in models else {}

    def versions(self, model: str) -> dict[str, dict[str, Any]]:
        models = self.load()["models"]
        return dict(models[model]["versions"]) if model in models else {}

    def history(self, model: str) -> list[dict[str, Any]]:
        return [e for e in self.load()["history"] if e["model"] == model]

    # ----------------------------------------------------------------- writing

    @contextmanager
    def _transaction(self) -> Iterator[dict[str, Any]]:
        """Lock, load, let the caller change the document, write it atomically."""
        from filelock import Timeout
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise UsageError(
                f"the registry is locked by another command for over {LOCK_TIMEOUT_S:.0f} s",
                file=str(self.root / LOCK_FILE),
            ) from None
        try:
            self._remove_stale_temporaries()
            state = self.load()
            yield state
            self._write(state)
        finally:
            self._lock.release()

    def _remove_stale_temporaries(self) -> None:
        # Under the lock no other writer is mid-write, so any temporary is a dead one's.
        for leftover in self.root.glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)

    def _write(self, state: dict[str, Any]) -> None:
        problems = consistency_problems(state)
        if problems:  # never write a state a reader would reject
            raise AssertionError("; ".join(problems))
        tmp = self.root / f"{TMP_PREFIX}{os.getpid()}.{uuid.uuid4().hex}{TMP_SUFFIX}"
        data = json.dumps(state, indent=1, ensure_ascii=False, sort_keys=True).encode("utf-8")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        fsync_directory(self.root)

    @staticmethod
    def _append(state: dict[str, Any], model: str, action: str, **fields: Any) -> dict[str, Any]:
        state["seq"] += 1
        event = {"seq": state["seq"], "time": utc_now(), "actor": default_actor(), "action": action,
                 "model": model, **fields}
        state["history"].append(event)
        return event

    def _change(self, fn: Callable[[dict[str, Any]], Any]) -> Any:
        with self._transaction() as state:
            before = len(state["history"])
            result = fn(state)
            head = self._audit_head()
            for event in state["history"][before:] if head else []:  # anchor the audit head (issue 14)
                event.setdefault("audit_head", head)
            return result

    def _audit_head(self) -> dict[str, Any] | None:
        from gatekeeper.gate.audit import AuditLog

        path = self.config.path(self.config.audit_log)
        head = AuditLog(path).head() if path.is_file() else None
        return {"seq": head["seq"], "hash": head["hash"]} if head else None

    def register_version(self, model: str, spec: str, provenance: dict[str, Any]) -> str:
        def change(state: dict[str, Any]) -> str:
            entry = state["models"].setdefault(model, {"versions": {}, "aliases": {}})
            version = str(max((int(v) for v in entry["versions"] if v.isdigit()), default=0) + 1)
            entry["versions"][version] = {"spec": spec, "provenance": provenance, "created": utc_now()}
            self._append(state, model, "register", version=version, spec=spec)
            return version

        return str(self._change(change))

    def set_alias(
        self, model: str, alias: str, version: str, *, traffic: float = 1.0, stage: str | None = None,
        expected: str | Unset | None = UNSET, reason: str = "",
    ) -> None:
        if not 0.0 <= traffic <= 1.0:
            raise UsageError(f"traffic {traffic} is outside 0..1", field="traffic")

        def change(state: dict[str, Any]) -> None:
            entry = self._model(state, model)
            if version not in entry["versions"]:
                raise UsageError(f"{model} has no version {version!r} (known: {', '.join(entry['versions'])})")
            current = entry["aliases"].get(alias)
            check_expected(alias, current and current["version"], expected)
            entry["aliases"][alias] = {"version": version, "traffic": traffic, "stage": stage, "since": utc_now()}
            state["models"][model] = entry
            self._append(state, model, "alias", alias=alias, version=version, traffic=traffic, stage=stage,
                         previous=current and current["version"], reason=reason)

        self._change(change)

    def remove_alias(self, model: str, alias: str, *, expected: str | Unset | None = UNSET,
                     reason: str = "") -> None:
        def change(state: dict[str, Any]) -> None:
            entry = self._model(state, model)
            current = entry["aliases"].get(alias)
            check_expected(alias, current and current["version"], expected)
            if current is None:
                raise UsageError(f"{model} has no alias {alias!r}")
            del entry["aliases"][alias]
            state["models"][model] = entry
            self._append(state, model, "remove_alias", alias=alias, previous=current["version"], reason=reason)

        self._change(change)

    def rollback(self, model: str, alias: str, *, to: str | None = None, reason: str) -> str | None:
        def change(state: dict[str, Any]) -> str | None:
            entry = self._model(state, model)
            current = entry["aliases"].get(alias)
            if current is None:
                raise UsageError(f"{model} has no alias {alias!r} to roll back")
            history = [e for e in state["history"] if e["model"] == model]
            if to is not None:
                if to not in entry["versions"]:
                    raise UsageError(f"{model} has no version {to!r}", field="--to")
                target: dict[str, Any] | None = {"version": to, "traffic": current["traffic"],
                                                 "stage": current["stage"]}
            else:
                target = rollback_target(history, alias, current)
            if target is None:
                del entry["aliases"][alias]
            else:
                entry["aliases"][alias] = {**target, "since": utc_now()}
            state["models"][model] = entry
            self._append(state, model, "rollback", alias=alias, previous=current["version"],
                         version=target and target["version"], traffic=target and target["traffic"],
                         stage=target and target["stage"], reason=reason)
            return None if target is None else str(target["version"])

        result = self._change(change)
        return None if result is None else str(result)

    def record_event(self, model: str, action: str, **fields: Any) -> dict[str, Any]:
        def change(state: dict[str, Any]) -> dict[str, Any]:
            self._model(state, model)
            return self._append(state, model, action, **fields)

        return dict(self._change(change))


@hookimpl
def gatekeeper_register_deploy_targets(register: Register[DeployTarget]) -> None:
    register(LocalRegistry)
