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
import collections
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

from gatekeeper.host import secrets as configured_secrets
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
    """``text`` with every known secret and anything shaped like a key replaced.

    Known: ``secrets`` and the value of every secret variable the project configures
    (:mod:`gatekeeper.host.secrets`), so a server echoing *another* endpoint's key is scrubbed too.
    """
    text = configured_secrets.redact(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return SECRET_PATTERN.sub("[redacted]", text)


class Pacer:
    """Paces one endpoint under its request and token rates (per second), with a pause
    for ``Retry-After``. Each call reserves the next free slot (a schedule, not a burst),
    so requests leave evenly spaced at the limit and never in a clump that trips it."""

    def __init__(self, rpm: float | None, tpm: float | None, label: str = "") -> None:
        self.configured_rpm = rpm
        self.configured_tpm = tpm
        self.rpm = rpm
        self.tpm = tpm
        self.label = label
        self.distrusted: set[str] = set()
        """Announced limits (``rpm``/``tpm``) the endpoint's own behaviour contradicted."""
        self.notes: list[str] = []
        """What was learned about the limits, in order (also printed on stderr)."""
        self._said: set[str] = set()
        self._accepted: collections.deque[float] = collections.deque()
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

    def learn(self, headers: Mapping[str, str], *, accepted: bool = True) -> None:
        """Take note of the limits the endpoint announces (``x-ratelimit-limit-*``).

        A configured ``rpm``/``tpm`` takes precedence (the announced value is only logged);
        otherwise the announced per-minute limit is adopted — unless what the endpoint
        observably does contradicts it (its own reset header, or the traffic it accepted,
        implies a much higher rate): then it is said once on stderr and not used for pacing,
        rather than slowing the run down silently (429s and ``Retry-After`` still pace it).
        """
        if accepted:
            self._accepted.append(time.monotonic())
        for header, attr, configured in (
            ("x-ratelimit-limit-requests", "rpm", self.configured_rpm),
            ("x-ratelimit-limit-tokens", "tpm", self.configured_tpm),
        ):
            announced = _positive(headers.get(header))
            if announced is None:
                continue
            if configured:
                self._say(f"{attr}:configured:{announced:g}", f"announces {attr} {announced:g} "
                          f"({header}); the configured {attr} {configured:g} takes precedence")
                self._check_traffic(attr, announced)
                continue
            if attr in self.distrusted:
                continue
            contradiction = self._contradiction(attr, announced, headers)
            if contradiction:
                self.distrusted.add(attr)
                setattr(self, attr, None)
                self._say(f"{attr}:contradicted", f"announces {header}: {announced:g} but {contradiction}: "
                          f"that is not a per-minute limit, so it is not used for pacing (configure {attr} "
                          "to set one; 429 responses and Retry-After still slow it down)")
                continue
            if getattr(self, attr) != announced:
                self._say(f"{attr}:learned:{announced:g}", f"learned {attr} {announced:g} from {header}")
            setattr(self, attr, announced)

    def _contradiction(self, attr: str, announced: float, headers: Mapping[str, str]) -> str:
        """Why ``announced`` (per minute) cannot be the endpoint's limit, or ``""``."""
        if attr == "rpm":
            remaining = _positive(headers.get("x-ratelimit-remaining-requests"), allow_zero=True)
            reset = _duration_s(headers.get("x-ratelimit-reset-requests"))
            used = announced - remaining if remaining is not None else None
            if used and used > 0 and reset is not None and reset > 0:
                implied = 60.0 * used / reset
                if implied > CONTRADICTION_FACTOR * announced:
                    return (f"its reset header says the {used:g} used request(s) are replenished in "
                            f"{reset:g} s (about {implied:.0f} per minute)")
        return self._traffic_contradiction(attr, announced)

    def _traffic_contradiction(self, attr: str, announced: float) -> str:
        if attr != "rpm":
            return ""
        now = time.monotonic()
        while self._accepted and self._accepted[0] < now - 60.0:
            self._accepted.popleft()
        accepted = len(self._accepted)
        if accepted > CONTRADICTION_FACTOR * announced + TRAFFIC_SLACK:
            return f"it accepted {accepted} requests in the last 60 s"
        return ""

    def _check_traffic(self, attr: str, announced: float) -> None:
        contradiction = self._traffic_contradiction(attr, announced)
        if contradiction:
            self._say(f"{attr}:traffic", f"announced {attr} {announced:g}, but {contradiction}: the "
                      "announced value is not a per-minute limit")

    def _say(self, key: str, text: str) -> None:
        """One line on stderr per distinct fact (the limits a run learns are part of its log)."""
        if key in self._said:
            return
        self._said.add(key)
        self.notes.append(text)
        print(f"  openai endpoint {self.label}: {text}", file=sys.stderr)


CONTRADICTION_FACTOR = 3.0
"""Observed behaviour must exceed an announced per-minute limit this many times to contradict it."""
TRAFFIC_SLACK = 8
"""Requests in flight before a limit was known may exceed it by this many without contradiction."""
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def _positive(value: str | None, *, allow_zero: bool = False) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    if number is None or not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        return None
    return number


def _duration_s(value: str | None) -> float | None:
    """``"1s"``, ``"6m0s"``, ``"120ms"``, ``"0.050s"`` → seconds (``None`` when unreadable)."""
    if not value:
        return None
    text = value.strip()
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return _positive(text, allow_zero=True)
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


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
        self.pacer = Pacer(settings.rpm, settings.tpm, self.label)
        configured_secrets.register(self.secret_env)
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
