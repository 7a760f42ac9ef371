"""The tamper-evident audit trail: an append-only, hash-chained JSONL file.

Every record names the SHA-256 of the record before it, so editing, deleting,
reordering or inserting a record breaks the chain at a place :meth:`AuditLog.verify`
can point to. Appends take a file lock (``PATH.lock``) and fsync, so several processes
(parallel CI jobs, an approver on another terminal) can write one log safely.

A record, one per line, in canonical JSON::

    {"action": "check", "actor": "ci", "data": {...}, "hash": "<sha256>", "prev": "<sha256>",
     "refs": {"policy": "<sha256>"}, "seq": 1, "subject": "run-42", "time": "2025-01-01T00:00:00.000000Z"}

``hash`` is the SHA-256 of the record's canonical JSON without ``hash``; ``prev`` is the
``hash`` of the previous record (64 zeros for the first). docs/audit.md is the
auditor's description of the format and of the checks.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from gatekeeper.files import fsync_directory
from gatekeeper.types import GatekeeperError, UsageError, default_actor, utc_now

GENESIS_PREV = "0" * 64
"""The ``prev`` of the first record."""

MAX_RECORD_BYTES = 64 * 1024
"""The audit log holds references and small facts, never evidence itself."""

RECORD_FIELDS: dict[str, type] = {
    "seq": int,
    "time": str,
    "actor": str,
    "action": str,
    "subject": str,
    "refs": dict,
    "data": dict,
    "prev": str,
    "hash": str,
}
HISTORY_DATA_KEYS = ("alias", "model", "run_id", "run")
"""``data`` keys that :meth:`AuditLog.history` matches besides ``subject``."""

_ACTION_RE = re.compile(r"^[a-z][a-z0-9_.-]*$")
_REF_RE = re.compile(r"^(?:[a-z0-9]+:)?[0-9a-f]{16,128}$")
_SECRET_WORDS = frozenset(
    {
        "token",
        "password",
        "passwd",
        "passphrase",
        "secret",
        "authorization",
        "apikey",
        "bearer",
        "credential",
        "credentials",
        "cookie",
    }
)
_SECRET_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key")})


def canonical_json(obj: Any) -> str:
    """The one serialisation that is hashed: sorted keys, no whitespace, UTF-8 text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_digest(record: Mapping[str, Any]) -> str:
    """SHA-256 hex of ``record`` without its ``hash`` field: what ``hash`` must equal."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()






class AuditWriteError(GatekeeperError):
    """An append failed (full disk, I/O error); the log was rolled back to its previous length."""

    def __init__(self, message: str, *, file: str) -> None:
        super().__init__(f"{file}: {message}")
        self.file = file


# --------------------------------------------------------------------------- the secret guard


def _key_words(key: str) -> list[str]:
    """``"X-Api-Key"``, ``"apiKey"``, ``"api_key"`` → ``["x", "api", "key"]`` / ``["api", "key"]``."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def looks_like_secret(key: str) -> bool:
    """Whether a field name suggests it holds a credential (``access_token``, ``apiKey``...).

    Word-based so that harmless names such as ``max_tokens`` or ``key_id`` pass.
    """
    words = _key_words(key)
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def _secret_keys(value: Any, where: str) -> Iterator[str]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}"
            if looks_like_secret(str(key)):
                yield path
            yield from _secret_keys(item, path)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _secret_keys(item, f"{where}[{i}]")


