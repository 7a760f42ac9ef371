"""Safe YAML loading that remembers where each value came from.

:func:`load` returns the data and a :class:`Locator`; :func:`validate` turns a pydantic
``ValidationError`` into a :class:`UsageError` naming ``file:line`` and the field path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gatekeeper.types import UsageError

M = TypeVar("M", bound=BaseModel)

# libyaml's parser when PyYAML was built with it (the wheels are): the same safe
# constructor, many times faster on suites with thousands of inline cases.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Locator:
    """Maps a field path such as ``("cases", 3, "id")`` to a 1-based line number."""

    def __init__(self, root: yaml.Node | None, offset: int = 0) -> None:
        self.root = root
        self.offset = offset

    def line(self, path: tuple[Any, ...]) -> int | None:
        line = self._line(path)
        return None if line is None else line + self.offset

    def _line(self, path: tuple[Any, ...]) -> int | None:
        node = self.root
        if node is None:
            return None
        best = node.start_mark.line + 1
        for part in path:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        # A missing or wrong value is best pointed at by its key's line.
                        best = key.start_mark.line + 1
                        child = value
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                child = node.value[part]
                best = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return best


MAX_DOCUMENT_BYTES = 32 * 1024 * 1024
"""The largest YAML file read (a suite with thousands of inline cases is a few MB)."""

MAX_EXPANDED_NODES = 2_000_000
"""The most nodes a document may have once its aliases are expanded: ``billion laughs``
(a few lines of nested aliases that expand to gigabytes) is refused before anything
walks the expanded data, instead of running for minutes at gigabytes of memory."""


def load(path: Path) -> tuple[Any, Locator]:
    """Parse ``path`` with the safe loader. Raises UsageError with the line on bad YAML,
    on duplicate keys, on text that is not UTF-8, and on documents too large to be data."""
    try:
        size = path.stat().st_size
        if size > MAX_DOCUMENT_BYTES:
            raise UsageError(
                f"file is {size} bytes; YAML files are limited to {MAX_DOCUMENT_BYTES} bytes",
                file=str(path),
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    return load_text(decode(raw, path), path)


def decode(raw: bytes, path: Path | str) -> str:
    """``raw`` as UTF-8 text, or a UsageError naming the line of the first invalid byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UsageError(
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})", file=str(path), line=line
        ) from None


def load_text(text: str, path: Path, *, first_line: int = 1) -> tuple[Any, Locator]:
    """Parse YAML ``text`` read from ``path`` (``first_line``: where it starts in the file,
    for front matter); the checks of :func:`load`."""
    offset = first_line - 1
    try:
        # One parse: the node tree locates fields, and the data is constructed from it.
        node = yaml.compose(text, Loader=_SafeLoader)
    except yaml.YAMLError as fast_error:
        # Bad YAML is rare: parse it again in pure Python, whose messages and lines point
        # at the offending line (libyaml's often at the end of the file).
        try:
            yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            raise _invalid(exc, path, offset) from None
        raise _invalid(fast_error, path, offset) from None
    if node is not None:
        _check_tree(node, path, offset)
    try:
        data = None if node is None else _SafeLoader("").construct_document(node)
    except yaml.YAMLError as exc:
        raise _invalid(exc, path, offset) from None
    except RecursionError:
        raise UsageError("YAML nested too deeply", file=str(path)) from None
    return data, Locator(node, offset)


def _check_tree(root: yaml.Node, path: Path, offset: int) -> None:
    """Refuse duplicate mapping keys (both lines named), recursive aliases, and documents
    whose alias expansion exceeds :data:`MAX_EXPANDED_NODES`. Each distinct node is visited
    once (aliases share nodes), so the check costs what the file's text does."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    # Iterative post-order walk: deep nesting must not hit Python's recursion limit.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            children = _children(node)
            total = 1 + sum(sizes[id(c)] for c in children)
            if total > MAX_EXPANDED_NODES:
                raise UsageError(
                    f"YAML aliases expand to more than {MAX_EXPANDED_NODES} values "
                    "(an alias bomb?); write the data out or split the file",
                    file=str(path), line=node.start_mark.line + 1 + offset,
                )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in active:
            raise UsageError(
                "recursive YAML alias", file=str(path), line=node.start_mark.line + 1 + offset
            )
        active.add(key)
        if isinstance(node, yaml.MappingNode):
            _check_duplicate_keys(node, path, offset)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in active:
                raise UsageError(
                    "recursive YAML alias", file=str(path), line=child.start_mark.line + 1 + offset
                )
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_duplicate_keys(node: yaml.MappingNode, path: Path, offset: int) -> None:
    """A second ``hypothesis:`` or ``cases:`` silently replaced the first: refuse it."""
    seen: dict[str, int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        line = key.start_mark.line + 1 + offset
        if key.value in seen:
            raise UsageError(
                f"duplicate key {key.value!r} (first at line {seen[key.value]}; "
                "YAML would silently keep only the last)",
                file=str(path), line=line, field=key.value,
            )
        seen[key.value] = line


def _invalid(exc: yaml.YAMLError, path: Path, offset: int = 0) -> UsageError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    line = mark.line + 1 + offset if mark is not None else None
    return UsageError(f"invalid YAML: {problem}", file=str(path), line=line)


def field_path(loc: tuple[Any, ...]) -> str:
    """``("cases", 3, "id")`` → ``cases[3].id``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def first_error(exc: ValidationError) -> tuple[tuple[Any, ...], str]:
    """The first error of ``exc`` as (field path, message a user reads)."""
    err = exc.errors()[0]
    # pydantic puts the union branch / validator name in loc; keep real fields only.
    loc = tuple(p for p in err["loc"] if isinstance(p, int) or not str(p).startswith("function"))
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "field required"
    return loc, msg


def validate(model: type[M], data: Any, path: Path, locator: Locator) -> M:
    """Validate ``data`` against ``model``; the first error becomes a located UsageError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        loc, msg = first_error(exc)
        raise UsageError(
            msg, file=str(path), line=locator.line(loc), field=field_path(loc) or None
        ) from None
