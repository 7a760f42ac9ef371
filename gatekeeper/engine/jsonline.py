"""One JSON line, written and read fast and exactly as the standard library would.

A run record's ``cases.jsonl`` has a line per result row: 2 × 10^6 rows for a million
cases. ``json.dumps`` takes ~25 µs for a bench row and ``json.loads`` ~28 µs; orjson takes
~2.5 µs and ~9 µs. But orjson does not mean the same thing in every case, and rows are
hashed as written and read back by ``json.loads`` elsewhere (older readers, auditors), so
each line is checked to parse to what ``json.dumps(obj, ensure_ascii=False, default=str)``
would have written, and falls back to it when it might not:

* orjson refuses what json handles: lone surrogates (json's text is encoded with
  ``surrogatepass``), non-``str`` keys, ints beyond 64 bits, and every other type (json
  writes ``str()`` of it) -- a ``TypeError``, then the standard library;
* orjson writes ``null`` for NaN and ±Infinity (json: ``NaN``, ``Infinity``) and an ``Enum``
  by value (json: ``str()``) without complaint: :func:`_same_as_json` checks, through
  ``marshal`` (C, ~5 µs a row), that the object holds only builtin types and no such float.

Reading: ``orjson.loads`` refuses NaN, ``Infinity``, invalid UTF-8 (the surrogates) and a
byte-order mark, and turns ints beyond 64 bits into floats silently; a line with a run of
19 digits, or one orjson refuses, is read by ``json.loads``.
"""

from __future__ import annotations

import json
import marshal
from typing import Any

try:
    import orjson
except ImportError:  # a core dependency; kept optional so a partial install still reads records
    orjson = None  # type: ignore[assignment]

_OPTIONS = 0 if orjson is None else (orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_DATACLASS
                                     | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS)
_DIGITS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
"""Maps every digit to ``0`` and everything else to a space (``bytes.translate``)."""
_LONG_NUMBER = b"0" * 19
"""19 digits in a row: possibly an int beyond 64 bits, which orjson reads as a float."""
_FLOAT_TYPES = (ord("g"), ord("g") | 0x80)
"""marshal's binary float, without and with its reference flag."""


def _refuse(obj: Any) -> Any:
    raise TypeError(f"not a JSON type: {type(obj).__name__}")


def dumps_line(obj: Any) -> bytes:
    """``obj`` as one UTF-8 JSON line (with its newline), as ``json.dumps(obj,
    ensure_ascii=False, default=str)`` parses: by orjson when that is exact, else by json."""
    if orjson is not None:
        try:
            data = orjson.dumps(obj, default=_refuse, option=_OPTIONS)
        except TypeError:
            pass
        else:
            if _same_as_json(obj):
                return data
    return (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode("utf-8", "surrogatepass")


def _same_as_json(obj: Any) -> bool:
    """True when ``obj`` holds only builtin JSON types (marshal refuses subclasses, enums and
    other objects) and no NaN or infinite float (orjson writes those as ``null``)."""
    try:
        packed = marshal.dumps(obj, 4)
    except ValueError:
        return False
    return not _has_nonfinite(packed)


def _has_nonfinite(packed: bytes) -> bool:
    """A NaN or infinity in marshal's output: a float type byte, then 8 little-endian bytes
    whose exponent bits are all set (the last byte 0x7f or 0xff, the one before >= 0xf0).
    Every non-finite float matches; the rare other match only costs the json path."""
    for high in (b"\x7f", b"\xff"):
        i = packed.find(high, 8)
        while i != -1:
            if packed[i - 1] >= 0xF0 and packed[i - 8] in _FLOAT_TYPES:
                return True
            i = packed.find(high, i + 1)
    return False


def loads_line(raw: bytes) -> Any:
    """One JSON line as ``json.loads`` reads it (raises its errors): by orjson unless the line
    may hold an int beyond 64 bits or orjson refuses it (NaN, surrogates)."""
    if orjson is not None and _LONG_NUMBER not in raw.translate(_DIGITS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)
