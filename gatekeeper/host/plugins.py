"""The plugin manager: built-ins, entry points, ``-p`` modules and the local plugin file.

Built-in behaviour is a list of plugin modules (:data:`DEFAULT_PLUGINS`) registered
through the same path as third-party ones, so ``-p no:NAME`` can block any of them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from gatekeeper import hookspecs
from gatekeeper.host.registry import Register, make_registries
from gatekeeper.kinds import Registries
from gatekeeper.types import Config, PluginError, UsageError

ENTRY_POINT_GROUP = "gatekeeper"
DISTRIBUTION = "llm-gatekeeper"
"""The core's distribution name on the package index (the import name and the command are ``gatekeeper``)."""
DISABLE_AUTOLOAD_ENV = "GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD"
TRACE_ENV = "GATEKEEPER_TRACE_PLUGINS"
LOCAL_PLUGIN_FILE = "gatekeeper_plugins.py"
API_ATTRIBUTE = "gatekeeper_api"
"""A plugin module may set ``gatekeeper_api = ">=1,<2"``: the plugin API versions it supports."""

# Short name → module. The short name is what `-p no:NAME` blocks.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("suite_loader", "gatekeeper.builtin.suite_loader"),
    ("providers", "gatekeeper.builtin.providers.local"),
    ("openai", "gatekeeper.builtin.providers.openai.provider"),
    ("openai_ft", "gatekeeper.builtin.tuners.openai_ft"),
    ("evaluators", "gatekeeper.builtin.scoring.evaluators"),
    ("grounding", "gatekeeper.builtin.scoring.grounding"),
    ("structural", "gatekeeper.builtin.scoring.structural"),
    ("judges", "gatekeeper.builtin.scoring.judges"),
    ("classifiers", "gatekeeper.builtin.scoring.classifiers"),
    ("judge_grounding", "gatekeeper.builtin.scoring.judge_grounding"),
    ("claim_verification", "gatekeeper.builtin.scoring.claims"),
    ("reporters", "gatekeeper.reports"),
    ("commands", "gatekeeper.builtin.commands.run"),
    ("plugins_command", "gatekeeper.builtin.commands.plugins"),
    ("tune", "gatekeeper.builtin.commands.tune"),
    ("check", "gatekeeper.builtin.commands.check"),
    ("audit_commands", "gatekeeper.builtin.commands.audit"),
    ("report_commands", "gatekeeper.builtin.commands.report"),
    ("local_registry", "gatekeeper.builtin.local_registry"),
    ("deploy_commands", "gatekeeper.builtin.commands.deploy"),
    ("loop", "gatekeeper.builtin.commands.loop"),
    ("signal_sources", "gatekeeper.builtin.signal_sources"),
    ("pii_detectors", "gatekeeper.builtin.pii_detectors"),
    ("signals_commands", "gatekeeper.builtin.commands.signals"),
    ("classify", "gatekeeper.builtin.commands.classify"),
    ("scaffold", "gatekeeper.builtin.commands.scaffold"),
    ("devtools_commands", "gatekeeper.builtin.commands.devtools"),
    ("load_command", "gatekeeper.builtin.commands.load"),
    ("synth_command", "gatekeeper.builtin.commands.synth"),
)


@dataclass
class PluginInfo:
    """Where a plugin came from, for ``gatekeeper plugins``."""

    name: str
    source: str  # builtin | entrypoint | option | local
    distribution: str = ""
    version: str = ""
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    api: str = ""
    """the plugin API versions the plugin declares it supports (``gatekeeper_api``)"""


class IncompatiblePlugin(PluginError):
    """A plugin needs a plugin API version this gatekeeper does not provide. Exit code 4:
    the installation, not the run, is at fault, and ``-p no:NAME`` or an upgrade fixes it."""

    exit_code = 4


def check_api_version(name: str, plugin: object) -> str:
    """The plugin's declared ``gatekeeper_api`` specifier ("" when it declares none).

    Raises :class:`IncompatiblePlugin` naming the plugin, what it needs and what this
    gatekeeper provides when :data:`gatekeeper.PLUGIN_API_VERSION` is outside it.
    """
    from gatekeeper import PLUGIN_API_VERSION

    declared = getattr(plugin, API_ATTRIBUTE, None)
    if declared is None:
        return ""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        wanted = SpecifierSet(str(declared)) if isinstance(declared, str) else None
    except InvalidSpecifier:
        wanted = None
    if wanted is None:
        raise IncompatiblePlugin(name, f"{API_ATTRIBUTE} = {declared!r} is not a version specifier "
                                       f"such as '>=1,<2' (skip the plugin with -p no:{name})")
    if not wanted.contains(PLUGIN_API_VERSION, prereleases=True):
        raise IncompatiblePlugin(
            name, f"needs gatekeeper plugin API {declared}, but gatekeeper {_gatekeeper_version()} "
            f"provides plugin API {PLUGIN_API_VERSION}; install a version of the plugin made for "
            f"API {PLUGIN_API_VERSION} (or a gatekeeper that provides {declared}), or skip it with -p no:{name}"
        )
    return str(declared)


def _gatekeeper_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
MAX_MODULE_NAME = 200


