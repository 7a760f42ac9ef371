"""Label every row on one machine: the filtered signals stream through Polars in batches,
each batch is embedded and classified, and the labelled rows go to a Parquet file (written
beside the target, then renamed into place) or a Delta table (one atomic commit). Memory
holds one batch, whatever the size of the table.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.types import UsageError

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

    from gatekeeper.signals.classify.text_model import Labeller

STREAM_ROWS = 20_000
"""Rows read from the table at a time (then embedded ``batch_size`` at a time)."""


def _batches(
    frame: pl.LazyFrame, labeller: Labeller, counts: Counter[tuple[str, str, str]]
) -> Iterator[pa.RecordBatch]:
    for chunk in frame.select(labeller.input_columns).collect_batches(chunk_size=STREAM_ROWS):
        columns = {name: chunk[name].to_list() for name in chunk.columns}
        table = labeller.label_columns(columns)
        versions = table.column("model_version").to_pylist()
        for task in labeller.tasks:
            counts.update((task, str(v), str(lab)) for v, lab in zip(versions, table.column(task).to_pylist(),
                                                                      strict=True))
        yield from table.to_batches()


def label_local(frame: pl.LazyFrame, labeller: Labeller, out: str) -> dict[str, Any]:
    """Label ``frame`` into ``out`` (a ``.parquet`` path, or ``delta:PATH``); the counts by
    task, model version and label come back with the number of rows."""
    missing = [c for c in labeller.input_columns if c not in frame.collect_schema().names()]
    if missing:
        raise UsageError(f"the table has no {missing[0]!r} column (classify needs "
                         f"{', '.join(labeller.input_columns)})", field=missing[0])
    counts: Counter[tuple[str, str, str]] = Counter()
    schema = labeller.output_schema()
    if out.startswith("delta:"):
        import pyarrow as pa
        from deltalake import write_deltalake

        reader = pa.RecordBatchReader.from_batches(schema, _batches(frame, labeller, counts))
        write_deltalake(out.removeprefix("delta:"), reader, mode="overwrite")
        fmt = "delta"
    else:
        _write_parquet(Path(out), schema, _batches(frame, labeller, counts))
        fmt = "parquet"
    by_task: dict[str, dict[str, dict[str, int]]] = {}
    for (task, version, label), n in sorted(counts.items()):
        by_task.setdefault(task, {}).setdefault(version, {})[label] = n
    rows = sum(n for (task, _, _), n in counts.items() if task == labeller.tasks[0])
    return {"rows": rows, "counts": by_task, "out": out, "format": fmt}


def _write_parquet(path: Path, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> None:
    """Write to a hidden sibling, fsync, then rename: a crash leaves no file that looks done."""
    import pyarrow.parquet as pq

    from gatekeeper.files import fsync_directory

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
