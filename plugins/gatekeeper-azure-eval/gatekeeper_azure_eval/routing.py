"""Routing azure-ai-evaluation's judge calls through gatekeeper's runner.

azure's prompty evaluators take a *model configuration* (``type``, ``model``, ``base_url``,
``api_key``): that is its documented hook for choosing the judge. With it, the evaluator
loads a Prompty flow (``evaluator._flow``, kept by its ``PromptyModelRunner``) which renders
the prompt, prepares the chat-completions parameters, then hands them to the flow's send
step (``AsyncPrompty._send_with_retries(api_client, params, timeout)``) and parses the
``ChatCompletion`` it returns.

We keep everything of azure's but that send step. :class:`RoutedRunner` replaces the
evaluator's model runner; every flow azure installs in it (groundedness swaps flows when
a query is given) gets its send step bound to :func:`send_through_runner`, which turns the
prepared parameters into a :class:`~gatekeeper.GenerationRequest`, awaits
``EvalContext.generate`` on the judge model (cache, retries, Retry-After, AIMD, cost) and
returns the reply as a ``ChatCompletion``. The OpenAI client azure builds from the model
configuration is never used: its ``base_url`` is an ``.invalid`` host, which cannot resolve,
so a call that escaped the routing would fail at once instead of reaching the network.
A loopback OpenAI-compatible shim would have worked too, but it would have bypassed the
runner's cache and accounting, or duplicated them.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from typing import Any

from gatekeeper import Case, EvalContext, GenerationRequest, Model, ModelSpec

UNREACHABLE_BASE_URL = "http://gatekeeper-runner.invalid/v1"
"""The model configuration's endpoint: never contacted (RFC 6761 reserves ``.invalid``)."""


class JudgeUnavailable(RuntimeError):
    """The judge model could not answer (the runner gave up)."""


@dataclass
class JudgeCall:
    """What the send step needs for one scored case: the runner, the judge and the case."""

    ctx: EvalContext
    judge: Model
    spec: ModelSpec
    case: Case
    exchanges: list[dict[str, Any]] = field(default_factory=list)
    cost: float = 0.0


CURRENT: contextvars.ContextVar[JudgeCall] = contextvars.ContextVar("gatekeeper_azure_eval_call")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def request_from_params(params: dict[str, Any], case: Case) -> GenerationRequest:
    """The runner request for azure's prepared chat-completions parameters."""
    messages = tuple({"role": str(m.get("role", "user")), "content": _text(m.get("content"))}
                     for m in params.get("messages", []))
    fmt = params.get("response_format")
    max_tokens = params.get("max_tokens") or params.get("max_completion_tokens") or 800
    return GenerationRequest(
        case=case, messages=messages, max_tokens=int(max_tokens), temperature=float(params.get("temperature") or 0.0),
        seed=params.get("seed") if isinstance(params.get("seed"), int) else 0,
        response_format=fmt if isinstance(fmt, dict) else None,
    )


async def send_through_runner(api_client: Any = None, params: Any = None, timeout: Any = None, **_: Any) -> Any:
    """The flow's send step, through gatekeeper's runner; returns an OpenAI ``ChatCompletion``."""
    from openai.types.chat import ChatCompletion

    try:
        call = CURRENT.get()
    except LookupError:
        raise RuntimeError("azure evaluator called outside a gatekeeper scoring context") from None
    request = request_from_params(dict(params or {}), call.case)
    assert call.ctx.generate is not None
    generation = await call.ctx.generate(call.judge, request)
    call.exchanges.append({"messages": list(request.messages), "reply": generation.text,
                           "cached": bool(generation.cached), "error": generation.error})
    call.cost += float(generation.cost or 0.0)
    if generation.error is not None:
        raise JudgeUnavailable(f"judge {call.spec.provider}:{call.spec.name} failed: {generation.error}")
    usage = generation.usage or {}
    prompt_tokens = int(usage.get("prompt_tokens", 0))
    completion_tokens = int(usage.get("completion_tokens", 0))
    return ChatCompletion.model_validate({
        "id": "gatekeeper-runner", "object": "chat.completion", "created": int(time.time()),
        "model": call.spec.name,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": generation.text}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


def route(flow: Any) -> Any:
    """Bind ``flow``'s send step to the runner (idempotent)."""
    if flow is not None and getattr(flow, "_send_with_retries", None) is not send_through_runner:
        flow._send_with_retries = send_through_runner
    return flow


def routed_runner_class() -> type:
    """A ``PromptyModelRunner`` subclass whose flows, however often azure replaces them, are routed."""
    from azure.ai.evaluation._evaluators._common._model_runners import PromptyModelRunner

    class RoutedRunner(PromptyModelRunner):
        def __init__(self, inner: Any) -> None:  # no super().__init__: the inner runner loaded the flow
            self._routed_flow = route(inner.flow)

        @property
        def flow(self) -> Any:
            return self._routed_flow

        @flow.setter
        def flow(self, value: Any) -> None:
            self._routed_flow = route(value)

    return RoutedRunner


def install(evaluator: Any) -> Any:
    """Route ``evaluator``'s judge calls through the runner; returns the evaluator."""
    runner = evaluator._model_runner
    evaluator._model_runner = routed_runner_class()(runner)
    return evaluator


def model_configuration(spec: ModelSpec) -> dict[str, str]:
    """The OpenAI model configuration azure is constructed with (see the module docstring)."""
    return {"type": "openai", "model": spec.name, "base_url": UNREACHABLE_BASE_URL,
            "api_key": "unused: calls go through gatekeeper's runner"}
