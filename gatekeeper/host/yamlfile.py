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

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def line(self, path: tuple[Any, ...]) -> int | None:
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


def load(path: Path) -> tuple[Any, Locator]:
    """Parse ``path`` with the safe loader. Raises UsageError with the line on bad YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    try:
        # One parse: the node tree locates fields, and the data is constructed from it.
        node = yaml.compose(text, Loader=_SafeLoader)
        data = None if node is None else _SafeLoader("").construct_document(node)
    except yaml.YAMLError as fast_error:
        # Bad YAML is rare: parse it again in pure Python, whose messages and lines point
        # at the offending line (libyaml's often at the end of the file).
        try:
            yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            raise _invalid(exc, path) from None
        raise _invalid(fast_error, path) from None
    return data, Locator(node)


def _invalid(exc: yaml.YAMLError, path: Path) -> UsageError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    line = mark.line + 1 if mark is not None else None
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
