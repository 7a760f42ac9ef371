"""Settings, endpoints, pacing and health for the built-in ``openai`` provider.

An endpoint is one place a model is served: an OpenAI-compatible ``base_url`` or an Azure
OpenAI deployment, with the *name* of the environment variable that holds its key. A
model may have several; the provider rotates between them, paces each at its requests-
and tokens-per-minute limit (configured, or learned from the ``x-ratelimit-*`` headers)
and rests one that keeps failing.

Keys are read from the environment when a client is made and live only in that client:
they are never part of a label, an error message, an identity or a file.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gatekeeper.host import yamlfile
from gatekeeper.types import UsageError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_AZURE_API_VERSION = "2024-10-21"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What API keys and bearer tokens look like, for scrubbing server messages that echo one.
SECRET_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{4,}|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_.\-]+)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Price(_Strict):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0, description="price of cached prompt tokens")


class EndpointSettings(_Strict):
    """One endpoint of a model. ``base_url`` for OpenAI-compatible servers, or the
    ``azure_*`` fields for Azure OpenAI."""

    name: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    azure_endpoint: str | None = None
    deployment: str | None = None
    api_version: str | None = None
    azure_ad_token_env: str | None = None
    model: str | None = Field(default=None, description="model id at this endpoint (default: the spec's)")
    rpm: float | None = Field(default=None, gt=0, description="requests per minute")
    tpm: float | None = Field(default=None, gt=0, description="tokens per minute")
    organization: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_literal_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for literal in ("api_key", "key", "azure_ad_token", "token"):
                if literal in data:
                    raise ValueError(
                        f"'{literal}' is not accepted: put the secret in an environment variable "
                        "and name it with api_key_env (or azure_ad_token_env)"
                    )
        return data

    @field_validator("api_key_env", "azure_ad_token_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.match(value):
            # Never echo the value: it may be the key itself, pasted in the wrong place.
            raise ValueError("must name an environment variable (letters, digits, _), not hold the secret")
        return value

    @field_validator("base_url", "azure_endpoint")
    @classmethod
    def _plain_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL")
        if parts.username or parts.password or parts.query:
            raise ValueError("must not carry credentials or a query; name the key's variable with api_key_env")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_kind(self) -> EndpointSettings:
        if self.azure_endpoint and self.base_url:
            raise ValueError("give base_url (OpenAI-compatible) or azure_endpoint (Azure OpenAI), not both")
        if (self.deployment or self.api_version or self.azure_ad_token_env) and not self.azure_endpoint:
            raise ValueError("deployment, api_version and azure_ad_token_env need azure_endpoint")
        if self.azure_endpoint and self.api_key_env and self.azure_ad_token_env:
            raise ValueError("give api_key_env or azure_ad_token_env, not both")
        return self


class ModelSettings(_Strict):
    """``providers.openai.models.NAME``: where one model is served, and what it costs."""

    endpoints: list[EndpointSettings] = Field(default_factory=list)
    price: Price | None = None
    batch: bool = False


class OpenAISettings(_Strict):
    """The ``providers.openai`` section of gatekeeper.yaml."""

    models: dict[str, ModelSettings] = Field(default_factory=dict)
    prices: dict[str, Price] = Field(default_factory=dict, description="model id → price")
    batch_discount: float = Field(default=0.5, gt=0, le=1, description="batch price = this × online price")
    batch_poll_s: float = Field(default=30.0, gt=0)
    batch_dir: str = ".gatekeeper/batches"
    batch_max_wait_s: float = Field(default=26 * 3600.0, gt=0, description="give up on a batch after this")
    rest_after_failures: int = Field(default=3, ge=1, description="consecutive failures that rest an endpoint")
    rest_s: float = Field(default=30.0, ge=0, description="first rest; doubles for a relapse, up to 10 min")
    timeout_s: float | None = Field(default=None, gt=0, description="per-request limit (default: runner's)")
    token_param: str = Field(default="max_tokens", pattern="^(max_tokens|max_completion_tokens)$")

    def price_of(self, name: str, model_id: str) -> Price | None:
        configured = self.models.get(name)
        if configured is not None and configured.price is not None:
            return configured.price
        return self.prices.get(model_id) or self.prices.get(name)


class _ProvidersView(BaseModel):
    model_config = ConfigDict(extra="ignore")
    openai: OpenAISettings = Field(default_factory=OpenAISettings)


class _ConfigView(BaseModel):
    model_config = ConfigDict(extra="ignore")
    providers: _ProvidersView = Field(default_factory=_ProvidersView)


def load_settings(providers: Mapping[str, Any], source: str | None) -> OpenAISettings:
    """Validate ``providers.openai``; errors name gatekeeper.yaml's line and field."""
    section = {"providers": {"openai": providers.get("openai") or {}}}
    locator = yamlfile.Locator(None)
    path = Path(source) if source else Path("gatekeeper.yaml")
    if source and path.suffix in (".yaml", ".yml") and path.is_file():
        _, locator = yamlfile.load(path)
    return yamlfile.validate(_ConfigView, section, path, locator).providers.openai


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret and anything shaped like a key replaced."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return SECRET_PATTERN.sub("[redacted]", text)


