"""Importing deepeval safely: telemetry and ``.env`` loading off *before* the first import.

deepeval reads its settings when it is first imported: ``DEEPEVAL_TELEMETRY_OPT_OUT`` stops
its telemetry client and ``DEEPEVAL_DISABLE_DOTENV`` stops it from loading any ``.env`` in
the working directory (which could silently change its configuration or leak keys into it).
``DEEPEVAL_EVAL_MODE=llm`` keeps every decision on the judge we hand it (no hosted
"system one" model); ``DEEPEVAL_CACHE_FOLDER`` moves its ``.deepeval/`` out of the
working directory. The plugin module imports nothing from deepeval at start-up; every
metric calls :func:`deepeval` when it first scores.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.metadata
import os
import shutil
import tempfile
from types import ModuleType

from gatekeeper import PluginError

PLUGIN = "deepeval"
EXTRA = "gatekeeper[deepeval]"

QUIET_ENV = {
    "DEEPEVAL_TELEMETRY_OPT_OUT": "1",
    "DEEPEVAL_DISABLE_DOTENV": "1",
    "DEEPEVAL_UPDATE_WARNING_OPT_IN": "0",
    "DEEPEVAL_GRPC_LOGGING": "0",
    "DEEPEVAL_EVAL_MODE": "llm",
}


_STATE_DIR: str | None = None


def _state_dir() -> str:
    """A private, per-process directory for deepeval's key file and caches.

    deepeval keeps them in ``.deepeval/`` under the working directory (``DEEPEVAL_CACHE_FOLDER``),
    creating it when it looks a key up: it would litter the user's repository and read keys
    or settings a ``.deepeval/.deepeval`` there holds. Removed when the process exits.
    """
    global _STATE_DIR
    if _STATE_DIR is None:
        _STATE_DIR = tempfile.mkdtemp(prefix="gatekeeper-deepeval-")
        atexit.register(shutil.rmtree, _STATE_DIR, True)
    return _STATE_DIR


def quiet_environment() -> None:
    """Set deepeval's opt-outs (the user's explicit values for them are overridden: the
    plugin's promise is that nothing phones home)."""
    os.environ.update(QUIET_ENV)
    os.environ["DEEPEVAL_CACHE_FOLDER"] = _state_dir()


quiet_environment()


def deepeval() -> ModuleType:
    """The deepeval package, imported with telemetry off; a clear error when it is missing."""
    quiet_environment()
    try:
        return importlib.import_module("deepeval")
    except ImportError as exc:
        raise PluginError(
            PLUGIN, f"deepeval is not installed ({exc}); install the extra: pip install '{EXTRA}'"
        ) from exc


def submodule(name: str) -> ModuleType:
    """``deepeval.<name>`` (deepeval itself imported first, telemetry off)."""
    deepeval()
    return importlib.import_module(f"deepeval.{name}")


def version() -> str:
    """The installed deepeval version (recorded in every score's details)."""
    try:
        return importlib.metadata.version("deepeval")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
