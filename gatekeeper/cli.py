"""The ``gatekeeper`` command.

Global options are parsed first (they decide which plugins load), then the plugins'
commands are added as sub-commands. Errors print one line and exit with their code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from gatekeeper.types import GatekeeperError, UsageError

EXIT_CODES = """\
exit codes:
  0  PROMOTE (check) / all passed (run)
  1  REJECT or ROLLBACK (check) / some score failed (run)
  2  HOLD: waiting for a signed approval
  3  INCONCLUSIVE: not enough evidence (the report says how many cases would be)
  4  usage or configuration error (bad suite, policy, flag)
  5  internal or harness error (endpoint down, plugin crashed)
"""


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad flags; 2 means HOLD here, so bad flags are usage errors (4)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: {message}")


def _global_parser(add_help: bool) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gatekeeper",
        description="Decide, with evidence an auditor can check, whether a fine-tuned model "
        "may replace the one in production.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=add_help,
    )
    parser.add_argument("-p", dest="plugins", action="append", default=[], metavar="NAME",
                        help="load plugin module NAME; -p no:NAME blocks plugin NAME")
    parser.add_argument("-c", "--config", type=Path, help="gatekeeper.yaml or pyproject.toml to use")
    parser.add_argument("--trace-plugins", action="store_true",
                        help="print every hook call with its plugins and time (or GATEKEEPER_TRACE_PLUGINS=1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except GatekeeperError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # argparse's --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("GATEKEEPER_DEBUG"):
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (set GATEKEEPER_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 5


def _main(argv: list[str]) -> int:
    from gatekeeper.host.config import load_config
    from gatekeeper.host.plugins import PluginHost

    pre, _ = _global_parser(add_help=False).parse_known_args(argv)
    blocked = [p[3:] for p in pre.plugins if p.startswith("no:")]
    extra = [p for p in pre.plugins if not p.startswith("no:")]
    config = load_config(pre.config)
    host = PluginHost(config, blocked=blocked, extra=extra, trace=pre.trace_plugins or None)

    parser = _global_parser(add_help=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = {}
    for entry in host.registries.commands:
        command = entry.obj()
        cmd_parser = sub.add_parser(
            entry.name, help=command.help, description=command.help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.configure(cmd_parser)
        commands[entry.name] = command
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 4
    from gatekeeper.engine.session import Session  # after parsing: --help never loads the engine

    return int(commands[args.command].run(args, Session(config, host)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
