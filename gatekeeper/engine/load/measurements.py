"""What a load run measured: one :class:`Measurement` per request, the steps, the run.

The record is flat and per request on purpose: latency quantiles with distribution-free
intervals, error rates with Wilson intervals and the knee of a ramp (the gate's
statistics) all need the individual observations, never pre-binned histograms.
The schema is the one in docs/load.md and /work/notes/issue-23-interface.md.
"""

from __future__ import annotations

import collections
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from gatekeeper.files import write_atomic
from gatekeeper.types import ProviderError

Status = Literal["ok", "429", "5xx", "timeout", "error", "shed", "cancelled"]
STATUSES: tuple[str, ...] = ("ok", "429", "5xx", "timeout", "error", "shed", "cancelled")
"""``429`` rate limited (never retried: it is the measurement); ``5xx`` server error;
``timeout`` no complete answer within ``request.timeout_s``; ``error`` connection failure,
4xx or a malformed answer; ``shed`` not sent because ``caps.max_in_flight`` requests were in
flight; ``cancelled`` in flight when ``caps.max_duration_s`` stopped the run (right-censored)."""


class RequestFailed(ProviderError):
    """A load request that failed, with the status it is measured as (``5xx``, ``error``,
    ...). Providers with a load path (``send_once``) raise it so the driver need not know
    their SDK's exceptions; a plain :class:`ProviderError` is measured as ``error``."""

    def __init__(self, message: str, *, status: Status) -> None:
        super().__init__(message, retryable=False)
        self.status: Status = status


@dataclass
class Measurement:
    """One request of a load run (times in seconds since the run started)."""

    model: str
    step: int
    offered_rate: float | None
    concurrency: int | None
    t_scheduled: float
    t_sent: float
    status: Status
    case_id: str
    ttft_ms: float | None = None
    latency_ms: float | None = None
    output_tokens: int | None = None
    tokens_per_s: float | None = None
    error: str | None = None

    @property
    def lag_ms(self) -> float:
        """How late the request left against its schedule: the generator's own overhead."""
        return (self.t_sent - self.t_scheduled) * 1000.0

    def to_dict(self) -> dict[str, Any]:
        return {k: _rounded(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        fields: dict[str, Any] = {k: data.get(k) for k in cls.__dataclass_fields__}
        return cls(**fields)


@dataclass(frozen=True)
class Step:
    """One step of the arrival process: a rate (open loop) or a concurrency (closed loop)."""

    index: int
    offered_rate: float | None
    concurrency: int | None
    start_s: float
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadRun:
    """A finished load run: what was offered (``steps``) and what came back (``measurements``)."""

    suite: str
    path: str
    hash: str
    process: str
    stream: bool
    max_tokens: int
    models: dict[str, str]
    started_at: str
    steps: list[Step]
    measurements: list[Measurement] = field(default_factory=list)
    wall_s: float = 0.0
    stopped_by: str | None = None
    """``None`` when the run went its planned course; ``max_requests`` or ``max_duration_s``
    when a hard cap stopped it."""
    warmup: int = 0
    """Requests sent per model before the clock started (connections, imports); not measured."""

    def of(self, model: str, *, step: int | None = None) -> list[Measurement]:
        return [m for m in self.measurements if m.model == model and (step is None or m.step == step)]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for label in self.models:
            counter = collections.Counter(str(m.status) for m in self.of(label))
            out[label] = {status: counter.get(status, 0) for status in STATUSES}
        return out

    def generator_lag(self) -> dict[str, float | None]:
        """How late arrivals left, in ms (p50, p99, max): large values mean the client,
        not the endpoint, limited the offered load."""
        lags = sorted(m.lag_ms for m in self.measurements if m.status != "shed")
        if not lags:
            return {"lag_p50_ms": None, "lag_p99_ms": None, "lag_max_ms": None}

        def q(p: float) -> float:
            return round(lags[min(len(lags) - 1, max(0, math.ceil(p * len(lags)) - 1))], 3)

        return {"lag_p50_ms": q(0.5), "lag_p99_ms": q(0.99), "lag_max_ms": round(lags[-1], 3)}

    def to_record(self) -> dict[str, Any]:
        return {
            "suite": self.suite, "path": self.path, "hash": self.hash, "process": self.process,
            "stream": self.stream, "max_tokens": self.max_tokens, "models": dict(self.models),
            "started_at": self.started_at, "wall_s": round(self.wall_s, 3), "stopped_by": self.stopped_by,
            "warmup": self.warmup, "counts": self.counts(), "generator": self.generator_lag(),
            "steps": [s.to_dict() for s in self.steps],
            "measurements": [m.to_dict() for m in self.measurements],
        }

    def write_jsonl(self, path: Path) -> Path:
        """One JSON object per measurement, in send order (atomically)."""
        write_atomic(path, "".join(json.dumps(m.to_dict()) + "\n" for m in self.measurements))
        return path


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value
