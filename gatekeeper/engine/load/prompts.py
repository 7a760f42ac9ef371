"""The prompt mix of a load suite: the rendered chats of a quality suite's cases, or the
prompts users sent in production (signals).

Signals are read through the registered signal sources (the file's suffix picks one) and
only rows whose user allowed evaluation (``consent.evaluation``) are used: sending a
production prompt to an endpoint is using it for evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatekeeper.types import Message, UsageError

TRUE = ("true", "1", "yes")


@dataclass(frozen=True)
class Prompt:
    """One prompt of the mix: its id (a case id or a signal id) and the chat to send."""

    id: str
    messages: tuple[Message, ...]


def prompts_from_suite(path: Path, roots: Sequence[Path] | None, *, file: str, line: int | None) -> list[Prompt]:
    """The cases of the quality suite at ``path``, rendered as the suite renders them."""
    from gatekeeper.engine.suites import load_yaml_suite

    if not path.is_file():
        raise UsageError(f"suite {str(path)!r} not found", file=file, line=line, field="prompts.suite")
    suite = load_yaml_suite(path, roots)
    if suite is None:
        raise UsageError(f"{path} is not a suite (it has no 'suite:' key)", file=file, line=line,
                         field="prompts.suite")
    return [Prompt(f"{suite.name}/{case.id}", tuple(case.messages)) for case in suite.cases]


def prompts_from_signals(location: str, registries: Any, *, file: str, line: int | None) -> list[Prompt]:
    """The chats of the signals at ``location`` whose users consented to evaluation."""
    source = _source_for(location, registries, file=file, line=line)
    prompts: list[Prompt] = []
    for ref, row in source.read(location, None):
        if not _consented(row):
            continue
        messages = _messages_of(row, where=f"{ref.file}:{ref.line}")
        prompts.append(Prompt(str(row.get("id") or f"{Path(ref.file).name}:{ref.line}"), messages))
    return prompts


def _source_for(location: str, registries: Any, *, file: str, line: int | None) -> Any:
    if registries is None:
        raise UsageError("reading signals needs the plugin registries (run through gatekeeper)",
                         file=file, line=line, field="prompts.signals")
    suffix = location.rsplit(".", 1)[-1].lower() if "." in Path(location).name else ""
    for entry in registries.signal_sources:
        if suffix and suffix in entry.obj.schemes:
            return entry.obj()
    known = sorted({s for entry in registries.signal_sources for s in entry.obj.schemes})
    raise UsageError(f"no signal source reads {location!r} (suffixes known: {', '.join(known)})",
                     file=file, line=line, field="prompts.signals")


def _consented(row: Mapping[str, Any]) -> bool:
    consent = row.get("consent")
    value = consent.get("evaluation") if isinstance(consent, Mapping) else row.get("consent_evaluation")
    return value is True or (isinstance(value, str) and value.strip().lower() in TRUE)


def _messages_of(row: Mapping[str, Any], *, where: str) -> tuple[Message, ...]:
    raw = row.get("messages")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = None
    if not isinstance(raw, list) or not raw:
        file, _, line = where.rpartition(":")
        raise UsageError("a signal used as a load prompt needs 'messages' (a list of {role, content})",
                         file=file, line=int(line) if line.isdigit() else None, field="messages")
    messages: list[Message] = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or not isinstance(item.get("content"), str) or item.get("role") not in (
            "system", "user", "assistant"
        ):
            file, _, line = where.rpartition(":")
            raise UsageError("each message needs a role (system, user, assistant) and text content",
                             file=file, line=int(line) if line.isdigit() else None, field=f"messages[{i}]")
        messages.append({"role": item["role"], "content": item["content"]})
    return tuple(messages)
