"""deepeval's judge, as a ``DeepEvalBaseLLM`` whose calls go through gatekeeper's runner.

deepeval's documented hook for a custom judge is a ``DeepEvalBaseLLM`` subclass: metrics
call its ``a_generate(prompt, schema=...)`` and accept either a validated instance of the
pydantic ``schema`` or text they parse themselves. :class:`RunnerLLM` turns each call into
a :class:`~gatekeeper.GenerationRequest` and awaits ``EvalContext.generate`` — the runner's
cache, retries, Retry-After, AIMD concurrency and cost accounting — so a re-run replays
from the cache and every exchange (prompt and reply) lands in the score's details.

The synchronous ``generate`` is refused: metrics are measured with ``a_measure`` inside
the runner's event loop, and a synchronous call there would make deepeval patch asyncio
for the whole process.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from gatekeeper import Case, EvalContext, GenerationRequest, Model, ModelSpec, UsageError
from gatekeeper_deepeval._library import submodule

SECRET_PARAMS = ("api_key", "key", "token", "secret", "password")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


class JudgeUnavailable(RuntimeError):
    """The judge model could not answer (the runner gave up): an ERROR, not a score."""


class ReplyUnusable(ValueError):
    """The judge answered, but not in the shape deepeval asked for, even after a repair: NODATA."""


def redacted(spec: ModelSpec) -> str:
    """The judge spec as recorded: secret-looking parameters masked (``api_key_env`` names
    a variable and stays)."""
    params = {k: ("***" if k.lower() in SECRET_PARAMS else v) for k, v in spec.params.items()}
    return str(ModelSpec(spec.provider, spec.name, params))


def judge_spec(raw: str | dict[str, Any] | None, ctx: EvalContext, metric: str) -> ModelSpec:
    value = raw if raw is not None else getattr(ctx.config, "judge", None)
    if value is None:
        raise UsageError(f"{metric} needs a judge: set 'judge:' on the evaluator or in gatekeeper.yaml",
                         field="judge")
    return ModelSpec.parse(value)


def _strip_fences(text: str) -> str:
    text = text.strip()
    match = _FENCE.match(text)
    return match.group(1) if match else text


def response_format(schema: type[BaseModel] | None, json_mode: str) -> dict[str, Any] | None:
    if schema is None or json_mode == "off":
        return None
    if json_mode == "json_object":
        return {"type": "json_object"}
    return {"type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema(), "strict": False}}


def make_runner_llm(ctx: EvalContext, case: Case, spec: ModelSpec, *, max_tokens: int, json_mode: str,
                    repair_attempts: int = 1) -> Any:
    """Build a :class:`RunnerLLM` (the class is created on first use: deepeval is imported late)."""
    return _runner_llm_class()(ctx, case, spec, max_tokens=max_tokens, json_mode=json_mode,
                               repair_attempts=repair_attempts)


_CLASS: type | None = None


def _runner_llm_class() -> type:
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    base = submodule("models").DeepEvalBaseLLM

    class RunnerLLM(base):  # type: ignore[misc,valid-type]
        """See the module docstring."""

        def __init__(self, ctx: EvalContext, case: Case, spec: ModelSpec, *, max_tokens: int,
                     json_mode: str, repair_attempts: int) -> None:
            if ctx.load_model is None or ctx.generate is None:
                raise RuntimeError("deepeval metrics need gatekeeper's runner (EvalContext.generate)")
            self.ctx = ctx
            self.case = case
            self.spec = spec
            self.max_tokens = max_tokens
            self.json_mode = json_mode
            self.repair_attempts = repair_attempts
            self.judge: Model = ctx.load_model(spec)
            self.exchanges: list[dict[str, Any]] = []
            self.cost = 0.0
            super().__init__(redacted(spec))

        def load_model(self, *args: Any, **kwargs: Any) -> Any:
            return self

        def get_model_name(self, *args: Any, **kwargs: Any) -> str:
            return redacted(self.spec)

        def generate(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("gatekeeper-deepeval measures with a_measure only (synchronous judge calls "
                               "inside the runner's loop would patch asyncio process-wide)")

        async def ask(self, messages: tuple[dict[str, str], ...], schema: type[BaseModel] | None) -> str:
            request = GenerationRequest(
                case=self.case, messages=messages, max_tokens=self.max_tokens,
                temperature=0.0, seed=0, response_format=response_format(schema, self.json_mode),
            )
            assert self.ctx.generate is not None
            generation = await self.ctx.generate(self.judge, request)
            self.exchanges.append({
                "prompt": messages[-1]["content"], "schema": schema.__name__ if schema is not None else None,
                "reply": generation.text, "cached": bool(generation.cached), "error": generation.error,
            })
            self.cost += float(generation.cost or 0.0)
            if generation.error is not None:
                raise JudgeUnavailable(f"judge {redacted(self.spec)} failed: {generation.error}")
            return generation.text

        async def a_generate(self, prompt: Any, schema: type[BaseModel] | None = None, **_: Any) -> Any:
            text = prompt if isinstance(prompt, str) else json.dumps(prompt, default=str)
            messages: tuple[dict[str, str], ...] = ({"role": "user", "content": text},)
            reply = await self.ask(messages, schema)
            if schema is None:
                return reply
            # Strict: a reply that does not fit deepeval's schema is sent back once with the
            # error; still wrong, the metric is NODATA (deepeval alone would sometimes read
            # a wrong reply as an empty verdict list and score it).
            for attempt in range(self.repair_attempts + 1):
                try:
                    return schema.model_validate_json(_strip_fences(reply))
                except ValidationError as exc:
                    error = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in exc.errors())
                if attempt == self.repair_attempts:
                    break
                messages = (*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": (
                    f"That reply is not valid JSON for the {schema.__name__} schema ({error}). "
                    "Answer again with the JSON object only.")})
                reply = await self.ask(messages, schema)
            raise ReplyUnusable(f"judge reply unusable after {self.repair_attempts + 1} attempt(s) for deepeval's "
                                f"{schema.__name__}: {error}")

    _CLASS = RunnerLLM
    return RunnerLLM