def _check_module_name(name: str, config: Config) -> None:
    """A ``-p``/``plugins:`` entry must be a dotted module name: anything else (a path, a
    name longer than a file name may be) is the user's mistake (exit 4), not a plugin crash."""
    if len(name) > MAX_MODULE_NAME or not _MODULE_NAME.match(name):
        shown = name if len(name) <= 60 else f"{name[:57]}..."
        where = config.source if name in config.plugins else None
        raise UsageError(
            f"plugin {shown!r} is not a module name (dotted Python identifiers, "
            f"at most {MAX_MODULE_NAME} characters)", file=where, field="plugins" if where else "-p",
        )


class PluginHost:
    """Owns the pluggy manager and the registries filled by the register hooks."""

    def __init__(
        self, config: Config, *, blocked: Iterable[str] = (), extra: Iterable[str] = (), trace: Any = None
    ):
        self.config = config
        self.pm = pluggy.PluginManager("gatekeeper")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self._registries = make_registries()
        self.registries = Registries(**self._registries)
        self.blocked = set(blocked)
        self.extra = list(extra)
        for name in self.blocked:
            self.pm.set_blocked(name)
        self._trace_undo: Any = None

        version = _gatekeeper_version()
        for name, module in DEFAULT_PLUGINS:
            if name not in self.blocked:
                self._register(name, self._import(name, module), PluginInfo(
                    name, "builtin", DISTRIBUTION, version))
        if not os.environ.get(DISABLE_AUTOLOAD_ENV):
            self._load_entry_points()
        for module in [*config.plugins, *extra]:
            _check_module_name(module, config)
            if module not in self.blocked:
                self._register(module, self._import(module, module), PluginInfo(module, "option"))
        self._load_local_file(config.root / LOCAL_PLUGIN_FILE)
        if trace or os.environ.get(TRACE_ENV):
            self.enable_tracing(None if trace is True else trace)
        self.pm.check_pending()
        self._collect_registrations()
        self.pm.hook.gatekeeper_configure.call_historic(kwargs={"config": config})

    # ----------------------------------------------------------------- loading

    @staticmethod
    def _import(name: str, module: str) -> ModuleType:
        try:
            return importlib.import_module(module)
        except Exception as exc:
            raise PluginError(
                name, f"failed to import {module!r}: {type(exc).__name__}: {exc} "
                f"(skip it with -p no:{name})"
            ) from None

    def _register(self, name: str, plugin: object, info: PluginInfo) -> None:
        if self.pm.is_registered(plugin) or self.pm.has_plugin(name):
            return
        info.api = check_api_version(name, plugin)
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            raise PluginError(name, f"invalid plugin: {exc}") from None
        info.hooks = sorted(
            hc.name for hc in self.pm.get_hookcallers(plugin) or [] if hc.name.startswith("gatekeeper_")
        )
        self.info[name] = info

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.blocked or self.pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    ep.name, f"failed to import {ep.value!r}: {type(exc).__name__}: {exc} "
                    f"(skip it with -p no:{ep.name})"
                ) from None
            dist = ep.dist
            self._register(ep.name, plugin, PluginInfo(
                ep.name, "entrypoint", dist.name if dist else "", dist.version if dist else ""))

    def _load_local_file(self, path: Path) -> None:
        name = LOCAL_PLUGIN_FILE.removesuffix(".py")
        if name in self.blocked or not path.is_file():
            return
        spec = importlib.util.spec_from_file_location(f"gatekeeper_local_plugins_{abs(hash(path))}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise PluginError(name, f"{path} failed to load: {type(exc).__name__}: {exc}") from None
        self._register(name, module, PluginInfo(name, "local", str(path)))

    def _collect_registrations(self) -> None:
        # Through pluggy, so wrappers and tracing apply as to any hook; but one plugin at a time
        # (the others' plain implementations left out), so every entry knows the plugin that
        # registered it, and a wrapper wraps each plugin's registration. Order: tryfirst, then
        # the plugins in the order they were loaded (built-ins first, so a clash names the
        # newcomer), then trylast.
        for key, registry in self._registries.items():
            impls = getattr(self.pm.hook, registry.hook).get_hookimpls()
            plain = [i for i in impls if not (i.wrapper or i.hookwrapper)]
            plain.sort(key=lambda i: 0 if i.tryfirst else 2 if i.trylast else 1)
            for impl in plain:
                others = {i.plugin for i in plain if i.plugin is not impl.plugin}
                caller = self.pm.subset_hook_caller(registry.hook, remove_plugins=others)
                try:
                    caller(register=Register(registry, impl.plugin_name))
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(
                        impl.plugin_name, f"{registry.hook} raised {type(exc).__name__}: {exc}"
                    ) from None
                info = self.info.get(impl.plugin_name)
                if info is not None:
                    info.registered.setdefault(key, [])
            for entry in registry:
                info = self.info.get(entry.plugin)
                if info is not None:
                    info.registered.setdefault(key, []).append(entry.name)

    # ----------------------------------------------------------------- tracing

    def enable_tracing(self, stream: Any = None) -> None:
        """Print every hook call with its plugins and the time each took (``--trace-plugins``).

        See :mod:`gatekeeper.host.tracing` for the format. Calling it again changes nothing.
        """
        if self._trace_undo is not None:
            return
        from gatekeeper.host.tracing import HookTracer

        self._trace_undo = HookTracer(stream or sys.stderr).attach(self.pm)

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def versions(self) -> dict[str, str]:
        """Plugin name → version (gatekeeper's for built-ins), for provenance records."""
        return {
            name: info.version or info.source for name, info in sorted(self.info.items())
            if info.source != "builtin"
        } | {"gatekeeper": _gatekeeper_version()}
