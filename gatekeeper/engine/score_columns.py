"""A run's scores as columns: one numpy array per metric over every result row.

The statistics and the reports read every score of a run; for a million cases that is
tens of millions of scores, too many to keep as Python dicts (about 1 KB each). The run
record's writer (:class:`gatekeeper.engine.record.CaseWriter`) feeds each row it writes to a
:class:`ColumnsBuilder`, which keeps 10 bytes per score: the value (float64, NaN for none),
``passed`` (int8) and the status (int8). Reasons are kept only for the scores that have no
value (an error or NODATA, which the gate quotes); everything else about a score is in the
row on disk, read back by position (:func:`gatekeeper.engine.record.rows_at`).

Row position ``i`` is the row's line in ``cases.jsonl``: the same ``i`` as the slim score
rows :meth:`ScoreColumns.rows` yields for readers written against them.

The record keeps the columns beside ``cases.jsonl`` as ``scores.npz`` (:func:`save`): a numpy
archive (no pickles) of the arrays above, each row's byte offset in ``cases.jsonl``, each
case's byte offset in ``case_index.jsonl``, and JSON members for the strings (``keys``: the
case keys; ``meta``: model labels, metric names, generation errors, the reasons and labels
kept). A reader loads it (:func:`load`, :func:`load_case_offsets`) instead of parsing every
line of ``cases.jsonl`` and ``case_index.jsonl`` again; those stay the evidence, this an
index of them.
"""

from __future__ import annotations

import contextlib
import zipfile
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gatekeeper.engine.jsonline import dumps_line, loads_line

ABSENT, OK, NODATA, ERROR = -1, 0, 1, 2
STATUS_CODES = {"ok": OK, "nodata": NODATA, "error": ERROR}
STATUS_NAMES = {OK: "ok", NODATA: "nodata", ERROR: "error"}
_PASSED_CODES = {True: 1, False: 0, None: -1}
_NAN = float("nan")


@dataclass
class MetricColumn:
    """One metric over every result row (``status`` ABSENT where the row has no such score)."""

    value: np.ndarray
    """float64; NaN where the value is None or the row has no such score."""
    passed: np.ndarray
    """int8: 1 passed, 0 failed, -1 no verdict (or absent)."""
    status: np.ndarray
    """int8: 0 ok, 1 nodata, 2 error, -1 absent."""
    reasons: dict[int, str] = field(default_factory=dict)
    """row -> reason, for the scores without a value (error, nodata)."""
    labels: dict[int, Any] = field(default_factory=dict)
    """row -> ``details["labels"]`` (a classifier's labels), where a score has them."""

    def present(self) -> np.ndarray:
        """Rows that have this metric."""
        return self.status != ABSENT


