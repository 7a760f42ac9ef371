"""Production signals: the record schema, the filters, and the reader over signal sources.

A :class:`Signal` is one model answer in production with what the user did with it. The
schema follows the advice that telemetry must carry the prompt, the model version, the
retrieval context, timestamps and the user's role; docs/signals.md explains every field.

Sources (``gatekeeper_register_signal_sources``) hand the host raw rows in one of two
layouts, and :func:`signal_from_row` accepts both:

* **nested** — the schema as JSON: ``{"feedback": {"verdict": ...}, "consent": {...},
  "attributes": {"topic": ...}, ...}`` (what :meth:`Signal.model_dump` gives);
* **flat** (columnar: CSV, SQL, Parquet) — ``feedback_verdict``, ``feedback_edited_text``,
  ``feedback_rating``, ``consent_training``, ``consent_evaluation``; ``messages``,
  ``context``, ``flags`` and ``attributes`` as JSON text (or native lists); every other
  column is an attribute (a slice field such as ``topic``).

:func:`read_signals` validates rows one by one (for curation); :func:`scan_signals` gives a
Polars ``LazyFrame`` in the flat layout with the filters pushed down (for aggregation over
millions of rows). Polars is imported only inside the functions that need it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gatekeeper.host.yamlfile import field_path, first_error
from gatekeeper.types import UsageError

if TYPE_CHECKING:
    import polars as pl

    from gatekeeper.kinds import Registries, SignalSource

Verdict = Literal["accepted", "edited", "rejected", "none"]
VERDICTS: tuple[str, ...] = ("accepted", "edited", "rejected", "none")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Feedback(_Record):
    """What the user did with the answer."""

    verdict: Verdict = "none"
    """``accepted`` as is, ``edited`` (corrected, see ``edited_text``), ``rejected``, or ``none``
    (no feedback given)."""
    edited_text: str | None = None
    """The user's corrected answer; required when ``verdict`` is ``edited``."""
    rating: float | None = Field(default=None, ge=1, le=5)
    """A 1..5 rating, when the product asks for one."""

    @model_validator(mode="after")
    def _edit_has_text(self) -> Feedback:
        if self.verdict == "edited" and not (self.edited_text or "").strip():
            raise ValueError("an 'edited' verdict needs the edited text (feedback.edited_text)")
        return self


class Consent(_Record):
    """What the user allowed their conversation to be used for. Both default to no."""

    training: bool = False
    evaluation: bool = False


