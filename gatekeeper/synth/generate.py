"""Generation through the runner: every prompt is a case of an in-memory suite run by the
session, so synth gets what every gatekeeper run gets — the cache (a crashed run resumes
where it stopped: answers are cached the moment they arrive), retries, rate limits and
adaptive concurrency, the cost counters.

Structured output: the request carries ``response_format`` (JSON Schema, or JSON mode) for
providers that honour it, through :class:`StructuredModel`; every reply is parsed and
validated whatever the provider did. A reply that does not validate gets one deterministic
chance (the JSON object inside fences or prose) and then one repair turn through the model
(the reply and the error sent back); after that it is dropped with a counted reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeeper.engine.judging import ReplyError, extract_json, validate_reply
from gatekeeper.kinds import Model
from gatekeeper.types import Case, Generation, GenerationRequest, Message, ModelIdentity

SUITE = "synth-generation"
REPAIR_SUFFIX = "~repair"


class StructuredModel(Model):
    """``inner`` with ``response_format`` set on every request. Its identity's digest covers
    the format, so a cached answer to another schema is never reused."""

    def __init__(self, inner: Model, response_format: dict[str, Any] | None) -> None:
        self.inner = inner
        self.response_format = response_format
        base = inner.identity
        digest = base.digest if response_format is None else hashlib.sha256(
            (base.digest + json.dumps(response_format, sort_keys=True)).encode()).hexdigest()
        self.identity = ModelIdentity(provider=base.provider, name=base.name, digest=digest, version=base.version,
                                      details=dict(base.details))
        self.max_batch_size = inner.max_batch_size
        self.max_concurrency = inner.max_concurrency
        self.timeout_s = inner.timeout_s

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if self.response_format is not None:
            requests = [dataclasses.replace(r, response_format=self.response_format) for r in requests]
        return await self.inner.generate(requests)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def end_run(self) -> None:
        await self.inner.end_run()


@dataclass
class Usage:
    """What the generation cost, summed over the rounds (for the report)."""

    requests: int = 0
    cache_hits: int = 0
    model_calls: int = 0
    retries: int = 0
    rate_limited: int = 0
    generation_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    rounds: int = 0

    def add(self, stats: Any) -> None:
        self.rounds += 1
        for name in ("requests", "cache_hits", "model_calls", "retries", "rate_limited", "generation_errors",
                     "prompt_tokens", "completion_tokens"):
            setattr(self, name, getattr(self, name) + int(getattr(stats, name, 0)))
        self.cost = round(self.cost + float(getattr(stats, "cost", 0.0)), 8)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Sampling:
    max_tokens: int = 400
    temperature: float = 0.8
    seed: int = 0


def run_round(session: Any, model: Model, spec: str, prompts: Sequence[tuple[str, tuple[Message, ...]]],
              sampling: Sampling, usage: Usage, *, label: str = "generator",
              progress: bool = False) -> dict[str, Generation]:
    """Answer every ``(id, messages)`` through the session's runner; id → generation."""
    from gatekeeper.engine.results import new_run_id
    from gatekeeper.engine.suites import Suite

    if not prompts:
        return {}
    cases = [Case(id=pid, suite=SUITE, messages=messages, source=f"synth {pid}") for pid, messages in prompts]
    suite = Suite(name=SUITE, path=Path(SUITE), cases=cases, scorers=[], max_tokens=sampling.max_tokens,
                  temperature=sampling.temperature, seed=sampling.seed)
    results, stats = session.run({label: model}, [suite], run_id=new_run_id(), specs={label: spec},
                                 progress=progress, close_models=False, engine=False)
    usage.add(stats)
    return {r.case.id: r.generation for r in results}


# --------------------------------------------------------------------------- parsing


@dataclass
class Parsed:
    """One reply: the validated object, or the reason it was dropped and the error."""

    value: dict[str, Any] | None = None
    reason: str | None = None
    error: str = ""
    extracted: bool = False
    """The object was found inside other text (fences, prose) rather than being the reply."""


def parse_reply(generation: Generation | None, schema: dict[str, Any]) -> Parsed:
    if generation is None:
        return Parsed(reason="generation_error", error="no answer")
    if generation.error is not None:
        return Parsed(reason="generation_error", error=generation.error)
    text = generation.text.strip()
    if not text:
        return Parsed(reason="empty_output", error="the reply is empty")
    try:
        whole: Any = json.loads(text)
        extracted = False
    except json.JSONDecodeError:
        try:
            whole = extract_json(text)
        except ReplyError as exc:
            return Parsed(reason="invalid_json", error=str(exc))
        extracted = True
    try:
        return Parsed(value=validate_reply(whole, schema), extracted=extracted)
    except ReplyError as exc:
        return Parsed(reason="schema_mismatch", error=str(exc), extracted=extracted)


def repair_messages(messages: tuple[Message, ...], reply: str, error: str,
                    schema: dict[str, Any]) -> tuple[Message, ...]:
    """The conversation sent back for one repair: the bad reply and what is wrong with it."""
    return (*messages, {"role": "assistant", "content": reply[:4000]}, {
        "role": "user",
        "content": f"That reply cannot be used: {error}. Reply again with one JSON object only, no other text, "
                   f"matching this JSON Schema:\n{json.dumps(schema, ensure_ascii=False)}",
    })


@dataclass
class Structured:
    """The outcome of a structured round: validated objects by id, drops by id."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: dict[str, tuple[str, str]] = field(default_factory=dict)
    """id → (reason, error)"""
    repaired: set[str] = field(default_factory=set)
    extracted: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)


def structured_round(session: Any, model: Model, spec: str, prompts: Sequence[tuple[str, tuple[Message, ...]]],
                     schema: dict[str, Any], sampling: Sampling, usage: Usage, *, repair: str = "model",
                     progress: bool = False) -> Structured:
    """Generate, validate, repair once (``repair="model"``) or not (``"extract"``: the
    deterministic extraction only), and say what became of every prompt."""
    out = Structured()
    answers = run_round(session, model, spec, prompts, sampling, usage, progress=progress)
    to_repair: list[tuple[str, tuple[Message, ...]]] = []
    for pid, messages in prompts:
        generation = answers.get(pid)
        parsed = parse_reply(generation, schema)
        if parsed.value is not None:
            out.values[pid] = parsed.value
            if parsed.extracted:
                out.extracted.add(pid)
            continue
        if repair == "model" and parsed.reason in ("invalid_json", "schema_mismatch", "empty_output"):
            assert generation is not None
            to_repair.append((pid + REPAIR_SUFFIX, repair_messages(messages, generation.text, parsed.error, schema)))
        out.dropped[pid] = (parsed.reason or "invalid", parsed.error)
    if to_repair:
        out.counts["repair_attempts"] += len(to_repair)
        fixed = run_round(session, model, spec, to_repair, sampling, usage, progress=progress)
        for rid, _ in to_repair:
            pid = rid.removesuffix(REPAIR_SUFFIX)
            parsed = parse_reply(fixed.get(rid), schema)
            if parsed.value is not None:
                out.values[pid] = parsed.value
                out.repaired.add(pid)
                del out.dropped[pid]
            else:
                out.dropped[pid] = (parsed.reason or "invalid", parsed.error)
    out.counts["repaired"] = len(out.repaired)
    out.counts["json_extracted"] = len(out.extracted)
    return out
