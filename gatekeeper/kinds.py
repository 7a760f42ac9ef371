"""The interfaces of the plugin kinds: what a plugin registers and the host calls.

A plugin subclasses one of these and hands the class to the matching register hook::

    from gatekeeper import hookimpl
    from gatekeeper.kinds import Evaluator

    class Shouty(Evaluator):
        name = "shouty"
        description = "1.0 when the output is in capitals"

        def score(self, case, generation):
            ok = generation.text.isupper()
            return self.result(1.0 if ok else 0.0, reason="all capitals" if ok else "not capitals")

    @hookimpl
    def gatekeeper_register_evaluators(register):
        register(Shouty)
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from gatekeeper.pii import PiiDetector as PiiDetector  # a plugin kind, defined with the PII patterns
from gatekeeper.pii import PiiFinding as PiiFinding
from gatekeeper.types import (
    Case,
    Generation,
    GenerationRequest,
    ModelIdentity,
    ModelSpec,
    Score,
    Span,
    UsageError,
)

if TYPE_CHECKING:
    import pluggy

    from gatekeeper.engine.cache import Cache
    from gatekeeper.engine.runner import RunStats
    from gatekeeper.engine.suites import Suite
    from gatekeeper.types import CaseResult, Config

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Params(BaseModel):
    """Base of every plugin's parameter model: unknown parameters are errors."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class ScoringParams(Params):
    """Parameters every evaluator and detector accepts."""

    threshold: float | None = None
    """Pass when the value is at least this (or at most, for lower-is-better metrics)."""


# --------------------------------------------------------------------------- models


class Model:
    """A loaded model. The runner calls :meth:`generate` with at most
    ``max_batch_size`` requests and at most ``max_concurrency`` calls in flight.

    Raise :class:`gatekeeper.types.ProviderError` (``retryable=True`` for timeouts and
    server errors) or :class:`gatekeeper.types.RateLimited`; return a :class:`Generation`
    with ``error`` set for a request that failed permanently on its own.
    """

    identity: ModelIdentity
    max_batch_size: int = 1
    max_concurrency: int | None = None
    timeout_s: float | None = None
    """Per-call limit; ``None`` uses the runner's ``timeout_s``. Local models whose calls
    cannot be cancelled (a thread doing matrix work) set ``math.inf``."""

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections or memory. Called once when the run ends."""

    async def end_run(self) -> None:
        """Called by the runner at the end of each run, inside that run's event loop:
        close what is bound to the loop (HTTP connection pools). The model stays usable;
        a later run (a new loop) opens new connections."""


class ModelProvider:
    """Turns a :class:`ModelSpec` with this provider's ``name`` into a :class:`Model`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def load(self, spec: ModelSpec, config: Config) -> Model:
        raise NotImplementedError


# --------------------------------------------------------------------------- scoring


@dataclass
class EvalContext:
    """What an evaluator may use besides the case and the output.

    ``generate`` runs a request on any model through the runner (cached, retried,
    rate-limited): judges and self-consistency use it. ``load_model`` loads a model by
    spec. ``model`` is the model whose output is being scored, ``label`` its label in the
    run (``candidate``, ``baseline`` or the spec) and ``request`` the request it answered.
    ``peers`` holds every model of the run by label, so a comparative evaluator (such as
    ``pairwise``) gets another model's answer to the same request with :meth:`output_of`.
    """

    config: Config
    cache: Cache | None = None
    model: Model | None = None
    generate: Callable[[Model, GenerationRequest], Awaitable[Generation]] | None = None
    load_model: Callable[[ModelSpec], Model] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    peers: dict[str, Model] = field(default_factory=dict)
    request: GenerationRequest | None = None

    async def output_of(self, model: Model) -> Generation:
        """``model``'s answer to the request being scored, through the runner's cache.

        When that model runs (or ran) in the same invocation, the answer is generated once:
        whichever asks first pays, the other finds it in the cache.
        """
        if self.generate is None or self.request is None:
            raise RuntimeError("output_of needs the runner (generate and request are unset)")
        return await self.generate(model, self.request)


