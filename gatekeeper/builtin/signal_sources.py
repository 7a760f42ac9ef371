"""Built-in signal sources: JSONL, CSV and Parquet files (Polars), SQL tables (SQLAlchemy)
and OpenTelemetry GenAI spans exported as OTLP JSON.

Each yields raw rows in the nested or flat layout of :mod:`gatekeeper.signals.records`; the host
validates them. The columnar ones override ``scan`` so that time window, model version and
slice filters reach the file reader or the database.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from gatekeeper import hookimpl
from gatekeeper.kinds import Register, RowRef, SignalSource
from gatekeeper.types import GatekeeperError, UsageError

if TYPE_CHECKING:
    import polars as pl
    import sqlalchemy as sa

    from gatekeeper.signals.records import SignalFilter

Rows = Iterator[tuple[RowRef, dict[str, Any]]]


def _paths(location: str, suffixes: tuple[str, ...] = ()) -> list[Path]:
    """A file, a glob, or a directory's files with one of ``suffixes`` (so a Spark output
    folder's ``_SUCCESS`` and ``.crc`` files are left alone)."""
    path = Path(location)
    if any(ch in location for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(location, recursive=True) if Path(p).is_file())
    elif path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_"))
                       and (not suffixes or p.suffix.lower().lstrip(".") in suffixes))
    else:
        found = [path] if path.is_file() else []
    if not found:
        raise UsageError("signal file not found", file=location, field="location")
    return found


def _filtered(frame: pl.LazyFrame, filters: SignalFilter) -> pl.LazyFrame:
    from gatekeeper.signals.records import normalize_frame

    frame = normalize_frame(frame)
    predicate = filters.polars_predicate(set(frame.collect_schema().names()))
    return frame if predicate is None else frame.filter(predicate)


# --------------------------------------------------------------------------- files


class JsonlSource(SignalSource):
    name = "jsonl"
    description = "JSON Lines files, one signal per line (nested or flat layout)"
    schemes = ("jsonl", "ndjson")

    def read(self, location: str, filters: SignalFilter) -> Rows:
        from gatekeeper.files import read_jsonl

        for path in _paths(location, self.schemes):
            for line, row in read_jsonl(path):
                yield RowRef(str(path), line), row

    def scan(self, location: str, filters: SignalFilter) -> pl.LazyFrame | None:
        # None: the host builds the frame from read(), each row validated like every other
        # command reads it (Polars' JSON reader keeps the last of duplicate keys and takes
        # NaN; a summary must not count what build-suite would refuse).
        return None


class CsvSource(SignalSource):
    name = "csv"
    description = "CSV files with a header, flat layout (JSON text in list columns)"
    schemes = ("csv",)

    def read(self, location: str, filters: SignalFilter) -> Rows:
        from gatekeeper.files import read_csv

        # The strict reader: an unterminated quote or a ragged row names file:line.
        for path in _paths(location, self.schemes):
            for line, row in read_csv(path):
                yield RowRef(str(path), line), {k: (None if v == "" else v) for k, v in row.items()}

    def scan(self, location: str, filters: SignalFilter) -> pl.LazyFrame:
        import polars as pl

        paths = [str(p) for p in _paths(location, self.schemes)]
        frame = pl.scan_csv(paths, infer_schema=False)
        names = frame.collect_schema().names()
        casts = [pl.col(c).cast(pl.Float64) for c in ("feedback_rating",) if c in names]
        casts += [pl.col(c).str.to_lowercase().is_in(["true", "1", "yes"]).alias(c)
                  for c in ("consent_training", "consent_evaluation") if c in names]
        return _filtered(frame.with_columns(casts) if casts else frame, filters)


class ParquetSource(SignalSource):
    name = "parquet"
    description = "Parquet files or directories, flat or nested layout"
    schemes = ("parquet", "pq")

    def read(self, location: str, filters: SignalFilter) -> Rows:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for path in _paths(location, self.schemes):
            row_no = 0
            try:
                # Batch by batch, so reading a large file row by row never holds all of it.
                for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
                    for row in batch.to_pylist():
                        row_no += 1
                        yield RowRef(str(path), row_no), row
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise UsageError(f"cannot read Parquet: {exc}", file=str(path), line=row_no + 1 or None) from None

    def scan(self, location: str, filters: SignalFilter) -> pl.LazyFrame:
        import polars as pl

        return _filtered(pl.scan_parquet([str(p) for p in _paths(location, self.schemes)]), filters)


