"""Data types shared by the host and its plugins.

Everything a plugin receives or returns is one of these. They are plain dataclasses so
that plugins need no extra library to build them and so that they serialise to JSON
with :func:`dataclasses.asdict`.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

from pydantic import BaseModel, ConfigDict, Field

Message = dict[str, str]
"""A chat message: ``{"role": "system"|"user"|"assistant", "content": "..."}``."""

ScoreStatus = Literal["ok", "nodata", "error"]


class GatekeeperError(Exception):
    """Base class of every error gatekeeper reports to the user without a traceback."""

    exit_code = 5


class UsageError(GatekeeperError):
    """Bad input from the user: a file, a field, a flag. Exit code 4.

    ``file``, ``line`` and ``field`` locate the mistake; ``str()`` gives the one-line
    message the CLI prints: ``suites/a.yaml:12: cases[3].id: duplicate case id 'x'``.
    """

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        what = f"{self.field}: " if self.field else ""
        return f"{where}{what}{self.message}"


class PluginError(GatekeeperError):
    """A plugin failed to import, register or run. Exit code 5; names the plugin."""

    exit_code = 5

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        self.message = message
        super().__init__(f"plugin {plugin!r}: {message}")


class ProviderError(GatekeeperError):
    """A model provider could not produce an output. ``retryable`` errors are retried.

    ``retry_after`` (seconds) is honoured by the runner when the endpoint sent one.
    """

    exit_code = 5

    def __init__(
        self, message: str, *, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)


class RateLimited(ProviderError):
    """The endpoint asked us to slow down (HTTP 429 or equivalent). Always retryable."""

    def __init__(self, message: str = "rate limited", *, retry_after: float | None = None):
        super().__init__(message, retryable=True, retry_after=retry_after)


def stable_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys, no whitespace)."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run: ``PROVIDER:NAME[?key=value&...]``.

    >>> ModelSpec.parse("hf:smollm2?adapter=runs/a7")
    ModelSpec(provider='hf', name='smollm2', params={'adapter': 'runs/a7'})
    """

    provider: str
    name: str
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | dict[str, Any]) -> ModelSpec:
        if isinstance(text, dict):
            data = dict(text)
            provider = str(data.pop("provider", "") or "")
            name = str(data.pop("model", data.pop("name", "")) or "")
            if not provider or not name:
                raise UsageError("a model mapping needs 'provider' and 'model'", field="model")
            return cls(provider, name, {k: str(v) for k, v in data.items()})
        provider, sep, rest = text.partition(":")
        if not sep or not provider or not rest:
            raise UsageError(
                f"model spec {text!r} is not PROVIDER:NAME[?key=value] "
                "(e.g. replay:runs/candidate.jsonl, hf:smollm2)",
                field="model",
            )
        name, _, query = rest.partition("?")
        return cls(provider, name, dict(parse_qsl(query, keep_blank_values=True)))

    def __str__(self) -> str:
        query = f"?{urlencode(sorted(self.params.items()))}" if self.params else ""
        return f"{self.provider}:{self.name}{query}"


@dataclass(frozen=True)
class ModelIdentity:
    """Exactly which model answered: the cache and the audit trail key on ``digest``.

    ``digest`` is a content hash: of the weights and adapter for local models, of the
    recording for replay, of endpoint + model id for remote models.
    """

    provider: str
    name: str
    digest: str
    version: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One evaluation case, as loaded from a suite (before its prompt is sent anywhere).

    ``vars`` holds every field of the case that templates and evaluators may read
    (``input``, ``facts``, ...). ``slices`` maps each declared slice field to this case's
    value (e.g. ``{"topic": "refunds"}``). ``cluster`` groups cases that are not
    independent (same source document) for clustered standard errors.
    """

    id: str
    suite: str
    messages: tuple[Message, ...]
    vars: dict[str, Any] = field(default_factory=dict)
    expected: str | None = None
    context: str | None = None
    tags: tuple[str, ...] = ()
    slices: dict[str, str] = field(default_factory=dict)
    cluster: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    """``file:line`` the case came from, for error messages."""

    @property
    def key(self) -> str:
        """Unique across suites: ``suite::id``."""
        return f"{self.suite}::{self.id}"

    @property
    def question(self) -> str:
        """The question the case asks: ``vars["input"]``, else its last user message."""
        value = self.vars.get("input")
        if value not in (None, ""):
            return str(value)
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return message.get("content", "")
        return ""


@dataclass(frozen=True)
class GenerationRequest:
    """What the runner asks a model for. ``epoch`` numbers the K samples of a case."""

    case: Case
    messages: tuple[Message, ...]
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    epoch: int = 0
    response_format: dict[str, Any] | None = None
    """OpenAI-style structured output request: ``{"type": "json_object"}`` or
    ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``. Providers
    that cannot constrain their output ignore it (judges parse and validate anyway)."""
    top_logprobs: int | None = None
    """Ask for this many alternatives per output token. A provider that can returns them in
    ``Generation.metadata["logprobs"]`` as OpenAI's ``choices[0].logprobs.content``: a list
    of ``{"token", "logprob", "top_logprobs": [{"token", "logprob"}, ...]}``."""

    def cache_payload(self) -> dict[str, Any]:
        """The part of the request that determines the output (goes into the cache key)."""
        payload: dict[str, Any] = {
            "messages": list(self.messages),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "stop": list(self.stop),
            "epoch": self.epoch if self.temperature > 0 else 0,
            # Replay recordings are looked up by case id, so the id is part of the request.
            "case_id": self.case.id,
        }
        # Only when set, so that the keys of plain requests stay what they were.
        if self.response_format is not None:
            payload["response_format"] = self.response_format
        if self.top_logprobs is not None:
            payload["top_logprobs"] = self.top_logprobs
        return payload


@dataclass
class Generation:
    """A model's answer to one request. ``error`` set means no usable output."""

    text: str
    latency_ms: float | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cost: float | None = None
    error: str | None = None
    cached: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Span:
    """A part of an output a detector flagged: ``text`` at ``[start, end)``, and why."""

    text: str
    start: int
    end: int
    kind: str = "claim"
    reason: str = ""


