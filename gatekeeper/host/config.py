"""Project configuration: ``gatekeeper.yaml`` or ``[tool.gatekeeper]`` in pyproject.toml.

Paths in the configuration are relative to the directory of the file that set them
(the project root). Command-line flags override the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from gatekeeper.types import Config, UsageError

CONFIG_FILES = ("gatekeeper.yaml", "gatekeeper.yml")
"""The project file names, nearest first; ``pyproject.toml`` with ``[tool.gatekeeper]`` also counts."""


def find_config_file(start: Path) -> Path | None:
    """The nearest gatekeeper.yaml, or pyproject.toml with [tool.gatekeeper], upwards."""
    for directory in (start, *start.parents):
        for name in CONFIG_FILES:
            if (directory / name).is_file():
                return directory / name
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file() and "[tool.gatekeeper]" in pyproject.read_text(encoding="utf-8"):
            return pyproject
    return None


def load_config(explicit: Path | None = None, cwd: Path | None = None) -> Config:
    """Load the project configuration, or defaults rooted at ``cwd`` when there is none."""
    cwd = cwd or Path.cwd()
    path = explicit or find_config_file(cwd)
    if path is None:
        return Config(root=cwd)
    if not path.is_file():
        raise UsageError("configuration file not found", file=str(path))
    from gatekeeper.host import yamlfile  # here, not at the top: no project file, no YAML parser

    if path.name == "pyproject.toml":
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"invalid TOML: {exc}", file=str(path)) from None
        section = data.get("tool", {}).get("gatekeeper", {})
        locator = yamlfile.Locator(None)
    else:
        section, locator = yamlfile.load(path)
        section = section or {}
    if not isinstance(section, dict):
        raise UsageError("the configuration must be a mapping", file=str(path), line=1)
    for key in ("root", "source"):
        if key in section:
            raise UsageError("unknown field", file=str(path), line=locator.line((key,)), field=key)
    config = yamlfile.validate(Config, section, path, locator)
    config.root = path.parent.resolve()
    config.source = str(path)
    return config
