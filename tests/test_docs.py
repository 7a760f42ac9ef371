"""Docs stay in step with the code: every hook documented with its signature, and tested."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import gatekeeper.hookspecs as hookspecs

REPO = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
               if name.startswith("gatekeeper_"))


def test_there_are_hooks() -> None:
    assert len(HOOKS) >= 15


def test_every_hook_is_documented_with_its_exact_signature() -> None:
    text = (REPO / "docs/plugin_hooks.md").read_text()
    missing = []
    for name in HOOKS:
        signature = f"{name}{inspect.signature(getattr(hookspecs, name))}".replace("'", "")
        if f"### `{signature}`" not in text:
            missing.append(signature)
    assert not missing, f"docs/plugin_hooks.md lacks (or has an outdated signature for): {missing}"


def test_every_hook_has_a_test() -> None:
    tests = "\n".join(
        p.read_text() for p in (REPO / "tests").rglob("*.py") if p.name != "test_docs.py"
    )
    untested = [name for name in HOOKS if not re.search(rf"\bdef {name}\b", tests)]
    assert not untested, f"hooks without a test implementing them: {untested}"
