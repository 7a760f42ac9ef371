"""Seed rows: a suite's cases (its dataset rows, with the suite's prompt and scorers to
reuse) or the rows of a JSONL file. Generated rows name the seed ids they were shown."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeeper.files import read_jsonl
from gatekeeper.types import UsageError

NOT_INHERITED = frozenset({"id", "input", "expected", "tags", "metadata", "origin", "synthetic", "provenance",
                           "source", "messages", "prompt", "chosen", "rejected", "answer"})
"""Seed fields a generated row never copies: they are what the generator writes, or the
seed's own identity and provenance."""


@dataclass
class Seeds:
    rows: list[dict[str, Any]]
    path: Path
    sha256: str
    suite: Any = None
    """The loaded seed suite (its prompt, slices and scorers shape the generated suite)."""
    suite_yaml: dict[str, Any] = field(default_factory=dict)

    def text(self, row: dict[str, Any]) -> str:
        """The text a generated row is compared with (near-duplicates, memorization, diversity)."""
        return row_text(row)


def row_text(row: dict[str, Any]) -> str:
    """A row's request text: ``input``, else its last user message, else its prompt."""
    if row.get("input"):
        return str(row["input"])
    for key in ("messages", "prompt"):
        messages = row.get(key)
        if isinstance(messages, list):
            for m in reversed(messages):
                if isinstance(m, dict) and m.get("role") == "user":
                    return str(m.get("content", ""))
        elif isinstance(messages, str):
            return messages
    return ""


def load_seeds(path: Path, session: Any) -> Seeds:
    """Seed rows from a suite YAML (through the session's suite loader) or a JSONL file."""
    if not path.is_file():
        raise UsageError("seed file not found", file=str(path), field="--seeds")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if path.suffix.lower() == ".jsonl":
        rows = []
        for line, row in read_jsonl(path):
            rows.append({**row, "id": str(row.get("id") or f"seed-{line}")})
        if not rows:
            raise UsageError("the seed file has no rows", file=str(path), field="--seeds")
        return Seeds(rows, path, digest)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise UsageError("seeds are a suite (.yaml) or a JSONL file", file=str(path), field="--seeds")
    suite = session.load_suite(path)
    if suite is None:
        raise UsageError("not a gatekeeper suite (no 'suite:' key)", file=str(path), field="--seeds")
    from gatekeeper.host import yamlfile

    data, _ = yamlfile.load(path)
    rows = [{**{k: v for k, v in case.vars.items() if k not in (data.get("variables") or {})},
             "id": case.id, **({"tags": list(case.tags)} if case.tags else {})} for case in suite.cases]
    return Seeds(rows, path, suite.hash or digest, suite, dict(data))
