"""Training rows: read and validate JSONL before any model is loaded, and tokenize them.

Every row is checked up front, so a malformed row is a UsageError naming ``file:line``
and the field before minutes of loading and training are spent. Conversations are
tokenized here (not by TRL) because the loss mask is ours: the tokens of assistant turns,
found by rendering the chat template with and without each turn, which works for any
template (TRL's ``assistant_only_loss`` needs templates with ``{% generation %}`` markers,
which SmolLM2's has not).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.types import UsageError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ROLES = ("system", "user", "assistant")
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    """One training row, with the ``file:line`` it came from."""

    line: int
    source: str
    messages: list[dict[str, str]]
    """SFT: the whole conversation. DPO and GRPO: the prompt."""
    chosen: str = ""
    rejected: str = ""


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; bad JSON is a UsageError at file:line."""
    if not path.is_file():
        raise UsageError("training data file not found", file=str(path))
    rows: list[tuple[int, dict[str, Any]]] = []
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
            rows.append((number, row))
    if not rows:
        raise UsageError("training data file has no rows", file=str(path))
    return rows


def messages_of(value: Any, path: Path | str, line: int, field: str) -> list[dict[str, str]]:
    """A list of ``{role, content}`` messages, or a UsageError at ``path:line`` naming the field."""
    if not isinstance(value, list) or not value:
        raise UsageError("missing or empty list of messages", file=str(path), line=line, field=field)
    messages: list[dict[str, str]] = []
    for i, message in enumerate(value):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise UsageError(
                "each message needs a role (system, user or assistant) and a string content",
                file=str(path), line=line, field=f"{field}[{i}]",
            )
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def read_sft_examples(path: Path) -> list[Example]:
    """Rows ``{"messages": [...], "source": "..."}`` each with at least one assistant turn."""
    examples = []
    for line, row in read_jsonl(path):
        messages = messages_of(row.get("messages"), path, line, "messages")
        if not any(m["role"] == "assistant" for m in messages):
            raise UsageError("the conversation has no assistant turn to learn from",
                             file=str(path), line=line, field="messages")
        examples.append(Example(line, str(row.get("source", "")), messages))
    return examples


def read_dpo_examples(path: Path) -> list[Example]:
    """Rows ``{"prompt": [messages] | str, "chosen": str, "rejected": str, "source": ...}``."""
    examples = []
    for line, row in read_jsonl(path):
        prompt = row.get("prompt")
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        messages = messages_of(prompt, path, line, "prompt")
        for key in ("chosen", "rejected"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise UsageError("missing or empty answer", file=str(path), line=line, field=key)
        if row["chosen"].strip() == row["rejected"].strip():
            raise UsageError("chosen and rejected are the same answer: the pair teaches nothing",
                             file=str(path), line=line, field="rejected")
        examples.append(Example(line, str(row.get("source", "")), messages, row["chosen"], row["rejected"]))
    return examples


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- tokenization


@dataclass
class Encoded:
    """Token ids and labels (``-100`` where no loss is taken: everything but assistant turns)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def completion_mask(self) -> list[int]:
        """1 on the tokens the loss is taken on (TRL's ``completion_mask``)."""
        return [int(label != IGNORE_INDEX) for label in self.labels]


def render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]], prompt: bool) -> str:
    return str(tokenizer.apply_chat_template(list(messages), add_generation_prompt=prompt, tokenize=False))


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[dict[str, str]],
    max_length: int,
    where: str,
    *,
    last_turn_only: bool = False,
) -> Encoded:
    """Tokenize a conversation, labelling the tokens of assistant turns only (or of the
    last turn only, for preference pairs whose earlier turns are context).

    An assistant turn is the text the chat template adds between the conversation before
    it (with the generation prompt) and the conversation including it, end marker
    included, so the model also learns where to stop.
    """
    full = render(tokenizer, messages, prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or (last_turn_only and i != len(messages) - 1):
            continue
        before = render(tokenizer, messages[:i], prompt=True) if i else ""
        upto = render(tokenizer, messages[: i + 1], prompt=False)
        if not full.startswith(upto) or not upto.startswith(before):
            raise UsageError(
                f"the chat template does not render turn {i} as a prefix of the conversation; "
                "cannot tell the assistant's tokens apart", file=where, field=f"messages[{i}]",
            )
        spans.append((len(before), len(upto)))
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])[:max_length]
    offsets = list(encoded["offset_mapping"])[:max_length]
    labels = [
        token if any(start <= begin < end for start, end in spans) else IGNORE_INDEX
        for token, (begin, _) in zip(ids, offsets, strict=True)
    ]
    if all(label == IGNORE_INDEX for label in labels):
        raise UsageError(f"no assistant token within max_length={max_length} tokens; raise max_length",
                         file=where, field="messages")
    return Encoded(ids, labels)
