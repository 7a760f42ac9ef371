"""Signal tables as Spark DataFrames in gatekeeper's flat layout.

The same normalization the Polars path applies (docs/signals.md), in Spark expressions:
``feedback``/``consent`` structs become ``feedback_*``/``consent_*`` columns, ``attributes``
(a struct, a map or JSON text) become one column per attribute, ``time`` becomes a
timestamp (the session runs in UTC), versions and verdicts become text, and ``flags`` a list
of strings (from JSON text or a comma-separated list). Filters are Spark predicates, so a
time window or a version reaches the Parquet reader (partition and row-group pruning).

Locations: ``table:DB.NAME`` (a catalog table), ``delta:PATH`` (a Delta table: needs Delta
in the session's configuration), ``spark:PATH`` or a plain path ending in ``.parquet``,
``.jsonl``/``.json`` or ``.csv`` (a file, a directory or a glob).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from gatekeeper import PluginError, UsageError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

PLUGIN = "spark"
TEXT_COLUMNS = ("model", "model_version", "feedback_verdict", "user_role", "retention")


def absolute(path: str) -> str:
    """A local path made absolute against this process's directory (the JVM resolves
    relative paths against its own start directory); URLs (``hdfs://``, ``s3a://``,
    ``abfss://``, ``dbfs:/``) as they are."""
    if "://" in path or path.startswith(("dbfs:", "file:")):
        return path
    return os.path.abspath(path)


def parse_location(location: str) -> tuple[str, str]:
    """``(format, target)``: format is ``table``, ``delta``, ``parquet``, ``json`` or ``csv``."""
    location = location.removeprefix("spark:")
    if location.startswith("table:"):
        return "table", location.removeprefix("table:")
    for prefix in ("delta", "parquet", "json", "csv"):
        if location.startswith(prefix + ":") and not location.startswith(prefix + "://"):
            return prefix, absolute(location[len(prefix) + 1:])
    name = location.rstrip("/").rsplit("/", 1)[-1].lower()
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "json", absolute(location)
    if name.endswith(".csv"):
        return "csv", absolute(location)
    return "parquet", absolute(location)


def read_table(spark: SparkSession, location: str) -> DataFrame:
    """The raw table at ``location`` through ``spark.read``; a missing table or file is a
    UsageError naming it (exit 4), Delta without its JARs a PluginError (exit 5)."""
    from pyspark.errors import AnalysisException

    fmt, target = parse_location(location)
    try:
        if fmt == "table":
            return spark.read.table(target)
        if fmt == "csv":
            return spark.read.option("header", "true").csv(target)
        return spark.read.format(fmt).load(target)
    except Exception as exc:
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if fmt == "delta" and any(w in str(exc) for w in ("DATA_SOURCE_NOT_FOUND", "data source", "ClassNotFound")):
            raise PluginError(PLUGIN, f"{location}: Spark cannot read Delta tables with this configuration "
                              "(add io.delta:delta-spark to spark.jars.packages and set the Delta "
                              "catalog and extension, see docs/spark.md)") from None
        if isinstance(exc, AnalysisException):
            raise UsageError(f"Spark cannot read the signals: {message}", file=location, field="location") from None
        raise PluginError(PLUGIN, f"{location}: Spark failed to read {fmt}: {message}") from None


def _struct_fields(df: DataFrame, name: str) -> list[str] | None:
    from pyspark.sql.types import StructType

    if name not in df.columns:
        return None
    dtype = df.schema[name].dataType
    return [f.name for f in dtype.fields] if isinstance(dtype, StructType) else None


def normalize(df: DataFrame) -> DataFrame:
    """``df`` in the flat layout (see the module docstring)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, MapType, StringType

    for group in ("feedback", "consent"):
        fields = _struct_fields(df, group)
        if fields is not None:
            df = df.select("*", *[F.col(f"{group}.{f}").alias(f"{group}_{f}") for f in fields]).drop(group)
    if "attributes" in df.columns:
        dtype = df.schema["attributes"].dataType
        names = set(df.columns)
        if isinstance(dtype, StringType):
            df = df.withColumn("attributes", F.from_json("attributes", MapType(StringType(), StringType())))
            dtype = df.schema["attributes"].dataType
        if isinstance(dtype, MapType):
            keys = [r[0] for r in df.select(F.explode(F.map_keys("attributes"))).distinct().collect()]
            df = df.select("*", *[F.col("attributes").getItem(k).alias(k if k not in names else f"attributes.{k}")
                                  for k in sorted(keys)]).drop("attributes")
        else:
            fields = _struct_fields(df, "attributes") or []
            df = df.select("*", *[F.col(f"attributes.`{f}`").alias(f if f not in names else f"attributes.{f}")
                                  for f in fields]).drop("attributes")
    if "time" in df.columns:
        df = df.withColumn("time", _time(df))
    for name in TEXT_COLUMNS:
        if name in df.columns and not isinstance(df.schema[name].dataType, StringType):
            df = df.withColumn(name, F.col(name).cast("string"))
    if "feedback_rating" in df.columns:
        df = df.withColumn("feedback_rating", F.col("feedback_rating").cast("double"))
    for name in ("consent_training", "consent_evaluation"):
        if name in df.columns and isinstance(df.schema[name].dataType, StringType):
            df = df.withColumn(name, F.lower(F.col(name)).isin("true", "1", "yes"))
    if "flags" in df.columns and not isinstance(df.schema["flags"].dataType, ArrayType):
        text = F.trim(F.coalesce(F.col("flags").cast("string"), F.lit("")))
        as_json = F.from_json(text, ArrayType(StringType()))
        as_csv = F.filter(F.transform(F.split(text, ","), lambda x: F.trim(x)), lambda x: x != "")
        df = df.withColumn("flags", F.when(text.startswith("["), as_json).otherwise(as_csv))
    return df


def _time(df: DataFrame) -> Column:
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, TimestampNTZType

    dtype = df.schema["time"].dataType
    if isinstance(dtype, StringType):
        # ISO 8601 with Z or an offset; a time without offset is UTC (the session's zone).
        return F.col("time").cast("timestamp")
    if isinstance(dtype, TimestampNTZType):
        return F.col("time").cast("timestamp")
    return F.col("time").cast("timestamp")


def predicate(filters: Any, columns: set[str]) -> Column | None:
    """A :class:`gatekeeper.signals.SignalFilter` as one Spark predicate over the flat layout."""
    from pyspark.sql import functions as F

    parts: list[Column] = []
    if filters.since is not None:
        parts.append(F.col("time") >= F.lit(filters.since))
    if filters.until is not None:
        parts.append(F.col("time") < F.lit(filters.until))
    if filters.model is not None:
        parts.append(F.col("model") == filters.model)
    if filters.model_version is not None:
        parts.append(F.col("model_version") == filters.model_version)
    for key, allowed in filters.where.items():
        parts.append(F.col(f"`{key}`").cast("string").isin(list(allowed)) if key in columns else F.lit(False))
    if not parts:
        return None
    out = parts[0]
    for part in parts[1:]:
        out = out & part
    return out


def signal_frame(spark: SparkSession, location: str, filters: Any) -> DataFrame:
    """The signals at ``location`` in the flat layout with ``filters`` applied."""
    df = normalize(read_table(spark, location))
    where = predicate(filters, set(df.columns))
    return df if where is None else df.filter(where)
