"""Suites and policies are data: a model spec inside them that would import Python code
(``judge: python:evilmod:f``) runs only when the user enabled code loading outside them.

A pull request can edit a suite or a policy; it should not thereby get to run code on the
machine that gates releases. Code loading is enabled by ``--allow-code`` on the command
line or ``allow_code: true`` in ``gatekeeper.yaml`` (or ``[tool.gatekeeper]``), both
outside the files checked here. A provider says it imports code with the class attribute
``loads_code = True`` (the built-in ``python`` provider does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from gatekeeper.types import UsageError

ALLOW_HINT = "pass --allow-code or set 'allow_code: true' in gatekeeper.yaml to allow it"


def code_providers(models: Any) -> set[str]:
    """Names of registered model providers whose ``loads_code`` is true."""
    names: Iterable[str] = models.names()
    return {name for name in names if getattr(models.get(name), "loads_code", False)}


def find_code_specs(value: Any, providers: set[str], at: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """``(field path, spec)`` for every model spec in ``value`` (nested dicts and lists) whose
    provider is one of ``providers``: ``"python:mod:fn"`` or ``{provider: python, ...}``."""
    if isinstance(value, str):
        provider, sep, rest = value.partition(":")
        if sep and rest and provider.strip() in providers:
            yield at, value
    elif isinstance(value, dict):
        if str(value.get("provider", "")).strip() in providers:
            yield at, f"{value.get('provider')}:{value.get('model', value.get('name', ''))}"
            return
        for key, item in value.items():
            yield from find_code_specs(item, providers, (*at, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from find_code_specs(item, providers, (*at, index))


def refuse_code_specs(
    value: Any, *, providers: set[str], allowed: bool, file: str,
    line_of: Callable[[tuple[Any, ...]], int | None], field: Callable[[tuple[Any, ...]], str],
) -> None:
    """Raise a UsageError naming file, line and field for the first code-loading spec in
    ``value`` unless code loading is ``allowed``."""
    if allowed:
        return
    for at, spec in find_code_specs(value, providers):
        raise UsageError(
            f"{spec!r} would import and run Python code named by a data file; {ALLOW_HINT}",
            file=file, line=line_of(at), field=field(at),
        )
