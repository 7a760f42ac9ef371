"""Checks a chat fine-tuning file before it is uploaded: every row, every message.

A hosted service rejects a bad file only after the upload and a queue wait, and sometimes
after billing has started; checked here, the error names ``file:line`` and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gatekeeper.types import UsageError

ROLES = ("system", "user", "assistant", "tool")


def check_chat_file(path: Path) -> list[dict[str, Any]]:
    """Rows ``{"messages": [{"role", "content"}...]}`` with at least one assistant turn."""
    if not path.is_file():
        raise UsageError("training data file not found", file=str(path), field="--data")
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UsageError(f"invalid JSON: {exc.msg}", file=str(path), line=number) from None
            if not isinstance(row, dict):
                raise UsageError("a row must be a JSON object", file=str(path), line=number)
            _check_messages(row.get("messages"), path, number)
            rows.append(row)
    if not rows:
        raise UsageError("training data file has no rows", file=str(path), field="--data")
    return rows


def _check_messages(messages: Any, path: Path, line: int) -> None:
    if not isinstance(messages, list) or not messages:
        raise UsageError("missing or empty list of messages", file=str(path), line=line, field="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise UsageError("each message needs a role (system, user, assistant or tool)",
                             file=str(path), line=line, field=f"messages[{i}].role")
        if message["role"] != "tool" and not isinstance(message.get("content"), str):
            raise UsageError("the message's content must be a string", file=str(path), line=line,
                             field=f"messages[{i}].content")
    if not any(m["role"] == "assistant" for m in messages):
        raise UsageError("the conversation has no assistant turn to learn from", file=str(path), line=line,
                         field="messages")
