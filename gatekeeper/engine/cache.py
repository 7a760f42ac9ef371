"""Content-addressed store of every generation and judge call (SQLite).

The key is a SHA-256 of the model's identity digest and the full request, so a cached
answer is reused only for exactly the same model and the same rendered request. Each
entry is committed as soon as the call returns — before it is scored — so a run killed
at any point resumes without calling the model again for what it already has.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from dataclasses import asdict
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


class Cache:
    """A SQLite file shared by runs (WAL mode: readers never block the writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
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
            row = self._db.execute("SELECT payload FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put_raw(self, key: str, payload: dict[str, Any], *, namespace: str, model_digest: str) -> None:
        self.put_many([(key, payload)], namespace=namespace, model_digest=model_digest)

    def put_many(
        self, entries: list[tuple[str, dict[str, Any]]], *, namespace: str, model_digest: str
    ) -> None:
        """Store several entries in one transaction (one fsync for a whole batch)."""
        now = time.time()
        rows = [
            (key, namespace, model_digest, now, json.dumps(payload, ensure_ascii=False, default=str))
            for key, payload in entries
        ]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO entries (key, namespace, model_digest, created, payload) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            self._db.execute("COMMIT")

    def get_generation(self, identity: ModelIdentity, request: GenerationRequest) -> Generation | None:
        payload = self.get_raw(generation_key(identity, request))
        if payload is None:
            return None
        gen = Generation(**payload)
        gen.cached = True
        return gen

    def put_generations(
        self, identity: ModelIdentity, pairs: list[tuple[GenerationRequest, Generation]]
    ) -> None:
        """Store successful generations. Failed ones are not stored, so they are retried."""
        entries = []
        for request, generation in pairs:
            if generation.error is None:
                payload = asdict(generation)
                payload["cached"] = False
                entries.append((generation_key(identity, request), payload))
        if entries:
            self.put_many(entries, namespace="generation", model_digest=identity.digest)

    def count(self, namespace: str | None = None) -> int:
        with self._lock:
            if namespace is None:
                return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
            return int(
                self._db.execute("SELECT COUNT(*) FROM entries WHERE namespace = ?", (namespace,))
                .fetchone()[0]
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