class Evaluator:
    """Scores one output of one case.

    Subclasses set ``name``, ``description``, ``value_range`` and, when they take
    parameters, a ``Params`` model; they implement :meth:`score` (or :meth:`ascore`
    when they must await a model). ``lower_is_better`` flips the threshold comparison.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    value_range: ClassVar[str] = "0..1, higher is better"
    lower_is_better: ClassVar[bool] = False
    Params: ClassVar[type[ScoringParams]] = ScoringParams

    def __init__(self, params: ScoringParams, *, metric: str | None = None) -> None:
        self.params = params
        self.metric = metric or self.name

    def score(self, case: Case, generation: Generation) -> Score:
        raise NotImplementedError

    def score_batch(self, cases: Sequence[Case], generations: Sequence[Generation]) -> list[Score]:
        """Scores of many outputs at once, in order; the runner calls it for evaluators that
        do not override :meth:`ascore`. Override it to vectorise a metric over a suite; the
        scores must equal :meth:`score`'s case by case. When it raises, the runner scores
        the batch again with :meth:`score`, so an error is reported against its own case."""
        return [self.score(case, generation) for case, generation in zip(cases, generations, strict=True)]

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        return self.score(case, generation)

    def result(
        self,
        value: float | None,
        *,
        reason: str = "",
        passed: bool | None = None,
        spans: list[Span] | None = None,
        details: dict[str, Any] | None = None,
    ) -> Score:
        """Build a :class:`Score`, deciding ``passed`` from the threshold when not given.

        Called once per case and metric (2 x 10^6 times for 10^5 cases x 10 metrics), so
        the score is built positionally, in the field order of :class:`Score`."""
        if value is None:
            return Score(self.metric, None, passed, reason, "nodata", spans or [], details or {})
        if passed is None:
            threshold = self.params.threshold
            if threshold is not None:
                passed = value <= threshold if self.lower_is_better else value >= threshold
        return Score(self.metric, value, passed, reason, "ok", spans or [], details or {})


class Detector(Evaluator):
    """Finds claims in an output that the case's context does not support.

    Returns a :class:`Score` whose ``value`` is 1.0 when the output is judged
    hallucinated and 0.0 when it is grounded (so its mean is the hallucination rate),
    ``spans`` the unsupported parts, and ``details["support"]`` the supported fraction.
    """

    value_range: ClassVar[str] = "0 (grounded) or 1 (hallucinated); mean = hallucination rate"
    lower_is_better: ClassVar[bool] = True


# --------------------------------------------------------------------------- reporting


class Reporter:
    """Writes one report format from a run or decision record (a JSON-able dict).

    ``record["kind"]`` is ``"run"`` (results of ``gatekeeper run``) or ``"check"`` (a
    decision record). Reporters read nothing else, so old runs can be re-rendered.
    ``record.get("attestations")``, when present, holds what was true when the report was
    rendered but is not part of the record: the signed approvals and the audit chain's
    state (see :mod:`gatekeeper.gate.attestations`). Never write it back into the record.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    filename: ClassVar[str]

    def write(self, record: dict[str, Any], out_dir: Path) -> Path:
        raise NotImplementedError


# --------------------------------------------------------------------------- commands


class Command:
    """A ``gatekeeper`` sub-command. ``run`` returns the process exit code."""

    name: ClassVar[str]
    help: ClassVar[str] = ""

    def configure(self, parser: argparse.ArgumentParser) -> None:
        """Add this command's arguments."""

    def run(self, args: argparse.Namespace, session: Session) -> int:
        raise NotImplementedError


# --------------------------------------------------------------------------- loop kinds


@dataclass(frozen=True)
class RowRef:
    """Where a raw signal row came from, for error messages: ``file`` and its ``line``
    (text files) or 1-based row number (Parquet, SQL, spans)."""

    file: str
    line: int | None = None


