"""The load-test path of the ``openai`` provider: one request, sent at once, never retried.

A load run measures the endpoint, so nothing here smooths it over: no pacing (the arrival
process decides when requests leave), no retry (a 429 is a measurement), no resting of an
endpoint. With ``stream=True`` the answer is read as server-sent events and ``on_delta`` is
called with each content delta as it arrives, so the caller times the first token; the
usage comes from the final chunk (``stream_options.include_usage``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gatekeeper.engine.load.measurements import RequestFailed, Status
from gatekeeper.types import Generation, GenerationRequest, ProviderError, RateLimited

if TYPE_CHECKING:
    from gatekeeper.builtin.providers.openai.endpoints import Endpoint
    from gatekeeper.builtin.providers.openai.provider import OpenAIModel


async def send_once(
    model: OpenAIModel, request: GenerationRequest, *, stream: bool, on_delta: Callable[[str], None] | None = None,
) -> Generation:
    """Send ``request`` once to the next endpoint of ``model``; raise :class:`RateLimited`
    (429) or :class:`RequestFailed` (with its measured status) when it fails."""
    import openai

    from gatekeeper.builtin.providers.openai.wire import error_detail, generation_from_completion, request_body

    endpoint = model.pool.choose()
    client = endpoint.client()
    body = request_body(endpoint.model_id, request, model.token_param)
    try:
        if not stream:
            raw = await client.chat.completions.with_raw_response.create(**body)
            try:
                data = json.loads(raw.text)
            except ValueError as exc:
                raise RequestFailed(model.message(endpoint, "returned malformed JSON", str(exc)[:200]),
                                    status="error") from None
            return generation_from_completion(data, endpoint, price=model.price)
        return await _streamed(model, endpoint, client, body, on_delta)
    except openai.RateLimitError as exc:
        from gatekeeper.builtin.providers.openai.wire import retry_after_of

        raise RateLimited(model.message(endpoint, "rate limited (HTTP 429)", error_detail(exc)),
                          retry_after=retry_after_of(exc.response.headers)) from None
    except openai.APIStatusError as exc:
        status: Status = "5xx" if exc.status_code >= 500 else "error"
        raise RequestFailed(model.message(endpoint, f"HTTP {exc.status_code}", error_detail(exc)),
                            status=status) from None
    except openai.APITimeoutError:
        raise RequestFailed(model.message(endpoint, f"timed out after {endpoint.timeout:g} s"),
                            status="timeout") from None
    except openai.APIConnectionError as exc:
        cause = f"{type(exc.__cause__).__name__}: {exc.__cause__}" if exc.__cause__ else str(exc)
        raise RequestFailed(model.message(endpoint, "connection failed", cause), status="error") from None
    except ProviderError:
        raise
    except (openai.APIError, ValueError) as exc:
        raise RequestFailed(model.message(endpoint, "returned a malformed answer", str(exc)[:200]),
                            status="error") from None


async def _streamed(
    model: OpenAIModel, endpoint: Endpoint, client: Any, body: dict[str, Any],
    on_delta: Callable[[str], None] | None,
) -> Generation:
    from gatekeeper.builtin.providers.openai.wire import cost_of

    chunks = await client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
    parts: list[str] = []
    usage: dict[str, int] = {}
    finish: str | None = None
    served: str | None = None
    try:
        async for chunk in chunks:
            served = served or getattr(chunk, "model", None)
            if chunk.usage is not None:
                usage = {k: int(v) for k in ("prompt_tokens", "completion_tokens", "total_tokens")
                         if isinstance(v := getattr(chunk.usage, k, None), int)}
            for choice in chunk.choices or []:
                content = choice.delta.content if choice.delta is not None else None
                if content:
                    parts.append(content)
                    if on_delta is not None:
                        on_delta(content)
                if choice.finish_reason:
                    finish = choice.finish_reason
    finally:
        await chunks.close()  # a cancelled or failed read must not leave the connection open
    if finish is None:
        raise RequestFailed(model.message(endpoint, "the stream ended without a finish reason"), status="error")
    metadata = {"endpoint": endpoint.label, "served_model": served, "finish_reason": finish, "deltas": len(parts)}
    return Generation(text="".join(parts), usage=usage, cost=cost_of(usage, model.price), metadata=metadata)
