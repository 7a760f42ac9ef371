"""What ``gatekeeper serve-fake`` answers, per model name: a recording, a script, or an echo.

A request names its model (``"model": "candidate"``); each name maps to one source:

``recording`` (``NAME=FILE.jsonl``)
    A gatekeeper replay recording (rows ``{"id": ..., "output": ...}``, as ``replay:`` reads)
    or rows keyed by prompt (``{"prompt": ..., "output": ...}``). Rows with an ``id`` are
    matched through the suites given with ``--suites``: each case's rendered last user
    message is the key the request is looked up by. So the same suite, run through the
    OpenAI provider against the fake, gets each model's recorded answers — a baseline and
    a candidate that really differ.
``script`` (``NAME=script:FILE.yaml`` or ``.json``)
    A list of replies consumed in order, the last one repeating: a string (the answer) or a
    mapping with the keys of the fake server's scripted replies (``content``, ``status``,
    ``message``, ``retry_after``, ``drop``, ``malformed``, ``garbage``, ``sleep``,
    ``finish_reason``, ``usage``).
``echo`` (``NAME=echo``)
    "You said: <the last user message>" (the server's default).

An unknown model name is answered 404, as the real API does; a prompt a recording has no
answer for is answered 400 naming the model and the file, so a drifted suite is obvious.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeeper.types import UsageError

Reply = str | dict[str, Any]

__all__ = ["AnswerBook", "ModelSource", "last_user_message", "parse_model_option"]


def last_user_message(messages: Iterable[Any]) -> str:
    """The text of the last user message (``content`` parts joined), the key answers are looked up by."""
    for message in reversed(list(messages or [])):
        role = message.get("role") if isinstance(message, Mapping) else getattr(message, "role", None)
        if role != "user":
            continue
        content = message.get("content") if isinstance(message, Mapping) else getattr(message, "content", "")
        if isinstance(content, list):
            return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return str(content)
    return ""


@dataclass
class ModelSource:
    """One model name's answers: ``kind`` is ``recording``, ``script`` or ``echo``."""

    name: str
    kind: str
    path: Path | None = None
    by_prompt: dict[str, Reply] = field(default_factory=dict)
    by_id: dict[str, Reply] = field(default_factory=dict)
    script: list[Reply] = field(default_factory=list)
    position: int = 0


def parse_model_option(text: str, base: Path) -> ModelSource:
    """``NAME=FILE.jsonl``, ``NAME=script:FILE.yaml`` or ``NAME=echo`` (``--model``)."""
    name, sep, source = text.partition("=")
    if not sep or not name.strip() or not source.strip():
        raise UsageError(f"--model {text!r}: expected NAME=FILE.jsonl, NAME=script:FILE.yaml or NAME=echo")
    name, source = name.strip(), source.strip()
    if source == "echo":
        return ModelSource(name, "echo")
    if source.startswith("script:"):
        path = base / source[len("script:"):]
        return ModelSource(name, "script", path, script=_read_script(path))
    path = base / source
    model = ModelSource(name, "recording", path)
    for row, where in _read_jsonl(path):
        output = row.get("output")
        reply: Reply = output if isinstance(output, str) else {"status": 500, "message": str(row.get("error"))}
        if isinstance(row.get("prompt"), str):
            _put(model.by_prompt, row["prompt"], reply, where)
        elif isinstance(row.get("messages"), list):
            _put(model.by_prompt, last_user_message(row["messages"]), reply, where)
        elif isinstance(row.get("id"), str):
            _put(model.by_id, row["id"], reply, where)
        else:
            raise UsageError(f"{where}: a row needs 'id' (with --suites), 'prompt' or 'messages', and 'output'")
    return model


def _put(table: dict[str, Reply], key: str, reply: Reply, where: str) -> None:
    if key in table:
        raise UsageError(f"{where}: duplicate key {key[:80]!r}: each case or prompt is recorded once")
    table[key] = reply


def _read_jsonl(path: Path) -> list[tuple[dict[str, Any], str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the recording ({exc})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise UsageError(f"{where}: a row must be a JSON object")
        rows.append((row, where))
    return rows


_REPLY_KEYS = {"content", "status", "message", "type", "code", "retry_after", "drop", "malformed", "garbage",
               "sleep", "finish_reason", "usage", "logprobs", "response"}


def _read_script(path: Path) -> list[Reply]:
    from gatekeeper.host.yamlfile import load

    data, _ = load(path)
    if isinstance(data, dict):
        data = data.get("replies")
    if not isinstance(data, list) or not data:
        raise UsageError(f"{path}: a script is a non-empty list of replies (or a mapping with 'replies:')")
    replies: list[Reply] = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            replies.append(item)
        elif isinstance(item, dict) and set(item) <= _REPLY_KEYS:
            replies.append(dict(item))
        else:
            unknown = sorted(set(item) - _REPLY_KEYS) if isinstance(item, dict) else type(item).__name__
            raise UsageError(f"{path}: reply [{i}]: expected a string or a mapping of {sorted(_REPLY_KEYS)}; "
                             f"got {unknown}")
    return replies


class AnswerBook:
    """The responder the fake server calls with each request body: dispatch on its ``model``."""

    def __init__(self, sources: Iterable[ModelSource], cases: Iterable[Any] = (),
                 default: Callable[[dict[str, Any]], Reply] | None = None) -> None:
        self.sources = {s.name: s for s in sources}
        self.default = default
        self.prompt_ids: dict[str, str] = {}
        for case in cases:  # a rendered case: its last user message → its id
            self.prompt_ids.setdefault(last_user_message(case.messages), case.id)
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply:
        name = str(body.get("model", ""))
        source = self.sources.get(name)
        if source is None:
            if self.default is not None:
                return self.default(body)
            return {"status": 404, "type": "invalid_request_error", "code": "model_not_found",
                    "message": f"The model `{name}` does not exist (serve-fake serves: "
                               f"{', '.join(sorted(self.sources)) or 'none'})."}
        if source.kind == "echo":
            return f"You said: {last_user_message(body.get('messages') or [])}"
        if source.kind == "script":
            with self._lock:
                reply = source.script[min(source.position, len(source.script) - 1)]
                source.position += 1
            return reply
        prompt = last_user_message(body.get("messages") or [])
        if prompt in source.by_prompt:
            return source.by_prompt[prompt]
        case_id = self.prompt_ids.get(prompt)
        if case_id is not None and case_id in source.by_id:
            return source.by_id[case_id]
        why = (f"case {case_id!r} is not in it" if case_id is not None else
               "no case of --suites renders this prompt" if source.by_id else "no row has this prompt")
        return {"status": 400, "type": "invalid_request_error", "code": "serve_fake_no_answer",
                "message": f"serve-fake: model {name!r} answers from {source.path}, and {why}."}
