"""The ``spark`` engine: gatekeeper's data-sized work on a Spark cluster.

The core hands an engine plain work and gets plain answers back, so the run record, the
gate, the reports and the audit trail do not know which engine ran:

* ``count_signals`` — the summary's cells, aggregated by Spark (:mod:`.counting`);
* ``map_cases`` — a picklable ``work(keys, share)`` from the core, run once per partition
  of case keys with ``mapInPandas``: each executor builds the plugin host once per
  partition and runs providers and evaluators through gatekeeper's own runner. ``share``
  is the partition's part of the global rate budget (1 / partitions running at once).
  Spark keeps the output of a task's successful attempt only, so a task that dies and is
  re-run loses no case and counts none twice; the core checks that each key came back
  exactly once;
* ``sample_signals`` — a stratified sample by hash rank, computed in Spark;
* ``label_table`` — a picklable ``labeller`` from the core applied to every row with
  ``mapInPandas`` (the embedding model loaded once per executor process), written to a
  temporary path and renamed into place.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from gatekeeper import PluginError, UsageError
from gatekeeper.kinds import Engine

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl
    from pyspark.sql import DataFrame, SparkSession

PLUGIN = "spark"


def _spark() -> SparkSession:
    from gatekeeper_spark.spark_session import get_spark

    return get_spark()


_RAISED = re.compile(r"^((?:\w+\.)*)(\w*(?:Error|Exception|Missing|Unavailable)): (.+)$")


def task_failure(exc: BaseException) -> str:
    """The useful line of a failed Spark job: the error an executor's Python raised (one
    of gatekeeper's when there is one), not the JVM's stack."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    raised = [m for m in map(_RAISED.match, lines) if m is not None]
    for match in raised:
        if "gatekeeper" in match.group(1):
            return match.group(3)
    if raised:
        last = raised[-1]
        return f"{last.group(2)}: {last.group(3)}"
    return lines[0] if lines else type(exc).__name__


