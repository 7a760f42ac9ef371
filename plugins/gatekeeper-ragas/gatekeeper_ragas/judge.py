"""ragas' LLM, answered by gatekeeper's runner.

ragas' metric collections (``ragas.metrics.collections``) talk to their LLM through one
documented interface, :class:`ragas.llms.base.InstructorBaseRagasLLM`: ``agenerate(prompt,
response_model)`` returns an instance of a pydantic model. :class:`RunnerJudge` implements
it with :meth:`gatekeeper.kinds.EvalContext.generate`, so every call ragas makes is a
runner request: cached (a re-run replays with no call), retried with Retry-After, paced by
the endpoint's rate limits and AIMD, costed, and kept — prompt and reply — in the score's
details. The judge is any gatekeeper model spec (``openai:...``, ``hf:...``, ``replay:...``).

The reply is asked for as structured output (the response model's JSON schema, as
``response_format``) and validated against the model; an invalid reply is sent back once
with the validation error (repair), as gatekeeper's own judges do. ragas' synchronous
``generate`` is refused: inside the runner's loop it would have to start a second one.

This module imports ragas; the evaluators import it only when they score.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from ragas.embeddings.base import BaseRagasEmbedding
from ragas.llms.base import InstructorBaseRagasLLM

from gatekeeper.kinds import EvalContext, Model
from gatekeeper.types import Case, GenerationRequest, Message, ModelSpec, UsageError

T = TypeVar("T", bound=BaseModel)
JsonMode = Literal["json_schema", "json_object", "off"]

_SECRET_PARAM = re.compile(r"(key|token|secret|password)", re.I)
_REPLY_QUOTE = 200


class JudgeFailed(Exception):
    """The judge could not answer at all (the runner gave up on the request)."""


class JudgeReplyUnusable(Exception):
    """The judge answered, but not with the JSON ragas asked for, even after a repair."""


def redacted_spec(spec: ModelSpec) -> str:
    """The spec as text with parameters that could hold a secret blanked out
    (``api_key_env`` names a variable and is kept)."""
    params = {k: ("***" if _SECRET_PARAM.search(k) and not k.endswith("_env") else v) for k, v in spec.params.items()}
    return str(ModelSpec(spec.provider, spec.name, params))


def parse_reply(text: str, response_model: type[T]) -> T:
    """The reply as ``response_model``: the whole text, else its outermost ``{...}``
    (models wrap JSON in prose or code fences)."""
    try:
        return response_model.model_validate_json(text)
    except ValidationError as first:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            raise first from None
        return response_model.model_validate_json(text[start : end + 1])


def _error_text(exc: ValidationError) -> str:
    errors = exc.errors()
    if errors and errors[0]["type"] == "json_invalid":
        return "the reply is not valid JSON"
    where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
    return f"{where}: {errors[0]['msg']}" if errors else str(exc)


@dataclass
class JudgeSettings:
    """What the suite says about the judge (see ``RagasLLMParams``)."""

    judge: str | dict[str, Any] | None
    temperature: float
    seed: int
    max_tokens: int
    repair_attempts: int
    json_mode: JsonMode


@dataclass
class RunnerJudge(InstructorBaseRagasLLM):
    """ragas' LLM for one case: its calls are runner requests on the judge model."""

    ctx: EvalContext
    model: Model
    spec: ModelSpec
    settings: JudgeSettings
    case: Case
    exchanges: list[dict[str, Any]] = field(default_factory=list)
    replies: list[tuple[str, BaseModel]] = field(default_factory=list)
    """(response model name, parsed reply) for every answer ragas received, in order."""
    calls: int = 0
    cached: int = 0
    _asked: Counter[str] = field(default_factory=Counter)

    @classmethod
    def load(cls, settings: JudgeSettings, ctx: EvalContext, case: Case) -> RunnerJudge:
        raw = settings.judge if settings.judge is not None else getattr(ctx.config, "judge", None)
        if raw is None:
            raise UsageError("no judge model: set 'judge:' on the ragas evaluator or in gatekeeper.yaml", field="judge")
        if ctx.load_model is None or ctx.generate is None:
            raise RuntimeError("a ragas LLM metric needs the runner (EvalContext.load_model and generate)")
        spec = ModelSpec.parse(raw)
        return cls(ctx, ctx.load_model(spec), spec, settings, case)

    def provenance(self) -> dict[str, Any]:
        ident = self.model.identity
        return {
            "judge": {
                "spec": redacted_spec(self.spec), "provider": ident.provider, "name": ident.name,
                "version": ident.version, "digest": ident.digest,
            },
            "judge_calls": self.calls,
            "judge_cache_hits": self.cached,
            "judge_exchanges": self.exchanges,
        }

    # ragas' interface ---------------------------------------------------------------

    def generate(self, prompt: str, response_model: type[T]) -> T:
        raise RuntimeError("gatekeeper-ragas drives ragas through its async API only (agenerate)")

    async def agenerate(self, prompt: str, response_model: type[T]) -> T:
        # ragas asks the same prompt several times when it wants several samples (response
        # relevancy's `strictness`): the n-th repeat is the runner's epoch n with its own
        # seed, a distinct cache entry whenever the temperature is above 0 (ragas' default
        # is 0.01); at temperature 0 the repeats are, rightly, one cached answer.
        repeat = self._asked[prompt]
        self._asked[prompt] += 1
        name = response_model.__name__
        messages: tuple[Message, ...] = ({"role": "user", "content": prompt},)
        conversation = messages
        error = ""
        text = ""
        for attempt in range(self.settings.repair_attempts + 1):
            request = self._request(conversation, response_model, repeat)
            assert self.ctx.generate is not None
            generation = await self.ctx.generate(self.model, request)
            self.calls += 1
            self.cached += bool(generation.cached)
            text = generation.text
            exchange: dict[str, Any] = {
                "schema": name, "attempt": attempt + 1, "cached": bool(generation.cached),
                "prompt": conversation[-1]["content"], "reply": text,
            }
            self.exchanges.append(exchange)
            if generation.error is not None:
                exchange["error"] = generation.error
                raise JudgeFailed(f"judge {self.spec.provider}:{self.spec.name} failed: {generation.error}")
            try:
                parsed = parse_reply(text, response_model)
            except ValidationError as exc:
                error = _error_text(exc)
                exchange["parse_error"] = error
                conversation = (*messages, {"role": "assistant", "content": text}, {
                    "role": "user",
                    "content": f"Your reply could not be used: {error}. Reply with only a JSON object that "
                               f"follows this JSON schema: {json.dumps(response_model.model_json_schema())}",
                })
                continue
            self.replies.append((name, parsed))
            return parsed
        shown = " ".join(text.split())
        shown = shown if len(shown) <= _REPLY_QUOTE else shown[: _REPLY_QUOTE - 1] + "…"
        raise JudgeReplyUnusable(
            f"judge reply unusable for {name} after {self.settings.repair_attempts + 1} attempt(s): "
            f"{error}; last reply {shown!r}"
        )

    def _request(
        self, messages: tuple[Message, ...], response_model: type[BaseModel], repeat: int
    ) -> GenerationRequest:
        s = self.settings
        fmt: dict[str, Any] | None = None
        if s.json_mode == "json_schema":
            fmt = {"type": "json_schema", "json_schema": {
                "name": response_model.__name__, "schema": response_model.model_json_schema(), "strict": False,
            }}
        elif s.json_mode == "json_object":
            fmt = {"type": "json_object"}
        return GenerationRequest(
            case=self.case, messages=messages, max_tokens=s.max_tokens, temperature=s.temperature,
            seed=s.seed + repeat, epoch=repeat, response_format=fmt,
        )


class _Unbound(InstructorBaseRagasLLM):
    """Stands in for the judge while a suite's options are checked: never called."""

    def generate(self, prompt: str, response_model: type[T]) -> T:
        raise RuntimeError("the options check never calls the judge")

    async def agenerate(self, prompt: str, response_model: type[T]) -> T:
        raise RuntimeError("the options check never calls the judge")


class _UnboundEmbeddings(BaseRagasEmbedding):
    def embed_text(self, text: str, **kwargs: Any) -> list[float]:
        raise RuntimeError("the options check never embeds")

    async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
        raise RuntimeError("the options check never embeds")


def unbound_judge() -> InstructorBaseRagasLLM:
    return _Unbound()


def unbound_embeddings() -> BaseRagasEmbedding:
    return _UnboundEmbeddings()