class Pacer:
    """Paces one endpoint under its request and token rates (per second), with a pause
    for ``Retry-After``. Each call reserves the next free slot (a schedule, not a burst),
    so requests leave evenly spaced at the limit and never in a clump that trips it."""

    def __init__(self, rpm: float | None, tpm: float | None) -> None:
        self.configured_rpm = rpm
        self.configured_tpm = tpm
        self.rpm = rpm
        self.tpm = tpm
        self._next_request = 0.0
        self._next_token = 0.0
        self.paused_until = 0.0

    def available_in(self) -> float:
        """Seconds until a request could leave now."""
        now = time.monotonic()
        return max(0.0, self._next_request - now, self._next_token - now, self.paused_until - now)

    async def wait(self, tokens: int) -> None:
        while True:
            now = time.monotonic()
            if self.paused_until > now:
                await asyncio.sleep(self.paused_until - now)
                continue
            start = max(now, self._next_request, self._next_token)
            if self.rpm:
                self._next_request = start + 60.0 / self.rpm
            if self.tpm:
                self._next_token = start + 60.0 * tokens / self.tpm
            if start > now:
                await asyncio.sleep(start - now)
            if self.paused_until <= time.monotonic():
                return

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    def settle(self, estimated: int, actual: int) -> None:
        """Correct the token schedule once the real usage is known."""
        if self.tpm and actual != estimated:
            self._next_token += 60.0 * (actual - estimated) / self.tpm

    def learn(self, headers: Mapping[str, str]) -> None:
        """Adopt the limits the endpoint announces (``x-ratelimit-limit-*``), never above
        what the configuration says."""
        for header, attr, configured in (
            ("x-ratelimit-limit-requests", "rpm", self.configured_rpm),
            ("x-ratelimit-limit-tokens", "tpm", self.configured_tpm),
        ):
            value = headers.get(header)
            try:
                announced = float(value) if value is not None else None
            except ValueError:
                announced = None
            if announced and announced > 0:
                setattr(self, attr, min(announced, configured) if configured else announced)


