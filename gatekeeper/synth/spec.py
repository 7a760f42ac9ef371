"""What a synth run is asked for: personas, the coverage plan, the output kind and its schema.

Every input file is validated before any model is called, and every problem names the
file, the line and the field (exit 4): a persona without a ``goal`` or a cell whose
personas do not exist is a usage error, never a short dataset discovered afterwards.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gatekeeper.host import yamlfile
from gatekeeper.types import UsageError

Kind = Literal["cases", "sft", "preference"]
KINDS: tuple[str, ...] = ("cases", "sft", "preference")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- personas


class Persona(_Strict):
    """Who writes the generated requests: every field is required, so a persona file that
    forgets one fails at load time with the field named."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    role: str = Field(min_length=1)
    goal: str = Field(min_length=1)
    expertise: str = Field(min_length=1)
    tone: str = Field(min_length=1)
    locale: str = Field(min_length=2)
    constraints: list[str]

    @field_validator("constraints", mode="before")
    @classmethod
    def _one_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class PersonaFile(_Strict):
    personas: list[Persona] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> PersonaFile:
        seen: set[str] = set()
        for i, persona in enumerate(self.personas):
            if persona.id in seen:
                raise ValueError(f"personas[{i}]: persona id {persona.id!r} is used twice")
            seen.add(persona.id)
        return self


def load_personas(path: Path) -> list[Persona]:
    if not path.is_file():
        raise UsageError("persona file not found", file=str(path), field="--personas")
    data, locator = yamlfile.load(path)
    return yamlfile.validate(PersonaFile, data, path, locator).personas


# --------------------------------------------------------------------------- the coverage plan


class Cell(_Strict):
    """One cell of the taxonomy: a topic and a scenario with the number of rows wanted."""

    topic: str = Field(min_length=1)
    scenario: str = Field(min_length=1)
    target: int = Field(ge=1, le=10_000)
    personas: list[str] | None = None
    """Persona ids for this cell (default: every persona)."""
    seeds: dict[str, str] | None = None
    """Which seed rows illustrate the cell: rows whose fields equal these values
    (default: rows with the cell's ``topic`` when the seeds have a ``topic`` field, else all)."""
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]+$")

    @property
    def key(self) -> str:
        if self.id:
            return self.id
        slug = "".join(ch if ch.isalnum() else "-" for ch in f"{self.topic}-{self.scenario}".lower())
        return "-".join(part for part in slug.split("-") if part)[:60]


class Plan(_Strict):
    """The coverage plan: cells with target counts, and how much to over-generate."""

    cells: list[Cell] = Field(min_length=1)
    oversample: float = Field(1.5, ge=1.0, le=10.0)
    """Generate ceil(target × oversample) candidates per cell: some are dropped by the filters."""
    seeds_per_prompt: int = Field(3, ge=0, le=20)
    slice: str = "topic"
    """The row field the cell's topic is written to (and the coverage report groups by)."""

    def attempts(self, cell: Cell) -> int:
        return math.ceil(cell.target * self.oversample)


def load_plan(path: Path, personas: list[Persona], seed_rows: list[dict[str, Any]]) -> Plan:
    """Read the plan and check that every cell can be filled at all: its personas exist and
    its seed selector matches at least one seed row (a cell that can never be filled is a
    usage error here, not a shortfall after paying for generations)."""
    if not path.is_file():
        raise UsageError("plan file not found", file=str(path), field="--plan")
    data, locator = yamlfile.load(path)
    plan = yamlfile.validate(Plan, data, path, locator)
    known = {p.id for p in personas}
    keys: dict[str, int] = {}
    for i, cell in enumerate(plan.cells):
        for j, pid in enumerate(cell.personas or []):
            if pid not in known:
                raise UsageError(
                    f"cell {cell.key!r} names persona {pid!r}, which the persona file does not define "
                    f"(known: {', '.join(sorted(known))}): the cell could never be filled",
                    file=str(path), line=locator.line(("cells", i, "personas", j)), field=f"cells[{i}].personas[{j}]")
        if cell.personas is not None and not cell.personas:
            raise UsageError(f"cell {cell.key!r} has an empty persona list: it could never be filled",
                             file=str(path), line=locator.line(("cells", i, "personas")),
                             field=f"cells[{i}].personas")
        if cell.key in keys:
            raise UsageError(f"cell {cell.key!r} is declared twice (first cells[{keys[cell.key]}]); give one an 'id'",
                             file=str(path), line=locator.line(("cells", i)), field=f"cells[{i}]")
        keys[cell.key] = i
        if seed_rows and cell.seeds and not select_seeds(cell, seed_rows, plan.slice):
            raise UsageError(
                f"cell {cell.key!r}: no seed row has {json.dumps(cell.seeds)}: the cell could never be illustrated",
                file=str(path), line=locator.line(("cells", i, "seeds")), field=f"cells[{i}].seeds")
    return plan


def select_seeds(cell: Cell, rows: list[dict[str, Any]], slice_field: str) -> list[dict[str, Any]]:
    """The seed rows that illustrate ``cell``."""
    if cell.seeds:
        return [r for r in rows if all(str(r.get(k)) == v for k, v in cell.seeds.items())]
    if any(slice_field in r for r in rows):
        matching = [r for r in rows if str(r.get(slice_field)) == cell.topic]
        return matching or rows
    return rows


# --------------------------------------------------------------------------- output schemas


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


_TEXT = {"type": "string", "minLength": 1}

BUILTIN_SCHEMAS: dict[str, dict[str, Any]] = {
    "cases": _object({"input": _TEXT, "expected": _TEXT}),
    "sft": _object({"input": _TEXT, "answer": _TEXT}),
    "preference": _object({"input": _TEXT, "chosen": _TEXT, "rejected": _TEXT}),
}
"""What the generator must return per kind (strict: OpenAI structured outputs accept them)."""

REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "cases": ("input",),
    "sft": ("input", "answer"),
    "preference": ("input", "chosen", "rejected"),
}

TURN_SCHEMA = _object({"message": _TEXT})
"""The persona simulator's reply in a multi-turn conversation."""


def load_schema(path: Path | None, kind: str) -> dict[str, Any]:
    """The JSON Schema generated rows must match: the built-in one for ``kind`` or a file.
    A schema file must describe an object with the kind's required fields."""
    if path is None:
        return BUILTIN_SCHEMAS[kind]
    if not path.is_file():
        raise UsageError("schema file not found", file=str(path), field="--schema")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"invalid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the schema"
        raise UsageError(f"not a valid JSON Schema: {where}: {exc.message}", file=str(path)) from None
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict) or schema.get("type") != "object":
        raise UsageError("the schema must describe an object with 'properties'", file=str(path), field="type")
    missing = [f for f in REQUIRED_FIELDS[kind] if f not in props or f not in (schema.get("required") or [])]
    if missing:
        raise UsageError(f"a {kind} row needs the required field(s) {', '.join(missing)}",
                         file=str(path), field="required")
    return dict(schema)