class SignalSource:
    """Reads production signals (one record per answer) from a location.

    ``schemes`` lists the URL schemes (``sqlite``, ``postgresql``) and file suffixes
    (``jsonl``, ``parquet``) this source handles; a location may also name the source
    explicitly (``otlp:traces.json``). :meth:`read` yields raw rows in the nested or flat
    layout of :mod:`gatekeeper.signals.records` with where each came from; the host validates them.
    :meth:`scan` gives the same rows as a Polars ``LazyFrame`` for aggregation; by default
    the host builds it from :meth:`read`, and columnar sources override it to push ``filters``
    (a :class:`gatekeeper.signals.records.SignalFilter`) down to storage. Sources may ignore
    filters they cannot apply: the host applies them again.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    schemes: ClassVar[tuple[str, ...]] = ()

    def read(self, location: str, filters: Any) -> Iterator[tuple[RowRef, dict[str, Any]]]:
        raise NotImplementedError

    def scan(self, location: str, filters: Any) -> Any:
        """The rows as a Polars ``LazyFrame`` with ``filters`` pushed down, or ``None`` (the
        default) to let the host build the frame from :meth:`read`."""
        return None


class Tuner:
    """Makes a candidate model from a base model and training data.

    ``tune`` writes the new model (or adapter) to ``out`` and returns its provenance:
    base model digest, data hash and rows, data sources, hyperparameters, seed, versions.
    ``bounds`` is the policy's ``retraining`` section, when a policy is given.

    ``modification`` is the change type the tuner makes (a policy ``modifications[].type``):
    ``gatekeeper tune --policy`` refuses a tuner whose type the policy does not allow before
    ``tune`` is called. ``session`` is set by ``gatekeeper tune`` before ``tune`` runs, for
    tuners that load suites or run models through the runner (``grpo``, ``distill``).
    """

    name: ClassVar[str]
    modification: ClassVar[str | None] = None
    session: Session | None = None

    def tune(
        self,
        base: ModelSpec,
        data: Path,
        out: Path,
        params: dict[str, Any],
        config: Config,
        bounds: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        raise NotImplementedError


class Unset:
    """The type of :data:`UNSET`: "no expectation" for :meth:`DeployTarget.set_alias`."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


