"""Entry point of the gatekeeper-spark plugin: what it registers, and nothing heavy at import.

Classes are registered by import path (docs/architecture.md, "Registering lazily").

pyspark, deltalake and the embedding model are imported only when a Spark location, a
Delta table or ``--engine spark`` is actually used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatekeeper import hookimpl

if TYPE_CHECKING:
    from gatekeeper.kinds import Engine, Register, SignalSource

gatekeeper_api = ">=1.0,<2"


@hookimpl
def gatekeeper_register_signal_sources(register: Register[SignalSource]) -> None:
    register("gatekeeper_spark.sources:SparkSignalSource", name="spark")
    register("gatekeeper_spark.sources:DeltaSignalSource", name="delta")


@hookimpl
def gatekeeper_register_engines(register: Register[Engine]) -> None:
    register("gatekeeper_spark.engine:SparkEngine", name="spark")