@dataclass(slots=True)
class Score:
    """One metric's verdict on one output.

    ``value`` is in the range the evaluator documents (most use 0..1, higher is better;
    hallucination detectors give 1.0 when the output is hallucinated). ``passed`` is the
    evaluator's own threshold verdict. ``status`` keeps NODATA and ERROR apart from a
    low score: a judge that could not be parsed is ``nodata``, never a silent 0.

    Slotted: a suite of 10^5 cases x 10 metrics makes 2 x 10^6 of them (issue 18), and a
    slotted instance is smaller and quicker to build. Fields are in this order on purpose:
    hot paths build scores positionally.
    """

    metric: str
    value: float | None
    passed: bool | None = None
    reason: str = ""
    status: ScoreStatus = "ok"
    spans: list[Span] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseResult:
    """Everything about one case × epoch for one model: the output and its scores."""

    case: Case
    model: str
    """The label of the model in this run: ``candidate``, ``baseline`` or the spec."""
    epoch: int
    generation: Generation
    scores: list[Score] = field(default_factory=list)

    def score(self, metric: str) -> Score | None:
        for s in self.scores:
            if s.metric == metric:
                return s
        return None


# --------------------------------------------------------------------------- configuration


class RunnerConfig(BaseModel):
    """How the runner talks to models."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(default=8, ge=1, description="initial requests in flight per model")
    max_concurrency: int = Field(default=64, ge=1, description="AIMD never goes above this")
    timeout_s: float = Field(default=120.0, gt=0, description="per-call time limit")
    retries: int = Field(default=5, ge=0, description="retries of a retryable failure")
    backoff_s: float = Field(default=0.5, ge=0, description="first backoff; doubles, with jitter")
    max_backoff_s: float = Field(default=30.0, ge=0)
    rate_limit_patience_s: float = Field(
        default=900.0, ge=0, description="how long one request may keep being rate limited (429) before it fails"
    )


class RecordConfig(BaseModel):
    """How the run record is written (per-case files, blobs: gatekeeper.engine.record)."""

    model_config = ConfigDict(extra="forbid")

    max_inline_bytes: int = Field(
        default=65_536, ge=1024,
        description="an output or span text longer than this (UTF-8 bytes) is stored once as a blob and referenced",
    )


class LoadConfig(BaseModel):
    """Safety limits of load runs (``load:`` suites, gatekeeper.engine.load): what a run may
    send without ``--confirm-load-rate``, and where."""

    model_config = ConfigDict(extra="forbid")

    max_rate: float = Field(
        default=10.0, gt=0,
        description="requests/s a load run may offer in total (all models); above needs --confirm-load-rate",
    )
    max_concurrency: int = Field(
        default=32, ge=1, description="closed-loop requests in flight in total; above needs --confirm-load-rate",
    )
    targets: list[str] = Field(
        default_factory=list, description="endpoints (base URLs, or scheme://host:port) any load suite may send to",
    )


class Config(BaseModel):
    """Everything a command needs to know about the project."""

    model_config = ConfigDict(extra="forbid")

    root: Path = Field(default_factory=Path.cwd)
    source: str | None = None
    suites: list[str] = Field(default_factory=lambda: ["suites"])
    suite_patterns: list[str] = Field(default_factory=lambda: ["*.yaml", "*.yml"])
    model: str | dict[str, Any] | None = None
    baseline: str | dict[str, Any] | None = None
    candidate: str | dict[str, Any] | None = None
    policy: str | None = None
    judge: str | dict[str, Any] | None = Field(
        default=None, description="default judge model spec for judge evaluators (rubric, pairwise, ...)"
    )
    out: str = "gatekeeper-out"
    cache: str = ".gatekeeper/cache.sqlite"
    audit_log: str = ".gatekeeper/audit.jsonl"
    registry: str = ".gatekeeper/registry"
    plugins: list[str] = Field(default_factory=list, description="modules to load, like -p")
    allow_code: bool = Field(
        default=False,
        description="let suites and policies name code-loading models (python:...); like --allow-code",
    )
    allow_paths: list[str] = Field(
        default_factory=list,
        description="directories besides the project root that suites' dataset:/prompty: may read; like --allow-path",
    )
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    load: LoadConfig = Field(default_factory=LoadConfig)
    record: RecordConfig = Field(default_factory=RecordConfig)
    providers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="provider name → provider settings"
    )

    def path(self, value: str | Path) -> Path:
        """Resolve a configured path against the project root."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p


# --------------------------------------------------------------------------- who and when

ACTOR_ENV = "GATEKEEPER_ACTOR"


def utc_now() -> str:
    """The current UTC time, ISO-8601 with a ``Z``: ``2025-01-31T12:00:00.123456Z``."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def default_actor() -> str:
    """``$GATEKEEPER_ACTOR`` (CI sets it to the pipeline or person), else the OS user."""
    actor = os.environ.get(ACTOR_ENV, "").strip()
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry, e.g. an arbitrary uid in a container
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"
