"""Typed registries handed to the ``gatekeeper_register_*`` hooks.

Each plugin kind has one :class:`Registry`. The host calls every implementation of a
register hook with a :class:`Register` bound to that plugin, so each entry knows which
plugin gave it and a duplicate name is reported with both plugins named.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar, cast

from gatekeeper.kinds import (
    Command,
    DeployTarget,
    Detector,
    Engine,
    Entry,
    Evaluator,
    ModelProvider,
    PiiDetector,
    Registries,
    Reporter,
    SignalSource,
    Tuner,
)
from gatekeeper.types import PluginError, UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → class for one plugin kind, validated on registration."""

    def __init__(self, kind: str, base: type[T], hook: str) -> None:
        self.kind = kind
        self.base = base
        self.hook = hook
        self._entries: dict[str, Entry[T]] = {}

    def add(self, obj: type[T] | str, *, plugin: str, name: str | None = None) -> None:
        if isinstance(obj, str):
            entry = self._lazy_entry(obj, plugin=plugin, name=name)
        else:
            self._check_class(obj, plugin)
            entry_name = name or getattr(obj, "name", None)
            if not entry_name or not isinstance(entry_name, str):
                raise PluginError(plugin, f"{self.hook}: {obj.__name__} has no 'name'")
            entry = Entry(entry_name, obj, plugin)
        if entry.name in self._entries:
            other = self._entries[entry.name].plugin
            raise PluginError(
                plugin, f"{self.kind} {entry.name!r} is already registered by plugin {other!r}"
            )
        self._entries[entry.name] = entry

    def _check_class(self, obj: object, plugin: str) -> None:
        if not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise PluginError(
                plugin, f"{self.hook}: {obj!r} is not a subclass of {self.base.__name__}"
            )

    def _lazy_entry(self, spec: str, *, plugin: str, name: str | None) -> Entry[T]:
        module, _, qualname = spec.partition(":")
        if not (module and qualname and name):
            raise PluginError(plugin, f"{self.hook}: register({spec!r}) needs a 'module:Class' "
                                      "path and a name= (a class registered by path is not imported to read its name)")
        return Entry(name, None, plugin, spec=spec, resolve=self._import)

    def _import(self, entry: Entry[T]) -> type[T]:
        module, _, qualname = entry.spec.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except Exception as exc:
            raise PluginError(entry.plugin, f"{self.kind} {entry.name!r}: cannot import {entry.spec!r}: "
                                            f"{type(exc).__name__}: {exc}") from None
        self._check_class(obj, entry.plugin)
        return cast("type[T]", obj)

    def get(self, name: str, *, field: str | None = None) -> type[T]:
        try:
            return self._entries[name].obj
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UsageError(f"unknown {self.kind} {name!r} (known: {known})", field=field) from None

    def entry(self, name: str) -> Entry[T]:
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return sorted(self._entries)


class Register:
    """The callable a register hook receives: ``register(cls, name=None)``."""

    def __init__(self, registry: Registry[Any], plugin: str) -> None:
        self._registry = registry
        self._plugin = plugin

    def __call__(self, obj: type[Any] | str, name: str | None = None) -> None:
        self._registry.add(obj, plugin=self._plugin, name=name)


def make_registries() -> dict[str, Registry[Any]]:
    """One registry per kind, keyed by the suffix of its register hook (:attr:`Registries.KEYS`)."""
    kinds: dict[str, tuple[str, type[Any]]] = {
        "models": ("model provider", ModelProvider),
        "evaluators": ("evaluator", Evaluator),
        "detectors": ("detector", Detector),
        "signal_sources": ("signal source", SignalSource),
        "tuners": ("tuner", Tuner),
        "deploy_targets": ("deploy target", DeployTarget),
        "reporters": ("reporter", Reporter),
        "commands": ("command", Command),
        "engines": ("engine", Engine),
        "pii_detectors": ("PII detector", PiiDetector),
    }
    assert tuple(kinds) == Registries.KEYS
    return {key: Registry(kind, base, f"gatekeeper_register_{key}") for key, (kind, base) in kinds.items()}