# --------------------------------------------------------------------------- SQL


class SqlSource(SignalSource):
    """A table (flat layout) in any database SQLAlchemy reaches.

    Location: the database URL with ``?table=NAME`` (default ``signals``), e.g.
    ``sqlite:///signals.db?table=signals`` or
    ``postgresql+psycopg://user:pw@host:5432/db?table=signals``.
    """

    name = "sql"
    description = "a table in SQLite, PostgreSQL or any SQLAlchemy database (?table=NAME)"
    schemes = ("sql", "sqlite", "postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle", "duckdb")

    def _connect(self, location: str) -> tuple[sa.Engine, sa.Table, str]:
        import sqlalchemy as sa

        url, table_name = split_table(location)
        if url.startswith("postgres://"):
            url = "postgresql://" + url.removeprefix("postgres://")
        try:
            engine = sa.create_engine(url)
        except ImportError as exc:
            raise UsageError(f"the database driver is not installed ({exc}); for PostgreSQL: "
                             "pip install 'gatekeeper[postgres]'", field="location") from None
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            raise UsageError(f"cannot use database URL: {exc}", field="location") from None
        shown = engine.url.render_as_string(hide_password=True)
        try:
            table = sa.Table(table_name, sa.MetaData(), autoload_with=engine)
        except sa.exc.NoSuchTableError:
            engine.dispose()
            raise UsageError(f"no table {table_name!r} (give ?table=NAME)", file=shown, field="location") from None
        except sa.exc.DBAPIError as exc:
            engine.dispose()
            raise DatabaseUnavailable(shown, exc) from None
        return engine, table, f"{shown} table {table_name}"

    def _select(self, engine: sa.Engine, table: sa.Table, filters: SignalFilter) -> sa.Select[Any]:
        import sqlalchemy as sa

        query = sa.select(table)
        cols = table.c
        if filters.model is not None and "model" in cols:
            query = query.where(cols["model"] == filters.model)
        if filters.model_version is not None and "model_version" in cols:
            query = query.where(sa.cast(cols["model_version"], sa.String) == filters.model_version)
        # Text times compare as text in SQLite; only push the window down to real timestamps.
        if "time" in cols and isinstance(cols["time"].type, sa.DateTime) and engine.dialect.name != "sqlite":
            if filters.since is not None:
                query = query.where(cols["time"] >= filters.since)
            if filters.until is not None:
                query = query.where(cols["time"] < filters.until)
        for key, allowed in filters.where.items():
            if key in cols:
                query = query.where(sa.cast(cols[key], sa.String).in_(allowed))
        order = [cols[c] for c in ("time", "id") if c in cols]
        return query.order_by(*order) if order else query

    def read(self, location: str, filters: SignalFilter) -> Rows:
        import sqlalchemy as sa

        engine, table, shown = self._connect(location)
        try:
            with engine.connect() as conn:
                result = conn.execution_options(stream_results=True).execute(self._select(engine, table, filters))
                for number, row in enumerate(result.mappings(), 1):
                    ident = row.get("id")
                    where = f"{shown} (id {ident})" if ident is not None else shown
                    yield RowRef(where, number), dict(row)
        except sa.exc.DBAPIError as exc:
            raise DatabaseUnavailable(shown, exc) from None
        finally:
            engine.dispose()

    def scan(self, location: str, filters: SignalFilter) -> pl.LazyFrame:
        import polars as pl

        engine, table, _ = self._connect(location)
        try:
            with engine.connect() as conn:
                frame = pl.read_database(self._select(engine, table, filters), connection=conn,
                                         infer_schema_length=None)
        finally:
            engine.dispose()
        return _filtered(frame.lazy(), filters)


class DatabaseUnavailable(GatekeeperError):
    """The signals database could not be reached or failed mid-read: a harness error (5)."""

    exit_code = 5

    def __init__(self, shown: str, exc: Exception) -> None:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        super().__init__(f"{shown}: the signals database failed: {reason}")


def split_table(location: str) -> tuple[str, str]:
    """``sqlite:///a.db?table=t`` → (``sqlite:///a.db``, ``t``); other query keys stay."""
    base, _, query = location.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    table = next((v for k, v in pairs if k == "table"), "signals")
    rest = urlencode([(k, v) for k, v in pairs if k != "table"])
    return (f"{base}?{rest}" if rest else base), table


