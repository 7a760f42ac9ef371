"""The run record on disk, format 2: a small record file plus per-case files, streamed.

A record used to be one JSON document holding every result row (``cases``) and every
case asked (``case_index``): 20,000 cases made an 87 MB ``decision.json`` that every
reader parsed whole, and one 6 MB output, repeated in each detector span, made 88 MB.
Format 2 keeps the decision, summaries and metric statistics in ``decision.json`` /
``results.json`` and writes, next to it:

``cases.jsonl``
    one result row per line, written as the rows are made (never all in one string);
``case_index.jsonl``
    one line per case asked: ``{"key": ..., <the case_index entry>}``;
``scores.npz``
    every score as columns, with each row's byte offset in ``cases.jsonl``
    (:mod:`gatekeeper.engine.score_columns`): what ``report`` and ``evidence`` read
    instead of parsing every row again (a record without it — written before it existed, or
    whose copy does not match its hash — is read from ``cases.jsonl`` as before);
``blobs/<sha256>.gz``
    an output, span text, span list or detail longer than ``record.max_inline_bytes``,
    stored once (gzip) under the SHA-256 of its UTF-8 text and referenced from the rows.

The record file names each of them with its SHA-256, size and row count
(``case_files``), so the hash the audit trail keeps for ``decision.json`` covers every
case: an edited case line no longer matches ``case_files`` (:func:`verify_files`).

Readers use :func:`load`, :func:`iter_cases`, :func:`case_index` and
:func:`score_rows` — never the files directly. In memory, ``record["cases"]`` and
``record["case_index"]`` stay readable as lazy views (:class:`CaseRows`,
:class:`CaseIndex`), so hooks and plugins written for the inline layout keep working;
:func:`stored_body` is what is hashed and written. An older record (format 1, inline)
is read as it is; a newer one is refused with the version it needs (exit 4).
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import shutil
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, overload

from gatekeeper.engine.jsonline import dumps_line, loads_line
from gatekeeper.types import UsageError

if TYPE_CHECKING:  # numpy is imported by the score columns, not by `--help`'s import of this module
    import numpy as np

    from gatekeeper.engine.score_columns import ScoreColumns

    Offsets = Sequence[int] | np.ndarray
    """Each row's byte offset in ``cases.jsonl`` (a list while writing, an array once saved)."""

RECORD_FORMAT = 2
"""The newest record format this version writes and reads (1: inline ``cases``)."""
FORMAT_KEY = "record_format"
FILES_KEY = "case_files"
CASES_FILE = "cases.jsonl"
INDEX_FILE = "case_index.jsonl"
SCORES_FILE = "scores.npz"
BLOB_DIR = "blobs"
PER_CASE_NAMES = (CASES_FILE, INDEX_FILE, SCORES_FILE, BLOB_DIR)
"""What a format-2 record keeps beside it (removed with the previous record)."""
HASHED_FILES = ("cases", "case_index", "scores")
"""The ``case_files`` entries that name one file each (``blobs`` names many)."""
DEFAULT_MAX_INLINE_BYTES = 65_536
IN_MEMORY_KEYS = ("attestations", "_written")
"""Keys handed to reporters beside the record and never stored (see gate.attestations)."""
LIVE_KEYS = ("cases", "case_index")
"""Format 2: in memory only (views over the per-case files)."""


class RecordVersionError(UsageError):
    """The record was written by a newer gatekeeper (exit 4, names the version needed)."""


class RecordFilesError(UsageError):
    """A per-case file named by the record is missing or unreadable (exit 4)."""


def record_format(record: Mapping[str, Any]) -> int:
    value = record.get(FORMAT_KEY, 1)
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def require_known(record: Mapping[str, Any], where: str | Path | None = None) -> None:
    """Refuse a record newer than :data:`RECORD_FORMAT`, saying which version it needs."""
    found = record.get(FORMAT_KEY, 1)
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise RecordVersionError(f"{FORMAT_KEY} {found!r} is not a record format", file=str(where) if where else None,
                                 field=FORMAT_KEY)
    if found > RECORD_FORMAT:
        raise RecordVersionError(
            f"this record has {FORMAT_KEY} {found}, this gatekeeper reads formats 1 to {RECORD_FORMAT}: "
            f"read it with a gatekeeper that supports record format {found} (upgrade llm-gatekeeper)",
            file=str(where) if where else None, field=FORMAT_KEY)


