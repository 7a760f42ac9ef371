"""``signals summarize --engine spark``: the summary's cell counts as Spark aggregations.

Spark computes the finest cells (version, slice values, verdict: counts, rating count,
sum and sum of squares, invalid values) and the flag counts; those are a few hundred rows
however large the table, and come back to the driver as Polars frames with the columns
gatekeeper's own counting produces, so the roll-ups, Wilson intervals and comparisons are
the same code on both engines (the figures are identical, tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl
    from pyspark.sql import DataFrame


def count_cells(frame: DataFrame, by: Sequence[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(cells, flagged) for a flat-layout Spark frame, grouped by model, version, ``by``."""
    import polars as pl
    from pyspark.sql import functions as F

    columns = set(frame.columns)
    finest = ["model", "model_version", *by]
    keys = [F.col(f"`{k}`").alias(k) for k in finest]
    rating = F.col("feedback_rating") if "feedback_rating" in columns else F.lit(None).cast("double")
    invalid_time = F.sum(F.col("time").isNull().cast("long")) if "time" in columns else F.count(F.lit(1))
    cells = frame.groupBy(*keys, F.col("feedback_verdict").alias("feedback_verdict")).agg(
        F.count(F.lit(1)).alias("n"),
        F.count(rating).alias("rating_n"),
        F.coalesce(F.sum(rating), F.lit(0.0)).alias("rating_sum"),
        F.coalesce(F.sum(rating * rating), F.lit(0.0)).alias("rating_sq"),
        F.coalesce(F.sum(((rating < 1) | (rating > 5)).cast("long")), F.lit(0)).alias("invalid_rating"),
        invalid_time.alias("invalid_time"),
    )
    if "flags" in columns:
        flagged = (frame.filter(F.size("flags") > 0).select(*keys, F.explode("flags").alias("flags"))
                   .filter(F.col("flags").isNotNull()).groupBy(*finest, "flags").agg(F.count(F.lit(1)).alias("k")))
        flag_rows = _to_polars(flagged)
    else:
        flag_rows = None
    cell_rows = _to_polars(cells)
    if flag_rows is None or flag_rows.height == 0:
        schema = {**{k: cell_rows.schema[k] for k in finest}, "flags": pl.String, "k": pl.Int64}
        flag_rows = pl.DataFrame(schema=schema)  # type: ignore[arg-type]  # polars' dtype union
    return cell_rows, flag_rows


def _to_polars(frame: DataFrame) -> pl.DataFrame:
    """A small aggregated Spark frame → Polars, through Arrow (types kept)."""
    import polars as pl

    table: Any = frame.toArrow()
    return pl.from_arrow(table)  # type: ignore[return-value]
