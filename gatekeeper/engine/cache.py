"""Content-addressed store of every generation and judge call (SQLite).

The key is a SHA-256 of the model's identity digest and the full request, so a cached
answer is reused only for exactly the same model and the same rendered request. Each
entry is committed as soon as the call returns — before it is scored — so a run killed
at any point resumes without calling the model again for what it already has.

Writes may be deferred (``defer=True``) and committed together by :meth:`Cache.flush`:
the runner group-commits what arrived in one turn of its event loop (a model batch, or
answers of concurrent calls that completed together), so a kill loses at most that turn's
answers, never a committed one. Reads see deferred entries. A re-run looks its requests up
in bulk (:meth:`Cache.get_generations`: one query per 500 keys, not one per request).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

from gatekeeper.types import Generation, GenerationRequest, ModelIdentity, stable_hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    model_digest TEXT NOT NULL,
    created REAL NOT NULL,
    payload TEXT NOT NULL
)
"""


def quarantine(path: Path) -> Path:
    """Rename a corrupt cache (and its WAL files) to ``NAME.corrupt-TIMESTAMP``."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.replace(aside.with_name(aside.name + suffix))
    path.replace(aside)
    return aside


def generation_key(identity: ModelIdentity, request: GenerationRequest) -> str:
    return stable_hash({"model": identity.digest, "request": request.cache_payload()})


MAX_DEFERRED = 512
"""Deferred writes committed at once when this many are waiting (bounds what a kill loses)."""

_LOOKUP_CHUNK = 500
"""Keys per bulk SELECT (under SQLite's bound on host parameters)."""

_GENERATION_FIELDS = tuple(f.name for f in fields(Generation))


def _json_default(value: Any) -> Any:
    """What ``asdict`` + ``default=str`` made of a nested value: dataclasses as dicts, the rest as text."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)


def _generation_payload(generation: Generation) -> dict[str, Any]:
    """``asdict(generation)`` without its deep copy (the payload is serialised at once)."""
    payload = {name: getattr(generation, name) for name in _GENERATION_FIELDS}
    payload["cached"] = False
    return payload


class Cache:
    """A SQLite file shared by runs (WAL mode: readers never block the writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._deferred: dict[str, tuple[str, str, str, float, str]] = {}
        try:
            self._db = self._open(path)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):  # locked, read-only, ...: not corrupt
                raise
            # The cache is disposable (every entry can be asked again): a corrupt file is
            # moved aside, said so, and a fresh one started, instead of an internal error.
            aside = quarantine(path)
            print(f"warning: {path}: the cache is not a usable SQLite database ({exc}); "
                  f"moved it to {aside.name} and started an empty cache", file=sys.stderr)
            self._db = self._open(path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(SCHEMA)
            db.execute("SELECT key, payload FROM entries LIMIT 1").fetchall()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def get_raw(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            waiting = self._deferred.get(key)
            if waiting is not None:
                return dict(json.loads(waiting[4]))
            row = self._db.execute("SELECT payload FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The payloads of those ``keys`` that are stored (deferred ones included), by key."""
        found: dict[str, dict[str, Any]] = {}
        wanted = list(dict.fromkeys(keys))
        with self._lock:
            for key in wanted:
                waiting = self._deferred.get(key)
                if waiting is not None:
                    found[key] = json.loads(waiting[4])
            rest = [key for key in wanted if key not in found]
            for start in range(0, len(rest), _LOOKUP_CHUNK):
                chunk = rest[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, payload in self._db.execute(
                    f"SELECT key, payload FROM entries WHERE key IN ({marks})", chunk
                ):
                    found[key] = json.loads(payload)
        return found

    def put_raw(self, key: str, payload: dict[str, Any], *, namespace: str, model_digest: str) -> None:
        self.put_many([(key, payload)], namespace=namespace, model_digest=model_digest)

    def put_many(
        self, entries: list[tuple[str, dict[str, Any]]], *, namespace: str, model_digest: str,
        defer: bool = False,
    ) -> None:
        """Store several entries in one transaction (one commit for a whole batch).

        ``defer=True`` keeps them in memory until :meth:`flush` (or until
        :data:`MAX_DEFERRED` are waiting), so that several batches share one commit."""
        now = time.time()
        rows = [
            (key, namespace, model_digest, now,
             json.dumps(payload, ensure_ascii=False, default=_json_default))
            for key, payload in entries
        ]
        with self._lock:
            if defer:
                for row in rows:
                    self._deferred[row[0]] = row
                if len(self._deferred) < MAX_DEFERRED:
                    return
                rows = list(self._deferred.values())
            elif self._deferred:
                rows = [*self._deferred.values(), *rows]
            self._deferred = {}
            self._write(rows)

    def flush(self) -> None:
        """Commit the deferred writes (one transaction)."""
        with self._lock:
            rows, self._deferred = list(self._deferred.values()), {}
            if rows:
                self._write(rows)

    def _write(self, rows: list[tuple[str, str, str, float, str]]) -> None:
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO entries (key, namespace, model_digest, created, payload) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def get_generation(self, identity: ModelIdentity, request: GenerationRequest) -> Generation | None:
        payload = self.get_raw(generation_key(identity, request))
        if payload is None:
            return None
        gen = Generation(**payload)
        gen.cached = True
        return gen

    def get_generations(
        self, identity: ModelIdentity, requests: list[GenerationRequest], keys: list[str] | None = None
    ) -> list[Generation | None]:
        """:meth:`get_generation` for many requests at once (``keys``: their keys, if known)."""
        keys = keys if keys is not None else [generation_key(identity, r) for r in requests]
        found = self.get_many(keys)
        out: list[Generation | None] = []
        for key in keys:
            payload = found.get(key)
            if payload is None:
                out.append(None)
                continue
            gen = Generation(**payload)
            gen.cached = True
            out.append(gen)
        return out

    def put_generations(
        self, identity: ModelIdentity, pairs: list[tuple[GenerationRequest, Generation]], *,
        defer: bool = False, keys: list[str] | None = None,
    ) -> None:
        """Store successful generations (``keys``: their keys, if known). Failed ones are not
        stored, so they are retried."""
        if keys is None:
            keys = [generation_key(identity, request) for request, _ in pairs]
        entries = [
            (key, _generation_payload(generation))
            for key, (_, generation) in zip(keys, pairs, strict=True) if generation.error is None
        ]
        if entries:
            self.put_many(entries, namespace="generation", model_digest=identity.digest, defer=defer)

    def count(self, namespace: str | None = None) -> int:
        self.flush()
        with self._lock:
            if namespace is None:
                return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
            return int(
                self._db.execute("SELECT COUNT(*) FROM entries WHERE namespace = ?", (namespace,))
                .fetchone()[0]
            )

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()