# --------------------------------------------------------------------------- hashing, blobs




class BlobStore:
    """Texts longer than ``max_inline_bytes`` stored once under ``directory/blobs/<sha256>.gz``.

    The name is the SHA-256 of the UTF-8 text (what the record and a reader compare), the
    file its gzip (``mtime`` 0, so the same text always makes the same file): a long
    output, or a detector's 600,000 word spans, is mostly repetition.
    """

    def __init__(self, directory: Path, max_inline_bytes: int = DEFAULT_MAX_INLINE_BYTES) -> None:
        self.directory = directory
        self.max_inline_bytes = max_inline_bytes
        self.entries: dict[str, dict[str, Any]] = {}

    def needed(self, text: str) -> bool:
        # characters ≤ bytes ≤ 4 × characters: only encode the texts that may be too long
        limit = self.max_inline_bytes
        return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit

    def store(self, text: str) -> dict[str, Any]:
        """Write ``text`` (once) and return its reference ``{"sha256", "bytes", "chars", "path"}``."""
        data = text.encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(data).hexdigest()
        rel = f"{BLOB_DIR}/{digest}.gz"
        if digest not in self.entries:
            path = self.directory / rel
            packed = gzip.compress(data, compresslevel=6, mtime=0)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{digest}.tmp")
            tmp.write_bytes(packed)
            os.replace(tmp, path)
            self.entries[digest] = {"path": rel, "bytes": len(data), "stored_bytes": len(packed)}
        return {"sha256": digest, "bytes": len(data), "chars": len(text), "path": rel}


def read_blob(record: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    """The full text a row references (``output_truncated`` / a span's ``text_blob``)."""
    directory = record_dir(record)
    if directory is None or not ref.get("path"):
        raise RecordFilesError("this record keeps no blob for that text (it was written without blobs)")
    path = directory / str(ref["path"])
    try:
        data = path.read_bytes()
        return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8", "surrogatepass")
    except (OSError, EOFError, zlib.error) as exc:
        raise RecordFilesError(f"blob missing or unreadable ({exc})", file=str(path)) from None


def content_sha256(path: Path, fh: IO[bytes] | None = None) -> str:
    """SHA-256 of a per-case file's content: of the text inside a ``.gz`` blob, of the bytes
    otherwise (``fh`` reads it from elsewhere, e.g. a zip member). An unreadable gzip
    hashes to ``"unreadable"``, which matches nothing."""
    digest = hashlib.sha256()
    source = fh if fh is not None else path.open("rb")
    try:
        with source:
            stream: BinaryIO = gzip.GzipFile(fileobj=source) if path.suffix == ".gz" else source  # type: ignore[assignment]
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):
        return "unreadable"
    return digest.hexdigest()


_HASHED: dict[tuple[str, int, int, int, int], str] = {}
"""(path, inode, size, mtime, ctime) → content SHA-256 of the files this process has hashed:
the readers check a record's files once (a million-case ``cases.jsonl`` is gigabytes), not
once per reader."""


def file_sha256(path: Path) -> str:
    """:func:`content_sha256` of a file on disk, hashed once per process while it is unchanged
    (same inode, size and modification and change times)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    found = _HASHED.get(key)
    if found is None:
        found = content_sha256(path)
        if len(_HASHED) > 10_000:
            _HASHED.clear()
        _HASHED[key] = found
    return found


# --------------------------------------------------------------------------- writing


class _HashedLines:
    """A JSONL file written line by line, hashed and counted as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.fh = self.tmp.open("wb")
        self.digest = hashlib.sha256()
        self.rows = 0
        self.bytes = 0

    def write(self, obj: Mapping[str, Any]) -> int:
        """Append ``obj`` as one line; returns the line's byte offset."""
        offset = self.bytes
        data = dumps_line(obj)  # orjson where exact, else json.dumps(ensure_ascii=False, default=str)
        self.fh.write(data)
        self.digest.update(data)
        self.rows += 1
        self.bytes += len(data)
        return offset

    def close(self) -> dict[str, Any]:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.tmp, self.path)
        return {"path": self.path.name, "sha256": self.digest.hexdigest(), "rows": self.rows, "bytes": self.bytes}

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


