"""One metric's per-case values, from the run's score columns: what the gate compares.

:class:`MetricMeans` averages each case's epochs for every model with numpy over the
columns (:mod:`gatekeeper.engine.score_columns`), counting the scores that have no value
(NODATA) and those that failed (ERROR) apart; :meth:`MetricMeans.pairs` pairs candidate
and baseline case by case, in the order of the case keys, as :func:`stats.compare` pairs
two mappings -- without a Python object per case, so a million cases cost milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from gatekeeper.engine.score_columns import ABSENT, ERROR, ScoreColumns


class Pairs(NamedTuple):
    """Paired per-case means: ``ids`` in sorted order, both arrays finite and aligned with
    them, and every candidate mean of the same cases set (the guardrail's values)."""

    ids: Sequence[str]
    base: np.ndarray
    cand: np.ndarray
    candidate_all: np.ndarray
    clusters: Sequence[str] | None = None
    """Each pair's cluster (the case key when it has none), when the cases' clusters are known."""


def pairs_of(baseline: Mapping[str, float | None], candidate: Mapping[str, float | None]) -> Pairs:
    """:class:`Pairs` from two mappings case id -> mean (what older callers hold)."""
    from gatekeeper.gate.stats import _pair

    ids, base, cand = _pair(baseline, candidate)
    values = np.array([v for v in candidate.values() if v is not None], dtype=float)
    return Pairs(ids, base, cand, values[np.isfinite(values)])


EMPTY = Pairs([], np.empty(0), np.empty(0), np.empty(0))


class MetricMeans:
    """Per-case means of one metric for each model (epochs averaged; ``measure="passed"``:
    the pass/fail verdicts as 1/0), with the NODATA and ERROR counts per model.

    ``rows`` (a boolean mask over the columns' rows) limits it to some rows, e.g. one suite's.
    """

    def __init__(self, columns: ScoreColumns, metric: str, *, measure: str = "value",
                 rows: np.ndarray | None = None) -> None:
        self.columns = columns
        self.means: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        """label -> (case indices ascending, their means)."""
        self.nodata: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.first_error: dict[str, str] = {}
        col = columns.metrics.get(metric)
        if col is None:
            return
        present = col.status != ABSENT
        if rows is not None:
            present &= rows
        has_value = ~np.isnan(col.value)
        if measure == "passed":
            has_value &= col.passed >= 0
        failed = present & (col.status == ERROR)
        usable = present & ~failed & has_value
        nodata = present & ~failed & ~has_value
        values = col.passed.astype(np.float64) if measure == "passed" else col.value
        for index, label in enumerate(columns.models):
            mine = columns.model == index
            errors = int(np.count_nonzero(failed & mine))
            if errors:
                self.errors[label] = errors
                first = int(np.flatnonzero(failed & mine)[0])
                self.first_error[label] = col.reasons.get(first, "")
            missing = int(np.count_nonzero(nodata & mine))
            if missing:
                self.nodata[label] = missing
            take = usable & mine
            if take.any():
                self.means[label] = _case_means(columns.case[take], values[take])

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())

    @property
    def n_nodata(self) -> int:
        return sum(self.nodata.values())

    def cases(self, label: str) -> np.ndarray:
        """Case indices with a mean for ``label``."""
        return self.means[label][0] if label in self.means else np.empty(0, dtype=np.int64)

    def mapping(self, label: str) -> dict[str, float]:
        """case key -> mean for ``label`` (for readers that want a dict)."""
        if label not in self.means:
            return {}
        cases, means = self.means[label]
        keys = self.columns.keys
        return {keys[c]: m for c, m in zip(cases.tolist(), means.tolist(), strict=True)}

    def common(self) -> np.ndarray:
        """Case indices with a mean for both baseline and candidate."""
        return np.intersect1d(self.cases("baseline"), self.cases("candidate"), assume_unique=True)

    def pairs(self, subset: np.ndarray | None = None, clusters: np.ndarray | None = None) -> Pairs:
        """Baseline and candidate paired by case, ordered by case key (as :func:`stats.compare`
        orders them); ``subset`` (case indices) limits the pairs and the candidate's values;
        ``clusters`` (each case's cluster, by case index) gives each pair its cluster."""
        if "baseline" not in self.means or "candidate" not in self.means:
            cand = self.means.get("candidate", (np.empty(0, dtype=np.int64), np.empty(0)))
            keep = np.isin(cand[0], subset) if subset is not None else slice(None)
            return Pairs([], np.empty(0), np.empty(0), cand[1][keep])
        (b_cases, b_means), (c_cases, c_means) = self.means["baseline"], self.means["candidate"]
        common, ib, ic = np.intersect1d(b_cases, c_cases, assume_unique=True, return_indices=True)
        candidate_all = c_means
        if subset is not None:
            keep = np.isin(common, subset)
            common, ib, ic = common[keep], ib[keep], ic[keep]
            candidate_all = c_means[ic]
        order = np.argsort(self.columns.key_rank()[common], kind="stable")
        keys = self.columns.keys
        cases = common[order]
        return Pairs([keys[c] for c in cases.tolist()], b_means[ib][order], c_means[ic][order],
                     candidate_all, None if clusters is None else clusters[cases].tolist())


def _case_means(cases: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each case's mean over its values (epochs): sorted case indices and their means, the
    multi-epoch means by ``math.fsum`` as :func:`stats.average_epochs` computes them."""
    unique, inverse, counts = np.unique(cases, return_inverse=True, return_counts=True)
    if len(unique) == len(cases):
        return unique, values[np.argsort(cases, kind="stable")]
    order = np.argsort(inverse, kind="stable")
    ordered = values[order]
    ends = np.cumsum(counts)
    means = np.bincount(inverse, weights=values, minlength=len(unique)) / counts
    for j in np.flatnonzero(counts > 1).tolist():
        means[j] = math.fsum(ordered[ends[j] - counts[j]:ends[j]].tolist()) / counts[j]
    return unique, means


def case_fields(columns: ScoreColumns, case_index: Mapping[str, Any]) -> dict[str, Any]:
    """Per case of the columns, what the gate groups by: ``suite`` (list), ``cluster`` (array:
    the cluster, the case key itself when the case has none) and ``slices`` (list of dicts).
    A record's index gives them without reading its entries (:meth:`CaseIndex.fields`)."""
    slim = case_index.fields() if hasattr(case_index, "fields") else {
        key: (entry["suite"], entry.get("slices") or {}, entry.get("cluster")) for key, entry in case_index.items()}
    suites, slices, clusters = [], [], []
    for key in columns.keys:
        suite, case_slices, cluster = slim[key]
        suites.append(suite)
        slices.append(case_slices or {})
        clusters.append(str(cluster or key))
    return {"suite": suites, "slices": slices, "cluster": np.array(clusters, dtype=object)}
