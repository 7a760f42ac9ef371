"""The state of a synth run, shared by its modules: the options, each planned candidate and
what became of it, and the results per kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeeper.synth.generate import Sampling, Usage
from gatekeeper.synth.prompts import Template
from gatekeeper.synth.seeds import Seeds, row_text
from gatekeeper.synth.spec import Cell, Persona, Plan
from gatekeeper.types import GatekeeperError, Message


class HarnessFailure(GatekeeperError):
    """Every generation failed (the endpoint is down, the key is wrong): nothing was learnt
    about the data, so this is the harness's error (exit 5), not a short dataset."""

    exit_code = 5


@dataclass
class SynthOptions:
    seeds: Path
    personas: Path
    plan: Path
    generator: str
    out: Path
    name: str
    kinds: list[str] = field(default_factory=lambda: ["cases"])
    template: Path | None = None
    schemas: dict[str, Path] = field(default_factory=dict)
    """kind → JSON Schema file (default: the built-in schema of the kind)"""
    sampling: Sampling = field(default_factory=Sampling)
    repair: str = "model"
    json_mode: str = "json_schema"
    dedup: str = "auto"
    near_duplicate_threshold: float = 0.8
    pii: str = "scrub"
    pii_detector: str = "auto"
    max_ngram_overlap: float = 0.5
    max_embedding_similarity: float | None = 0.95
    diversity: bool | None = None
    judge_criteria: str | None = None
    judge: str | None = None
    judge_threshold: float = 0.5
    turns: int = 0
    candidate: str | None = None
    include_seeds: bool = False
    inherit: list[str] | None = None
    allow_short: bool = False
    source_id: str = "synthetic"
    progress: bool = False


@dataclass
class Candidate:
    """One planned row, from its prompt to its fate."""

    id: str
    cell: Cell
    persona: Persona
    seeds: list[dict[str, Any]]
    index: int
    messages: tuple[Message, ...] = ()
    value: dict[str, Any] | None = None
    dropped: str | None = None
    error: str = ""
    filters: dict[str, Any] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)

    def drop(self, reason: str, error: str = "") -> None:
        self.dropped, self.error = reason, error


@dataclass
class KindResult:
    kind: str
    candidates: list[Candidate]
    kept: list[Candidate]
    usage: Usage
    dedup: dict[str, Any]
    privacy: dict[str, Any] | None
    judge: dict[str, Any] | None
    diversity: dict[str, Any] | None
    template: Template
    schema: dict[str, Any]


@dataclass
class SynthResult:
    options: SynthOptions
    seeds: Seeds
    plan: Plan
    personas: list[Persona]
    kinds: dict[str, KindResult]
    files: dict[str, Any]
    manifest: dict[str, Any]
    report: dict[str, Any]

    @property
    def short(self) -> bool:
        return any(c["shortfall"] for k in self.report["kinds"].values() for c in k["coverage"]["cells"])


def response_format(schema: dict[str, Any], mode: str) -> dict[str, Any] | None:
    if mode == "json_schema":
        strict = schema.get("additionalProperties") is False and set(schema.get("required") or []) == set(
            schema.get("properties") or {})
        return {"type": "json_schema", "json_schema": {"name": "synth_row", "schema": schema, "strict": strict}}
    if mode == "json_object":
        return {"type": "json_object"}
    return None


def seed_view(row: dict[str, Any]) -> dict[str, Any]:
    """A seed row as templates see it: ``input``, ``expected`` and ``context`` always present."""
    context = row.get("context")
    if isinstance(context, list):
        context = "\n\n".join(map(str, context))
    return {**row, "input": row_text(row), "expected": str(row.get("expected") or ""), "context": str(context or "")}


