"""Built-in provider ``openai``: chat completions on any OpenAI-compatible endpoint.

Specs::

    openai:gpt-4o-mini                                   # OPENAI_API_KEY, api.openai.com
    openai:llama3?base_url=http://localhost:8000/v1      # vLLM, Ollama, LM Studio
    openai:gpt-4o?azure_endpoint=https://x.openai.azure.com&deployment=prod&api_key_env=AZ_KEY
    openai:gpt-4o-mini?batch=true                        # Batch API: half price, hours
    {provider: openai, model: gpt-4o-mini, base_url: ..., api_key_env: MY_KEY}

or the model's endpoints in ``providers.openai.models`` of gatekeeper.yaml (see
docs/providers.md). The SDK's own retries are off: the runner retries, paces and pauses,
so every failure is counted once and a paid request is sent again only when it failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gatekeeper import hookimpl
from gatekeeper.kinds import Model, ModelProvider, Register
from gatekeeper.types import (
    Config,
    Generation,
    GenerationRequest,
    ModelIdentity,
    ModelSpec,
    PluginError,
    ProviderError,
    RateLimited,
    UsageError,
    stable_hash,
)

if TYPE_CHECKING:  # the endpoint settings (pydantic, YAML) are imported when a model loads
    from gatekeeper.builtin.providers.openai.endpoints import Endpoint, OpenAISettings, Price

MODEL_PARAMS = {"batch", "poll_s", "concurrency", "price_in", "price_out", "token_param", "timeout_s"}
TRUE = ("1", "true", "yes", "on")














class OpenAIModel(Model):
    """A model served by one or more OpenAI-compatible endpoints."""

    def __init__(
        self, spec: ModelSpec, settings: OpenAISettings, endpoints: list[Endpoint], *,
        price: Price | None, token_param: str, batch: bool, poll_s: float, config: Config,
    ) -> None:
        from gatekeeper.builtin.providers.openai.endpoints import EndpointPool
        self.spec = spec
        self.settings = settings
        self.pool = EndpointPool(endpoints)
        self.price = price
        self.token_param = token_param
        self.batch = batch
        self.poll_s = poll_s
        self.config = config
        models = sorted({e.model_id for e in endpoints})
        self.identity = ModelIdentity(
            provider="openai", name=spec.name,
            # What answers: the endpoints and the model ids they serve. Never a key.
            digest=stable_hash({"models": models, "endpoints": sorted(e.url for e in endpoints)}),
            version=",".join(models),
            details={"endpoints": [e.label for e in endpoints], "batch": batch},
        )
        if batch:
            self.max_batch_size = 50_000  # the Batch API's limit per file
            self.timeout_s = float("inf")  # a batch takes minutes to hours; it polls on its own clock

    # ----------------------------------------------------------------- online

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if self.batch:
            from gatekeeper.builtin.providers.openai.batch import run_batch

            return await run_batch(self, list(requests))
        return [await self._complete(request) for request in requests]

    async def _complete(self, request: GenerationRequest) -> Generation:
        import openai

        from gatekeeper.builtin.providers.openai.wire import estimate_tokens, generation_from_completion, request_body

        endpoint = self.pool.choose()
        client = endpoint.client()  # first: making it imports the SDK, which must not eat paced time
        estimated = estimate_tokens(request)
        await endpoint.pacer.wait(estimated)
        body = request_body(endpoint.model_id, request, self.token_param)
        try:
            raw = await client.chat.completions.with_raw_response.create(**body)
            endpoint.pacer.learn(raw.headers)
            data = json.loads(raw.text)
        except (openai.APIError, ValueError) as exc:
            failure = self._failure(endpoint, exc)
            if isinstance(failure, Generation):
                return failure
            raise failure from None
        try:
            generation = generation_from_completion(data, endpoint, price=self.price)
        except ProviderError:
            endpoint.failed(self.settings)
            raise
        endpoint.succeeded()
        endpoint.pacer.settle(estimated, generation.usage.get("total_tokens", estimated))
        return generation

    def _failure(self, endpoint: Endpoint, exc: Exception) -> ProviderError | Generation:
        """What an SDK error means for the runner: retry later (429), retry (timeouts,
        connections, 5xx), fail this case only (400, 404, 422), or stop (garbage)."""
        import openai

        from gatekeeper.builtin.providers.openai.wire import error_detail, retry_after_of

        if isinstance(exc, openai.RateLimitError):
            wait = retry_after_of(exc.response.headers)
            endpoint.pacer.learn(exc.response.headers, accepted=False)
            endpoint.pacer.pause(wait if wait is not None else 1.0)
            return RateLimited(self.message(endpoint, "rate limited (HTTP 429)", error_detail(exc)), retry_after=wait)
        if isinstance(exc, openai.APIStatusError) and 400 <= exc.status_code < 500 and exc.status_code not in (
            401, 403, 408, 409,
        ):
            endpoint.succeeded()  # the endpoint works; this request is wrong for it
            return Generation(text="", error=self.message(endpoint, f"HTTP {exc.status_code}", error_detail(exc)))
        endpoint.failed(self.settings)
        if isinstance(exc, openai.APITimeoutError):
            return ProviderError(self.message(endpoint, f"timed out after {endpoint.timeout:g} s"), retryable=True)
        if isinstance(exc, openai.APIConnectionError):
            cause = f"{type(exc.__cause__).__name__}: {exc.__cause__}" if exc.__cause__ else str(exc)
            return ProviderError(self.message(endpoint, "connection failed", cause), retryable=True)
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return ProviderError(
                self.message(endpoint, f"HTTP {exc.status_code}: check the key in ${endpoint.secret_env}",
                             error_detail(exc)),
                retryable=len(self.pool.endpoints) > 1,  # another endpoint may take it
            )
        if isinstance(exc, openai.APIStatusError):
            return ProviderError(self.message(endpoint, f"HTTP {exc.status_code}", error_detail(exc)), retryable=True)
        return ProviderError(self.message(endpoint, "returned malformed JSON", f"{type(exc).__name__}: {exc}"[:200]))

    def message(self, endpoint: Endpoint, what: str, detail: str = "") -> str:
        """An error message naming the endpoint, with every secret scrubbed."""
        from gatekeeper.builtin.providers.openai.endpoints import redact
        text = f"endpoint {endpoint.label}: {what}" + (f": {detail}" if detail else "")
        return redact(text, self.pool.secrets())

    # ----------------------------------------------------------------- load tests

    async def send_once(
        self, request: GenerationRequest, *, stream: bool, on_delta: Callable[[str], None] | None = None,
    ) -> Generation:
        """One unpaced, unretried request for a load run (see :mod:`.streaming`)."""
        from gatekeeper.builtin.providers.openai.streaming import send_once

        return await send_once(self, request, stream=stream, on_delta=on_delta)

    def target_urls(self) -> list[str]:
        """Where this model sends requests: a load run refuses endpoints nobody named."""
        return [endpoint.url for endpoint in self.pool.endpoints]

    async def end_run(self) -> None:
        for endpoint in self.pool.endpoints:
            await endpoint.aclose()

    async def aclose(self) -> None:
        await self.end_run()


class OpenAIProvider(ModelProvider):
    name = "openai"
    description = ("OpenAI-compatible chat completions (OpenAI, Azure OpenAI, vLLM, Ollama): "
                   "openai:MODEL[?base_url=URL&api_key_env=NAME&batch=true]")

    def load(self, spec: ModelSpec, config: Config) -> Model:
        from gatekeeper.builtin.providers.openai.endpoints import Endpoint, EndpointSettings, load_settings
        try:
            import openai  # noqa: F401  (here, once: importing inside a timed call would eat its time)
        except ImportError:
            raise PluginError("openai", "the openai package is not installed: pip install openai") from None
        settings = load_settings(config.providers, config.source)
        endpoint_fields = set(EndpointSettings.model_fields) - {"name"}
        unknown = set(spec.params) - endpoint_fields - MODEL_PARAMS
        if unknown:
            if unknown & {"api_key", "key", "token", "azure_ad_token"}:
                raise UsageError("a model spec must not carry a secret: name its environment variable "
                                 "with api_key_env (or azure_ad_token_env)", field="model")
            raise UsageError(
                f"unknown parameter(s) {', '.join(sorted(unknown))} for openai:{spec.name}; known: "
                f"{', '.join(sorted(endpoint_fields | MODEL_PARAMS))}", field="model",
            )
        configured = settings.models.get(spec.name)
        endpoint_params = {k: v for k, v in spec.params.items() if k in endpoint_fields}
        if endpoint_params:
            try:
                endpoint_settings = [EndpointSettings.model_validate(endpoint_params)]
            except ValueError as exc:
                first = exc.errors()[0] if hasattr(exc, "errors") else {"msg": str(exc), "loc": ()}
                where = ".".join(str(p) for p in first["loc"]) or "model"
                raise UsageError(f"{where}: {str(first['msg']).removeprefix('Value error, ')}",
                                 field="model") from None
        elif configured is not None and configured.endpoints:
            endpoint_settings = configured.endpoints
        else:
            endpoint_settings = [EndpointSettings()]
        timeout = float(spec.params.get("timeout_s") or settings.timeout_s or config.runner.timeout_s)
        endpoints = [Endpoint(s, spec.name, default_timeout=timeout + 1.0) for s in endpoint_settings]
        for endpoint in endpoints:
            endpoint.secret()  # a missing key is a usage error now, not 2,000 failed calls later
        price = self._price(spec, settings, endpoints)
        batch = spec.params.get("batch", "").lower() in TRUE or bool(configured and configured.batch)
        if batch and any(e.azure for e in endpoints):
            raise UsageError("batch mode is for OpenAI-style endpoints; Azure batch deployments are not "
                             "supported yet", field="model")
        model = OpenAIModel(
            spec, settings, endpoints, price=price, batch=batch, config=config,
            token_param=spec.params.get("token_param") or settings.token_param,
            poll_s=float(spec.params.get("poll_s") or settings.batch_poll_s),
        )
        if spec.params.get("concurrency"):
            model.max_concurrency = int(spec.params["concurrency"])
        return model

    @staticmethod
    def _price(spec: ModelSpec, settings: OpenAISettings, endpoints: list[Endpoint]) -> Price | None:
        from gatekeeper.builtin.providers.openai.endpoints import Price
        if "price_in" in spec.params or "price_out" in spec.params:
            try:
                return Price(input=float(spec.params.get("price_in", 0)), output=float(spec.params.get("price_out", 0)))
            except ValueError:
                raise UsageError("price_in and price_out are dollars per million tokens", field="model") from None
        return settings.price_of(spec.name, endpoints[0].model_id)


@hookimpl
def gatekeeper_configure(config: Config) -> None:
    # Check providers.openai at start-up, so a typo is reported before anything runs.
    if config.providers.get("openai") is not None:
        from gatekeeper.builtin.providers.openai.endpoints import load_settings

        load_settings(config.providers, config.source)


@hookimpl
def gatekeeper_register_models(register: Register[ModelProvider]) -> None:
    register(OpenAIProvider)
