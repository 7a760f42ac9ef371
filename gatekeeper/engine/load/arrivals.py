"""Arrival processes: when each request of a load run leaves, and for which model.

Open loop (``constant``, ``poisson``, ``ramp``): arrivals follow a schedule fixed in
advance, whatever the endpoint does, so a slow endpoint cannot slow the offered load down
(no coordinated omission: a late answer never delays the next request). Closed loop
(``closed``): ``concurrency`` workers per model, each sending its next request when the
last one ended; the rate is whatever the endpoint sustains.

Rates are per model: with a baseline, the merged stream has twice the rate and each
arrival is assigned to one model — ``alternate`` (each consecutive pair goes one to each
model, in a seeded random order: equal counts, and drift in the endpoint hits both) or
``random`` (a seeded coin per arrival: each model's arrivals are then exactly Poisson when
the merged stream is).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from gatekeeper.engine.load.measurements import Step


@dataclass(frozen=True)
class Arrival:
    """One planned request: when (s since start), in which step, for which model."""

    t: float
    step: int
    model: str


def plan_steps(
    process: str, *, rate: float | None, rates: Sequence[float], concurrency: Sequence[int],
    duration_s: float | None, step_s: float | None,
) -> list[Step]:
    """The steps of a run: one for ``constant``/``poisson``/a single concurrency, one per
    rate of a ``ramp`` or per concurrency of a stepped ``closed`` run."""
    if process in ("constant", "poisson"):
        assert rate is not None and duration_s is not None
        return [Step(0, float(rate), None, 0.0, float(duration_s))]
    if process == "ramp":
        assert step_s is not None
        return [Step(i, float(r), None, i * step_s, float(step_s)) for i, r in enumerate(rates)]
    if len(concurrency) == 1:
        assert duration_s is not None
        return [Step(0, None, int(concurrency[0]), 0.0, float(duration_s))]
    assert step_s is not None
    return [Step(i, None, int(c), i * step_s, float(step_s)) for i, c in enumerate(concurrency)]


def arrival_times(
    steps: Sequence[Step], *, spacing: str, models: int, rng: np.random.Generator
) -> Iterator[tuple[float, int]]:
    """``(t, step)`` of the merged stream: ``models`` × each step's rate, evenly spaced
    (``constant``) or with exponential gaps (``poisson``), restarted at each step's start."""
    for step in steps:
        assert step.offered_rate is not None
        total = step.offered_rate * models
        if total <= 0:
            continue
        end = step.start_s + step.duration_s
        if spacing == "constant":
            gap = 1.0 / total
            n = 0
            while (t := step.start_s + n * gap) < end - 1e-12:
                yield t, step.index
                n += 1
            continue
        t = step.start_s
        while True:
            t += float(rng.exponential(1.0 / total))
            if t >= end:
                break
            yield t, step.index


def assign(labels: Sequence[str], how: str, rng: np.random.Generator) -> Iterator[str]:
    """The model of each successive arrival (see the module docstring)."""
    if len(labels) == 1:
        while True:
            yield labels[0]
    if how == "random":
        while True:
            yield labels[int(rng.integers(len(labels)))]
    while True:
        for i in rng.permutation(len(labels)):
            yield labels[int(i)]


def open_loop_arrivals(
    steps: Sequence[Step], *, spacing: str, labels: Sequence[str], assignment: str, seed: int
) -> Iterator[Arrival]:
    """The planned arrivals of an open-loop run, in time order (lazily: a cap may stop early)."""
    rng = np.random.default_rng(seed)
    owner_rng = np.random.default_rng([seed, 1])  # its own stream: the times do not depend on it
    owners = assign(labels, assignment, owner_rng)
    for t, step in arrival_times(steps, spacing=spacing, models=len(labels), rng=rng):
        yield Arrival(t, step, next(owners))
