"""Project configuration: ``gatekeeper.yaml`` or ``[tool.gatekeeper]`` in pyproject.toml.

Paths in the configuration are relative to the directory of the file that set them
(the project root). Command-line flags override the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gatekeeper import yamlfile
from gatekeeper.types import UsageError

CONFIG_FILES = ("gatekeeper.yaml", "gatekeeper.yml")


class RunnerConfig(BaseModel):
    """How the runner talks to models."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(default=8, ge=1, description="initial requests in flight per model")
    max_concurrency: int = Field(default=64, ge=1, description="AIMD never goes above this")
    timeout_s: float = Field(default=120.0, gt=0, description="per-call time limit")
    retries: int = Field(default=5, ge=0, description="retries of a retryable failure")
    backoff_s: float = Field(default=0.5, ge=0, description="first backoff; doubles, with jitter")
    max_backoff_s: float = Field(default=30.0, ge=0)
    rate_limit_patience_s: float = Field(
        default=900.0, ge=0, description="how long one request may keep being rate limited (429) before it fails"
    )


class Config(BaseModel):
    """Everything a command needs to know about the project."""

    model_config = ConfigDict(extra="forbid")

    root: Path = Field(default_factory=Path.cwd)
    source: str | None = None
    suites: list[str] = Field(default_factory=lambda: ["suites"])
    suite_patterns: list[str] = Field(default_factory=lambda: ["*.yaml", "*.yml"])
    model: str | dict[str, Any] | None = None
    baseline: str | dict[str, Any] | None = None
    candidate: str | dict[str, Any] | None = None
    policy: str | None = None
    judge: str | dict[str, Any] | None = Field(
        default=None, description="default judge model spec for judge evaluators (rubric, pairwise, ...)"
    )
    out: str = "gatekeeper-out"
    cache: str = ".gatekeeper/cache.sqlite"
    audit_log: str = ".gatekeeper/audit.jsonl"
    registry: str = ".gatekeeper/registry"
    plugins: list[str] = Field(default_factory=list, description="modules to load, like -p")
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    providers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="provider name → provider settings"
    )

    def path(self, value: str | Path) -> Path:
        """Resolve a configured path against the project root."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p


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
