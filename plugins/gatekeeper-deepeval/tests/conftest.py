"""Fixtures: the fake OpenAI server as deepeval's judge (tests/fakes/ecosystem_judge.py) and a
project whose suite asks deepeval's metrics about two support questions."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The plugin first: it switches deepeval's telemetry, .env loading and ./.deepeval off,
# which deepeval reads when it is imported (importorskip below imports it).
import gatekeeper_deepeval._library  # noqa: F401

if os.environ.get("GATEKEEPER_ALL_EXTRAS") != "1":
    pytest.importorskip("deepeval")

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
for path in (REPO, HERE):  # tests.fakes and deepeval_support, whichever way pytest was started
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
NLTK_DATA = REPO / ".gatekeeper" / "nltk_data"
if NLTK_DATA.is_dir():
    os.environ.setdefault("NLTK_DATA", str(NLTK_DATA))

from tests.fakes import FakeOpenAIServer  # noqa: E402
from tests.fakes.ecosystem_judge import ecosystem_judge  # noqa: E402

from gatekeeper.testing import Project  # noqa: E402


@pytest.fixture
def judge_server() -> Iterator[FakeOpenAIServer]:
    """The fake OpenAI server answering deepeval's prompts like a careful judge."""
    with FakeOpenAIServer(responder=ecosystem_judge) as server:
        yield server


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


@pytest.fixture
def nltk_data() -> Path:
    """The NLTK data built by `make nltk-data` (gatekeeper-nltk-data); CI must have it."""
    path = Path(os.environ.get("NLTK_DATA", NLTK_DATA))
    if not (path / "tokenizers" / "punkt_tab.zip").exists():
        if os.environ.get("GATEKEEPER_ALL_EXTRAS") == "1":
            pytest.fail(f"NLTK data missing in {path}: run `make nltk-data`")
        pytest.skip("NLTK data not built (make nltk-data)")
    return path
