"""Every hook gatekeeper calls, grouped by phase.

Hooks are called with keyword arguments only. A plugin implements any subset, with any
subset of the arguments, decorated with :data:`gatekeeper.hookimpl`. Every hook is
documented in ``docs/plugin_hooks.md``; a test keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from gatekeeper.engine.suites import Suite
    from gatekeeper.kinds import (
        Command,
        DeployTarget,
        Detector,
        Engine,
        Evaluator,
        ModelProvider,
        Register,
        Reporter,
        SignalSource,
        Tuner,
    )
    from gatekeeper.pii import PiiDetector
    from gatekeeper.types import Case, CaseResult, Config

hookspec = pluggy.HookspecMarker("gatekeeper")

# -------------------------------------------------------------------------------------
# Set-up: called once per process, after every plugin is registered.
# -------------------------------------------------------------------------------------


@hookspec(historic=True)
def gatekeeper_configure(config: Config) -> None:
    """Called once the configuration is loaded and every plugin registered.

    Historic: a plugin registered later still gets the call.

    :param config: the project configuration (``gatekeeper.yaml`` or
        ``[tool.gatekeeper]`` merged with command-line flags).
    :return: ignored.
    """


# -------------------------------------------------------------------------------------
# Registration: each hook receives a ``register`` callable and hands it classes.
# Every implementation is called; names must be unique across plugins.
# -------------------------------------------------------------------------------------


@hookspec
def gatekeeper_register_models(register: Register[ModelProvider]) -> None:
    """Register model providers.

    :param register: call ``register(ProviderClass)`` with a subclass of
        :class:`gatekeeper.kinds.ModelProvider`; its ``name`` is the prefix of model
        specs (``NAME:model?k=v``). A name already taken is an error naming both plugins.
    :return: ignored.
    """


@hookspec
def gatekeeper_register_evaluators(register: Register[Evaluator]) -> None:
    """Register evaluators (metrics computed per output).

    :param register: call ``register(EvaluatorClass)`` with a subclass of
        :class:`gatekeeper.kinds.Evaluator`; suites refer to it by ``name``.
    :return: ignored.
    """


@hookspec
def gatekeeper_register_detectors(register: Register[Detector]) -> None:
    """Register hallucination detectors.

    :param register: call ``register(DetectorClass)`` with a subclass of
        :class:`gatekeeper.kinds.Detector`; suites list it under ``detectors``.
    :return: ignored.
    """


@hookspec
def gatekeeper_register_signal_sources(register: Register[SignalSource]) -> None:
    """Register sources of production signals.

    :param register: call ``register(SourceClass)`` with a subclass of
        :class:`gatekeeper.kinds.SignalSource`.
    :return: ignored.
    """


@hookspec
def gatekeeper_register_tuners(register: Register[Tuner]) -> None:
    """Register tuners, which make candidate models (``gatekeeper tune --tuner NAME``).

    :param register: call ``register(TunerClass)`` with a subclass of
        :class:`gatekeeper.kinds.Tuner`.
    :return: ignored.
    """


@hookspec
def gatekeeper_register_deploy_targets(register: Register[DeployTarget]) -> None:
    """Register deploy targets (model registries that promote, stage and roll back).

    :param register: call ``register(TargetClass)`` with a subclass of
        :class:`gatekeeper.kinds.DeployTarget`.
    :return: ignored.
    """


@hookspec
def gatekeeper_register_reporters(register: Register[Reporter]) -> None:
    """Register report formats, written from a run or decision record.

    :param register: call ``register(ReporterClass)`` with a subclass of
        :class:`gatekeeper.kinds.Reporter`.
    :return: ignored.
    """


@hookspec
def gatekeeper_register_commands(register: Register[Command]) -> None:
    """Register ``gatekeeper`` sub-commands.

    :param register: call ``register(CommandClass)`` with a subclass of
        :class:`gatekeeper.kinds.Command`.
    :return: ignored.
    """


@hookspec
def gatekeeper_register_engines(register: Register[Engine]) -> None:
    """Register engines: where data-sized work runs when a command gets ``--engine NAME``
    (a cluster such as Spark). Called once at start-up.

    :param register: call ``register(EngineClass)`` with a subclass of
        :class:`gatekeeper.kinds.Engine`.
    :return: ignored.
    """


@hookspec
def gatekeeper_register_pii_detectors(register: Register[PiiDetector]) -> None:
    """Register PII detectors: what finds personal data in curated signals and generated
    data (``--pii-detector NAME``; ``auto`` takes ``presidio`` when installed, else the
    built-in ``patterns``). Called once at start-up.

    :param register: call ``register(DetectorClass)`` (or ``register("module:Class",
        name=...)``) with a subclass of :class:`gatekeeper.kinds.PiiDetector`.
    :return: ignored.
    """


# -------------------------------------------------------------------------------------
# Collection: finding suites and their cases.
# -------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def gatekeeper_load_suite(path: Path, config: Config) -> Suite | None:
    """Load the suite in ``path``; the first plugin to return a suite wins.

    Called for every file that discovery finds (see ``suite_patterns`` in the config).
    The built-in loader handles YAML suites; implement this to read other formats.

    :param path: a file found under the paths given on the command line.
    :param config: the project configuration.
    :return: a :class:`gatekeeper.engine.suites.Suite`, or ``None`` to let another plugin try
        (a file no plugin loads is skipped).
    """


@hookspec
def gatekeeper_collection_modifyitems(cases: list[Case], config: Config) -> None:
    """Reorder, filter or add cases in place after collection and ``-k``/``-m`` selection.

    :param cases: the selected cases of all suites; modify the list in place.
    :param config: the project configuration.
    :return: ignored.
    """


# -------------------------------------------------------------------------------------
# Running: one run evaluates one or more models on the collected cases.
# -------------------------------------------------------------------------------------


@hookspec
def gatekeeper_run_start(run_id: str, models: dict[str, str], cases: list[Case]) -> None:
    """Called before the first request of a run is sent.

    :param run_id: the run's id (also the name of its record).
    :param models: model label (``candidate``, ``baseline`` or the spec) → model spec.
    :param cases: the cases that will run.
    :return: ignored.
    """


@hookspec
def gatekeeper_case_result(result: CaseResult) -> None:
    """Called for every case × epoch × model once its output is scored.

    :param result: the output, its scores, and whether it came from the cache.
    :return: ignored.
    """


@hookspec
def gatekeeper_run_finish(run_id: str, record: dict[str, Any]) -> None:
    """Called when a run ends, before its reports are written.

    :param run_id: the run's id.
    :param record: the run record (the contents of ``results.json``); plugins may add
        keys under ``record["plugins"][their name]``.
    :return: ignored.
    """


@hookspec
def gatekeeper_decision_made(record: dict[str, Any]) -> None:
    """Called when ``gatekeeper check`` has decided, before reports and the audit record.

    :param record: the decision record (the contents of ``decision.json``): read it to
        notify people or systems; do not change the decision.
    :return: ignored.
    """
