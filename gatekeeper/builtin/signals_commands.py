"""``gatekeeper signals``: summarize, build-suite, build-dataset (see docs/signals.md)."""

from __future__ import annotations

from typing import Any

from gatekeeper import hookimpl


@hookimpl
def gatekeeper_register_commands(register: Any) -> None:
    pass