class DeployTarget:
    """Where promoted models live: a registry of versions, aliases with a traffic share and a
    stage, and the full history of changes (``gatekeeper promote``, ``rollback``, ``monitor``).

    A target is built with the project configuration and an optional ``location`` (a
    directory, a tracking URI) from ``--registry`` or the config. Versions are strings the
    target chooses (``"1"``, ``"2"`` ...); production telemetry names them as
    ``model_version``. Every change appends one event to :meth:`history`, a dict with
    ``seq``, ``time``, ``actor``, ``action`` (``register``, ``alias``, ``remove_alias``,
    ``rollback``, ``monitor``), ``model`` and what the action concerns (``version``,
    ``alias``, ``previous``, ``traffic``, ``stage``, ``reason``, ``data``).

    ``expected`` makes a change conditional (optimistic concurrency): the alias must still
    point at that version (``None``: must be unset), else :class:`RegistryConflict` is
    raised and nothing changes. Implementations make each change atomic and safe against
    concurrent writers.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(self, config: Config, location: str | None = None) -> None:
        self.config = config
        self.location = location

    def register_version(self, model: str, spec: str, provenance: dict[str, Any]) -> str:
        """Add a version of ``model`` served by ``spec``; return its new version id."""
        raise NotImplementedError

    def set_alias(
        self, model: str, alias: str, version: str, *, traffic: float = 1.0, stage: str | None = None,
        expected: str | Unset | None = UNSET, reason: str = "",
    ) -> None:
        """Point ``alias`` at ``version`` with a traffic share and stage name."""
        raise NotImplementedError

    def remove_alias(self, model: str, alias: str, *, expected: str | Unset | None = UNSET,
                     reason: str = "") -> None:
        """Delete ``alias`` (its traffic returns to the other aliases)."""
        raise NotImplementedError

    def get_alias(self, model: str, alias: str) -> str | None:
        """The version ``alias`` points at, or ``None``."""
        info = self.aliases(model).get(alias)
        return None if info is None else str(info["version"])

    def aliases(self, model: str) -> dict[str, dict[str, Any]]:
        """Alias → ``{"version", "traffic", "stage", "since"}``."""
        raise NotImplementedError

    def versions(self, model: str) -> dict[str, dict[str, Any]]:
        """Version id → ``{"spec", "provenance", "created"}``."""
        raise NotImplementedError

    def history(self, model: str) -> list[dict[str, Any]]:
        """Every change to ``model``, oldest first."""
        raise NotImplementedError

    def record_event(self, model: str, action: str, **fields: Any) -> dict[str, Any]:
        """Append an event that changes nothing else (e.g. a ``monitor`` result)."""
        raise NotImplementedError

    def rollback(self, model: str, alias: str, *, to: str | None = None, reason: str) -> str | None:
        """Restore ``alias`` to the version it pointed at before its current one (or ``to``).

        An alias that pointed at nothing before (a canary) is removed. Returns the version
        the alias now points at (``None``: removed). Recorded as one ``rollback`` event.
        """
        raise NotImplementedError


class RegistryConflict(UsageError):
    """The registry changed under a command (another promotion won); nothing was written."""


# Rules every deploy target applies the same way (the local registry and MLflow use them).


def check_expected(alias: str, current: str | None, expected: str | Unset | None) -> None:
    """Raise :class:`RegistryConflict` when ``alias`` no longer points where the caller saw it."""
    if isinstance(expected, Unset) or current == expected:
        return
    seen = "unset" if expected is None else f"version {expected}"
    now = "unset" if current is None else f"version {current}"
    raise RegistryConflict(
        f"alias {alias!r} changed while this command ran (it was {seen}, it is now {now}): "
        "another promotion or rollback won; nothing was changed — check `gatekeeper registry show` "
        "and run the command again if it still applies"
    )


def rollback_target(history: list[dict[str, Any]], alias: str, current: dict[str, Any]) -> dict[str, Any] | None:
    """The assignment ``alias`` returns to on a rollback: ``{"version", "traffic", "stage"}``.

    The most recent earlier assignment of another version that was not itself rolled back
    from on this alias. ``None`` means the alias was unset before (a canary): remove it.
    :raises UsageError: no earlier version and the alias carries all traffic.
    """
    assignments: list[dict[str, Any] | None] = []
    rolled_back: set[str] = set()
    for event in history:
        if event.get("alias") != alias:
            continue
        if event["action"] == "rollback" and event.get("previous"):
            rolled_back.add(str(event["previous"]))
        if event["action"] == "remove_alias" or (event["action"] == "rollback" and event.get("version") is None):
            assignments.append(None)
        elif event["action"] in ("alias", "rollback"):
            assignments.append({k: event.get(k) for k in ("version", "traffic", "stage")})
    for entry in reversed(assignments):
        if entry is None:
            if float(current.get("traffic", 1.0)) < 1.0:
                return None
            continue
        if entry["version"] != current["version"] and entry["version"] not in rolled_back:
            return {**entry, "traffic": 1.0 if entry["traffic"] is None else entry["traffic"]}
    if float(current.get("traffic", 1.0)) < 1.0:
        return None
    raise UsageError(
        f"alias {alias!r} has no earlier version to roll back to (it carries all traffic); "
        "name one with --to VERSION"
    )


# --------------------------------------------------------------------------- the host, typed


class Register(Protocol[T_contra]):
    """The callable a ``gatekeeper_register_*`` hook receives: ``register(cls, name=None)``.

    ``register`` validates ``cls`` (a subclass of the hook's kind with a ``name``) and refuses
    a name another plugin took, naming both plugins.

    Lazily: ``register("my_plugin.metrics:Faithfulness", name="faithfulness")`` registers a
    class by its import path without importing it. The module is imported (and the class
    validated) the first time a run uses the name, so a plugin whose classes import a heavy
    library costs nothing to ``gatekeeper --help`` or to a run that does not use it.
    """

    def __call__(self, obj: type[T_contra] | str, name: str | None = None) -> None: ...


class Entry(Generic[T]):
    """One registered class and the plugin that registered it.

    ``obj`` is the class; for an entry registered by import path (``spec``, ``"module:Class"``)
    it is imported and validated on first access, with a :class:`PluginError` naming the
    plugin when the import fails or the class is not of the registry's kind.
    """

    __slots__ = ("_obj", "_resolve", "name", "plugin", "spec")

    def __init__(self, name: str, obj: type[T] | None, plugin: str, *, spec: str = "",
                 resolve: Callable[[Entry[T]], type[T]] | None = None) -> None:
        self.name = name
        self.plugin = plugin
        self.spec = spec or (f"{obj.__module__}:{obj.__qualname__}" if obj is not None else "")
        self._obj = obj
        self._resolve = resolve

    @property
    def obj(self) -> type[T]:
        if self._obj is None:
            assert self._resolve is not None
            self._obj = self._resolve(self)
        return self._obj

    @property
    def loaded(self) -> bool:
        """Whether the class has been imported (always, for an entry registered as a class)."""
        return self._obj is not None

    def __repr__(self) -> str:
        return f"Entry({self.name!r}, {self.spec!r}, plugin={self.plugin!r})"


class Registry(Protocol[T]):
    """Name → registered class for one plugin kind (read-only view)."""

    kind: str
    """What it holds, in words: ``"evaluator"``, ``"deploy target"``."""
    hook: str
    """The register hook that fills it: ``gatekeeper_register_evaluators``."""

    def get(self, name: str, *, field: str | None = None) -> type[T]:
        """The class registered as ``name``; :class:`UsageError` naming the known ones."""
        ...

    def entry(self, name: str) -> Entry[T]: ...

    def names(self) -> list[str]: ...

    def __contains__(self, name: object) -> bool: ...

    def __iter__(self) -> Iterator[Entry[T]]: ...


@dataclass(frozen=True)
class Registries:
    """Every registry, one attribute per kind: ``session.registries.evaluators.get("rouge")``."""

    models: Registry[ModelProvider]
    evaluators: Registry[Evaluator]
    detectors: Registry[Detector]
    signal_sources: Registry[SignalSource]
    tuners: Registry[Tuner]
    deploy_targets: Registry[DeployTarget]
    reporters: Registry[Reporter]
    commands: Registry[Command]
    engines: Registry[Engine]
    pii_detectors: Registry[PiiDetector]

    KEYS: ClassVar[tuple[str, ...]] = (
        "models", "evaluators", "detectors", "signal_sources", "tuners", "deploy_targets", "reporters", "commands",
        "engines", "pii_detectors",
    )

    def __getitem__(self, key: str) -> Registry[Any]:
        """``registries.evaluators``: the same registry by the suffix of its register hook."""
        if key not in self.KEYS:
            raise KeyError(key)
        registry: Registry[Any] = getattr(self, key)
        return registry

    def items(self) -> Iterator[tuple[str, Registry[Any]]]:
        return ((key, self[key]) for key in self.KEYS)


class Host(Protocol):
    """The plugin host as commands see it: the hooks, the registries, the plugins."""

    @property
    def registries(self) -> Registries: ...

    @property
    def info(self) -> dict[str, Any]:
        """Plugin name → where it came from, its version, hooks and registrations."""
        ...

    @property
    def hook(self) -> pluggy.HookRelay: ...

    def versions(self) -> dict[str, str]:
        """Plugin name → version, for provenance records."""
        ...


class Session(Protocol):
    """What a :class:`Command` receives: one invocation's configuration, plugins and the
    operations commands share (collect suites, load and run models, write reports)."""

    @property
    def config(self) -> Config: ...

    @property
    def host(self) -> Host: ...

    @property
    def registries(self) -> Registries: ...

    def echo(self, text: str = "") -> None:
        """Print a line to the command's output."""
        ...

    def collect(
        self, paths: Sequence[str] | None = None, *, keyword: str | None = None, marker: str | None = None
    ) -> list[Suite]:
        """Discover and load suites (``paths`` or the config's), apply ``-k``/``-m`` and the
        collection hook."""
        ...

    def load_suite(self, path: Path) -> Suite | None: ...

    def load_model(self, spec: str | dict[str, Any] | ModelSpec) -> Model:
        """Load a model by spec once per session."""
        ...

    def run(
        self, models: dict[str, Model], suites: Sequence[Suite], *, run_id: str, specs: dict[str, str],
        progress: bool = True, extra: dict[str, Any] | None = None, close_models: bool = True,
        engine: bool = True, sink: Callable[[CaseResult], None] | None = None,
    ) -> tuple[list[CaseResult], RunStats]:
        """Run ``models`` on the cases of ``suites`` through the runner (cache, retries, limits);
        on the session's engine (``--engine``) unless ``engine=False``; with ``sink``, each
        result goes to it as it is ready and none is returned."""
        ...

    @property
    def engine(self) -> Engine | None:
        """The engine chosen with ``--engine`` (:meth:`use_engine`), or None: in process."""
        ...

    def use_engine(self, name: str | None) -> None:
        """Send data-sized work to the engine plugin ``name`` from now on (None: stay in process)."""
        ...

    def close_models(self) -> None: ...

    def write_reports(
        self, record: dict[str, Any], out_dir: Path, formats: Sequence[str] | None = None
    ) -> list[Path]:
        """Write every registered report format (or ``formats``) into ``out_dir``."""
        ...


# --------------------------------------------------------------------------- engines


class Engine:
    """Where gatekeeper's data-sized work runs when a command gets ``--engine NAME``
    (``run``, ``check``, ``signals summarize``, ``classify label``): a cluster engine such as
    gatekeeper-spark's ``spark``. Without ``--engine`` the work runs in the gatekeeper
    process (Polars, the asyncio runner) and no engine is involved.

    The core hands an engine plain work and takes plain answers back, so records, gates and
    reports do not depend on the engine. An engine implements what it supports; the
    others raise a UsageError naming the engine and what it cannot do.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(self, config: Config) -> None:
        self.config = config

    def _unsupported(self, what: str) -> UsageError:
        return UsageError(f"engine {self.name!r} cannot {what}", field="--engine")

    def map_cases(self, work: Callable[[list[str], float], list[dict[str, Any]]],
                  keys: Sequence[str]) -> list[dict[str, Any]]:
        """Call ``work(part, share)`` once per partition of ``keys`` (anywhere: executors)
        and return the rows all calls returned, each successful partition's exactly once.
        ``work`` is picklable; ``share`` is the partition's fraction of the run's rate budget
        (1 / partitions running at once). Each row is ``{"key": str, "payload": bytes}``."""
        raise self._unsupported("run cases")

    def count_signals(self, location: str, filters: Any, by: Sequence[str]) -> tuple[Any, Any]:
        """The summary's finest cells for ``location`` after ``filters`` (a
        :class:`gatekeeper.signals.records.SignalFilter`): two Polars DataFrames, ``cells``
        (model, model_version, ``by``..., feedback_verdict, n, rating_n, rating_sum,
        rating_sq, invalid_rating, invalid_time) and ``flagged`` (model, model_version,
        ``by``..., flags, k), as :func:`gatekeeper.signals.summary.count_cells` computes them."""
        raise self._unsupported("summarize signals")

    def signal_columns(self, location: str) -> list[str]:
        """The flat-layout columns of the signals at ``location``."""
        raise self._unsupported("read signal tables")

    def sample_signals(self, location: str, filters: Any, *, size: int, strata: Sequence[str],
                       columns: Sequence[str], seed: int,
                       quota: Callable[[dict[tuple[Any, ...], int]], dict[tuple[Any, ...], int]]) -> Any:
        """A stratified sample as a Polars DataFrame with ``columns``: ``quota(counts)`` maps
        each stratum's row count to the rows to take; take the rows of lowest hash of
        (``seed``, id) in each stratum."""
        raise self._unsupported("sample signals")

    def label_table(self, location: str, filters: Any, labeller: Any, out: str) -> dict[str, Any]:
        """Apply ``labeller`` (picklable: ``input_columns``, ``output_schema()``,
        ``label_pandas(frame)``, ``batch_size``, ``tasks``) to every row and write ``out``
        (never leaving a partial table that looks complete). Returns ``{"rows", "counts":
        {task: {model_version: {label: n}}}, "out", "format"}``."""
        raise self._unsupported("label tables")
