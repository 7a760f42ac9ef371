"""``gatekeeper loop``: the signals flywheel in one command (being written)."""

from __future__ import annotations

from typing import Any

from gatekeeper import hookimpl


@hookimpl
def gatekeeper_register_commands(register: Any) -> None:
    pass
