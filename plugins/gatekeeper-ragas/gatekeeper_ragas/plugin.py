"""The gatekeeper-ragas plugin: registers the ragas evaluators and the ragas detector.

Loaded through the ``gatekeeper`` entry-point group. Registering imports nothing of ragas
(importing it takes seconds and langchain with it); ragas is imported when a suite uses
one of its metrics.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

from gatekeeper import hookimpl
from gatekeeper_ragas.evaluators import RagasHallucination, registered
from gatekeeper_ragas.library import ragas_version

gatekeeper_api = ">=1.0,<2"


@hookimpl
def gatekeeper_register_evaluators(register: Callable[..., None]) -> None:
    for cls in registered():
        register(cls)


@hookimpl
def gatekeeper_register_detectors(register: Callable[..., None]) -> None:
    register(RagasHallucination)


def identity() -> dict[str, Any]:
    """What the run record keeps about the scoring library: a new ragas is a visible change."""
    try:
        plugin_version = importlib.metadata.version("llm-gatekeeper-ragas")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        plugin_version = ""
    return {"gatekeeper-ragas": plugin_version, "ragas": ragas_version(), "telemetry": "off (RAGAS_DO_NOT_TRACK=true)"}


@hookimpl
def gatekeeper_run_finish(run_id: str, record: dict[str, Any]) -> None:
    uses = any(
        name == "ragas" or name.startswith("ragas_")
        for row in record.get("cases", []) for name in (row.get("scores") or {})
    )
    if uses:
        record.setdefault("plugins", {})["ragas"] = identity()
