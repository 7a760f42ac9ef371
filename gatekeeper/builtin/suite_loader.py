"""Built-in suite loader: YAML suites (the default of ``gatekeeper_load_suite``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gatekeeper import hookimpl
from gatekeeper.types import Config

if TYPE_CHECKING:
    from gatekeeper.engine.suites import Suite


@hookimpl(trylast=True)
def gatekeeper_load_suite(path: Path, config: Config) -> Suite | None:
    if path.suffix.lower() not in (".yaml", ".yml"):
        return None
    from gatekeeper.engine.suites import load_yaml_suite

    return load_yaml_suite(path, roots=[config.root, *(config.path(p) for p in config.allow_paths)])
