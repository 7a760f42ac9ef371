"""The stratified sample the LLM labels: proportional allocation, rows chosen by hash rank.

Each stratum (by default the model version) gets its share of the sample, at least one
row, never more than it has; within a stratum the rows of lowest hash of (seed, id) are
taken, so the same table and seed give the same sample without shuffling it. Three
streaming passes over the table (counts, per-stratum thresholds, the rows): nothing but
the sample is ever held in memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

NONE = "(none)"
"""A missing stratum value, as text (so it is a stratum of its own)."""


def allocate(counts: Mapping[tuple[Any, ...], int], size: int) -> dict[tuple[Any, ...], int]:
    """``size`` rows over strata in proportion to ``counts`` (largest remainders), at least
    one per non-empty stratum, never more than a stratum has."""
    total = sum(counts.values())
    if total == 0:
        return dict.fromkeys(counts, 0)
    size = min(size, total)
    exact = {k: size * n / total for k, n in counts.items()}
    quota = {k: min(counts[k], max(1 if counts[k] else 0, math.floor(v))) for k, v in exact.items()}
    left = size - sum(quota.values())
    for key in sorted(exact, key=lambda k: (exact[k] - math.floor(exact[k]), str(k)), reverse=True):
        if left <= 0:
            break
        if quota[key] < counts[key]:
            quota[key] += 1
            left -= 1
    return quota


def stratified_sample(
    frame: pl.LazyFrame, *, size: int, strata: Sequence[str], columns: Sequence[str], seed: int
) -> pl.DataFrame:
    """About ``size`` rows of ``frame`` (see the module docstring), with ``columns``."""
    import polars as pl

    keys = [f"_s{i}" for i in range(len(strata))]
    keyed = frame.with_columns(
        *[pl.col(s).cast(pl.String).fill_null(NONE).alias(k) for s, k in zip(strata, keys, strict=True)],
        pl.concat_str([pl.lit(f"{seed}:"), pl.col("id").cast(pl.String)]).hash(seed=seed).alias("_h"),
    )
    if not keys:
        keyed = keyed.with_columns(pl.lit(NONE).alias("_s"))
        keys = ["_s"]
    counts = keyed.group_by(keys).agg(pl.len().alias("n")).collect(engine="streaming")
    quota = allocate({tuple(r[:-1]): int(r[-1]) for r in counts.iter_rows()}, size)
    largest = max(quota.values(), default=0)
    if largest == 0:
        return keyed.select(columns).head(0).collect()
    lowest = keyed.group_by(keys).agg(pl.col("_h").bottom_k(largest).sort().alias("_low")).collect(engine="streaming")
    thresholds = [
        {**dict(zip(keys, row[:-1], strict=True)), "_max": row[-1][quota[tuple(row[:-1])] - 1]}
        for row in lowest.iter_rows() if quota.get(tuple(row[:-1]), 0) > 0
    ]
    limits = pl.DataFrame(thresholds, schema={**dict.fromkeys(keys, pl.String), "_max": pl.UInt64}).lazy()
    picked = keyed.join(limits, on=keys, how="inner").filter(pl.col("_h") <= pl.col("_max"))
    out = picked.select(list(dict.fromkeys(columns))).collect(engine="streaming")
    return out.sort("id") if "id" in out.columns else out
