"""The values of every configured secret variable, and one function that scrubs them from text.

A key must not reach a report, a cache row, a log line or the audit trail — not only the
key of the endpoint that failed, but any key the project names: a server may echo another
endpoint's key in its error, and a model may repeat a key it saw in its prompt. So the
*names* of secret variables are gathered from the configuration (every ``*_env`` setting
under ``providers``, and ``api_key_env=``/``*_token_env=`` in model specs), from providers
as they read a key (:func:`register`), plus the well-known defaults; their *values* are read
from the environment when text is scrubbed, and replaced by ``[redacted:NAME]``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import Any

DEFAULT_SECRET_ENVS = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN", "ANTHROPIC_API_KEY",
                       "HF_TOKEN", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD")
MIN_SECRET_LENGTH = 8
"""Shorter values (``"1"``, ``"true"``) are not keys; scrubbing them would shred ordinary text."""

_names: set[str] = set(DEFAULT_SECRET_ENVS)
_SPEC_ENV_RE = re.compile(r"[?&]([a-z_]*(?:key|token|secret|password)[a-z_]*_env)=([A-Za-z_][A-Za-z0-9_]*)")


def register(*names: str | None) -> None:
    """Note environment-variable names that hold secrets (a provider calls it as it reads a key)."""
    _names.update(name for name in names if name)


def names() -> set[str]:
    return set(_names)


def register_config(config: Any) -> None:
    """Every secret variable the configuration names: ``*_env`` settings and model-spec parameters."""
    register(*_env_settings(getattr(config, "providers", {}) or {}))
    for field in ("model", "baseline", "candidate", "judge"):
        register_spec(getattr(config, field, None))


def register_spec(spec: Any) -> None:
    """``openai:m?api_key_env=NAME`` (or a dict spec with ``params``) names ``NAME`` as a secret."""
    if isinstance(spec, str):
        register(*(name for _, name in _SPEC_ENV_RE.findall(spec)))
    elif isinstance(spec, dict):
        register(*_env_settings(spec))


def _env_settings(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and key.endswith("_env") and isinstance(item, str):
                yield item
            else:
                yield from _env_settings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _env_settings(item)


def values() -> dict[str, str]:
    """Name → value of each registered variable that is set (and long enough to be a secret)."""
    found = {}
    for name in sorted(_names):
        value = os.environ.get(name)
        if value and len(value) >= MIN_SECRET_LENGTH:
            found[name] = value
    return found


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every configured secret's value (and each of ``extra``) replaced."""
    if not text:
        return text
    return redactor(extra)(text)


def redactor(extra: Iterable[str] = ()) -> Callable[[str], str]:
    """:func:`redact` with the secrets' values read from the environment once, for a batch of
    texts (reading them is most of the cost of scrubbing a short text)."""
    found = sorted(values().items(), key=lambda kv: -len(kv[1]))
    others = [value for value in extra if value and len(value) >= 4]

    def apply(text: str) -> str:
        if not text:
            return text
        for name, value in found:
            if value in text:
                text = text.replace(value, f"[redacted:{name}]")
        for value in others:
            if value in text:
                text = text.replace(value, "[redacted]")
        return text

    return apply