class Endpoint:
    """One endpoint at run time: its label, pacer, health and (per event loop) client."""

    def __init__(self, settings: EndpointSettings, model_id: str, *, default_timeout: float) -> None:
        self.settings = settings
        self.model_id = settings.model or settings.deployment or model_id
        self.azure = settings.azure_endpoint is not None
        if self.azure:
            self.url = f"{settings.azure_endpoint}/openai/deployments/{settings.deployment or self.model_id}"
        else:
            self.url = settings.base_url or os.environ.get("OPENAI_BASE_URL", "").rstrip("/") or DEFAULT_BASE_URL
        self.label = settings.name or self.url
        self.timeout = default_timeout
        self.pacer = Pacer(settings.rpm, settings.tpm)
        self.consecutive_failures = 0
        self.rests = 0
        self.rested_until = 0.0
        self.calls = 0
        self.failures = 0
        self.last_chosen = 0
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}

    @property
    def secret_env(self) -> str | None:
        """The environment variable this endpoint's key (or Azure token) is read from."""
        s = self.settings
        if s.azure_ad_token_env:
            return s.azure_ad_token_env
        if s.api_key_env:
            return s.api_key_env
        return "AZURE_OPENAI_API_KEY" if self.azure else DEFAULT_KEY_ENV

    def secret(self) -> str:
        """The key, from the environment. A named variable that is unset is an error; an
        unnamed default may be missing for a local server that wants no key."""
        env = self.secret_env or DEFAULT_KEY_ENV
        value = os.environ.get(env, "")
        explicit = self.settings.api_key_env or self.settings.azure_ad_token_env
        if value:
            return value
        if explicit or self.azure or self.url == DEFAULT_BASE_URL:
            raise UsageError(
                f"endpoint {self.label}: environment variable {env} is not set (it holds the API key)",
                field="api_key_env",
            )
        return "not-needed"  # vLLM, Ollama and LM Studio accept any key

    def client(self) -> Any:
        """The SDK client for the running event loop (the runner starts one per run)."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(id(loop))
        if entry is not None and entry[0] is loop:
            return entry[1]
        import openai

        s = self.settings
        common: dict[str, Any] = {"max_retries": 0, "timeout": self.timeout, "organization": s.organization}
        if self.azure:
            secret: dict[str, Any] = (
                {"azure_ad_token": self.secret()} if s.azure_ad_token_env else {"api_key": self.secret()}
            )
            client: Any = openai.AsyncAzureOpenAI(
                azure_endpoint=s.azure_endpoint or "", azure_deployment=s.deployment or self.model_id,
                api_version=s.api_version or DEFAULT_AZURE_API_VERSION, **secret, **common,
            )
        else:
            client = openai.AsyncOpenAI(base_url=self.url, api_key=self.secret(), **common)
        self._clients[id(loop)] = (loop, client)
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        current = asyncio.get_running_loop()
        for loop, client in clients:
            if loop is current:
                await client.close()
            # A client of a loop that has ended cannot be closed from this one; end_run,
            # called by the runner inside each run's loop, closes them in time.

    # ----------------------------------------------------------------- health

    def usable(self, now: float) -> bool:
        return self.rested_until <= now

    def succeeded(self) -> None:
        self.calls += 1
        self.consecutive_failures = 0
        self.rests = 0

    def failed(self, settings: OpenAISettings) -> None:
        """One more failure; the ``rest_after_failures``-th in a row rests the endpoint."""
        self.calls += 1
        self.failures += 1
        self.consecutive_failures += 1
        if self.consecutive_failures >= settings.rest_after_failures:
            rest = min(600.0, settings.rest_s * 2 ** self.rests)
            self.rested_until = time.monotonic() + rest
            self.rests += 1
            print(f"  openai: endpoint {self.label} failed {self.consecutive_failures} times in a row; "
                  f"resting it {rest:g} s", file=sys.stderr)
            self.consecutive_failures = 0


class EndpointPool:
    """Chooses the endpoint for the next request: a usable one that can send soonest,
    rotating between equals; when every one is resting, the one whose rest ends first."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.endpoints = endpoints
        self._turn = 0

    def choose(self) -> Endpoint:
        now = time.monotonic()
        usable = [e for e in self.endpoints if e.usable(now)]
        if not usable:
            chosen = min(self.endpoints, key=lambda e: e.rested_until)
        else:
            # Soonest free first (to the millisecond); between equals, the least recently used.
            chosen = min(usable, key=lambda e: (math.floor(e.pacer.available_in() * 1000), e.last_chosen))
        self._turn += 1
        chosen.last_chosen = self._turn
        return chosen

    def secrets(self) -> list[str]:
        values = []
        for endpoint in self.endpoints:
            env = endpoint.secret_env
            if env and os.environ.get(env):
                values.append(os.environ[env])
        return values