class SparkEngine(Engine):
    """See the module docstring. Registered as engine ``spark``."""

    name: ClassVar[str] = "spark"
    description: ClassVar[str] = "Spark (spark.read, aggregations, mapInPandas across executors)"

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)

    # ------------------------------------------------------------------ signals

    def count_signals(self, location: str, filters: Any, by: Sequence[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
        from gatekeeper_spark.counting import count_cells
        from gatekeeper_spark.frames import signal_frame

        frame = signal_frame(_spark(), location, filters)
        missing = [c for c in ("model", "model_version", "feedback_verdict") if c not in frame.columns]
        if missing:
            raise UsageError(f"the signals have no {missing[0]!r} column", file=location, field=missing[0])
        for column in [*by, *filters.where]:
            if column not in frame.columns:
                known = ", ".join(c for c in frame.columns if c not in ("messages", "context", "answer"))
                flag = "--where" if column in filters.where and column not in by else "--by"
                raise UsageError(f"no field or attribute {column!r} in the signals (known: {known})", field=flag)
        return count_cells(frame, by)

    def signal_columns(self, location: str) -> list[str]:
        from gatekeeper_spark.frames import normalize, read_table

        return list(normalize(read_table(_spark(), location)).columns)

    # ------------------------------------------------------------------ evaluation

    def map_cases(self, work: Callable[[list[str], float], list[dict[str, Any]]],
                  keys: Sequence[str]) -> list[dict[str, Any]]:
        """``work`` over ``keys`` in partitions; the rows every partition returned."""
        if not keys:
            return []
        spark = _spark()
        slots = max(1, spark.sparkContext.defaultParallelism)
        partitions = min(len(keys), slots)
        share = 1.0 / min(partitions, slots)
        # parallelize slices a list deterministically: a re-run task gets the same keys.
        frame = spark.sparkContext.parallelize([(k,) for k in keys], partitions).toDF("key string")

        def run_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            import pandas as pd

            part = [str(k) for batch in batches for k in batch["key"]]
            if part:
                rows = work(part, share)
                yield pd.DataFrame({"key": [r["key"] for r in rows], "payload": [r["payload"] for r in rows]})

        try:
            out = frame.mapInPandas(run_partition, "key string, payload binary").collect()
        except Exception as exc:
            raise PluginError(PLUGIN, f"a Spark task failed after its retries: {task_failure(exc)}") from None
        return [{"key": row["key"], "payload": bytes(row["payload"])} for row in out]

    # ------------------------------------------------------------------ classify

    def sample_signals(self, location: str, filters: Any, *, size: int, strata: Sequence[str],
                       columns: Sequence[str], seed: int,
                       quota: Callable[[dict[tuple[Any, ...], int]], dict[tuple[Any, ...], int]]) -> pl.DataFrame:
        """The stratified sample: ``quota`` (the core's allocation) of each stratum's counts,
        the rows of lowest hash of (seed, id) in each stratum; reproducible."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        from gatekeeper_spark.counting import _to_polars
        from gatekeeper_spark.frames import signal_frame

        spark = _spark()
        frame = signal_frame(spark, location, filters)
        require_columns(frame, [*columns, *strata], location)
        keys = [f"_s{i}" for i in range(len(strata))] or ["_s"]
        values = [F.coalesce(F.col(f"`{s}`").cast("string"), F.lit("(none)")) for s in strata] or [F.lit("(none)")]
        keyed = frame.select("*", *[v.alias(k) for v, k in zip(values, keys, strict=True)])
        counts = {tuple(r[:-1]): int(r[-1]) for r in keyed.groupBy(*keys).count().collect()}
        wanted = {k: n for k, n in quota(counts).items() if n > 0}
        if not wanted:
            return _to_polars(frame.select(*dict.fromkeys(columns)).limit(0))
        ranked = keyed.withColumn("_h", F.xxhash64(F.lit(seed), F.col("id").cast("string")))
        ranked = ranked.withColumn("_rank", F.row_number().over(Window.partitionBy(*keys).orderBy("_h", "id")))
        limits = spark.createDataFrame([(*k, n) for k, n in wanted.items()], [*keys, "_quota"])
        picked = ranked.join(F.broadcast(limits), on=keys, how="inner").filter(F.col("_rank") <= F.col("_quota"))
        out = _to_polars(picked.select(*dict.fromkeys(columns)))
        return out.sort("id") if "id" in out.columns else out

    def label_table(self, location: str, filters: Any, labeller: Any, out: str) -> dict[str, Any]:
        """Apply ``labeller`` to every row; write ``out`` (Parquet directory, or ``delta:PATH``)."""
        from pyspark.sql import functions as F
        from pyspark.sql.pandas.types import from_arrow_schema

        from gatekeeper_spark.frames import signal_frame

        spark = _spark()
        frame = signal_frame(spark, location, filters)
        require_columns(frame, labeller.input_columns, location)
        frame = frame.select(*[F.col(f"`{c}`") for c in labeller.input_columns])
        shipped = spark.sparkContext.broadcast(labeller)
        batch_rows = int(labeller.batch_size)
        task_cpus = spark.conf.get("spark.task.cpus", "1") or "1"

        def label_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            import os

            os.environ.setdefault("GATEKEEPER_EMBEDDING_THREADS", task_cpus)  # before the model loads
            worker = shipped.value  # unpickled once per Python worker process
            for batch in batches:
                for start in range(0, len(batch), batch_rows):
                    yield worker.label_pandas(batch.iloc[start:start + batch_rows])

        labelled = frame.mapInPandas(label_partition, from_arrow_schema(labeller.output_schema()))
        from gatekeeper_spark.frames import absolute

        fmt, target = ("delta", out.removeprefix("delta:")) if out.startswith("delta:") else ("parquet", out)
        target = absolute(target)
        try:
            if fmt == "delta":
                # A Delta commit is atomic: readers see the old table or the new one.
                labelled.write.format("delta").mode("overwrite").save(target)
            else:
                write_then_rename(spark, labelled, target)
        except (UsageError, PluginError):
            raise
        except Exception as exc:
            raise PluginError(PLUGIN, f"labelling {location} failed on an executor: {task_failure(exc)}") from None
        written = spark.read.format(fmt).load(target)
        counts: dict[str, dict[str, dict[str, int]]] = {}
        for task in labeller.tasks:
            for row in written.groupBy("model_version", task).count().collect():
                counts.setdefault(task, {}).setdefault(str(row[0]), {})[str(row[1])] = int(row[2])
        rows = sum(n for per in next(iter(counts.values()), {}).values() for n in per.values())
        return {"rows": rows, "counts": counts, "out": out, "format": fmt}


def require_columns(frame: DataFrame, columns: Sequence[str], location: str) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in frame.columns]
    if missing:
        raise UsageError(f"the table has no {missing[0]!r} column (classify needs "
                         f"{', '.join(dict.fromkeys(columns))})", file=location, field=missing[0])


def write_then_rename(spark: SparkSession, frame: DataFrame, target: str) -> None:
    """Write ``frame`` as Parquet under a temporary sibling of ``target``, then rename it into
    place with the Hadoop file system (local disk, HDFS, ABFS...): a failed write leaves no
    table that looks complete, and readers never see half of one."""
    jvm: Any = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    path = jvm.org.apache.hadoop.fs.Path(target)
    fs = path.getFileSystem(conf)
    tmp = f"{target.rstrip('/')}._tmp-{uuid.uuid4().hex[:12]}"
    tmp_path = jvm.org.apache.hadoop.fs.Path(tmp)
    try:
        frame.write.mode("overwrite").parquet(tmp)
        old = None
        if fs.exists(path):
            old = jvm.org.apache.hadoop.fs.Path(f"{target.rstrip('/')}._old-{uuid.uuid4().hex[:12]}")
            fs.rename(path, old)
        if not fs.rename(tmp_path, path):
            raise PluginError(PLUGIN, f"could not rename {tmp} to {target}")
        if old is not None:
            fs.delete(old, True)
    finally:
        if fs.exists(tmp_path):
            fs.delete(tmp_path, True)
