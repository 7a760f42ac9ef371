"""Signal sources of this plugin: Spark tables, and Delta tables on one machine.

``spark`` reads through ``spark.read`` (catalog tables ``table:DB.NAME``, Delta
``spark:delta:PATH`` or ``delta:`` under ``--engine spark``, Parquet/JSON/CSV paths
``spark:PATH``), normalized and filtered in Spark, so curation (consent, PII scrubbing,
sequestration) sees the same validated rows as from any other source. ``delta`` reads a
Delta table with delta-rs and Polars, without a JVM (``delta:PATH``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from gatekeeper import SignalSource, UsageError
from gatekeeper.kinds import RowRef

if TYPE_CHECKING:
    import polars as pl

Rows = Iterator[tuple[RowRef, dict[str, Any]]]


class SparkSignalSource(SignalSource):
    name = "spark"
    description = "signals through spark.read: catalog tables (table:DB.NAME), Delta, Parquet, JSON, CSV"
    schemes = ("spark", "table")

    def _frame(self, location: str, filters: Any) -> Any:
        from gatekeeper_spark.frames import signal_frame
        from gatekeeper_spark.spark_session import get_spark

        if location.startswith("table:") or self._is_table(location):
            location = location if location.startswith("table:") else f"table:{location}"
        frame = signal_frame(get_spark(), location, filters)
        order = [c for c in ("time", "id") if c in frame.columns]
        return frame.orderBy(*order) if order else frame

    @staticmethod
    def _is_table(location: str) -> bool:
        # "spark:" was taken off by the host; "table:" too. A bare name without a path
        # separator or suffix is a catalog table (db.name or name).
        return "/" not in location and not location.lower().endswith((".parquet", ".json", ".jsonl", ".csv"))

    def read(self, location: str, filters: Any) -> Rows:
        from pyspark.sql import functions as F

        frame = self._frame(location, filters)
        if "time" in frame.columns:
            # As text with its offset: collected timestamps would be naive in this process's zone.
            frame = frame.withColumn("time", F.date_format("time", "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"))
        for number, row in enumerate(frame.toLocalIterator(), 1):
            data = row.asDict(recursive=True)
            ident = data.get("id")
            yield RowRef(f"{location} (id {ident})" if ident is not None else location, number), data

    def scan(self, location: str, filters: Any) -> pl.LazyFrame:
        import polars as pl

        frame = self._frame(location, filters)
        return pl.from_arrow(frame.toArrow()).lazy()  # type: ignore[union-attr]


class DeltaSignalSource(SignalSource):
    name = "delta"
    description = "a Delta table read with delta-rs and Polars on one machine (delta:PATH)"
    schemes = ("delta",)

    @staticmethod
    def _table(location: str) -> Any:
        try:
            from deltalake import DeltaTable
            from deltalake.exceptions import TableNotFoundError
        except ImportError:
            raise UsageError("reading Delta tables needs the deltalake package (pip install deltalake)",
                             file=location, field="location") from None
        try:
            return DeltaTable(location)
        except TableNotFoundError:
            raise UsageError("no Delta table here (no _delta_log)", file=location, field="location") from None

    def read(self, location: str, filters: Any) -> Rows:
        number = 0
        for batch in self._table(location).to_pyarrow_dataset().to_batches(batch_size=10_000):
            for row in batch.to_pylist():
                number += 1
                yield RowRef(location, number), row

    def scan(self, location: str, filters: Any) -> pl.LazyFrame:
        import polars as pl

        self._table(location)  # a clear error for a path without a table
        return pl.scan_delta(location)
