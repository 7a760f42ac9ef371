"""gatekeeper's pytest plugin (entry point ``pytest11``).

Gives plugin authors the ``gatekeeper_project`` fixture from :mod:`gatekeeper.testing`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.testing import Project


@pytest.fixture
def gatekeeper_project(tmp_path: Path) -> Project:
    """A throwaway gatekeeper project in ``tmp_path`` with an in-process CLI runner."""
    return Project(tmp_path)
