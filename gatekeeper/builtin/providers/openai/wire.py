"""The chat-completions wire format: request bodies, completions to generations, errors, cost.

Shared by the online path (:mod:`.provider`) and the Batch API (:mod:`.batch`), which
send the same bodies and read the same completions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gatekeeper.builtin.providers.openai.endpoints import Endpoint, Price
from gatekeeper.types import Generation, GenerationRequest, ProviderError


def request_body(model_id: str, request: GenerationRequest, token_param: str) -> dict[str, Any]:
    """The chat completions body for ``request`` (online and in a batch file alike)."""
    body: dict[str, Any] = {
        "model": model_id,
        "messages": [dict(m) for m in request.messages],
        token_param: request.max_tokens,
        "temperature": request.temperature,
    }
    if request.seed is not None:
        body["seed"] = request.seed
    if request.stop:
        body["stop"] = list(request.stop)
    if request.response_format is not None:
        body["response_format"] = request.response_format
    if request.top_logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = request.top_logprobs
    return body


def estimate_tokens(request: GenerationRequest) -> int:
    """Tokens a request counts against a TPM limit before its usage is known (≈4 chars
    a token, plus the completion budget, as OpenAI counts it)."""
    chars = sum(len(m.get("content", "")) for m in request.messages)
    return chars // 4 + 4 * len(request.messages) + request.max_tokens


def cost_of(usage: Mapping[str, int], price: Price | None, factor: float = 1.0) -> float | None:
    if price is None:
        return None
    prompt = usage.get("prompt_tokens", 0)
    cached = usage.get("cached_tokens", 0) if price.cached_input is not None else 0
    dollars = (
        (prompt - cached) * price.input + cached * (price.cached_input or 0.0)
        + usage.get("completion_tokens", 0) * price.output
    ) / 1e6
    return round(dollars * factor, 8)


def generation_from_completion(
    data: Any, endpoint: Endpoint, *, price: Price | None, factor: float = 1.0
) -> Generation:
    """Read a chat.completion body strictly; anything else is a clear error naming the endpoint."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ProviderError(f"endpoint {endpoint.label} returned a response that is not a chat completion "
                            "(no 'choices'); is base_url an OpenAI-compatible /v1 URL?")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise ProviderError(f"endpoint {endpoint.label} returned a choice without a 'message'")
    usage_in = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    usage = {k: int(usage_in[k]) for k in ("prompt_tokens", "completion_tokens", "total_tokens")
             if isinstance(usage_in.get(k), int)}
    details = usage_in.get("prompt_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int) and details["cached_tokens"]:
        usage["cached_tokens"] = details["cached_tokens"]
    metadata: dict[str, Any] = {
        "endpoint": endpoint.label, "served_model": data.get("model"),
        "finish_reason": choice.get("finish_reason"),
    }
    if data.get("system_fingerprint"):
        metadata["system_fingerprint"] = data["system_fingerprint"]
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
        metadata["logprobs"] = logprobs["content"]
    content = message.get("content")
    if content is None:
        refusal = message.get("refusal") or "no content"
        return Generation(text="", usage=usage, cost=cost_of(usage, price, factor),
                          error=f"endpoint {endpoint.label}: the model gave no text ({refusal})", metadata=metadata)
    return Generation(text=str(content), usage=usage, cost=cost_of(usage, price, factor), metadata=metadata)


def error_detail(exc: Any) -> str:
    """The server's own message from an SDK status error (its ``error.message``)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else body
        message = inner.get("message")
        if isinstance(message, str) and message:
            return message
    return str(getattr(exc, "message", exc))


def retry_after_of(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (what OpenAI and Azure send)."""
    if not headers:
        return None
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            continue
    return None