class Signal(_Record):
    """One model answer in production, with its provenance and the user's feedback."""

    id: str = Field(min_length=1)
    conversation_id: str = Field(min_length=1)
    time: datetime
    """When the answer was given; stored in UTC (a time without offset is taken as UTC)."""
    model: str = Field(min_length=1)
    model_version: str = Field(min_length=1)
    messages: list[dict[str, str]] = Field(min_length=1)
    """The prompt as chat messages, each ``{"role": ..., "content": ...}``, as sent."""
    context: list[str] = Field(default_factory=list)
    """The retrieval context passages the answer was given with."""
    answer: str
    feedback: Feedback = Field(default_factory=Feedback)
    flags: list[str] = Field(default_factory=list)
    """Markers such as ``safety`` or ``escalation``."""
    user_role: str | None = None
    consent: Consent = Field(default_factory=Consent)
    retention: str | None = None
    """The retention class (e.g. ``30d``, ``1y``, ``legal-hold``)."""
    attributes: dict[str, Any] = Field(default_factory=dict)
    """Slice fields such as ``topic``, ``channel``, ``locale``."""

    @field_validator("id", "conversation_id", "model_version", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("time", mode="after")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @field_validator("messages", mode="after")
    @classmethod
    def _chat(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        for i, message in enumerate(value):
            if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
                raise ValueError(f"message {i} needs 'role' and 'content' strings")
        return value

    # ------------------------------------------------------------------ views

    @property
    def slice_values(self) -> dict[str, str]:
        """Attributes and the slice-able top-level fields, as text."""
        values = {k: str(v) for k, v in self.attributes.items() if v is not None}
        if self.user_role is not None:
            values.setdefault("user_role", self.user_role)
        if self.retention is not None:
            values.setdefault("retention", self.retention)
        return values

    def flat(self) -> dict[str, Any]:
        """The flat (columnar) layout: one scalar per column; attributes become columns."""
        row: dict[str, Any] = {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "time": self.time,
            "model": self.model,
            "model_version": self.model_version,
            "messages": json.dumps(self.messages, ensure_ascii=False),
            "context": json.dumps(self.context, ensure_ascii=False),
            "answer": self.answer,
            "feedback_verdict": self.feedback.verdict,
            "feedback_edited_text": self.feedback.edited_text,
            "feedback_rating": self.feedback.rating,
            "flags": json.dumps(self.flags),
            "user_role": self.user_role,
            "consent_training": self.consent.training,
            "consent_evaluation": self.consent.evaluation,
            "retention": self.retention,
        }
        for key, value in self.attributes.items():
            row[key if key not in row else f"attributes.{key}"] = value
        return row


FLAT_COLUMNS: tuple[str, ...] = (
    "id", "conversation_id", "time", "model", "model_version", "messages", "context", "answer",
    "feedback_verdict", "feedback_edited_text", "feedback_rating", "flags", "user_role",
    "consent_training", "consent_evaluation", "retention",
)
"""The columns of the flat layout (besides one column per attribute)."""

_GROUPS = {"feedback": ("verdict", "edited_text", "rating"), "consent": ("training", "evaluation")}
_JSON_FIELDS = ("messages", "context", "flags", "attributes")
_TOP_LEVEL = set(Signal.model_fields)


# --------------------------------------------------------------------------- rows


def _json_text(value: Any, name: str) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if name == "flags" and text and text[0] != "[":
        return [f.strip() for f in text.split(",") if f.strip()]
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _RowError(name, f"not valid JSON: {exc.msg}") from None


class _RowError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def signal_from_row(row: Mapping[str, Any]) -> Signal:
    """Build a :class:`Signal` from a nested or flat row. Raises ``ValueError`` (pydantic's
    ``ValidationError`` or an internal row error) naming the field; :func:`validate_row` turns
    it into a located :class:`UsageError`."""
    data: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {g: {} for g in _GROUPS}
    attributes: dict[str, Any] = {}
    for key, value in row.items():
        if key.startswith("_"):
            continue
        group, _, sub = key.partition("_")
        if key in _JSON_FIELDS:
            data[key] = _json_text(value, key)
        elif group in _GROUPS and sub in _GROUPS[group]:
            if value is not None and value != "":
                groups[group][sub] = value
        elif key in _TOP_LEVEL:
            data[key] = None if value == "" and key in ("user_role", "retention") else value
        elif key.startswith("attributes."):
            attributes[key.removeprefix("attributes.")] = value
        elif key == "prompt" and isinstance(value, str):
            data.setdefault("messages", [{"role": "user", "content": value}])
        elif value is not None and value != "":
            attributes[key] = value
    for group, values in groups.items():
        if values:
            base = data.get(group)
            data[group] = {**(base if isinstance(base, Mapping) else {}), **values}
    if data.get("attributes") is None:
        data.pop("attributes", None)
    for key in ("context", "flags"):
        if data.get(key) is None:
            data.pop(key, None)
    if attributes:
        base = data.get("attributes")
        data["attributes"] = {**(base if isinstance(base, Mapping) else {}), **attributes}
    return Signal.model_validate(data)


def validate_row(row: Mapping[str, Any], *, file: str, line: int | None) -> Signal:
    """:func:`signal_from_row`, with any error as a one-line UsageError at ``file:line``."""
    try:
        return signal_from_row(row)
    except _RowError as exc:
        raise UsageError(exc.message, file=file, line=line, field=exc.field) from None
    except ValidationError as exc:
        loc, msg = first_error(exc)
        raise UsageError(msg, file=file, line=line, field=field_path(loc) or None) from None


# --------------------------------------------------------------------------- filters


def parse_time(value: str | datetime | None, *, field: str = "time") -> datetime | None:
    """ISO 8601 (``2026-03-01``, ``2026-03-01T12:00:00Z``) → an aware UTC datetime."""
    if value is None or isinstance(value, datetime):
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{value!r} is not an ISO 8601 time (e.g. 2026-03-01T00:00:00Z)", field=field) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass(frozen=True)
class SignalFilter:
    """Which signals to read: ``since`` ≤ time < ``until``, a model, a version, slice values.

    ``where`` maps an attribute (or ``user_role`` / ``retention``) to the allowed values.
    Sources push what they can down to storage; the host applies the whole filter again.
    """

    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    model_version: str | None = None
    where: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def make(
        cls,
        *,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        model: str | None = None,
        model_version: str | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> SignalFilter:
        values: dict[str, tuple[str, ...]] = {}
        for key, value in (where or {}).items():
            items = value if isinstance(value, list | tuple | set | frozenset) else [value]
            values[str(key)] = tuple(str(v) for v in items)
        return cls(parse_time(since, field="--since"), parse_time(until, field="--until"),
                   model, None if model_version is None else str(model_version), values)

    def matches(self, signal: Signal) -> bool:
        if self.since is not None and signal.time < self.since:
            return False
        if self.until is not None and signal.time >= self.until:
            return False
        if self.model is not None and signal.model != self.model:
            return False
        if self.model_version is not None and signal.model_version != self.model_version:
            return False
        values = signal.slice_values
        return all(values.get(key) in allowed for key, allowed in self.where.items())

    def polars_predicate(self, columns: set[str]) -> pl.Expr | None:
        """The filter as one Polars expression over the flat layout (for pushdown)."""
        import polars as pl

        parts: list[pl.Expr] = []
        if self.since is not None:
            parts.append(pl.col("time") >= self.since)
        if self.until is not None:
            parts.append(pl.col("time") < self.until)
        if self.model is not None:
            parts.append(pl.col("model") == self.model)
        if self.model_version is not None:
            parts.append(pl.col("model_version") == self.model_version)
        for key, allowed in self.where.items():
            if key not in columns:
                parts.append(pl.lit(False))
            else:
                parts.append(pl.col(key).cast(pl.String).is_in(list(allowed)))
        if not parts:
            return None
        predicate = parts[0]
        for part in parts[1:]:
            predicate = predicate & part
        return predicate


# --------------------------------------------------------------------------- sources


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_\-]*):(?!//)(.+)$")


def resolve_source(location: str, registries: Registries) -> tuple[SignalSource, str]:
    """The source that reads ``location``, and the location it should be given.

    By URL scheme (``sqlite:///db?table=t``, ``postgresql+psycopg://...``: the part before
    ``+``), by an explicit ``NAME:`` prefix naming a source or scheme (``otlp:traces.json``),
    else by the file suffix (``.jsonl``, ``.csv``, ``.parquet``, ``.json`` = OTLP JSON).
    """
    registry = registries.signal_sources
    by_scheme: dict[str, Any] = {}
    for entry in registry:
        by_scheme.setdefault(entry.name, entry.obj)
        for scheme in entry.obj.schemes:
            by_scheme.setdefault(scheme.lower(), entry.obj)
    target = location
    if match := _SCHEME.match(location):
        key = match.group(1).lower().split("+", 1)[0]
    elif (prefix := _PREFIX.match(location)) and prefix.group(1).lower() in by_scheme and len(prefix.group(1)) > 1:
        key, target = prefix.group(1).lower(), prefix.group(2)
    elif Path(location).is_dir():
        suffixes = {p.suffix.lower().lstrip(".") for p in Path(location).iterdir()
                    if p.is_file() and not p.name.startswith((".", "_"))}
        known_here = sorted(suffixes & set(by_scheme))
        if len(known_here) > 1:
            raise UsageError(f"directory {location!r} mixes signal files ({', '.join(known_here)}); "
                             "give a glob such as DIR/*.parquet", field="location")
        key = known_here[0] if known_here else ""
    else:
        name = location.rsplit("/", 1)[-1].lower()
        key = name.rsplit(".", 1)[-1] if "." in name else ""
    if key not in by_scheme:
        known = ", ".join(sorted(by_scheme)) or "none"
        raise UsageError(f"no signal source reads {location!r} (schemes and suffixes known: {known})",
                         field="location")
    return by_scheme[key](), target


def read_signals(
    location: str,
    registries: Registries,
    *,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    model: str | None = None,
    model_version: str | None = None,
    where: Mapping[str, Any] | None = None,
) -> Iterator[Signal]:
    """Validated signals from ``location`` that pass the filters, in the source's order.

    A row that is not a valid signal stops the read with a UsageError (exit 4) naming the
    file, its line or row, and the field.
    """
    filters = SignalFilter.make(since=since, until=until, model=model, model_version=model_version, where=where)
    yield from iter_signals(location, registries, filters)


def iter_signals(location: str, registries: Registries, filters: SignalFilter) -> Iterator[Signal]:
    """:func:`read_signals` with a ready :class:`SignalFilter`."""
    source, target = resolve_source(location, registries)
    seen = UniqueIds()
    for ref, row in source.read(target, filters):
        signal = validate_row(row, file=ref.file, line=ref.line)
        seen.add(signal.id, ref.file, ref.line)
        if filters.matches(signal):
            yield signal


class UniqueIds:
    """Refuses a signal id seen before: a row logged twice would be counted twice by a
    summary and a monitor (which triggers rollbacks), and curated twice into a suite."""

    def __init__(self) -> None:
        self._first: dict[str, str] = {}

    def add(self, signal_id: str, file: str, line: int | None) -> None:
        where = f"{file}:{line}" if line else file
        first = self._first.setdefault(signal_id, where)
        if first is not where:
            raise UsageError(f"duplicate signal id {signal_id!r} (first at {first})", file=file, line=line,
                             field="id")


def scan_signals(location: str, registries: Registries, filters: SignalFilter) -> pl.LazyFrame:
    """The signals as a Polars LazyFrame in the flat layout, filters applied (pushed down
    where the source allows). Columns: the :data:`FLAT_COLUMNS` the source has (``time`` as
    UTC datetime, ``flags`` as a list of strings), plus one column per attribute.

    Rows whose aggregated fields are invalid are reported like :func:`read_signals` does.
    """
    source, target = resolve_source(location, registries)
    scanned = source.scan(target, filters)
    frame = normalize_frame(frame_from_rows(source.read(target, filters)) if scanned is None else scanned)
    predicate = filters.polars_predicate(set(frame.collect_schema().names()))
    return frame if predicate is None else frame.filter(predicate)


def frame_from_rows(rows: Iterator[tuple[Any, dict[str, Any]]]) -> pl.LazyFrame:
    """A flat-layout LazyFrame from a source's raw rows, each validated (the default
    :meth:`SignalSource.scan` for sources that are not columnar)."""
    import polars as pl

    records: list[dict[str, Any]] = []
    seen = UniqueIds()
    for ref, row in rows:
        signal = validate_row(row, file=ref.file, line=ref.line)
        seen.add(signal.id, ref.file, ref.line)
        flat = signal.flat()
        flat["flags"] = json.loads(flat["flags"])
        for key in set(flat) - set(FLAT_COLUMNS):
            flat[key] = None if flat[key] is None else str(flat[key])
        records.append(flat)
    if not records:
        return pl.LazyFrame(schema=empty_frame_schema())
    return pl.DataFrame(records, infer_schema_length=None).lazy()


def empty_frame_schema() -> dict[str, Any]:
    """The flat layout's column types (for an empty frame)."""
    import polars as pl

    types: dict[str, Any] = {name: pl.String for name in FLAT_COLUMNS}
    types.update(time=pl.Datetime("us", "UTC"), feedback_rating=pl.Float64, flags=pl.List(pl.String),
                 consent_training=pl.Boolean, consent_evaluation=pl.Boolean)
    return types


def normalize_frame(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Bring a source's frame to the flat layout: unnest ``feedback``/``consent``/``attributes``
    structs, decode JSON text columns, make ``time`` a UTC datetime and versions text."""
    import polars as pl

    schema = frame.collect_schema()
    for group in ("feedback", "consent"):
        if isinstance(schema.get(group), pl.Struct):
            fields = [f.name for f in schema[group].fields]  # type: ignore[attr-defined]
            frame = frame.with_columns(
                pl.col(group).struct.field(f).alias(f"{group}_{f}") for f in fields
            ).drop(group)
    schema = frame.collect_schema()
    if schema.get("attributes") == pl.String:
        frame = _decode_json_column(frame, "attributes")
        schema = frame.collect_schema()
    if isinstance(schema.get("attributes"), pl.Struct):
        names = set(schema.names())
        fields = [f.name for f in schema["attributes"].fields]  # type: ignore[attr-defined]
        frame = frame.with_columns(
            pl.col("attributes").struct.field(f).alias(f if f not in names else f"attributes.{f}")
            for f in fields
        ).drop("attributes")
        schema = frame.collect_schema()
    casts: list[pl.Expr] = []
    if "time" in schema and schema["time"] != pl.Datetime("us", "UTC"):
        casts.append(_time_expr(schema["time"]))
    for name in ("model", "model_version", "feedback_verdict", "user_role", "retention"):
        if name in schema and schema[name] != pl.String:
            casts.append(pl.col(name).cast(pl.String))
    if "feedback_rating" in schema and schema["feedback_rating"] != pl.Float64:
        casts.append(pl.col("feedback_rating").cast(pl.Float64, strict=False))
    if "flags" in schema and schema["flags"] == pl.String:
        casts.append(_flags_from_text())
    if casts:
        frame = frame.with_columns(casts)
    return frame


def _time_expr(dtype: Any) -> pl.Expr:
    import polars as pl

    col = pl.col("time")
    if dtype == pl.String:
        parsed = col.str.replace(r"Z$", "+00:00").str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
        return parsed.alias("time")
    if isinstance(dtype, pl.Datetime):
        col = col.dt.cast_time_unit("us")
        if dtype.time_zone is None:
            return col.dt.replace_time_zone("UTC").alias("time")
        return col.dt.convert_time_zone("UTC").alias("time")
    return col.cast(pl.Datetime("us", "UTC"), strict=False).alias("time")


def _flags_from_text() -> pl.Expr:
    import polars as pl

    text = pl.col("flags").fill_null("").str.strip_chars()
    as_json = text.str.json_decode(pl.List(pl.String))
    as_csv = text.str.split(",").list.eval(pl.element().str.strip_chars()).list.filter(pl.element() != "")
    return pl.when(text.str.starts_with("[")).then(as_json).otherwise(as_csv).alias("flags")


def _decode_json_column(frame: pl.LazyFrame, name: str) -> pl.LazyFrame:
    """Decode a JSON-object text column to a struct, its fields taken from the first rows."""
    import polars as pl

    sample = frame.select(pl.col(name)).head(10_000).collect()[name].drop_nulls()
    keys: dict[str, None] = {}
    for text in sample:
        try:
            value = json.loads(text)
        except (TypeError, json.JSONDecodeError):
            continue
        if isinstance(value, dict):
            keys.update(dict.fromkeys(value))
    if not keys:
        return frame.drop(name)
    dtype = pl.Struct({k: pl.String for k in keys})
    return frame.with_columns(pl.col(name).str.json_decode(dtype))


REQUIRED_TEXT = ("id", "conversation_id", "model", "model_version", "answer")
"""Flat columns every signal has (non-empty text, ``answer`` may be empty but not null)."""


def frame_problem(frame: pl.LazyFrame) -> str | None:
    """What a columnar frame holds that :class:`Signal` would refuse, or None: a missing or
    empty required field, ``messages`` that are not a non-empty list of role/content
    messages, a duplicate id. Aggregations check this in one pass over the columns they
    read anyway and, on a problem, re-read row by row so the error names file, row, field:
    a summary counts exactly the rows that ``build-suite`` and ``monitor`` accept."""
    import polars as pl

    schema = frame.collect_schema()
    names = set(schema.names())
    for column in (*REQUIRED_TEXT, "messages", "time"):
        if column not in names:
            return f"missing column {column!r}"
    checks: list[pl.Expr] = []
    for column in REQUIRED_TEXT:
        text = pl.col(column).cast(pl.String)
        missing = text.is_null() if column == "answer" else text.is_null() | (text.str.len_chars() == 0)
        checks.append(missing.sum().alias(column))
    checks.append((pl.len() - pl.col("id").cast(pl.String).n_unique()).alias("duplicate id"))
    # Messages repeat (one system prompt, templated questions): each distinct value is
    # decoded once, which made the check 50x cheaper on the 1M-row benchmark file.
    messages = pl.col("messages").unique()
    if schema["messages"] == pl.String:
        message_type = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
        messages = messages.str.json_decode(message_type)
    if not (isinstance(schema["messages"], pl.List) or schema["messages"] == pl.String):
        return f"'messages' column of type {schema['messages']}"
    bad_messages = (
        messages.is_null() | (messages.list.len() == 0)
        | messages.list.eval(pl.element().struct.field("role").is_null()
                             | pl.element().struct.field("content").is_null()).list.any()
    )
    try:
        counts = frame.select(checks).collect().row(0, named=True)
        counts["messages"] = frame.select(bad_messages.sum()).collect().item()
    except (pl.exceptions.PolarsError, ValueError) as exc:
        return f"unreadable values ({type(exc).__name__})"
    bad = [f"{k} ({v} rows)" for k, v in counts.items() if v]
    return f"invalid values in {', '.join(bad)}" if bad else None


def check_frame(frame: pl.DataFrame | pl.LazyFrame, columns: tuple[str, ...]) -> str | None:
    """A description of the first problem with ``columns`` in an aggregated frame, or None."""
    import polars as pl

    lazy = frame.lazy()
    names = set(lazy.collect_schema().names())
    for column in columns:
        if column not in names:
            return f"missing column {column!r}"
    checks: list[pl.Expr] = []
    if "time" in columns:
        checks.append(pl.col("time").null_count().alias("time"))
    if "model_version" in columns:
        checks.append(pl.col("model_version").null_count().alias("model_version"))
    if "feedback_verdict" in columns:
        checks.append((~pl.col("feedback_verdict").is_in(list(VERDICTS)) | pl.col("feedback_verdict").is_null())
                      .sum().alias("feedback_verdict"))
    if "feedback_rating" in columns:
        checks.append(((pl.col("feedback_rating") < 1) | (pl.col("feedback_rating") > 5)).sum()
                      .alias("feedback_rating"))
    if not checks:
        return None
    counts = lazy.select(checks).collect().row(0, named=True)
    bad = [f"{k} ({v} rows)" for k, v in counts.items() if v]
    return f"invalid values in {', '.join(bad)}" if bad else None


__all__ = [
    "FLAT_COLUMNS",
    "VERDICTS",
    "Consent",
    "Feedback",
    "Signal",
    "SignalFilter",
    "check_frame",
    "empty_frame_schema",
    "frame_from_rows",
    "frame_problem",
    "iter_signals",
    "normalize_frame",
    "parse_time",
    "read_signals",
    "resolve_source",
    "scan_signals",
    "signal_from_row",
    "validate_row",
]
