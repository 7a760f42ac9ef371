"""Shared fixtures: a throwaway project with a small suite and a recording."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatekeeper.testing import Project

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if str(REPO) not in sys.path:  # tests.fakes, whichever way pytest was started
    sys.path.insert(0, str(REPO))

# Test-only plugins (tests/plugins/, e.g. gatekeeper-example) are installed by `make test-plugins`
# into a directory of their own, not into the environment users' runs and `make demo` use; the
# tests, and the gatekeeper processes they start, find them there.
TEST_PLUGIN_DIR = REPO / ".gatekeeper" / "test-plugins"
if TEST_PLUGIN_DIR.is_dir() and str(TEST_PLUGIN_DIR) not in sys.path:
    sys.path.append(str(TEST_PLUGIN_DIR))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(TEST_PLUGIN_DIR)]))

from tests.fakes import FakeOpenAIServer  # noqa: E402

SUITE = """
suite: mini
description: a small suite for tests
prompt:
  messages:
    - role: system
      content: Answer from the context.
    - role: user
      content: "Context: {{ context }}\\nQuestion: {{ input }}"
slices: [topic]
cases:
  - id: refund-1
    input: How long do I have to return boots?
    context: Returns are accepted within 30 days with a receipt.
    expected: You have 30 days.
    facts: ["30 days"]
    topic: returns
    tags: [refund]
  - id: refund-2
    input: Do I need a receipt?
    context: Returns are accepted within 30 days with a receipt.
    expected: Yes, a receipt is required.
    facts: ["receipt"]
    topic: returns
    tags: [refund, receipt]
  - id: ship-1
    input: How much is express shipping?
    context: Express shipping costs $15 and takes 2 days.
    expected: Express shipping costs $15.
    facts: ["$15"]
    topic: shipping
    tags: [shipping]
evaluators:
  - {name: contains, as: facts, field: facts, mode: all}
"""


def recording(outputs: dict[str, str]) -> list[dict[str, str]]:
    return [{"id": k, "output": v} for k, v in outputs.items()]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


GOOD = {
    "refund-1": "You can return them within 30 days.",
    "refund-2": "Yes, bring your receipt.",
    "ship-1": "Express shipping is $15.",
}


@pytest.fixture
def mini(project: Project) -> Project:
    """A project with suites/mini.yaml and a recording whose answers are all right."""
    project.write("suites/mini.yaml", SUITE)
    project.write_jsonl("good.jsonl", recording(GOOD))
    return project


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """A started local fake of the OpenAI API (tests/fakes/openai_server.py); stopped after."""
    with FakeOpenAIServer() as server:
        yield server
