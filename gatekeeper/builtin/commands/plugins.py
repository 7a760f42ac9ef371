"""``gatekeeper plugins``: every plugin, where it came from, its hooks and what it registers."""

from __future__ import annotations

import argparse
import json

from gatekeeper import hookimpl
from gatekeeper.kinds import Command, Register, Session
from gatekeeper.types import PluginError


class PluginsCommand(Command):
    name = "plugins"
    help = "list plugins with their distribution, version, hooks and what they register"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument("--load", action="store_true",
                            help="also import every class registered by import path (plugins register "
                                 "lazily; a broken one otherwise shows only when a run uses it); exit 5 "
                                 "naming each that fails")

    def run(self, args: argparse.Namespace, session: Session) -> int:
        infos = sorted(session.host.info.values(), key=lambda i: (i.source != "builtin", i.name))
        if args.load:
            return _load_all(session)
        if args.json:
            session.echo(json.dumps([vars(i) for i in infos], indent=2))
            return 0
        for info in infos:
            dist = f"{info.distribution} {info.version}".strip() or "-"
            session.echo(f"{info.name}  [{info.source}]  {dist}")
            if info.api:
                session.echo(f"    plugin API: {info.api}")
            session.echo(f"    hooks: {', '.join(info.hooks) or '-'}")
            for kind, names in sorted(info.registered.items()):
                if names:
                    session.echo(f"    {kind}: {', '.join(names)}")
        return 0


def _load_all(session: Session) -> int:
    loaded, failed = 0, []
    for _, registry in session.registries.items():
        for entry in registry:
            try:
                entry.obj  # noqa: B018 - importing and validating the class is the point
            except PluginError as exc:
                failed.append(str(exc))
            else:
                loaded += 1
    for problem in failed:
        session.echo(f"FAILED {problem}")
    session.echo(f"{loaded} registered classes import; {len(failed)} fail")
    return 5 if failed else 0


@hookimpl
def gatekeeper_register_commands(register: Register[Command]) -> None:
    register(PluginsCommand)
