"""Load suites: the YAML schema (``load:`` files), validated with pydantic, and loading.

A load suite says what to send (a prompt mix), how often (an arrival process), for how
long, and where it must stop on its own (caps). Every mistake is a UsageError naming the
file, the line and the field (exit 4). See docs/load.md for the schema.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gatekeeper.engine.load.arrivals import plan_steps
from gatekeeper.engine.load.measurements import Step
from gatekeeper.engine.load.prompts import Prompt, prompts_from_signals, prompts_from_suite
from gatekeeper.engine.paths import contained
from gatekeeper.host import yamlfile
from gatekeeper.types import UsageError

if TYPE_CHECKING:
    from gatekeeper.types import Config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptsSchema(_Strict):
    suite: str | None = Field(None, description="a quality suite whose cases' rendered chats are sent")
    signals: str | None = Field(None, description="a signals file; rows with consent.evaluation are sent")
    limit: int | None = Field(None, ge=1, description="use at most this many prompts")
    order: Literal["random", "cycle"] = "random"

    @model_validator(mode="after")
    def _one_source(self) -> PromptsSchema:
        if (self.suite is None) == (self.signals is None):
            raise ValueError("give exactly one of 'suite' or 'signals'")
        return self


class ArrivalSchema(_Strict):
    process: Literal["constant", "poisson", "ramp", "closed"]
    rate: float | None = Field(None, gt=0, description="requests/s to each model (constant, poisson)")
    rates: list[float] | None = Field(None, min_length=1, description="ramp: one step per rate")
    step_s: float | None = Field(None, gt=0, description="seconds per step (ramp, stepped closed)")
    within_step: Literal["constant", "poisson"] = "poisson"
    concurrency: int | list[int] | None = Field(None, description="closed: requests in flight per model")

    @model_validator(mode="after")
    def _fits_process(self) -> ArrivalSchema:
        p = self.process
        if p in ("constant", "poisson"):
            if self.rate is None:
                raise ValueError(f"process '{p}' needs 'rate' (requests per second to each model)")
            self._only(p, "rate")
        elif p == "ramp":
            if not self.rates or self.step_s is None:
                raise ValueError("process 'ramp' needs 'rates' (a list, one step each) and 'step_s'")
            if any(r <= 0 for r in self.rates):
                raise ValueError("every rate of a ramp must be > 0")
            self._only(p, "rates", "step_s", "within_step")
        else:
            if self.concurrency is None:
                raise ValueError("process 'closed' needs 'concurrency' (requests in flight per model)")
            levels = self.levels
            if not levels or any(c < 1 for c in levels):
                raise ValueError("concurrency must be ≥ 1 (or a non-empty list of such)")
            if len(levels) > 1 and self.step_s is None:
                raise ValueError("a list of concurrencies needs 'step_s' (seconds per step)")
            self._only(p, "concurrency", "step_s")
        return self

    def _only(self, process: str, *allowed: str) -> None:
        for name in ("rate", "rates", "step_s", "concurrency"):
            if name not in allowed and getattr(self, name) is not None:
                raise ValueError(f"'{name}' does not apply to process '{process}'")

    @property
    def levels(self) -> list[int]:
        c = self.concurrency
        return [] if c is None else ([c] if isinstance(c, int) else list(c))


class RequestSchema(_Strict):
    stream: bool = True
    max_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0)
    timeout_s: float = Field(30.0, gt=0)


class CapsSchema(_Strict):
    max_requests: int = Field(10_000, ge=1, description="requests sent, all models together")
    max_duration_s: float | None = Field(None, gt=0, description="wall time, draining included")
    max_in_flight: int = Field(256, ge=1, description="open loop: arrivals beyond are 'shed'")


class LoadSuiteSchema(_Strict):
    load: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    prompts: PromptsSchema
    arrival: ArrivalSchema
    duration_s: float | None = Field(None, gt=0)
    request: RequestSchema = Field(default_factory=RequestSchema)
    assignment: Literal["alternate", "random"] = "alternate"
    seed: int = 0
    warmup: int = Field(1, ge=0, le=100, description="requests per model before the clock starts")
    caps: CapsSchema = Field(default_factory=CapsSchema)
    targets: list[str] = Field(default_factory=list, description="endpoints this load may be sent to")

    def duration_problem(self) -> str | None:
        """Why ``duration_s`` does not fit the arrival process, or ``None``."""
        stepped = self.arrival.process == "ramp" or len(self.arrival.levels) > 1
        if stepped and self.duration_s is not None:
            return "'duration_s' does not apply to a stepped run: it lasts steps × step_s"
        if not stepped and self.duration_s is None:
            return f"process '{self.arrival.process}' needs 'duration_s' (seconds)"
        return None


@dataclass
class LoadSuite:
    """A loaded load suite: the validated schema, its prompts and its planned steps."""

    name: str
    path: Path
    schema: LoadSuiteSchema
    prompts: list[Prompt]
    steps: list[Step]
    hash: str
    lines: dict[str, int] = field(default_factory=dict)
    """Field → line in the file, for errors found later (safety checks)."""

    @property
    def process(self) -> str:
        return self.schema.arrival.process

    @property
    def planned_s(self) -> float:
        return max(s.start_s + s.duration_s for s in self.steps)

    @property
    def max_duration_s(self) -> float:
        """The hard stop: the configured cap, else the plan plus one request timeout."""
        caps = self.schema.caps
        if caps.max_duration_s is not None:
            return caps.max_duration_s
        return self.planned_s + self.schema.request.timeout_s

    def where(self, field_name: str) -> dict[str, Any]:
        """``file``/``line``/``field`` keywords of a UsageError about ``field_name``."""
        return {"file": str(self.path), "line": self.lines.get(field_name), "field": field_name}


def load_load_suite(path: Path, roots: Sequence[Path] | None = None, registries: Any = None) -> LoadSuite | None:
    """Load a load suite; ``None`` when the YAML file is not one (no top-level ``load:``)."""
    data, locator = yamlfile.load(path)
    if not isinstance(data, dict) or "load" not in data or isinstance(data["load"], dict):
        return None  # not a load suite (gatekeeper.yaml's `load:` settings are a mapping)
    if "suite" in data:
        raise UsageError("a file is a quality suite ('suite:') or a load suite ('load:'), not both",
                         file=str(path), line=locator.line(("load",)), field="load")
    schema = yamlfile.validate(LoadSuiteSchema, data, path, locator)
    lines = {name: locator.line(tuple(name.split("."))) or 1 for name in (
        "load", "prompts", "prompts.suite", "prompts.signals", "arrival", "arrival.rate", "arrival.rates",
        "arrival.concurrency", "caps", "caps.max_requests", "targets", "request.stream", "duration_s")}
    problem = schema.duration_problem()
    if problem:
        name = "duration_s" if schema.duration_s is not None else "arrival"
        raise UsageError(problem, file=str(path), line=lines[name], field=name)
    hasher = hashlib.sha256(path.read_bytes())
    prompts = _prompts(schema, path, roots, registries, lines, hasher)
    if schema.prompts.limit is not None:
        prompts = prompts[: schema.prompts.limit]
    if not prompts:
        raise UsageError("the prompt mix is empty" + (
            " (no signal has consent.evaluation true)" if schema.prompts.signals else ""),
            file=str(path), line=lines["prompts"], field="prompts")
    a = schema.arrival
    steps = plan_steps(a.process, rate=a.rate, rates=a.rates or [], concurrency=a.levels,
                       duration_s=schema.duration_s, step_s=a.step_s)
    return LoadSuite(schema.load, path, schema, prompts, steps, hasher.hexdigest(), lines)


def _prompts(
    schema: LoadSuiteSchema, path: Path, roots: Sequence[Path] | None, registries: Any,
    lines: dict[str, int], hasher: Any,
) -> list[Prompt]:
    spec = schema.prompts
    if spec.suite is not None:
        target = contained(spec.suite, base=path.parent, roots=roots, file=path,
                           line=lines["prompts.suite"], field="prompts.suite")
        if target.is_file():
            hasher.update(target.read_bytes())
        return prompts_from_suite(target, roots, file=str(path), line=lines["prompts.suite"])
    assert spec.signals is not None
    location = spec.signals
    if "://" not in location:
        location = str(contained(location, base=path.parent, roots=roots, file=path,
                                 line=lines["prompts.signals"], field="prompts.signals"))
        if Path(location).is_file():
            hasher.update(Path(location).read_bytes())
    return prompts_from_signals(location, registries, file=str(path), line=lines["prompts.signals"])


def collect_load_suites(paths: Iterable[str | Path], config: Config, registries: Any = None) -> list[LoadSuite]:
    """The load suites among the YAML files under ``paths`` (the quality suites' discovery)."""
    from gatekeeper.engine.suites import discover

    roots = [config.root, *(config.path(p) for p in config.allow_paths)]
    found = []
    names: dict[str, Path] = {}
    for file in discover(paths, config):
        if file.suffix.lower() not in (".yaml", ".yml"):
            continue
        suite = load_load_suite(file, roots, registries)
        if suite is None:
            continue
        if suite.name in names:
            raise UsageError(f"load suite name {suite.name!r} is used twice (first in {names[suite.name]})",
                             **suite.where("load"))
        names[suite.name] = file
        found.append(suite)
    return found
