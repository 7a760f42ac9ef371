"""The ``gatekeeper`` command.

Global options are parsed first (they decide which plugins load), then the plugins'
commands are added as sub-commands. Errors print one line and exit with their code.

A reader that closes the pipe early (``gatekeeper status RUN | head -1``, ``check ... |
grep -m1``) does not change the exit code: output to a closed pipe is dropped and the
command finishes with its decision's code, as CI scripts read it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

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
    parser.add_argument("--allow-code", action="store_true",
                        help="let suites and policies name models that import Python code (python:...)")
    parser.add_argument("--allow-path", dest="allow_paths", action="append", default=[], metavar="DIR",
                        help="let suites read dataset:/prompty: files under DIR too (default: the project root only)")
    parser.add_argument("--trace-plugins", action="store_true",
                        help="print every hook call with its plugins and time (or GATEKEEPER_TRACE_PLUGINS=1)")
    return parser


class _ClosedPipeSafe:
    """A text stream whose writes after the reader went away are dropped, not raised.

    Python ignores SIGPIPE, so a write to a closed pipe raises ``BrokenPipeError`` wherever
    it happens — often in the middle of printing a decision that was already made. Here the
    first such write points the file descriptor at ``/dev/null`` (so the interpreter's final
    flush cannot fail either) and every later write is a no-op.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return int(self._stream.write(text))
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _closed_pipe_safe() -> Iterator[None]:
    """stdout and stderr wrapped in :class:`_ClosedPipeSafe` for the duration of a command."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _ClosedPipeSafe(sys.stdout), _ClosedPipeSafe(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with _closed_pipe_safe():
        return _main_safe(argv)


def _main_safe(argv: list[str]) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # a write that bypassed sys.stdout (e.g. its binary buffer)
        _ClosedPipeSafe(sys.__stdout__)._drop()
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe
    except GatekeeperError as exc:
        from gatekeeper.host.secrets import redact

        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # argparse's --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("GATEKEEPER_DEBUG"):
            raise
        from gatekeeper.host.secrets import redact

        print(f"internal error: {type(exc).__name__}: {redact(str(exc))} (set GATEKEEPER_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 5


def parse_command_line(argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed as ``gatekeeper`` would parse it, without running the command.

    The documentation test checks every documented command this way (flags that exist,
    required arguments present); usage errors raise :class:`UsageError`.
    """
    parser, _, _, _ = _setup(list(argv))
    return parser.parse_args(list(argv))


def _setup(argv: list[str]) -> tuple[argparse.ArgumentParser, dict[str, Any], Any, Any]:
    """The parser with every plugin's sub-command, the commands by name, the config and the host."""
    from gatekeeper.host.config import load_config
    from gatekeeper.host.plugins import PluginHost

    pre, _ = _global_parser(add_help=False).parse_known_args(argv)
    blocked = [p[3:] for p in pre.plugins if p.startswith("no:")]
    extra = [p for p in pre.plugins if not p.startswith("no:")]
    config = load_config(pre.config)
    config.allow_code = config.allow_code or pre.allow_code
    config.allow_paths = [*config.allow_paths, *(str(Path(p).resolve()) for p in pre.allow_paths)]
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
    return parser, commands, config, host


def _main(argv: list[str]) -> int:
    parser, commands, config, host = _setup(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 4
    from gatekeeper.engine.session import Session  # after parsing: --help never loads the engine

    return int(commands[args.command].run(args, Session(config, host)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
