"""``gatekeeper plugins``: every plugin, where it came from, its hooks and what it registers."""

from __future__ import annotations

import argparse
import json

from gatekeeper import hookimpl
from gatekeeper.kinds import Command, Register, Session


class PluginsCommand(Command):
    name = "plugins"
    help = "list plugins with their distribution, version, hooks and what they register"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args: argparse.Namespace, session: Session) -> int:
        infos = sorted(session.host.info.values(), key=lambda i: (i.source != "builtin", i.name))
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


@hookimpl
def gatekeeper_register_commands(register: Register[Command]) -> None:
    register(PluginsCommand)
