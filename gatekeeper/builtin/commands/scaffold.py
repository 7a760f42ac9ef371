"""``gatekeeper new-plugin NAME --kind KIND``: a ready-to-install plugin distribution.

It writes ``gatekeeper-NAME/`` with a ``pyproject.toml`` (the ``gatekeeper`` entry point),
the plugin module (a working plugin of the kind, declaring the plugin API it supports)
and a test that runs the real gatekeeper CLI through :mod:`gatekeeper.testing` and
passes once the distribution is installed. The templates live in
``gatekeeper/scaffold_templates/`` and render in the jinja2 sandbox.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.kinds import Command, Register, Session
from gatekeeper.types import UsageError


@dataclass(frozen=True)
class Kind:
    registry: str
    """the registry whose names the new plugin must not take"""
    suffix: str
    """the class name's ending"""
    description: str
    usage: str
    dependencies: tuple[str, ...] = ()


KINDS: dict[str, Kind] = {
    "evaluator": Kind("evaluators", "Evaluator", "a gatekeeper evaluator: the fraction of a case's keywords "
                      "found in the output", "Use it in a suite: `evaluators: [{name: NAME, threshold: 1.0}]`."),
    "detector": Kind("detectors", "Detector", "a gatekeeper hallucination detector: numbers the output "
                     "states that its context does not contain", "Use it in a suite: `detectors: [NAME]`."),
    "provider": Kind("models", "", "a gatekeeper model provider (NAME:MODEL specs) that echoes the last "
                     "user message", "Run a suite on it: `gatekeeper run suites --model NAME:echo`."),
    "signal-source": Kind("signal_sources", "Source", "a gatekeeper signal source reading JSON exports "
                          "(NAME:PATH)",
                          "Read signals with it: `gatekeeper signals summarize NAME:exports/feedback.json`."),
    "tuner": Kind("tuners", "Tuner", "a gatekeeper tuner that turns training answers into a replay "
                  "candidate, with its provenance",
                  "Make a candidate: `gatekeeper tune --tuner NAME --base SPEC --data DATA.jsonl --out DIR`."),
    "deploy-target": Kind("deploy_targets", "Target", "a gatekeeper deploy target: a model registry in one "
                          "JSON file", "Promote with it: `gatekeeper promote RUN --target NAME`.",
                          ("filelock>=3.12",)),
}

NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
API_SPEC = ">={major}.0,<{next}"


@dataclass(frozen=True)
class Names:
    name: str
    """the entry-point name and the name the plugin registers (``my-eval``)"""
    dist: str
    """the distribution (``gatekeeper-my-eval``)"""
    package: str
    """the import package (``gatekeeper_my_eval``)"""
    cls: str
    """the plugin class (``MyEvalEvaluator``)"""

    @classmethod
    def from_name(cls, raw: str, kind: Kind) -> Names:
        name = raw.strip().lower()
        for prefix in ("gatekeeper-", "gatekeeper_"):
            name = name.removeprefix(prefix)
        if not NAME.match(name):
            raise UsageError(
                f"plugin name {raw!r} must be lower-case letters and digits, words joined by '-' or '_' "
                "(e.g. my-eval)", field="NAME",
            )
        words = re.split(r"[-_]", name)
        camel = "".join(w.capitalize() for w in words)
        return cls(name, "gatekeeper-" + "-".join(words), "gatekeeper_" + "_".join(words), camel + kind.suffix)


def api_spec() -> str:
    """The ``gatekeeper_api`` a new plugin declares: this major version of the plugin API."""
    from gatekeeper import PLUGIN_API_VERSION

    major = int(str(PLUGIN_API_VERSION).split(".")[0])
    return API_SPEC.format(major=major, next=major + 1)


def render_plugin(names: Names, kind_name: str) -> dict[str, str]:
    """Relative path → text of every file of the new distribution."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    from gatekeeper.host.plugins import _gatekeeper_version

    kind = KINDS[kind_name]
    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
    version = _gatekeeper_version()
    floor = version if version[0].isdigit() and "+" not in version else "0.1"
    dependencies = [f"gatekeeper>={floor}", *kind.dependencies]
    variables: dict[str, Any] = {
        **vars(names), "kind": kind_name, "api_spec": api_spec(),
        "description": kind.description.replace("NAME", names.name),
        "usage": kind.usage.replace("NAME", names.name),
        "dependencies": ", ".join(f'"{d}"' for d in dependencies),
    }
    root = resources.files("gatekeeper") / "scaffold_templates"
    sources = {
        "pyproject.toml": root / "common" / "pyproject.toml.j2",
        "README.md": root / "common" / "README.md.j2",
        f"{names.package}/__init__.py": root / kind_name / "plugin.py.j2",
        f"tests/test_{names.package}.py": root / kind_name / "test.py.j2",
    }
    return {path: env.from_string(src.read_text(encoding="utf-8")).render(**variables)
            for path, src in sources.items()}


class NewPluginCommand(Command):
    name = "new-plugin"
    help = "scaffold a plugin distribution of a kind (evaluator, provider, ...) with a passing test"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("plugin", metavar="NAME", help="the plugin's name, e.g. my-eval")
        parser.add_argument("--kind", required=True, choices=sorted(KINDS), help="what the plugin provides")
        parser.add_argument("--out", type=Path, default=Path("."),
                            help="directory to create gatekeeper-NAME/ in (default: here)")
        parser.add_argument("--force", action="store_true", help="write into an existing directory")
        parser.epilog = "exit codes: 0 written, 4 bad name, name taken, or the directory exists"

    def run(self, args: argparse.Namespace, session: Session) -> int:
        kind = KINDS[args.kind]
        names = Names.from_name(args.plugin, kind)
        registry = session.registries[kind.registry]
        if names.name in registry:
            owner = registry.entry(names.name).plugin
            raise UsageError(f"{registry.kind} {names.name!r} is already registered by plugin {owner!r}; "
                             "choose another name", field="NAME")
        target = args.out / names.dist
        if target.exists() and any(target.iterdir()) and not args.force:
            raise UsageError("directory exists and is not empty (use --force to write into it)",
                             file=str(target))
        for relpath, text in render_plugin(names, args.kind).items():
            path = target / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            session.echo(f"wrote {path}")
        session.echo(f"\n{args.kind} plugin {names.name!r} (plugin API {api_spec()}) in {target}. Next:")
        session.echo(f"  pip install -e {target}        # registers the entry point '{names.name}'")
        session.echo(f"  gatekeeper plugins             # lists {names.name}")
        session.echo(f"  pytest {target / 'tests'}")
        return 0


@hookimpl
def gatekeeper_register_commands(register: Register[Command]) -> None:
    register(NewPluginCommand)
