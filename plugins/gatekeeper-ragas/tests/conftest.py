"""Fixtures: the fake OpenAI server as ragas' judge (tests/fakes/ragas_judge.py) and a
project whose suite asks ragas' metrics about a small RAG support set."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

if os.environ.get("GATEKEEPER_ALL_EXTRAS") != "1":
    pytest.importorskip("ragas")

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
for path in (REPO, HERE):  # tests.fakes and ragas_support, whichever way pytest was started
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.fakes import FakeOpenAIServer  # noqa: E402
from tests.fakes.ragas_judge import ragas_judge  # noqa: E402

from gatekeeper.testing import Project  # noqa: E402


@pytest.fixture
def judge_server() -> Iterator[FakeOpenAIServer]:
    """The fake OpenAI server answering ragas' prompts like a careful judge."""
    with FakeOpenAIServer(responder=ragas_judge) as server:
        yield server


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)