# --------------------------------------------------------------------------- OpenTelemetry


GENAI_OPERATIONS = {"chat", "text_completion", "generate_content", "invoke_agent"}


def otlp_value(value: Any) -> Any:
    """An OTLP JSON ``AnyValue`` (``{"stringValue": ...}``, ``{"intValue": "3"}``, arrays,
    key-value lists) → a Python value."""
    if not isinstance(value, dict) or not value:
        return None
    kind, raw = next(iter(value.items()))
    if kind == "intValue":
        return int(raw)
    if kind == "doubleValue":
        return float(raw)
    if kind == "arrayValue":
        return [otlp_value(v) for v in (raw or {}).get("values", [])]
    if kind == "kvlistValue":
        return {kv["key"]: otlp_value(kv.get("value")) for kv in (raw or {}).get("values", [])}
    return raw


def _attributes(items: Any) -> dict[str, Any]:
    return {kv["key"]: otlp_value(kv.get("value")) for kv in items or [] if isinstance(kv, dict) and "key" in kv}


def _json_value(value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _message_text(message: dict[str, Any]) -> str:
    """Content of a chat message in either GenAI convention: ``content`` or ``parts``."""
    if isinstance(message.get("content"), str):
        return str(message["content"])
    parts = message.get("parts") or []
    return "".join(str(p.get("content", "")) for p in parts if isinstance(p, dict) and p.get("type", "text") == "text")


def _messages(value: Any) -> list[dict[str, str]]:
    value = _json_value(value)
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return [{"role": str(m.get("role", "user")), "content": _message_text(m)}
            for m in value or [] if isinstance(m, dict)]


def _unix_nano(value: Any) -> datetime | None:
    if value in (None, "", 0, "0"):
        return None
    return datetime.fromtimestamp(int(value) / 1e9, tz=UTC)


def span_to_row(span: dict[str, Any], resource: dict[str, Any]) -> dict[str, Any] | None:
    """One GenAI span → a nested signal row; ``None`` for spans that are not model calls.

    Semantic conventions read: ``gen_ai.operation.name``, ``gen_ai.request.model``,
    ``gen_ai.response.model``, ``gen_ai.response.id``, ``gen_ai.conversation.id``,
    ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (or the older ``gen_ai.prompt`` /
    ``gen_ai.completion`` attributes and ``gen_ai.*.message`` / ``gen_ai.choice`` events);
    gatekeeper's own fields live under ``gatekeeper.*`` (see docs/signals.md).
    """
    attrs = _attributes(span.get("attributes"))
    operation = attrs.get("gen_ai.operation.name")
    if operation not in GENAI_OPERATIONS and "gen_ai.request.model" not in attrs:
        return None
    messages = _messages(attrs.get("gen_ai.input.messages") or attrs.get("gen_ai.prompt"))
    from_attributes = bool(messages)
    answer = _answer(attrs)
    feedback: dict[str, Any] = {}
    for event in span.get("events") or []:
        event_attrs = _attributes(event.get("attributes"))
        body = otlp_value(event.get("body")) if "body" in event else None
        name = event.get("name", "")
        if name in ("gen_ai.system.message", "gen_ai.user.message", "gen_ai.assistant.message"):
            if not from_attributes:
                content = event_attrs.get("content")
                if content is None and isinstance(body, dict):
                    content = body.get("content")
                messages.append({"role": name.split(".")[1], "content": str(content or "")})
        elif name == "gen_ai.content.prompt" and not messages:
            messages = _messages(event_attrs.get("gen_ai.prompt"))
        elif name in ("gen_ai.choice", "gen_ai.content.completion") and answer is None:
            answer = _event_answer(event_attrs, body)
        elif name == "gatekeeper.feedback":
            feedback.update({k: v for k, v in event_attrs.items() if k in ("verdict", "edited_text", "rating")})
        elif name == "gen_ai.evaluation.result":
            _evaluation_feedback(event_attrs, feedback)
    for key in ("verdict", "edited_text", "rating"):
        if f"gatekeeper.feedback.{key}" in attrs:
            feedback[key] = attrs[f"gatekeeper.feedback.{key}"]
    row: dict[str, Any] = {
        "id": attrs.get("gen_ai.response.id") or span.get("spanId"),
        "conversation_id": attrs.get("gen_ai.conversation.id") or span.get("traceId"),
        "time": _unix_nano(span.get("endTimeUnixNano")) or _unix_nano(span.get("startTimeUnixNano")),
        "model": attrs.get("gatekeeper.model") or attrs.get("gen_ai.request.model"),
        "model_version": attrs.get("gatekeeper.model.version") or resource.get("service.version")
        or attrs.get("gen_ai.response.model"),
        "messages": messages,
        "answer": answer,
        "context": _json_value(attrs.get("gatekeeper.context")) or [],
        "flags": _json_value(attrs.get("gatekeeper.flags")) or [],
        "user_role": attrs.get("gatekeeper.user.role"),
        "retention": attrs.get("gatekeeper.retention"),
        "consent": {k: attrs[f"gatekeeper.consent.{k}"] for k in ("training", "evaluation")
                    if f"gatekeeper.consent.{k}" in attrs},
        "attributes": {k.removeprefix("gatekeeper.attributes."): v for k, v in attrs.items()
                       if k.startswith("gatekeeper.attributes.")},
    }
    if feedback:
        row["feedback"] = feedback
    return {k: v for k, v in row.items() if v is not None}


def _answer(attrs: dict[str, Any]) -> str | None:
    output = _json_value(attrs.get("gen_ai.output.messages") or attrs.get("gen_ai.completion"))
    if output is None:
        return None
    if isinstance(output, str):
        return output
    texts = [_message_text(m) for m in output if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
    return "\n".join(texts) if texts else None


def _event_answer(event_attrs: dict[str, Any], body: Any) -> str | None:
    if "gen_ai.completion" in event_attrs:
        return _answer({"gen_ai.completion": event_attrs["gen_ai.completion"]})
    message = (body or {}).get("message") if isinstance(body, dict) else None
    return _message_text(message) if isinstance(message, dict) else None


def _evaluation_feedback(event_attrs: dict[str, Any], feedback: dict[str, Any]) -> None:
    name = event_attrs.get("gen_ai.evaluation.name")
    if name == "user_feedback" and "gen_ai.evaluation.score.label" in event_attrs:
        feedback["verdict"] = event_attrs["gen_ai.evaluation.score.label"]
    elif name == "user_rating" and "gen_ai.evaluation.score.value" in event_attrs:
        feedback["rating"] = event_attrs["gen_ai.evaluation.score.value"]


class OtlpJsonSource(SignalSource):
    """OpenTelemetry traces in OTLP JSON: one ``ExportTraceServiceRequest`` per file, or one
    per line (the collector's file exporter). Spans without GenAI attributes are skipped."""

    name = "otlp"
    description = "OpenTelemetry GenAI spans exported as OTLP JSON (resourceSpans)"
    schemes = ("otlp", "json")

    def read(self, location: str, filters: SignalFilter) -> Rows:
        for path in _paths(location, self.schemes):
            for line, request in self._requests(path):
                if "resourceSpans" not in request:
                    raise UsageError("not an OTLP JSON trace export (no 'resourceSpans'); signal records "
                                     "go in .jsonl files", file=str(path), line=line, field="resourceSpans")
                for resource_spans in request.get("resourceSpans") or []:
                    resource = _attributes((resource_spans.get("resource") or {}).get("attributes"))
                    for scope in resource_spans.get("scopeSpans") or []:
                        for span in scope.get("spans") or []:
                            row = span_to_row(span, resource)
                            if row is not None:
                                where = f"{path} (span {span.get('spanId', '?')})"
                                yield RowRef(where, line), row

    @staticmethod
    def _requests(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
        text = path.read_text(encoding="utf-8")
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, dict):
            yield 1, whole
            return
        if whole is not None:
            raise UsageError("not an OTLP JSON trace export (expected an object with 'resourceSpans'); signal "
                             "records go in .jsonl files", file=str(path), line=1)
        from gatekeeper.files import read_jsonl

        yield from read_jsonl(path)


@hookimpl
def gatekeeper_register_signal_sources(register: Register[SignalSource]) -> None:
    for source in (JsonlSource, CsvSource, ParquetSource, SqlSource, OtlpJsonSource):
        register(source)
