"""Finding ragas: its version without importing it, and a clear error when it is missing."""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType

from gatekeeper.types import PluginError

PLUGIN = "ragas"
INSTALL_HINT = "pip install gatekeeper-ragas (or the project extra: pip install 'gatekeeper[ragas]')"


def ragas_version() -> str | None:
    """The installed ragas version, read from its metadata (cheap: ragas is not imported)."""
    try:
        return importlib.metadata.version("ragas")
    except importlib.metadata.PackageNotFoundError:
        return None


def require(module: str, metric: str) -> ModuleType:
    """Import ``module`` (a ragas module, or a library a ragas metric needs at run time),
    or fail naming the plugin, the metric and what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = exc.name or module
        if missing.split(".")[0] == "ragas":
            raise PluginError(
                PLUGIN, f"metric {metric!r} needs ragas, which is not installed: {INSTALL_HINT}"
            ) from None
        raise PluginError(
            PLUGIN, f"metric {metric!r}: ragas needs {missing!r}, which is not installed: {INSTALL_HINT}"
        ) from None