@dataclass
class ScoreColumns:
    """Every score of a run, by row; see the module docstring."""

    models: list[str]
    keys: list[str]
    model: np.ndarray
    """int16 per row: index into ``models``."""
    case: np.ndarray
    """int32 per row: index into ``keys``."""
    epoch: np.ndarray
    """int32 per row."""
    error: np.ndarray
    """bool per row: the generation failed."""
    errors: dict[int, str]
    """row -> the generation's error text."""
    metrics: dict[str, MetricColumn]
    _rank: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.model)

    def model_rows(self, label: str) -> np.ndarray:
        """Row positions of one model (empty when the run has no such model)."""
        if label not in self.models:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(self.model == self.models.index(label))

    def key_rank(self) -> np.ndarray:
        """Each case's position among the case keys sorted as strings (kept once made)."""
        if self._rank is None:
            order = sorted(range(len(self.keys)), key=self.keys.__getitem__)
            rank = np.empty(len(self.keys), dtype=np.int64)
            rank[order] = np.arange(len(self.keys))
            self._rank = rank
        return self._rank

    def score(self, metric: str, i: int) -> dict[str, Any] | None:
        """Row ``i``'s slim score for ``metric`` (value, passed, status, reason), or None."""
        col = self.metrics.get(metric)
        if col is None or col.status[i] == ABSENT:
            return None
        value = col.value[i]
        passed = int(col.passed[i])
        slim: dict[str, Any] = {
            "value": None if value != value else float(value),
            "passed": None if passed < 0 else bool(passed),
            "status": STATUS_NAMES[int(col.status[i])],
            "reason": col.reasons.get(i, ""),
        }
        if i in col.labels:
            slim["details"] = {"labels": col.labels[i]}
        return slim

    def row(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a slim score row: key, model, epoch, error, scores (value, passed, status, reason), i."""
        scores = {}
        for metric in self.metrics:
            slim = self.score(metric, i)
            if slim is not None:
                scores[metric] = slim
        return {"key": self.keys[self.case[i]], "model": self.models[self.model[i]],
                "epoch": int(self.epoch[i]), "error": self.errors.get(i), "scores": scores, "i": i}

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every row as a slim score row, made one at a time (for readers of the old shape)."""
        for i in range(len(self)):
            yield self.row(i)


def summary(columns: ScoreColumns) -> dict[str, dict[str, dict[str, Any]]]:
    """model label -> metric -> mean value and pass/fail/nodata/error counts (the record's
    ``summary``)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for index, label in enumerate(columns.models):
        mine = columns.model == index
        metrics: dict[str, dict[str, Any]] = {}
        for metric, col in columns.metrics.items():
            rows = mine & (col.status != ABSENT)
            if not rows.any():
                continue
            error = rows & (col.status == ERROR)
            valued = rows & ~error & ~np.isnan(col.value)
            values = col.value[valued].tolist()
            metrics[metric] = {
                "passed": int(np.count_nonzero(valued & (col.passed == 1))),
                "failed": int(np.count_nonzero(valued & (col.passed == 0))),
                "nodata": int(np.count_nonzero(rows & ~error & np.isnan(col.value))),
                "error": int(np.count_nonzero(error)),
                "n": len(values),
                "mean": round(sum(values) / len(values), 6) if values else None,
            }
        out[label] = metrics
    return out


class ColumnsBuilder:
    """Collects rows' scores into growing arrays (a few bytes per score); :meth:`build`
    returns the :class:`ScoreColumns`. Metrics may appear part-way (suites differ)."""

    def __init__(self) -> None:
        self.n = 0
        self._models: dict[str, int] = {}
        self._keys: dict[str, int] = {}
        self._model = array("h")
        self._case = array("i")
        self._epoch = array("i")
        self._error = array("b")
        self._errors: dict[int, str] = {}
        self._metrics: dict[str, tuple[array[float], array[int], array[int], dict[int, str], dict[int, Any]]] = {}
        self._columns: dict[str, tuple[Any, ...]] = {}
        """metric -> the appends of its arrays, its reasons and labels (bound once: the hot loop)."""

    def add(self, row: Mapping[str, Any]) -> None:
        """One result row (the record's shape: key, model, epoch, error, scores)."""
        i = self.n
        self._model.append(self._models.setdefault(row["model"], len(self._models)))
        self._case.append(self._keys.setdefault(row["key"], len(self._keys)))
        self._epoch.append(row.get("epoch") or 0)
        error = row.get("error")
        self._error.append(1 if error else 0)
        if error:
            self._errors[i] = error
        scores = row.get("scores") or {}
        columns = self._columns
        for metric, s in scores.items():
            col = columns.get(metric)
            if col is None:
                col = self._new_metric(metric, i)
            value = s.get("value")
            col[0](_NAN if value is None else value)
            col[1](_PASSED_CODES.get(s.get("passed"), -1))
            code = STATUS_CODES.get(s.get("status"), OK)
            col[2](code)
            if code or value is None:
                col[3][i] = s.get("reason") or ""
            details = s.get("details")
            if details and "labels" in details and isinstance(details, dict):
                col[4][i] = details["labels"]
        self.n = i + 1
        if len(scores) != len(columns):  # a metric this row lacks: absent
            for values, passed, status, _, _ in self._metrics.values():
                if len(status) == i:
                    values.append(_NAN)
                    passed.append(-1)
                    status.append(ABSENT)

    def _new_metric(self, metric: str, rows_before: int) -> tuple[Any, ...]:
        """A metric first seen at row ``rows_before``: absent in the rows before it."""
        arrays: tuple[Any, ...] = (array("d", [_NAN]) * rows_before, array("b", [-1]) * rows_before,
                  array("b", [ABSENT]) * rows_before, {}, {})
        self._metrics[metric] = arrays
        col = self._columns[metric] = (arrays[0].append, arrays[1].append, arrays[2].append, arrays[3], arrays[4])
        return col

    def build(self) -> ScoreColumns:
        metrics = {
            metric: MetricColumn(np.frombuffer(values, dtype=np.float64).copy(),
                                 np.frombuffer(passed, dtype=np.int8).copy(),
                                 np.frombuffer(status, dtype=np.int8).copy(), reasons, labels)
            for metric, (values, passed, status, reasons, labels) in self._metrics.items()
        }
        return ScoreColumns(
            models=list(self._models), keys=list(self._keys),
            model=np.frombuffer(self._model, dtype=np.int16).copy(),
            case=np.frombuffer(self._case, dtype=np.int32).copy(),
            epoch=np.frombuffer(self._epoch, dtype=np.int32).copy(),
            error=np.frombuffer(self._error, dtype=np.int8).astype(bool),
            errors=dict(self._errors), metrics=metrics,
        )


def columns_of(rows: Iterable[Mapping[str, Any]]) -> ScoreColumns:
    """The columns of result rows (an inline record's, or rows streamed from a file)."""
    builder = ColumnsBuilder()
    for row in rows:
        builder.add(row)
    return builder.build()


INDEX_VERSION = 1
"""The layout of ``scores.npz`` (:func:`save`); :func:`load` refuses another."""


def save(columns: ScoreColumns, offsets: Sequence[int], case_offsets: Mapping[str, int], path: Path) -> None:
    """Write ``columns``, each row's byte offset in ``cases.jsonl`` and each case's in
    ``case_index.jsonl`` (key → offset) to ``path`` (``.npz``)."""
    metrics = list(columns.metrics)
    index_keys = list(case_offsets)
    meta = {
        "version": INDEX_VERSION, "rows": len(columns), "models": columns.models,
        "metrics": metrics, "errors": {str(i): text for i, text in columns.errors.items()},
        "reasons": {m: {str(i): r for i, r in col.reasons.items()} for m, col in columns.metrics.items()},
        "labels": {m: {str(i): v for i, v in col.labels.items()} for m, col in columns.metrics.items() if col.labels},
    }
    arrays: dict[str, np.ndarray] = {
        "meta": _json_member(meta), "keys": _json_member(columns.keys),
        "offset": np.asarray(offsets, dtype=np.int64), "model": columns.model, "case": columns.case,
        "epoch": columns.epoch, "error": columns.error.astype(np.int8),
        "case_offset": np.fromiter(case_offsets.values(), dtype=np.int64, count=len(index_keys)),
    }
    if index_keys != columns.keys:  # the index lists its cases in another order, or others
        arrays["case_keys"] = _json_member(index_keys)
    for j, metric in enumerate(metrics):
        col = columns.metrics[metric]
        arrays.update({f"value_{j}": col.value, f"passed_{j}": col.passed, f"status_{j}": col.status})
    with path.open("wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def _json_member(value: Any) -> np.ndarray:
    return np.frombuffer(dumps_line(value), dtype=np.uint8)


def _json_of(archive: Any, name: str) -> Any:
    return loads_line(archive[name].tobytes())


class NotAnIndex(ValueError):
    """``scores.npz`` is not an index this version reads (the reader parses ``cases.jsonl`` instead)."""


@contextlib.contextmanager
def _archive(path: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The archive :func:`save` wrote and its ``meta``; any failure to read either (in here or
    in the caller's block) raised as :class:`NotAnIndex`."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = _json_of(archive, "meta")
            if not isinstance(meta, dict) or meta.get("version") != INDEX_VERSION:
                raise NotAnIndex(f"{path.name}: not a version-{INDEX_VERSION} index")
            yield archive, meta
    except NotAnIndex:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile, EOFError) as exc:
        raise NotAnIndex(f"{path.name}: unreadable ({type(exc).__name__}: {exc})") from None


def load(path: Path, rows: int) -> tuple[ScoreColumns, np.ndarray]:
    """The columns and row offsets :func:`save` wrote for a ``cases.jsonl`` of ``rows`` rows;
    raises :class:`NotAnIndex` for anything else (another layout, a row count that differs,
    a damaged archive)."""
    with _archive(path) as (archive, meta):
        if meta.get("rows") != rows:
            raise NotAnIndex(f"{path.name}: not an index of {rows} rows")
        offsets = archive["offset"]
        metrics = {
            metric: MetricColumn(
                archive[f"value_{j}"], archive[f"passed_{j}"], archive[f"status_{j}"],
                {int(i): r for i, r in meta["reasons"].get(metric, {}).items()},
                {int(i): v for i, v in meta["labels"].get(metric, {}).items()},
            )
            for j, metric in enumerate(meta["metrics"])
        }
        columns = ScoreColumns(
            models=list(meta["models"]), keys=list(_json_of(archive, "keys")), model=archive["model"],
            case=archive["case"], epoch=archive["epoch"], error=archive["error"].astype(bool),
            errors={int(i): text for i, text in meta["errors"].items()}, metrics=metrics,
        )
    lengths = {len(a) for a in (offsets, columns.model, columns.case, columns.epoch, columns.error)}
    lengths |= {len(a) for col in metrics.values() for a in (col.value, col.passed, col.status)}
    if lengths != {rows}:
        raise NotAnIndex(f"{path.name}: arrays of {sorted(lengths)} rows for {rows} rows")
    return columns, offsets


def load_case_offsets(path: Path, cases: int) -> dict[str, int]:
    """Case key → byte offset of its line in ``case_index.jsonl`` (``cases`` lines), as
    :func:`save` wrote them; raises :class:`NotAnIndex` as :func:`load` does."""
    with _archive(path) as (archive, _):
        keys = _json_of(archive, "case_keys" if "case_keys" in archive.files else "keys")
        offsets = archive["case_offset"]
    if not isinstance(keys, list) or len(keys) != cases or len(offsets) != cases:
        raise NotAnIndex(f"{path.name}: not an index of {cases} cases")
    return dict(zip(map(str, keys), offsets.tolist(), strict=True))
