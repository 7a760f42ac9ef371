"""Entry point of the gatekeeper-spark plugin: what it registers, and nothing heavy at import.

pyspark, deltalake and the embedding model are imported only when a Spark location, a
Delta table or ``--engine spark`` is actually used.
"""

from __future__ import annotations

from typing import Any

from gatekeeper import hookimpl

gatekeeper_api = ">=1.0,<2"


@hookimpl
def gatekeeper_register_signal_sources(register: Any) -> None:
    from gatekeeper_spark.sources import DeltaSignalSource, SparkSignalSource

    register(SparkSignalSource)
    register(DeltaSignalSource)


@hookimpl
def gatekeeper_register_engines(register: Any) -> None:
    from gatekeeper_spark.engine import SparkEngine

    register(SparkEngine)
