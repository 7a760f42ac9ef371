"""A pydantic model from a JSON schema, for deepeval's JsonCorrectnessMetric.

deepeval validates the output with ``expected_schema.model_validate_json``; suites declare
the schema as JSON schema in YAML. This converts the common subset (objects with typed
properties and ``required``, arrays, strings, integers, numbers, booleans, null, ``enum``)
and refuses the rest with a message naming the keyword, rather than validating loosely.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model

_SCALARS: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "null": type(None)}
_IGNORED = {"title", "description", "$schema", "examples", "default"}


def _type_of(schema: dict[str, Any], where: str) -> Any:
    unknown = set(schema) - _IGNORED - {"type", "properties", "required", "items", "enum", "additionalProperties"}
    if unknown:
        raise ValueError(f"schema{where}: keyword {sorted(unknown)[0]!r} is not supported by the deepeval adapter")
    if "enum" in schema:
        return Literal[tuple(schema["enum"])]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return model_from_schema(schema, where)
    if kind == "array":
        items = schema.get("items")
        return list[_type_of(items, f"{where}.items")] if isinstance(items, dict) else list[Any]  # type: ignore[misc]
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind is None:
        return Any
    raise ValueError(f"schema{where}: type {kind!r} is not supported by the deepeval adapter")


def model_from_schema(schema: dict[str, Any], where: str = "") -> type[BaseModel]:
    """The pydantic model validating what ``schema`` (an object schema) describes."""
    if not isinstance(schema, dict):
        raise ValueError(f"schema{where}: must be a mapping")
    if schema.get("type", "object") != "object":
        raise ValueError(f"schema{where}: the top level must be an object schema")
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    fields: dict[str, Any] = {}
    for name, sub in properties.items():
        kind = _type_of(sub, f"{where}.properties.{name}")
        fields[name] = (kind, ...) if name in required else (kind | None, None)
    extra: Literal["forbid", "allow"] = "forbid" if schema.get("additionalProperties") is False else "allow"
    model: type[BaseModel] = create_model(
        "ExpectedSchema", __config__=ConfigDict(extra=extra, strict=True), **fields
    )
    return model
