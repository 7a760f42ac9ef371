"""File helpers plugins share: atomic writes (a killed process never leaves a half-written
file behind), a streamed SHA-256 of a file, and a JSONL reader whose errors name file and line."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gatekeeper.types import UsageError


def fsync_directory(directory: Path) -> None:
    """Make a new or renamed entry of ``directory`` durable (POSIX; a no-op elsewhere)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it and rename it over ``path``:
    readers see the old content or the new, never part of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


class _RowError(ValueError):
    """A JSON value that parses but is not data: a duplicate key, NaN or Infinity."""


def sha256_file(path: Path) -> str:
    """The SHA-256 (hex) of a file's bytes, read in 1 MiB chunks (a large file is never held whole)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in pairs:
        if key in row:
            raise _RowError(f"duplicate key {key!r} (JSON would silently keep only the last)")
        row[key] = value
    return row


def _no_constant(name: str) -> Any:
    raise _RowError(f"{name} is not a number gatekeeper accepts (not valid JSON)")


_STRICT = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def loads_strict(text: str) -> Any:
    """``json.loads`` that refuses duplicate keys and NaN/Infinity (ValueError), which
    Python's parser accepts silently: a row read twice must mean one thing."""
    return _STRICT.decode(text)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line, row)`` for each JSON object of a JSONL file; bad lines (invalid JSON,
    duplicate keys, NaN/Infinity, not UTF-8) name file:line."""
    for _, lineno, row in read_jsonl_at(path):
        yield lineno, row


def read_jsonl_at(path: Path) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """:func:`read_jsonl` with each row's byte offset: ``(offset, line, row)``."""
    with path.open("rb") as fh:
        offset = 0
        for lineno, raw in enumerate(fh, 1):
            start, offset = offset, offset + len(raw)
            row = parse_jsonl_line(raw, path, lineno)
            if row is not None:
                yield start, lineno, row


def parse_jsonl_line(raw: bytes, path: Path, lineno: int) -> dict[str, Any] | None:
    """One JSONL line as a row (``None`` for a blank line); a bad line names file:line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"not UTF-8 text ({exc.reason})", file=str(path), line=lineno) from None
    if not line.strip():
        return None
    try:
        row = loads_strict(line)
    except json.JSONDecodeError as exc:
        raise UsageError(f"invalid JSON: {exc.msg}", file=str(path), line=lineno) from None
    except _RowError as exc:
        raise UsageError(str(exc), file=str(path), line=lineno) from None
    except RecursionError:
        raise UsageError("JSON nested too deeply", file=str(path), line=lineno) from None
    if not isinstance(row, dict):
        raise UsageError("a row must be a JSON object", file=str(path), line=lineno)
    return row


def read_csv(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line, row)`` of a CSV file with a header, strictly: an unterminated quote
    (which would swallow the rest of the file into one field), a row with more or fewer
    fields than the header, a duplicate column and text that is not UTF-8 are errors
    naming file:line, never a silently shorter file. ``line`` is where the row starts."""
    start = 1
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, strict=True)
            header: list[str] | None = None
            for fields in reader:
                if header is None:
                    header = fields
                    dupes = sorted({h for h in header if header.count(h) > 1})
                    if dupes:
                        raise UsageError(f"duplicate column {dupes[0]!r}", file=str(path), line=1)
                elif fields:  # not a blank line
                    if len(fields) != len(header):
                        raise UsageError(
                            f"row has {len(fields)} fields, the header has {len(header)}",
                            file=str(path), line=start,
                        )
                    yield start, dict(zip(header, fields, strict=True))
                start = reader.line_num + 1
    except csv.Error as exc:
        raise UsageError(f"invalid CSV: {exc}", file=str(path), line=start) from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"not UTF-8 text ({exc.reason})", file=str(path), line=start) from None
