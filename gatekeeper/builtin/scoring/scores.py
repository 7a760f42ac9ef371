"""The score every hallucination detector reports, and its verdict at the threshold.

A detector computes a probability-like **score** in [0, 1] (1 = hallucinated). The verdict
is ``flagged = score > threshold`` (``passed`` is its negation: the framework's
lower-is-better rule ``score <= threshold``). Both go into the record:
``details["score"]``, ``details["threshold"]`` and ``details["flagged"]``, whatever the
``value`` holds, so a ROC curve can be drawn from any run.

``emit`` chooses what the score's ``value`` is:

- ``verdict`` (default): 1.0 when flagged, else 0.0. The mean over cases is the
  hallucination rate, as it always was: policies that gate on that rate, with Tango's
  interval for binary metrics, keep working unchanged.
- ``score``: the score itself, to gate on a mean hallucination score.

With ``threshold: null`` there is no verdict: ``value`` is the score and ``passed`` is null.

Detectors whose verdict is a rule ("any unsupported number") build the score with
:func:`rule_score` so that it exceeds 0.5 exactly when the rule fires; their default
threshold 0.5 therefore gives the same verdicts as before the score existed, and other
thresholds trade misses for false alarms along the same measurements.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from gatekeeper.kinds import Evaluator, ScoringParams
from gatekeeper.types import Score, Span

Emit = Literal["verdict", "score"]
DEFAULT_THRESHOLD = 0.5


class DetectorScoreParams(ScoringParams):
    """Parameters every built-in hallucination detector accepts."""

    threshold: float | None = Field(DEFAULT_THRESHOLD, ge=0, le=1)
    """Flag the output when its score (0..1, 1 = hallucinated) is above this; null: no verdict."""
    emit: Emit = "verdict"
    """What ``value`` holds: the verdict (1.0 flagged / 0.0) or the score itself."""


def rule_score(measured: float, limit: float, maximum: float) -> float:
    """A score in [0, 1] for the rule "``measured`` above ``limit`` is hallucinated".

    Up to the limit the score rises linearly from 0 to 0.5 (0 when the limit is 0); past it,
    from just above 0.5 to 1.0 at ``maximum`` (the most ``measured`` can be). So the score is
    above 0.5 exactly when the rule fires, and grows with the evidence on either side.
    """
    measured = min(max(measured, 0.0), maximum)
    if measured <= limit:
        return 0.5 * measured / limit if limit > 0 else 0.0
    if maximum <= limit:  # cannot happen with measured > limit; kept for the type checker
        return 0.5
    return 0.5 + 0.5 * (measured - limit) / (maximum - limit)


def detector_score(
    detector: Evaluator,
    score: float,
    *,
    reason: str = "",
    spans: list[Span] | None = None,
    details: dict[str, Any] | None = None,
) -> Score:
    """The :class:`Score` of a detector whose score is ``score``: value, verdict and details
    (``score``, ``threshold``, ``flagged``) by the convention above."""
    score = round(min(max(float(score), 0.0), 1.0), 6)  # as recorded: the verdict is of this number
    threshold = detector.params.threshold
    emit = getattr(detector.params, "emit", "verdict")
    flagged = None if threshold is None else score > threshold
    details = {**(details or {}), "score": score, "threshold": threshold, "flagged": flagged}
    value = score if flagged is None or emit == "score" else 1.0 if flagged else 0.0
    passed = None if flagged is None else not flagged
    return detector.result(value, reason=reason, passed=passed, spans=spans, details=details)
