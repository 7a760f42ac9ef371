"""Built-in suite loader: YAML suites (the default of ``gatekeeper_load_suite``)."""

from __future__ import annotations

from pathlib import Path

from gatekeeper import hookimpl
from gatekeeper.engine.suites import Suite, load_yaml_suite
from gatekeeper.types import Config


@hookimpl(trylast=True)
def gatekeeper_load_suite(path: Path, config: Config) -> Suite | None:
    if path.suffix.lower() not in (".yaml", ".yml"):
        return None
    return load_yaml_suite(path)