def refuse_secrets(**fields: Any) -> None:
    """Raise ``ValueError`` when any (nested) key of the given mappings names a secret."""
    found = [path for name, value in fields.items() for path in _secret_keys(value, name)]
    if found:
        raise ValueError(
            f"refusing to write {', '.join(found)} to the audit log: the name looks like a secret "
            "(api key, token, password, authorization); record a hash or an id instead"
        )


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :meth:`AuditLog.verify`.

    ``count`` is the number of lines in the log; ``first_bad`` the 1-based line of the
    first record that breaks the chain (``None`` when ``ok``); ``reason`` says how.
    ``head`` is the ``hash`` of the last record of an intact log: note it down (or pass
    it back as ``anchor``) to detect a later truncation of the tail.
    """

    ok: bool
    count: int
    first_bad: int | None
    reason: str
    head: str | None = None


@dataclass
class _Line:
    number: int
    record: dict[str, Any] | None
    digest: str | None
    error: str


def _parse_lines(lines: list[str]) -> list[_Line]:
    parsed: list[_Line] = []
    last = len(lines)
    for number, text in enumerate(lines, start=1):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = " (the file was truncated or a write was cut off)" if number == last else ""
            parsed.append(_Line(number, None, None, f"not valid JSON: {exc.msg}{hint}"))
            continue
        problem = _schema_problem(record)
        if problem:
            parsed.append(_Line(number, None, None, problem))
            continue
        parsed.append(_Line(number, record, record_digest(record), ""))
    return parsed


def _schema_problem(record: Any) -> str:
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [name for name in RECORD_FIELDS if name not in record]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    extra = sorted(set(record) - set(RECORD_FIELDS))
    if extra:
        return f"unexpected field(s) {', '.join(extra)}"
    for name, kind in RECORD_FIELDS.items():
        value = record[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"field {name!r} is not a {kind.__name__}"
    return ""


class _ChainCheck:
    """Walks the parsed lines in order; the first problem found is the verdict."""

    def __init__(self, lines: list[_Line]) -> None:
        self.lines = lines
        self.line_of: dict[str, int] = {}
        for line in lines:
            if line.digest is not None:
                self.line_of.setdefault(line.digest, line.number)
        self.line_of.setdefault(GENESIS_PREV, 0)

    def first_problem(self) -> tuple[int, str] | None:
        for line in self.lines:
            problem = self._check(line)
            if problem:
                return problem
        return None

    def _check(self, line: _Line) -> tuple[int, str] | None:
        i = line.number
        if line.record is None:
            return i, line.error
        record = line.record
        if record["hash"] != line.digest:
            return i, (
                "hash mismatch: the record was edited after it was written "
                f"(stored {record['hash'][:12]}…, computed {str(line.digest)[:12]}…)"
            )
        if self.line_of[str(line.digest)] != i:
            return i, f"duplicate of line {self.line_of[str(line.digest)]}: a copied record was inserted"
        expected_prev = GENESIS_PREV if i == 1 else str(self.lines[i - 2].digest)
        if record["prev"] != expected_prev:
            return self._broken_link(line)
        previous_seq = 0 if i == 1 else self._seq(i - 1)
        if record["seq"] != previous_seq + 1:
            return i, (
                f"seq {record['seq']} follows seq {previous_seq}: "
                + ("a record was deleted" if record["seq"] > previous_seq + 1 else "seq out of order")
            )
        return None

    def _seq(self, number: int) -> int:
        record = self.lines[number - 1].record
        return int(record["seq"]) if record else 0

    def _links_to(self, number: int) -> int | None:
        """The line that line ``number`` names as its predecessor (0: genesis), if any."""
        if number > len(self.lines):
            return None
        record = self.lines[number - 1].record
        return self.line_of.get(record["prev"]) if record else None

    def _broken_link(self, line: _Line) -> tuple[int, str]:
        i = line.number
        assert line.record is not None
        target = self.line_of.get(line.record["prev"])
        if target is None:
            previous_seq = 0 if i == 1 else self._seq(i - 1)
            if line.record["seq"] > previous_seq + 1:
                gap = (
                    f"seq {previous_seq + 1}"
                    if line.record["seq"] == previous_seq + 2
                    else (f"seq {previous_seq + 1}..{line.record['seq'] - 1}")
                )
                return i, f"prev link broken: the record(s) with {gap} were deleted before this line"
            if i == 1:
                return i, "prev link broken: the first record's prev is not 64 zeros"
            return i, (
                f"prev link broken: prev does not match the hash of line {i - 1}: line {i - 1} was "
                "rewritten and its hash recomputed, or this record's prev was altered"
            )
        if target > i:
            return i, f"out of order: this record links to line {target}, which comes after it"
        # ``target`` < i - 1: lines target+1 .. i-1 and line i both claim ``target`` as their
        # predecessor. The branch the following line continues is the original one.
        if self._links_to(i + 1) == i - 1:
            return i, f"inserted record: it links to line {target} but line {i + 1} links to line {i - 1}"
        first = target + 1
        span = f"line {first} is" if first == i - 1 else f"lines {first}..{i - 1} are"
        origin = "the start of the log" if target == 0 else f"line {target}"
        return first, f"inserted record: {span} not part of the chain (line {i} links directly to {origin})"


# --------------------------------------------------------------------------- the log


class AuditLog:
    """An append-only, hash-chained JSONL log at ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock = FileLock(str(self.path) + ".lock")

    def append(
        self,
        action: str,
        *,
        actor: str | None = None,
        subject: str,
        refs: Mapping[str, str] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one record and return it (with its ``seq``, ``prev`` and ``hash``).

        :param action: what happened: ``check``, ``approve``, ``promote``, ``stage``,
            ``rollback``, ``policy_change``, ``tune`` ...
        :param actor: who did it; defaults to ``$GATEKEEPER_ACTOR``, else the OS user.
        :param subject: the run id or model alias it happened to.
        :param refs: name → SHA-256 hex of what the record refers to (policy, suites,
            datasets, model identities, decision).
        :param data: a few small JSON facts. Keys that look like secrets are refused.
        :raises ValueError: a bad argument, a secret-looking key, data that is not JSON
            or larger than :data:`MAX_RECORD_BYTES`.
        :raises UsageError: the log's last line is not a record (it must be repaired first).
        """
        record = self._new_record(action, actor=actor, subject=subject, refs=refs, data=data)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            created = not self.path.exists()
            last, ends_with_newline = self._last_record()
            record["seq"] = last["seq"] + 1 if last else 1
            record["prev"] = last["hash"] if last else GENESIS_PREV
            record["hash"] = record_digest(record)
            line = canonical_json(record) + "\n"
            if not ends_with_newline:
                line = "\n" + line
            self._write_or_roll_back(line.encode("utf-8"))
            if created:
                fsync_directory(self.path.parent)
        return record

    def _write_or_roll_back(self, data: bytes) -> None:
        """Append ``data`` durably, or leave the file as it was (a full disk must not tear a record).

        On any ``OSError`` (ENOSPC, EIO, a quota) the file is truncated back to its previous
        length and fsynced, so the chain stays verifiable and the next append can succeed.
        """
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            before = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            except OSError as exc:
                try:
                    os.ftruncate(fd, before)
                    os.fsync(fd)
                except OSError as again:
                    raise AuditWriteError(
                        f"could not append to the audit log ({exc.strerror or exc}) and could not roll the "
                        f"partial record back ({again.strerror or again}); run `gatekeeper audit repair` "
                        "once there is space", file=str(self.path)) from None
                raise AuditWriteError(
                    f"could not append to the audit log ({exc.strerror or exc}); the partial record was "
                    "rolled back and the trail is unchanged", file=str(self.path)) from None
        finally:
            os.close(fd)

    def head(self) -> dict[str, Any] | None:
        """``{"seq", "hash", "time"}`` of the last record (``None`` for an empty or missing log)."""
        with self.lock:
            last, _ = self._last_record()
        return {"seq": last["seq"], "hash": last["hash"], "time": last["time"]} if last else None

    def repair(self, *, actor: str | None = None) -> dict[str, Any] | None:
        """Cut a torn last line (a write cut off by a crash or a full disk) and record that in the log.

        Only the tail after the last complete record is removed; every complete record
        stays byte for byte. The removed bytes are kept in ``PATH.torn-<time>`` and their
        SHA-256 goes into an ``audit.repair`` record appended after the cut, so the repair is
        itself part of the chain. Returns that record, or ``None`` when the log ends cleanly.

        :raises UsageError: the damage is not a torn tail (an edited, removed or inserted
            record): that is tampering to investigate, not something to repair.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            if not self.path.is_file():
                return None
            raw = self.path.read_bytes()
            body = raw.rstrip(b"\n")
            cut = body.rfind(b"\n") + 1
            tail = body[cut:]
            if not tail:
                return None
            try:
                tail_record = json.loads(tail.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                tail_record = None
            if tail_record is not None and not _schema_problem(tail_record):
                cut = len(raw)  # a complete record (perhaps missing only its newline): keep it
            kept = raw[:cut]
            lines = _parse_lines(kept.decode("utf-8").splitlines())
            problem = _ChainCheck(lines).first_problem()
            if problem:
                raise UsageError(f"not a torn tail: line {problem[0]} {problem[1]}; restore the log from a "
                                 "copy instead (repair never rewrites complete records)", file=str(self.path),
                                 line=problem[0])
            removed = raw[cut:]
            if not removed and kept.endswith(b"\n"):
                return None
            if removed:
                stamp = utc_now().replace(":", "").replace(".", "")
                (self.path.parent / f"{self.path.name}.torn-{stamp}").write_bytes(removed)
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, cut)
                if cut and not kept.endswith(b"\n"):
                    os.lseek(fd, 0, os.SEEK_END)
                    os.write(fd, b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        return self.append("audit.repair", actor=actor, subject=self.path.name, refs={
            "removed": hashlib.sha256(removed).hexdigest()} if removed else {},
            data={"removed_bytes": len(removed), "after_seq": lines[-1].record["seq"] if lines and
                  lines[-1].record else 0})

    def _new_record(
        self,
        action: str,
        *,
        actor: str | None,
        subject: str,
        refs: Mapping[str, str] | None,
        data: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        if not isinstance(action, str) or not _ACTION_RE.match(action):
            raise ValueError(f"audit action {action!r} must be a lower-case word such as 'check'")
        if not isinstance(subject, str) or not subject:
            raise ValueError("an audit record needs a subject (a run id or a model alias)")
        refs = dict(refs or {})
        data = dict(data or {})
        refuse_secrets(refs=refs, data=data)
        for name, value in refs.items():
            if not isinstance(value, str) or not _REF_RE.match(value):
                raise ValueError(f"refs.{name} must be a hex digest (SHA-256), got {value!r}")
        record: dict[str, Any] = {
            "time": utc_now(),
            "actor": actor or default_actor(),
            "action": action,
            "subject": subject,
            "refs": refs,
            "data": data,
        }
        try:
            size = len(canonical_json(record).encode("utf-8"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"audit data must be plain JSON: {exc}") from None
        if size > MAX_RECORD_BYTES:
            raise ValueError(
                f"audit record is {size} bytes (limit {MAX_RECORD_BYTES}): store hashes, not evidence"
            )
        return record

    def _last_record(self) -> tuple[dict[str, Any] | None, bool]:
        """The last record and whether the file ends with a newline. Called under the lock."""
        text = _read_last_line(self.path)
        if text is None:
            return None, True
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            record = None
        if _schema_problem(record):
            raise UsageError(
                "the last line of the audit log is not a valid record, so nothing can be chained "
                "to it; if only the last write was cut off (a crash, a full disk) run `gatekeeper audit "
                "repair`, otherwise restore the log from a copy (`gatekeeper audit verify` says which)",
                file=str(self.path),
                line=len(self._lines()),
            )
        assert isinstance(record, dict)
        return record, text.endswith("\n")

    def _lines(self) -> list[str]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8", newline="\n") as handle:
            return [line.rstrip("\n") for line in handle]

    def records(self) -> list[dict[str, Any]]:
        """Every record, in order.

        :raises UsageError: a line is not a record (names the file and line).
        """
        out: list[dict[str, Any]] = []
        for line in _parse_lines(self._lines()):
            if line.record is None:
                raise UsageError(line.error, file=str(self.path), line=line.number)
            out.append(line.record)
        return out

    def verify(self, *, anchor: str | None = None) -> VerifyResult:
        """Check the whole chain; report the first line that breaks it and why.

        Detects an edited record (hash mismatch), a deleted one (broken ``prev`` link or a
        gap in ``seq``), reordered and inserted records and a truncated last line. Removing
        records from the *end* leaves a valid shorter chain: pass the ``head`` of an
        earlier verification as ``anchor`` to require that that record is still present.
        """
        lines = _parse_lines(self._lines())
        problem = _ChainCheck(lines).first_problem()
        if problem:
            line, reason = problem
            return VerifyResult(False, len(lines), line, reason)
        head = lines[-1].digest if lines else None
        if anchor and anchor.lower() not in {line.digest for line in lines}:
            return VerifyResult(
                False,
                len(lines),
                len(lines) + 1 if lines else 1,
                f"anchor {anchor[:12]}… is not in the log: records at or after it were removed",
            )
        return VerifyResult(True, len(lines), None, "", head)

    def history(self, subject_or_alias: str | None = None) -> list[dict[str, Any]]:
        """The records about one run or model alias, oldest first (all records for ``None``).

        A record matches when its ``subject`` equals the argument, or one of the ``data``
        fields ``alias``, ``model``, ``run_id``, ``run`` does.
        """
        if subject_or_alias is None:
            return self.records()
        return [r for r in self.records() if _is_about(r, subject_or_alias)]


def _is_about(record: Mapping[str, Any], name: str) -> bool:
    if record.get("subject") == name:
        return True
    data = record.get("data") or {}
    return any(data.get(key) == name for key in HISTORY_DATA_KEYS)


def _read_last_line(path: Path, block: int = 8192) -> str | None:
    """The last non-empty line of ``path``, with its newline if it has one.

    Reads backwards from the end so that appending stays cheap on a long log.
    """
    if not path.exists():
        return None
    with path.open("rb") as handle:
        position = handle.seek(0, os.SEEK_END)
        tail = b""
        while position > 0 and tail.rstrip(b"\n").count(b"\n") == 0:
            step = min(block, position)
            position -= step
            handle.seek(position)
            tail = handle.read(step) + tail
    last = tail[tail.rstrip(b"\n").rfind(b"\n") + 1 :]
    return last.decode("utf-8", errors="replace") if last.strip() else None


