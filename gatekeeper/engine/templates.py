"""The prompt-template sandbox, with bounds: suites are data, and a template is part of a suite.

jinja2's ``SandboxedEnvironment`` stops attribute escapes, but not resource use: the
template ``{{ 'A' * 1000000000 }}`` renders a 1 GB prompt per case, ``range(10**8)``
raises an ``OverflowError`` (a crash, not a usage error) and ``{% include %}`` a
``TypeError``. This environment refuses each with a :class:`SecurityError` (a
``TemplateError``, so callers report it as the suite's error):

- repetition (``*``), concatenation (``+``), ``%`` formatting and ``**`` whose result
  would exceed :data:`MAX_RENDERED_CHARS` or a sane exponent are refused before they
  allocate;
- ``range`` is limited to :data:`MAX_RANGE` items;
- ``include``, ``import`` and ``extends`` find no template (the suite must be self-contained);
- a rendering is stopped once its output passes :data:`MAX_RENDERED_CHARS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from jinja2 import BaseLoader, Environment, StrictUndefined, Template, TemplateError
from jinja2.runtime import Context, new_context
from jinja2.sandbox import SandboxedEnvironment, SecurityError

MAX_RENDERED_CHARS = 1_000_000
"""The longest rendered prompt message (about 250k tokens: more than any model's context)."""

MAX_RANGE = 10_000
"""The most items ``range()`` may produce in a template."""

MAX_EXPONENT_BITS = 4096
"""``a ** b`` may not produce an integer larger than this many bits."""

_FORMAT_WIDTH = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


class _NoIncludes(BaseLoader):
    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Callable[[], bool] | None]:
        raise SecurityError(f"templates cannot include, import or extend other files ({template!r})")


def _too_long(n: int) -> SecurityError:
    return SecurityError(f"the template would produce {n} characters (limit {MAX_RENDERED_CHARS})")


def _bounded_range(*args: int) -> range:
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise SecurityError(f"range() of {len(items)} items in a template (limit {MAX_RANGE})")
    return items


class BoundedSandbox(SandboxedEnvironment):
    """A sandbox whose operators and ``range`` cannot allocate unbounded memory."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(loader=_NoIncludes(), **options)
        self.globals["range"] = _bounded_range

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int):
                    size = len(seq) * max(count, 0)
                    if size > MAX_RENDERED_CHARS:
                        raise _too_long(size)
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                size = len(left) + len(right)
                if size > MAX_RENDERED_CHARS:
                    raise _too_long(size)
        elif operator == "**":
            if (isinstance(left, int) and isinstance(right, int) and abs(left) > 1
                    and right * abs(left).bit_length() > MAX_EXPONENT_BITS):
                raise SecurityError(f"{left} ** {right} is too large for a template")
        elif operator == "%" and isinstance(left, str):
            for width, precision in _FORMAT_WIDTH.findall(left):
                for n in (width, precision):
                    if n.isdigit() and int(n) > MAX_RENDERED_CHARS:
                        raise _too_long(int(n))
        return super().call_binop(context, operator, left, right)


ENV = BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


class StaticText(str):
    """A template without any template syntax: it renders to itself, for every case
    (a fixed system prompt is rendered as many times as a suite has cases)."""


def compile_template(text: str) -> Template | StaticText:
    """Parse ``text`` once; raises ``TemplateError`` on bad syntax. Text with no ``{{``,
    ``{%`` or ``{#``, no trailing newline (which jinja drops) and no ``\r`` (which it turns
    into ``\n``) is returned as :class:`StaticText`."""
    if not any(mark in text for mark in ("{{", "{%", "{#", "\r")) and not text.endswith("\n"):
        return StaticText(text)
    return ENV.from_string(text)


def render_bounded(template: Template | StaticText, variables: dict[str, Any]) -> str:
    """Render ``template``, stopping once the output passes :data:`MAX_RENDERED_CHARS`.

    Raises ``TemplateError`` for every failure a template can cause, including Python
    errors inside it (``{{ 1 / 0 }}``, ``{{ 'a' + 1 }}``): the template is user data, so its
    failure is the suite's error, never the harness's."""
    if isinstance(template, StaticText):
        if len(template) > MAX_RENDERED_CHARS:
            raise _too_long(len(template))
        return str(template)
    parts: list[str] = []
    size = 0
    try:
        # What ``template.generate(**variables)`` does, without copying the environment's
        # globals (a ChainMap) into a new dict for every case: they are merged once per template.
        merged = getattr(template, "_gk_globals", None)
        if merged is None:
            merged = template._gk_globals = dict(template.globals)  # type: ignore[attr-defined]
        context = new_context(template.environment, template.name, template.blocks, {**merged, **variables},
                              True, merged, None)
        for chunk in template.root_render_func(context):
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise _too_long(size)
            parts.append(chunk)
    except TemplateError:
        raise
    except (ArithmeticError, TypeError, ValueError, LookupError, AttributeError, RecursionError,
            MemoryError) as exc:
        raise SecurityError(f"{type(exc).__name__}: {exc}") from None
    return "".join(parts)
