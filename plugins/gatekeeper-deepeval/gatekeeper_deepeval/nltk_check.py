"""NLTK data, checked before deepeval's BLEU runs.

NLTK downloads missing data at run time, which fails offline (and is a connection the
plugin promises not to make). The data is built once from Debian packages by
``gatekeeper-nltk-data`` (gatekeeper-azure-eval; docs/ecosystem.md) into a project-local
directory; ``NLTK_DATA`` or ``.gatekeeper/nltk_data`` under the working directory point at it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from gatekeeper import PluginError

LOCAL = Path(".gatekeeper") / "nltk_data"


def search_paths() -> list[str]:
    import nltk

    # NLTK reads NLTK_DATA once, when it is imported; read it again (it may be set later).
    for entry in reversed(os.environ.get("NLTK_DATA", "").split(os.pathsep)):
        if entry and entry not in nltk.data.path:
            nltk.data.path.insert(0, entry)
    local = str(Path.cwd() / LOCAL)
    if os.path.isdir(local) and local not in nltk.data.path:
        nltk.data.path.append(local)
    return list(nltk.data.path)


def require_nltk_data(resources: Sequence[str], metric: str, plugin: str = "deepeval") -> None:
    """Raise a :class:`PluginError` naming each missing resource and how to build it."""
    import nltk

    search_paths()
    absent = []
    for resource in resources:
        try:
            nltk.data.find(resource)
        except LookupError:
            absent.append(resource)
    if absent:
        raise PluginError(plugin, (
            f"{metric} needs NLTK data that is not installed: {', '.join(absent)}. NLTK would download it at run "
            "time, which fails offline; build it from Debian packages with `gatekeeper-nltk-data "
            "--out .gatekeeper/nltk_data` (make nltk-data) and set NLTK_DATA to that directory"
        ))