class CaseWriter:
    """Writes a format-2 record's per-case files into ``directory`` incrementally.

    ``add_row`` each result row as it is made (the row goes to disk, its scores to the
    :class:`~gatekeeper.engine.score_columns.ColumnsBuilder` the statistics read),
    ``write_index`` the cases asked, then ``close`` writes the score columns
    (``scores.npz``) and returns the ``case_files`` entry the record file keeps.
    """

    def __init__(self, directory: Path, max_inline_bytes: int = DEFAULT_MAX_INLINE_BYTES) -> None:
        self.directory = directory
        self.blobs = BlobStore(directory, max_inline_bytes)
        from gatekeeper.engine.score_columns import ColumnsBuilder

        self.scores = ColumnsBuilder()
        self.columns: ScoreColumns | None = None
        """The built columns, once :meth:`close` has run."""
        self.offsets: list[int] = []
        self._cases = _HashedLines(directory / CASES_FILE)
        self._index: dict[str, Any] | None = None
        self._index_data: dict[str, dict[str, Any]] | None = None
        self._index_offsets: dict[str, int] | None = None
        self._index_fields: dict[str, tuple[Any, ...]] | None = None

    def add_row(self, row: Mapping[str, Any]) -> None:
        self.offsets.append(self._cases.write(row))
        self.scores.add(row)

    def write_index(self, index: Mapping[str, Mapping[str, Any]] | Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """The cases asked, key → entry (a mapping, or pairs streamed one case at a time). Up
        to :data:`INDEX_IN_MEMORY` entries stay in memory for the readers; beyond, only where
        each entry is and what the gate groups by (:meth:`CaseIndex.fields`)."""
        lines = _HashedLines(self.directory / INDEX_FILE)
        data: dict[str, dict[str, Any]] | None = {}
        offsets: dict[str, int] = {}
        fields: dict[str, tuple[Any, ...]] = {}
        try:
            for key, entry in (index.items() if isinstance(index, Mapping) else index):
                offsets[key] = lines.write({"key": key, **entry})
                fields[key] = _fields_of(entry)
                if data is not None:
                    data[key] = dict(entry)
                    if len(data) > INDEX_IN_MEMORY:
                        data = None
        except BaseException:
            lines.abort()
            raise
        self._index = lines.close()
        self._index_data, self._index_offsets, self._index_fields = data, offsets, fields

    def close(self) -> dict[str, Any]:
        if self._index is None:
            self.write_index({})
        cases = self._cases.close()
        files = {"cases": cases, "case_index": self._index, "scores": self._write_scores(cases["rows"]),
                 "blobs": dict(sorted(self.blobs.entries.items()))}
        return files

    def _write_scores(self, rows: int) -> dict[str, Any]:
        from gatekeeper.engine import score_columns

        self.columns = self.scores.build()
        path = self.directory / SCORES_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        score_columns.save(self.columns, self.offsets, self._index_offsets or {}, tmp)
        os.replace(tmp, path)
        return {"path": SCORES_FILE, "sha256": content_sha256(path), "rows": rows, "bytes": path.stat().st_size}

    def abort(self) -> None:
        self._cases.abort()

    def attach(self, record: dict[str, Any]) -> dict[str, Any]:
        """Close the files and make ``record`` a format-2 record over them (views in memory)."""
        files = self.close()
        record[FORMAT_KEY] = RECORD_FORMAT
        record[FILES_KEY] = files
        location = _Location(self.directory)
        record["cases"] = CaseRows(location, files["cases"], files["scores"], columns=self.columns,
                                   offsets=self.offsets)
        record["case_index"] = CaseIndex(location, files["case_index"], data=self._index_data,
                                         offsets=self._index_offsets, fields=self._index_fields)
        return record


def externalize(record: dict[str, Any], directory: Path, max_inline_bytes: int = DEFAULT_MAX_INLINE_BYTES) -> None:
    """Write an in-memory format-2 record whose ``cases`` are still an inline list to
    per-case files in ``directory`` (the pytest plugin's merged record does this)."""
    writer = CaseWriter(directory, max_inline_bytes)
    try:
        for row in record.get("cases") or []:
            writer.add_row(row)
        writer.write_index(record.get("case_index") or {})
    except BaseException:
        writer.abort()
        raise
    writer.attach(record)


def is_inline(record: Mapping[str, Any]) -> bool:
    """True when the rows are a plain list in the record (format 1, or format 2 not yet written)."""
    return not isinstance(record.get("cases"), CaseRows)


def stored_body(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as written to ``decision.json``/``results.json`` and as hashed: without the
    in-memory keys and, in format 2, without the views over the per-case files."""
    drop = set(IN_MEMORY_KEYS)
    if record_format(record) >= 2:
        drop.update(LIVE_KEYS)
    return {k: v for k, v in record.items() if k not in drop}


def write_record_file(record: dict[str, Any], out_dir: Path) -> Path:
    """Write ``record`` into ``out_dir`` (the JSON reporter): its per-case files first (written,
    or copied when the record was read from another directory), then the record file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if record_format(record) >= 2:
        if is_inline(record):
            externalize(record, out_dir)
        else:
            source = record_dir(record)
            if source is not None and source.resolve() != out_dir.resolve():
                copy_files(record, source, out_dir)
    path = out_dir / ("decision.json" if record.get("kind") == "check" else "results.json")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stored_body(record), indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def copy_files(record: Mapping[str, Any], source: Path, target: Path) -> None:
    for rel in file_paths(record):
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, target / rel)


def file_paths(record: Mapping[str, Any]) -> list[str]:
    """The per-case files of a format-2 record, relative to its directory (blobs last)."""
    files = record.get(FILES_KEY) or {}
    if record_format(record) < 2 or not isinstance(files, dict):
        return []
    out = [str(files[k]["path"]) for k in HASHED_FILES if isinstance(files.get(k), dict)]
    out += [str(b["path"]) for b in (files.get("blobs") or {}).values() if isinstance(b, dict)]
    return out


def expected_hashes(record: Mapping[str, Any]) -> dict[str, str]:
    """Relative path → SHA-256 that the record file vouches for (empty for format 1)."""
    files = record.get(FILES_KEY) or {}
    if record_format(record) < 2 or not isinstance(files, dict):
        return {}
    out = {str(files[k]["path"]): str(files[k]["sha256"]) for k in HASHED_FILES if isinstance(files.get(k), dict)}
    out.update({str(b["path"]): sha for sha, b in (files.get("blobs") or {}).items() if isinstance(b, dict)})
    return out


def verify_files(record: Mapping[str, Any], directory: Path | None = None) -> list[str]:
    """Problems with the per-case files against the hashes the record file holds (none: intact)."""
    directory = directory or record_dir(record)
    expected = expected_hashes(record)
    if not expected:
        return []
    if directory is None:
        return ["the per-case files cannot be checked: the record's directory is not known"]
    problems = []
    for rel, sha in expected.items():
        path = directory / rel
        if not path.is_file():
            problems.append(f"{rel} is missing (the record names it with sha256 {sha[:12]}…)")
            continue
        found = file_sha256(path)
        if found != sha:
            problems.append(f"{rel} was changed after the record was written: it hashes to {found[:12]}…, "
                            f"the record holds {sha[:12]}…")
    return problems


# --------------------------------------------------------------------------- reading


class _Location:
    """Where a record's per-case files are now (shared by its views; moved by :func:`relocate`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory


class CaseRows(Sequence[dict[str, Any]]):
    """``record["cases"]`` of a format-2 record: a sequence streamed from ``cases.jsonl``.

    Iterating reads one line at a time; ``len`` comes from the record; indexing streams
    to the row. ``columns`` holds the run's :class:`ScoreColumns` when the rows were just
    written (the check uses them instead of re-reading the file); a reader loads them from
    ``scores`` (the record's ``scores.npz`` entry) when that file matches its hash.
    """

    def __init__(self, location: _Location, entry: Mapping[str, Any], scores: Mapping[str, Any] | None = None,
                 columns: ScoreColumns | None = None, offsets: Offsets | None = None) -> None:
        self._location = location
        self.entry = dict(entry)
        self.scores = dict(scores) if isinstance(scores, Mapping) else None
        self.columns = columns
        self.offsets = offsets

    def read_index(self) -> ScoreColumns:
        """The score columns and line offsets: from ``scores.npz`` when it is the file the record
        names, else read from ``cases.jsonl`` in one pass (kept: later calls are free)."""
        if (self.columns is None or self.offsets is None) and self.scores is not None:
            self.columns, self.offsets = self._stored_index(self.scores)
        if self.columns is None or self.offsets is None:
            from gatekeeper.engine.score_columns import ColumnsBuilder

            builder = ColumnsBuilder()
            offsets: list[int] = []
            for offset, row in _read_lines_at(self.path):
                offsets.append(offset)
                builder.add(row)
            self.columns, self.offsets = builder.build(), offsets
        return self.columns

    def _stored_index(self, entry: Mapping[str, Any]) -> tuple[ScoreColumns | None, Offsets | None]:
        """The columns saved beside the rows, or ``(None, None)`` when they or the rows are not
        the files the record hashed (``verify_files`` reports which), or they do not load."""
        from gatekeeper.engine import score_columns

        path = _saved_index(self._location, entry, self.entry)
        try:
            return score_columns.load(path, len(self)) if path else (None, None)
        except score_columns.NotAnIndex:
            return None, None

    def rows_at(self, positions: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Whole rows by position, read by seeking to their lines (not by reading the file)."""
        self.read_index()
        assert self.offsets is not None
        out: dict[int, dict[str, Any]] = {}
        with self.path.open("rb") as fh:
            for i in sorted(set(positions)):
                fh.seek(self.offsets[i])
                out[i] = _parse(fh.readline(), self.path, i + 1)
        return out

    @property
    def path(self) -> Path:
        return self._location.directory / str(self.entry["path"])

    def __len__(self) -> int:
        return int(self.entry.get("rows") or 0)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from _read_lines(self.path)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return list(self)[index]
        n = len(self)
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(index)
        return next(itertools.islice(iter(self), i, None))

    def __repr__(self) -> str:
        return f"CaseRows({self.path}, {len(self)} rows)"


def _saved_index(location: _Location, scores: Mapping[str, Any], *indexed: Mapping[str, Any]) -> Path | None:
    """The path of ``scores.npz`` when it and the ``indexed`` files (their ``case_files``
    entries) are the files the record hashed; else None (the readers parse the files)."""
    path = location.directory / str(scores.get("path") or SCORES_FILE)
    for entry in (scores, *indexed):
        file = location.directory / str(entry.get("path"))
        if not file.is_file() or file_sha256(file) != entry.get("sha256"):
            return None
    return path


INDEX_IN_MEMORY = 100_000
"""Case-index entries a reader holds in memory (each has the rendered prompt: ~1.5 KB); a
larger index is read by seeking to the entries asked for."""

_SHARED_SLICES: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}


def _fields_of(entry: Mapping[str, Any]) -> tuple[Any, ...]:
    """``(suite, slices, cluster)`` of an index entry; equal slice dicts are one shared object
    (a million cases have a few dozen distinct slice values). Read-only."""
    slices = entry.get("slices") or {}
    shared = _SHARED_SLICES.setdefault(tuple(slices.items()), dict(slices))
    if len(_SHARED_SLICES) > 100_000:
        _SHARED_SLICES.clear()
    return entry.get("suite"), shared, entry.get("cluster")


class CaseIndex(Mapping[str, dict[str, Any]]):
    """``record["case_index"]`` of a format-2 record, over ``case_index.jsonl``: loaded on
    first use when it has up to :data:`INDEX_IN_MEMORY` entries; a larger one keeps only where
    each entry is (entries are read by seeking) and :meth:`fields`."""

    def __init__(self, location: _Location, entry: Mapping[str, Any],
                 data: dict[str, dict[str, Any]] | None = None, offsets: dict[str, int] | None = None,
                 fields: dict[str, tuple[Any, ...]] | None = None, scores: Mapping[str, Any] | None = None) -> None:
        self._location = location
        self.entry = dict(entry)
        self.scores = dict(scores) if isinstance(scores, Mapping) else None
        """The record's ``scores.npz`` entry: where each entry is, saved (read instead of scanning)."""
        self._data = data
        self._offsets = offsets
        self._fields = fields

    @property
    def path(self) -> Path:
        return self._location.directory / str(self.entry["path"])

    def _loaded(self) -> dict[str, dict[str, Any]] | None:
        """The whole index when it is small (read once); None for a large one."""
        if self._data is None and self._offsets is None:
            if int(self.entry.get("rows") or 0) > INDEX_IN_MEMORY:
                self._offsets = self._saved_offsets()
                if self._offsets is None:
                    self._scan()
                return None
            data = {}
            for row in _read_lines(self.path):
                key = row.pop("key")
                data[str(key)] = row
            self._data = data
        return self._data

    def _saved_offsets(self) -> dict[str, int] | None:
        from gatekeeper.engine import score_columns

        path = _saved_index(self._location, self.scores, self.entry) if self.scores else None
        try:
            return score_columns.load_case_offsets(path, int(self.entry.get("rows") or 0)) if path else None
        except score_columns.NotAnIndex:
            return None

    def _scan(self) -> None:
        offsets: dict[str, int] = {}
        fields: dict[str, tuple[Any, ...]] = {}
        for offset, row in _read_lines_at(self.path):
            key = str(row["key"])
            offsets[key] = offset
            fields[key] = _fields_of(row)
        self._offsets, self._fields = offsets, fields

    def fields(self) -> dict[str, tuple[Any, ...]]:
        """key → ``(suite, slices, cluster)`` of every case: what the gate groups and pairs by."""
        if self._fields is None:
            data = self._loaded()
            if data is not None:
                self._fields = {key: _fields_of(entry) for key, entry in data.items()}
            elif self._fields is None:  # where each entry is came from scores.npz: the fields did not
                self._scan()
        assert self._fields is not None
        return self._fields

    def __getitem__(self, key: str) -> dict[str, Any]:
        data = self._data if self._data is not None else self._loaded()
        if data is not None:
            return data[key]
        assert self._offsets is not None
        offset = self._offsets[key]  # KeyError for a key not in the index, as a dict
        with self.path.open("rb") as fh:
            fh.seek(offset)
            row = _parse(fh.readline(), self.path, 0)
        row.pop("key", None)
        return row

    def __iter__(self) -> Iterator[str]:
        data = self._data if self._data is not None else self._loaded()
        return iter(data if data is not None else self._offsets or {})

    def __len__(self) -> int:
        if self._data is not None:
            return len(self._data)
        if self._offsets is not None:
            return len(self._offsets)
        return int(self.entry.get("rows") or 0)

    def __repr__(self) -> str:
        return f"CaseIndex({self.path}, {len(self)} cases)"


def _read_lines(path: Path) -> Iterator[dict[str, Any]]:
    for _, row in _read_lines_at(path):
        yield row


def _read_lines_at(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise RecordFilesError(f"per-case file missing or unreadable ({exc.strerror or exc})",
                               file=str(path)) from None
    offset = 0
    with fh:
        for lineno, raw in enumerate(fh, 1):
            yield offset, _parse(raw, path, lineno)
            offset += len(raw)


def _parse(raw: bytes, path: Path, lineno: int) -> dict[str, Any]:
    try:
        row = loads_line(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordFilesError(f"not a JSON row ({exc})", file=str(path), line=lineno) from None
    if not isinstance(row, dict):
        raise RecordFilesError("not a JSON object", file=str(path), line=lineno)
    return row


def attach(record: dict[str, Any], directory: Path, where: str | Path | None = None) -> dict[str, Any]:
    """Check the format of a record read from ``directory`` and, in format 2, put the lazy
    views over its per-case files under ``cases`` / ``case_index``."""
    require_known(record, where or directory)
    if record_format(record) < 2:
        return record
    files = record.get(FILES_KEY)
    if not isinstance(files, dict) or not isinstance(files.get("cases"), dict):
        raise RecordFilesError(f"a format-{record_format(record)} record without {FILES_KEY}.cases",
                               file=str(where or directory), field=FILES_KEY)
    location = _Location(directory)
    record["cases"] = CaseRows(location, files["cases"], files.get("scores"))
    record["case_index"] = CaseIndex(location, files.get("case_index") or {"path": INDEX_FILE, "rows": 0},
                                     scores=files.get("scores"))
    return record


def load(path: Path) -> dict[str, Any]:
    """Read ``decision.json`` / ``results.json`` (or the run directory holding one) for streaming."""
    path = Path(path)
    if path.is_dir():
        for name in ("decision.json", "results.json"):
            if (path / name).is_file():
                path = path / name
                break
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the record ({exc.strerror or exc})", file=str(path)) from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"invalid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
    if not isinstance(record, dict):
        raise UsageError("not a JSON object", file=str(path))
    return attach(record, path.parent, path)


def record_dir(record: Mapping[str, Any]) -> Path | None:
    """The directory of a format-2 record's per-case files (``None``: inline or unknown)."""
    rows = record.get("cases")
    return rows._location.directory if isinstance(rows, CaseRows) else None


def relocate(record: Mapping[str, Any], directory: Path) -> None:
    """The per-case files moved (staging → out): point the record's views there."""
    rows = record.get("cases")
    if isinstance(rows, CaseRows):
        rows._location.directory = directory


def iter_cases(record: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every result row, streamed (format 2) or from the inline list (format 1)."""
    yield from record.get("cases") or []


def case_count(record: Mapping[str, Any]) -> int:
    return len(record.get("cases") or [])


def case_index(record: Mapping[str, Any]) -> Mapping[str, dict[str, Any]]:
    """Case key → what was asked (suite, id, messages, slices, cluster, ...)."""
    return record.get("case_index") or {}


def score_columns(record: Mapping[str, Any]) -> ScoreColumns:
    """Every score of the run as columns (kept from writing, else read once from the file;
    an inline format-1 record's from its list, kept while that list is the record's)."""
    from gatekeeper.engine.score_columns import columns_of

    rows = record.get("cases")
    if isinstance(rows, CaseRows):
        return rows.read_index()
    cached = _INLINE_COLUMNS.get(id(rows))
    if cached is None or cached[0] is not rows or cached[1] != len(rows or []):
        cached = (rows, len(rows or []), columns_of(list(rows or [])))
        _INLINE_COLUMNS.clear()  # one inline record at a time: no growth across renders
        _INLINE_COLUMNS[id(rows)] = cached
    return cached[2]


_INLINE_COLUMNS: dict[int, tuple[Any, int, ScoreColumns]] = {}


def score_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every row as a slim score row (:meth:`ScoreColumns.row` value, passed, status; the reason only of scores
    without a value), made from :func:`score_columns`. New readers should use the columns."""
    return list(score_columns(record).rows())


def rows_at(record: Mapping[str, Any], positions: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Whole rows by their position (a score row's ``i``): seeks in ``cases.jsonl``, or indexes
    the inline list. Reports fetch the few outputs they show this way."""
    rows = record.get("cases")
    if isinstance(rows, CaseRows):
        return rows.rows_at(positions)
    listed = list(rows or [])
    return {i: listed[i] for i in set(positions)}


def full_output(record: Mapping[str, Any], row: Mapping[str, Any]) -> str:
    """A row's whole output: inline, or from its blob when it was longer than the inline limit."""
    cut = row.get("output_truncated")
    if isinstance(cut, dict) and cut.get("path"):
        return read_blob(record, cut)
    return str(row.get("output") or "")


def materialized(record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with ``cases`` as a list and ``case_index`` as a dict (tests, small records)."""
    return {**record, "cases": list(iter_cases(record)), "case_index": dict(case_index(record))}
