"""PCCP change-control policies: the schema, the loader and the scope check.

A policy is a YAML file modelled on the FDA guidance "Predetermined Change Control Plans
for AI-enabled device software functions". Its three components map to sections:

- *description of modifications*: ``modifications`` (allowed change types and their bounds);
- *modification protocol*: ``data_management``, ``retraining``, ``performance_evaluation``
  and ``update_procedures``, plus ``traceability`` linking each modification to the
  evaluations that test it;
- *impact assessment*: ``impact_assessment``.

``metadata`` identifies the document and ``gate`` holds the gate's own tolerances.
:func:`load_policy` validates all of it and reports the first problem as a
:class:`~gatekeeper.types.UsageError` naming ``file:line`` and the field path.
:func:`check_scope` is the gate's scope check: is the candidate's declared change one the
policy allows, inside its bounds? docs/policy.md explains every field.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gatekeeper.gate.slo_policy import SloSection, slo_problems
from gatekeeper.host import yamlfile
from gatekeeper.types import ModelSpec, UsageError

ModificationType = Literal[
    "lora_adapter_retrain",
    "dpo_preference_tune",
    "rl_reward_tune",
    "distillation",
    "hosted_finetune",
    "full_finetune",
    "base_model_swap",
    "prompt_template_change",
    "decoding_params_change",
]
Direction = Literal["higher", "lower"]
Hypothesis = Literal["non_inferiority", "superiority", "equivalence", "guardrail_only", "homogeneity"]
CIMethod = Literal["auto", "bootstrap_bca", "bootstrap_percentile", "tango", "cluster", "t"]
SignalKind = Literal["acceptance_rate", "rejection_rate", "edit_rate", "rating", "flag_rate"]

CI_METHODS: tuple[str, ...] = get_args(CIMethod)
HYPOTHESES: tuple[str, ...] = get_args(Hypothesis)
MODIFICATION_TYPES: tuple[str, ...] = get_args(ModificationType)

ADAPTER_TYPES = frozenset({"lora_adapter_retrain", "dpo_preference_tune", "rl_reward_tune", "distillation"})
"""Changes that train a low-rank adapter on a fixed base model."""
TRAINING_TYPES = frozenset({*ADAPTER_TYPES, "hosted_finetune", "full_finetune", "base_model_swap"})
"""Changes that train on data, so data management and re-training rules apply."""

BOUND_APPLIES_TO: dict[str, frozenset[str]] = {
    "base_model": frozenset(MODIFICATION_TYPES) - {"base_model_swap"},
    "allowed_base_models": frozenset({"base_model_swap"}),
    "max_adapter_rank": ADAPTER_TYPES,
    "allowed_target_modules": ADAPTER_TYPES,
    "allowed_data_sources": TRAINING_TYPES,
    "max_training_rows": TRAINING_TYPES,
    "require_data_sha256": TRAINING_TYPES,
    "max_temperature": frozenset({"decoding_params_change"}),
    "max_tokens": frozenset({"decoding_params_change"}),
}
"""Which modification types each bound can constrain; anything else is a policy error."""

SIGNAL_DIRECTION: dict[str, Direction] = {
    "acceptance_rate": "higher",
    "rejection_rate": "lower",
    "edit_rate": "lower",
    "rating": "higher",
    "flag_rate": "lower",
}
"""The direction in which each production signal gets better."""

_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_SHA256 = re.compile(r"^(sha256:)?[0-9a-f]{64}$")
_ALIAS = re.compile(r"^[A-Za-z0-9_.\-/]+@[A-Za-z0-9_.\-]+$")


# --------------------------------------------------------------------------- field types


def _identifier(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise PydanticCustomError(
            "identifier",
            "{value} is not a valid name: use letters, digits, '_', '.' and '-', starting with "
            "a letter or digit",
            {"value": repr(value)},
        )
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]


def _non_negative_margin(value: float) -> float:
    if value < 0:
        raise PydanticCustomError(
            "negative_margin",
            "margin {value} is negative; a margin is a positive distance in the metric's units "
            "(0.05 = five points on a 0..1 scale) and 'direction' says which way is worse, "
            "so write {positive}",
            {"value": value, "positive": -value},
        )
    return value


Margin = Annotated[float, AfterValidator(_non_negative_margin)]


def _one_of(value: Any, allowed: Sequence[str], what: str) -> Any:
    """Reject an unknown choice with a message listing the allowed ones."""
    if isinstance(value, str) and value not in allowed:
        raise PydanticCustomError(
            "unknown_choice",
            "unknown {what} {value}; allowed: {allowed}",
            {"what": what, "value": repr(value), "allowed": ", ".join(allowed)},
        )
    return value


class _Section(BaseModel):
    # allow_inf_nan=False: ``margin: .inf`` or ``alpha: .nan`` passed loading and crashed
    # after every model call; the whole policy is validated before any generation.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# --------------------------------------------------------------------------- metadata


class Metadata(_Section):
    """Document control: which policy this is, which version, since when, whose."""

    id: Identifier
    title: str
    version: str
    effective_date: date
    owner: str
    description: str = ""
    supersedes: str | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, float):
            raise PydanticCustomError(
                "version_not_text",
                "YAML read the version as the number {value}; quote it (version: \"{value}\") "
                "so that e.g. 1.10 stays 1.10",
                {"value": value},
            )
        return value


# --------------------------------------------------------------------------- modifications


class ModificationBounds(_Section):
    """Limits a change must stay within to count as this modification."""

    base_model: str | None = None
    allowed_base_models: list[str] | None = None
    max_adapter_rank: int | None = Field(default=None, ge=1)
    allowed_target_modules: list[str] | None = None
    allowed_data_sources: list[str] | None = None
    max_training_rows: int | None = Field(default=None, ge=1)
    require_data_sha256: bool = False
    max_temperature: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)


class Modification(_Section):
    """One change type the policy pre-authorizes (an entry of the description of modifications)."""

    id: Identifier
    type: ModificationType
    description: str
    bounds: ModificationBounds = Field(default_factory=ModificationBounds)
    authorization: Literal["automatic", "manual"] = "manual"
    evaluation: list[str] = Field(min_length=1)

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        return _one_of(value, MODIFICATION_TYPES, "modification type")


# --------------------------------------------------------------------------- data management


class DataSource(_Section):
    """A source of training or evaluation data the policy recognises."""

    id: Identifier
    description: str = ""
    consent_required: bool = False


class SequesteredTestSet(_Section):
    """A suite held out from training; its content is pinned and its reuse counted."""

    suite: str
    sha256: str | None = None
    max_reuse: int | None = Field(default=None, ge=1)

    @field_validator("sha256")
    @classmethod
    def _is_sha256(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value):
            raise PydanticCustomError(
                "not_sha256", "expected 64 lowercase hex digits (optionally prefixed 'sha256:')"
            )
        return value.removeprefix("sha256:") if value else value


class PrivacyRules(_Section):
    """``data_management.privacy``: what the privacy record of generated or curated data
    (``gatekeeper.privacy/1``, :mod:`gatekeeper.signals.privacy`) must show."""

    max_pii_rows: int | None = Field(default=None, ge=0)
    max_source_similarity: float | None = Field(default=None, ge=0.0, le=1.0)
    max_embedding_similarity: float | None = Field(default=None, ge=0.0, le=1.0)
    require_detector: str | None = None


class SyntheticShare(_Section):
    """Bounds on the share of synthetic rows (``synthetic: true`` or ``origin: synthetic``) in
    a data set, overall and per value of the ``slices`` fields."""

    max_share: float | None = Field(default=None, ge=0.0, le=1.0)
    min_share: float | None = Field(default=None, ge=0.0, le=1.0)
    slices: list[str] = Field(default_factory=list)
    slice_max_share: float | None = Field(default=None, ge=0.0, le=1.0)
    slice_min_share: float | None = Field(default=None, ge=0.0, le=1.0)
    min_slice_n: int = Field(default=1, ge=1)
    """Slice values with fewer rows than this are reported but not judged."""

    @model_validator(mode="after")
    def _ordered(self) -> SyntheticShare:
        for low, high, name in ((self.min_share, self.max_share, "min_share"),
                                (self.slice_min_share, self.slice_max_share, "slice_min_share")):
            if low is not None and high is not None and low > high:
                raise ValueError(f"{name} {low} is above its maximum {high}")
        if (self.slice_max_share is not None or self.slice_min_share is not None) and not self.slices:
            raise ValueError("slice_max_share/slice_min_share need 'slices' (the fields to group by, e.g. [topic])")
        return self


class SyntheticRules(_Section):
    """``data_management.synthetic``: the synthetic share allowed in the evaluated suites
    (``evaluation``, checked by ``gatekeeper check``) and in the candidate's training data
    (``training``, read from provenance ``data.synthetic``)."""

    evaluation: SyntheticShare | None = None
    training: SyntheticShare | None = None


class DataManagement(_Section):
    """Data management practices: where data may come from and how test data stays clean."""

    sources: list[DataSource] = Field(default_factory=list)
    consent_required: bool = False
    pii_scrubbing_required: bool = False
    sequestered_test_sets: list[SequesteredTestSet] = Field(default_factory=list)
    max_reuse: int | None = Field(default=None, ge=1)
    privacy: PrivacyRules | None = None
    synthetic: SyntheticRules = Field(default_factory=SyntheticRules)

    def source(self, source_id: str) -> DataSource | None:
        return next((s for s in self.sources if s.id == source_id), None)

    def reuse_limit(self, test_set: SequesteredTestSet) -> int | None:
        """How many evaluations ``test_set`` may serve; ``None`` means no limit."""
        return test_set.max_reuse if test_set.max_reuse is not None else self.max_reuse


# --------------------------------------------------------------------------- re-training


class Range(_Section):
    """A numeric bound: ``min``, ``max`` or both (inclusive). Integers stay integers for tuners."""

    min: int | float | None = None
    max: int | float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is None and self.max is None:
            raise PydanticCustomError("empty_range", "give 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise PydanticCustomError(
                "range_order", "min {min} is above max {max}", {"min": self.min, "max": self.max}
            )
        return self


class SeedRule(_Section):
    required: bool = True


class Hyperparameters(_Section):
    """Bounds on the training run's hyperparameters (re-training practices)."""

    rank: Range | None = None
    alpha: Range | None = None
    learning_rate: Range | None = None
    epochs: Range | None = None
    max_steps: Range | None = None
    target_modules: list[str] | None = None
    seed: SeedRule = Field(default_factory=lambda: SeedRule(required=False))


class Trigger(_Section):
    """What starts a re-training: a schedule, a monitoring signal, enough new data, a person."""

    id: Identifier
    description: str = ""
    schedule: Literal["daily", "weekly", "monthly", "quarterly"] | None = None
    signal: str | None = None
    min_new_rows: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_word(cls, value: Any) -> Any:
        """A bare string (``- monthly``) is a trigger with that id and no machine-read meaning."""
        if isinstance(value, str):
            return {"id": value}
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "trigger", "give a trigger as a word (- monthly) or a mapping with an id"
            )
        return value


class Retraining(_Section):
    """Re-training practices: when a new candidate is made and within which hyperparameters."""

    triggers: list[Trigger] = Field(default_factory=list)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


# --------------------------------------------------------------------------- performance evaluation


def _check_model_reference(value: Any) -> Any:
    """A comparator is a model spec (``PROVIDER:NAME`` or a mapping) or a registry alias (``MODEL@ALIAS``)."""
    if value is None or (isinstance(value, str) and _ALIAS.match(value)):
        return value
    if not isinstance(value, str | dict):
        raise PydanticCustomError(
            "model_reference",
            "give a model spec (PROVIDER:NAME or {provider: ..., model: ...}) or a registry alias "
            "such as support-assistant@production",
        )
    try:
        ModelSpec.parse(value)
    except UsageError as exc:
        raise PydanticCustomError(
            "model_reference",
            "{message}; or give a registry alias such as support-assistant@production",
            {"message": exc.message},
        ) from None
    return value


ModelReference = Annotated[str | dict[str, Any] | None, BeforeValidator(_check_model_reference)]


class Comparators(_Section):
    """Which versions the candidate is compared with."""

    original: ModelReference = None
    last_authorized: ModelReference = None


class Guardrail(_Section):
    """An absolute bound on the candidate's mean, whatever the baseline does."""

    max: float | None = None
    min: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _is_mapping(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise PydanticCustomError(
                "guardrail_number", "write the bound as {max: {value}} or {min: {value}}", {"value": value}
            )
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Guardrail:
        if self.min is None and self.max is None:
            raise PydanticCustomError("empty_guardrail", "give 'max', 'min' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise PydanticCustomError(
                "range_order", "min {min} is above max {max}", {"min": self.min, "max": self.max}
            )
        return self

    def breached_by(self, mean: float) -> bool:
        return (self.max is not None and mean > self.max) or (self.min is not None and mean < self.min)


class MetricSpec(_Section):
    """One acceptance criterion: a metric, its hypothesis, margin, confidence and method.

    Fields are declared so that ``hypothesis`` is validated before ``margin`` and
    ``guardrail``, whose validators depend on it.
    """

    name: Identifier
    metric: str
    measure: Literal["value", "passed", "distribution"] = "value"
    task: str | None = None
    """For ``measure: distribution``: the classifier task whose labels are compared."""
    test: Literal["chi_square", "g_test"] = "chi_square"
    """For ``measure: distribution``: the test of homogeneity of the two label distributions."""
    suite: str | None = None
    direction: Direction | None = None
    hypothesis: Hypothesis = "non_inferiority"
    margin: Margin = Field(default=0.0, validate_default=True)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    sides: Literal["one", "two"] = "one"
    ci_method: CIMethod = "auto"
    """``auto``: Tango for binary metrics, cluster-robust for clustered cases, else BCa (stats.choose_method)."""
    critical: bool = False
    slices: list[str] = Field(default_factory=list)
    min_slice_n: int = Field(default=10, ge=1)
    guardrail: Guardrail | None = Field(default=None, validate_default=True)
    min_n: int | None = Field(default=None, ge=1)
    """Below this many paired cases a comparison is INCONCLUSIVE whatever its interval says.
    Unset: 30 for binary metrics, 50 for others (``stats.default_min_n``; docs/statistics.md
    "Small samples"); 1 turns the minimum off."""
    power: float = Field(default=0.8, gt=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _distribution_tests_homogeneity(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("measure") == "distribution" and "hypothesis" not in data:
            return {**data, "hypothesis": "homogeneity"}
        return data

    @field_validator("hypothesis", mode="before")
    @classmethod
    def _known_hypothesis(cls, value: Any) -> Any:
        return _one_of(value, HYPOTHESES, "hypothesis")

    @field_validator("ci_method", mode="before")
    @classmethod
    def _known_ci_method(cls, value: Any) -> Any:
        return _one_of(value, CI_METHODS, "ci_method")

    @field_validator("margin")
    @classmethod
    def _margin_fits_hypothesis(cls, margin: float, info: ValidationInfo) -> float:
        hypothesis = info.data.get("hypothesis")
        if hypothesis == "non_inferiority" and margin == 0:
            raise PydanticCustomError(
                "margin_required",
                "non_inferiority needs a margin > 0 (the largest loss that is still acceptable); "
                "a zero margin asks for superiority, so say hypothesis: superiority if that is meant",
            )
        if hypothesis == "equivalence" and margin == 0:
            raise PydanticCustomError(
                "margin_required",
                "equivalence needs a margin > 0: the half-width of the band around the baseline "
                "inside which the candidate must lie",
            )
        if hypothesis == "guardrail_only" and margin != 0:
            raise PydanticCustomError(
                "margin_unused",
                "a guardrail_only metric is not compared with the baseline; remove the margin",
            )
        if hypothesis == "homogeneity" and margin >= 1:
            raise PydanticCustomError(
                "margin_range",
                "for a label distribution the margin is the smallest Cramér's V that counts as a "
                "shift: a number from 0 (any significant shift) to below 1",
            )
        return margin

    @field_validator("guardrail")
    @classmethod
    def _guardrail_fits_hypothesis(
        cls, guardrail: Guardrail | None, info: ValidationInfo
    ) -> Guardrail | None:
        if info.data.get("hypothesis") == "guardrail_only" and guardrail is None:
            raise PydanticCustomError(
                "guardrail_required",
                "hypothesis guardrail_only needs a guardrail: {max: ...} and/or {min: ...}",
            )
        return guardrail

    @model_validator(mode="after")
    def _measure_fits_hypothesis(self) -> MetricSpec:
        distribution = self.measure == "distribution"
        if distribution != (self.hypothesis == "homogeneity"):
            raise PydanticCustomError(
                "distribution_hypothesis",
                "measure: distribution compares label distributions (hypothesis homogeneity, the "
                "default); hypothesis homogeneity needs measure: distribution",
            )
        if distribution and self.guardrail is not None:
            raise PydanticCustomError(
                "guardrail_unused", "a label distribution has no mean to guard; remove the guardrail"
            )
        if not distribution:
            if self.direction is None:
                raise PydanticCustomError(
                    "direction_required", "direction is required: 'higher' or 'lower' (which way is better)"
                )
            for name in ("task", "test"):
                if name in self.model_fields_set:
                    raise PydanticCustomError(
                        "distribution_only", "{field} is only for measure: distribution", {"field": name}
                    )
        return self

    @property
    def better(self) -> Direction:
        """``direction`` of a compared metric (every metric but a distribution has one)."""
        return self.direction or "higher"


class PerformanceEvaluation(_Section):
    """Performance evaluation protocol: the test suites, comparators and acceptance criteria."""

    suites: list[str] = Field(min_length=1)
    comparators: Comparators = Field(default_factory=Comparators)
    metrics: list[MetricSpec] = Field(min_length=1)


# --------------------------------------------------------------------------- gate


class ScopeRules(_Section):
    require_provenance: bool | None = None
    """A candidate without provenance is a scope deviation. ``None`` (the default): required
    whenever a modification declares bounds, which cannot be checked without it."""
    block_training_divergence: bool = False
    """A tuner's training report whose loss ended higher than it began (divergence) is always
    shown in the check; with ``true`` it is a scope deviation (REJECT)."""


class SliceRules(_Section):
    """How critical slices count (docs/statistics.md "Slices").

    ``inconclusive``: ``hold`` (default) -- an INCONCLUSIVE critical slice holds the release,
    so promotion needs every critical slice shown non-inferior (an intersection-union test:
    each slice at the metric's alpha). ``overall`` -- an INCONCLUSIVE critical slice is
    decided by the overall metric, except that a slice whose point estimate is worse than
    the margin still holds the release (it never passes silently).
    ``multiplicity``: how a slice FAIL is controlled across a metric's slices --
    ``bonferroni`` (default: a slice FAILs only when its interval at alpha/k, k slices,
    lies beyond the margin, so the chance of any false REJECT from the slices is at most
    alpha) or ``none`` (each slice at the full alpha).
    """

    inconclusive: Literal["hold", "overall"] = "hold"
    multiplicity: Literal["bonferroni", "none"] = "bonferroni"


class GateLimits(_Section):
    """How many non-critical failures, inconclusive results, errors and NODATA the gate tolerates."""

    max_failed_noncritical: int = Field(default=0, ge=0)
    max_inconclusive_noncritical: int | None = Field(default=None, ge=0)
    max_error: int = Field(default=0, ge=0)
    max_nodata: int | float = 0.05
    max_error_rate: float = Field(default=0.0, ge=0, le=1)
    scope: ScopeRules = Field(default_factory=ScopeRules)
    slices: SliceRules = Field(default_factory=SliceRules)

    @field_validator("max_nodata", mode="before")
    @classmethod
    def _count_or_share(cls, value: Any) -> Any:
        is_count = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        is_share = isinstance(value, float) and 0 <= value <= 1
        if not (is_count or is_share):
            raise PydanticCustomError(
                "nodata_limit",
                "give a count of cases (an integer >= 0) or a share of cases (a decimal from 0.0 to 1.0)",
            )
        return value

    def nodata_limit(self, n_cases: int) -> int:
        """The number of NODATA cases one metric may have out of ``n_cases``."""
        if isinstance(self.max_nodata, float):
            return math.floor(self.max_nodata * n_cases + 1e-9)
        return self.max_nodata


# --------------------------------------------------------------------------- update procedures


class Approval(_Section):
    """A signature the gate needs before it promotes a manually authorized modification."""

    role: Identifier
    meaning: Literal["approval", "review", "responsibility"]
    public_keys: list[Path] = Field(min_length=1)
    required_for: list[str] = Field(default_factory=lambda: ["all"])

    @field_validator("required_for", "public_keys", mode="before")
    @classmethod
    def _one_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def applies_to(self, modification_id: str) -> bool:
        return "all" in self.required_for or modification_id in self.required_for


class Stage(_Section):
    """One rollout step: share of traffic, how long, and how many signals before moving on."""

    name: Identifier
    traffic: float = Field(ge=0, le=1)
    min_duration_hours: float = Field(default=0, ge=0)
    min_signals: int = Field(default=0, ge=0)


class MonitoringMetric(_Section):
    """A production signal compared between the new and the previous version."""

    name: Identifier
    signal: SignalKind
    direction: Direction | None = Field(default=None, validate_default=True)
    margin: Margin = 0.0
    alpha: float = Field(default=0.05, gt=0, lt=0.5)

    @field_validator("direction")
    @classmethod
    def _direction_of_signal(cls, direction: Direction | None, info: ValidationInfo) -> Direction | None:
        signal = info.data.get("signal")
        if signal is None:
            return direction
        natural = SIGNAL_DIRECTION[signal]
        if direction is not None and direction != natural:
            raise PydanticCustomError(
                "direction_mismatch",
                "{signal} gets better when {natural}, not {direction}",
                {"signal": signal, "natural": natural, "direction": direction},
            )
        return natural


class Monitoring(_Section):
    metrics: list[MonitoringMetric] = Field(default_factory=list)


class RollbackCriterion(_Section):
    """When ``gatekeeper monitor`` decides ROLLBACK."""

    metric: str
    condition: Literal["fails", "above", "below"] = "fails"
    threshold: float | None = Field(default=None, validate_default=True)
    description: str = ""

    @field_validator("threshold")
    @classmethod
    def _threshold_fits_condition(cls, threshold: float | None, info: ValidationInfo) -> float | None:
        condition = info.data.get("condition")
        if condition in ("above", "below") and threshold is None:
            raise PydanticCustomError(
                "threshold_required",
                "condition {condition} needs a threshold",
                {"condition": repr(condition)},
            )
        if condition == "fails" and threshold is not None:
            raise PydanticCustomError(
                "threshold_unused",
                "condition 'fails' uses the monitoring metric's margin and alpha; remove the threshold "
                "or use condition above/below",
            )
        return threshold


class UpdateProcedures(_Section):
    """Update procedures: approvals, staged rollout, monitoring and rollback."""

    approvals: list[Approval] = Field(default_factory=list)
    stages: list[Stage] = Field(default_factory=list)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    rollback_criteria: list[RollbackCriterion] = Field(default_factory=list)


# --------------------------------------------------------------------------- impact assessment, traceability


class Risk(_Section):
    id: Identifier
    description: str
    mitigation: str
    metrics: list[str] = Field(default_factory=list)


class ImpactAssessment(_Section):
    """Impact assessment: intended use, the risks a change brings and how they are controlled."""

    intended_use: str
    risks: list[Risk] = Field(default_factory=list)
    benefits: list[str] = Field(default_factory=list)


class TraceLink(_Section):
    """One row of the traceability table: a modification and the evaluations that test it."""

    modification: str
    evaluations: list[str] = Field(min_length=1)
    rationale: str


# --------------------------------------------------------------------------- policy


class Policy(_Section):
    """A loaded PCCP policy. ``path`` and ``hash`` (SHA-256 of the file) are set by :func:`load_policy`."""

    metadata: Metadata
    modifications: list[Modification] = Field(min_length=1)
    data_management: DataManagement = Field(default_factory=DataManagement)
    retraining: Retraining = Field(default_factory=Retraining)
    performance_evaluation: PerformanceEvaluation
    gate: GateLimits = Field(default_factory=GateLimits)
    update_procedures: UpdateProcedures = Field(default_factory=UpdateProcedures)
    impact_assessment: ImpactAssessment
    traceability: list[TraceLink] = Field(min_length=1)
    slo: SloSection | None = None
    """Service-level guardrails on load suites (gate/slo_policy.py, docs/load.md)."""

    _path: Path | None = PrivateAttr(None)
    _hash: str = PrivateAttr("")

    @property
    def path(self) -> Path | None:
        """The file the policy was loaded from; ``None`` when built in memory."""
        return self._path

    @property
    def hash(self) -> str:
        """SHA-256 (hex) of the policy file's bytes: what the audit trail and reports cite."""
        return self._hash

    def reference(self) -> dict[str, str]:
        """What a decision record cites: id, version, file and hash."""
        return {
            "id": self.metadata.id,
            "version": self.metadata.version,
            "path": str(self._path) if self._path else "",
            "sha256": self._hash,
        }

    def metric(self, name: str) -> MetricSpec:
        """The acceptance criterion called ``name``."""
        for spec in self.performance_evaluation.metrics:
            if spec.name == name:
                return spec
        known = ", ".join(m.name for m in self.performance_evaluation.metrics)
        raise UsageError(
            f"no metric {name!r} in the policy (it has: {known})",
            file=str(self._path) if self._path else None, field="performance_evaluation.metrics",
        )

    def modification(self, modification_id: str) -> Modification:
        """The modification whose id is ``modification_id``."""
        for mod in self.modifications:
            if mod.id == modification_id:
                return mod
        known = ", ".join(m.id for m in self.modifications)
        raise UsageError(
            f"no modification {modification_id!r} in the policy (it has: {known})",
            file=str(self._path) if self._path else None, field="modifications",
        )


def required_approvals(policy: Policy, modification_ids: Iterable[str]) -> list[Approval]:
    """The approvals needed to promote a change made of ``modification_ids``, in policy order.

    Automatically authorized modifications need none; a manual one needs every approval whose
    ``required_for`` names it or says ``all``.
    """
    manual = [mid for mid in modification_ids if policy.modification(mid).authorization == "manual"]
    return [a for a in policy.update_procedures.approvals if any(a.applies_to(mid) for mid in manual)]


# --------------------------------------------------------------------------- loading


def load_policy(path: Path, *, suite_names: Collection[str] | None = None) -> Policy:
    """Load and validate the policy at ``path``.

    Every problem is a UsageError naming ``file:line`` and the field. With ``suite_names``,
    a reference to a suite not in it is an error too. Public key paths are resolved against
    the policy's directory and must hold Ed25519 public keys (PEM).
    """
    data, locator = yamlfile.load(path)
    if not isinstance(data, dict):
        raise UsageError(
            "a policy is a mapping with the sections metadata, modifications, performance_evaluation, "
            "impact_assessment and traceability (see docs/policy.md)",
            file=str(path), line=1,
        )
    policy = yamlfile.validate(Policy, data, path, locator)
    policy._path = path
    policy._hash = hashlib.sha256(path.read_bytes()).hexdigest()
    _resolve_public_keys(policy, path.parent)
    problems = [
        *_reference_problems(policy),
        *_suite_problems(policy, suite_names),
        *_public_key_problems(policy),
        *slo_problems(policy.slo, {m.name for m in policy.performance_evaluation.metrics}),
    ]
    if problems:
        loc, message = min(problems, key=lambda p: locator.line(p[0]) or 0)
        raise UsageError(message, file=str(path), line=locator.line(loc), field=yamlfile.field_path(loc))
    return policy


Problem = tuple[tuple[Any, ...], str]


def _duplicates(items: Iterable[str], loc: tuple[Any, ...], key: str, what: str) -> Iterator[Problem]:
    seen: set[str] = set()
    for i, value in enumerate(items):
        if value in seen:
            yield (*loc, i, key), f"duplicate {what} {value!r}"
        seen.add(value)


def _unknown(
    names: Iterable[str], known: Collection[str], loc: tuple[Any, ...], what: str, hint: str = ""
) -> Iterator[Problem]:
    listing = ", ".join(sorted(known)) or "none declared"
    for i, name in enumerate(names):
        if name not in known:
            yield (*loc, i), f"unknown {what} {name!r} (known: {listing}){hint}"


def _slo_names(policy: Policy) -> set[str]:
    """SLO guardrails are evaluations too: modifications, risks and traceability may name them."""
    return {g.name for g in policy.slo.guardrails} if policy.slo else set()


def _reference_problems(policy: Policy) -> Iterator[Problem]:
    """Cross-references between sections: every id or name used must be declared."""
    yield from _modification_problems(policy)
    yield from _evaluation_problems(policy)
    yield from _update_problems(policy)
    yield from _impact_problems(policy)


def _modification_problems(policy: Policy) -> Iterator[Problem]:
    metric_names = {m.name for m in policy.performance_evaluation.metrics} | _slo_names(policy)
    source_ids = {s.id for s in policy.data_management.sources}
    approvals = policy.update_procedures.approvals
    yield from _duplicates((m.id for m in policy.modifications), ("modifications",), "id", "modification id")
    for i, mod in enumerate(policy.modifications):
        loc = ("modifications", i)
        for bound in sorted(mod.bounds.model_fields_set):
            if getattr(mod.bounds, bound) is not None and mod.type not in BOUND_APPLIES_TO[bound]:
                applies = ", ".join(sorted(BOUND_APPLIES_TO[bound]))
                yield (*loc, "bounds", bound), (
                    f"{bound} does not apply to a {mod.type} (it applies to: {applies})"
                )
        yield from _unknown(
            mod.bounds.allowed_data_sources or [], source_ids, (*loc, "bounds", "allowed_data_sources"),
            "data source", "; declare it under data_management.sources",
        )
        yield from _unknown(mod.evaluation, metric_names, (*loc, "evaluation"), "metric")
        if mod.authorization == "manual" and not any(a.applies_to(mod.id) for a in approvals):
            yield (*loc, "authorization"), (
                f"modification {mod.id!r} is manual but no update_procedures.approvals entry is "
                f"required_for it (or 'all'); add an approval or make it automatic"
            )


def _evaluation_problems(policy: Policy) -> Iterator[Problem]:
    evaluation = policy.performance_evaluation
    yield from _duplicates(
        (m.name for m in evaluation.metrics), ("performance_evaluation", "metrics"), "name", "metric name"
    )
    for i, spec in enumerate(evaluation.metrics):
        if spec.suite is not None and spec.suite not in evaluation.suites:
            yield ("performance_evaluation", "metrics", i, "suite"), (
                f"suite {spec.suite!r} is not one of performance_evaluation.suites "
                f"({', '.join(evaluation.suites)})"
            )
    yield from _duplicates(
        (s.id for s in policy.data_management.sources), ("data_management", "sources"), "id", "data source id"
    )
    monitoring = {m.name for m in policy.update_procedures.monitoring.metrics}
    for i, trigger in enumerate(policy.retraining.triggers):
        if trigger.signal is not None and trigger.signal not in monitoring:
            yield ("retraining", "triggers", i, "signal"), (
                f"unknown monitoring metric {trigger.signal!r} "
                f"(known: {', '.join(sorted(monitoring)) or 'none declared'})"
            )


def _update_problems(policy: Policy) -> Iterator[Problem]:
    procedures = policy.update_procedures
    modifications = {m.id: m for m in policy.modifications}
    yield from _duplicates(
        (a.role for a in procedures.approvals), ("update_procedures", "approvals"), "role", "role"
    )
    for i, approval in enumerate(procedures.approvals):
        for j, mid in enumerate(approval.required_for):
            loc = ("update_procedures", "approvals", i, "required_for", j)
            if mid == "all":
                continue
            if mid not in modifications:
                yield loc, f"unknown modification {mid!r} (known: {', '.join(modifications)}, or 'all')"
            elif modifications[mid].authorization == "automatic":
                yield loc, f"modification {mid!r} is automatic, so no approval can be required for it"
    yield from _duplicates(
        (s.name for s in procedures.stages), ("update_procedures", "stages"), "name", "stage"
    )
    for i in range(1, len(procedures.stages)):
        before, stage = procedures.stages[i - 1], procedures.stages[i]
        if stage.traffic < before.traffic:
            yield ("update_procedures", "stages", i, "traffic"), (
                f"stage {stage.name!r} has less traffic ({stage.traffic:g}) than {before.name!r} "
                f"before it ({before.traffic:g}); a rollout only widens"
            )
    names = [m.name for m in procedures.monitoring.metrics]
    yield from _duplicates(names, ("update_procedures", "monitoring", "metrics"), "name", "monitoring metric")
    for i, criterion in enumerate(procedures.rollback_criteria):
        if criterion.metric not in names:
            yield ("update_procedures", "rollback_criteria", i, "metric"), (
                f"unknown monitoring metric {criterion.metric!r} "
                f"(known: {', '.join(names) or 'none declared'})"
            )


def _impact_problems(policy: Policy) -> Iterator[Problem]:
    metric_names = {m.name for m in policy.performance_evaluation.metrics} | _slo_names(policy)
    modification_ids = {m.id for m in policy.modifications}
    risks = policy.impact_assessment.risks
    yield from _duplicates((r.id for r in risks), ("impact_assessment", "risks"), "id", "risk id")
    for i, risk in enumerate(risks):
        loc = ("impact_assessment", "risks", i, "metrics")
        yield from _unknown(risk.metrics, metric_names, loc, "metric")
    traced = {link.modification for link in policy.traceability}
    for i, link in enumerate(policy.traceability):
        if link.modification not in modification_ids:
            yield ("traceability", i, "modification"), (
                f"unknown modification {link.modification!r} (known: {', '.join(sorted(modification_ids))})"
            )
        yield from _unknown(link.evaluations, metric_names, ("traceability", i, "evaluations"), "metric")
    if not traced <= modification_ids:
        return  # a misspelt id above explains the untraced modification better than this check would
    for i, mod in enumerate(policy.modifications):
        if mod.id not in traced:
            yield ("modifications", i, "id"), f"modification {mod.id!r} has no traceability entry"


def _suite_problems(policy: Policy, suite_names: Collection[str] | None) -> Iterator[Problem]:
    if suite_names is None:
        return
    hint = "; no suite file declares it"
    suites = policy.performance_evaluation.suites
    yield from _unknown(suites, suite_names, ("performance_evaluation", "suites"), "suite", hint)
    for i, test_set in enumerate(policy.data_management.sequestered_test_sets):
        if test_set.suite not in suite_names:
            yield ("data_management", "sequestered_test_sets", i, "suite"), (
                f"unknown suite {test_set.suite!r} (known: {', '.join(sorted(suite_names)) or 'none'})"
            )


def _resolve_public_keys(policy: Policy, base: Path) -> None:
    for approval in policy.update_procedures.approvals:
        approval.public_keys = [p if p.is_absolute() else (base / p).resolve() for p in approval.public_keys]


def _public_key_problems(policy: Policy) -> Iterator[Problem]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    for i, approval in enumerate(policy.update_procedures.approvals):
        for j, key_path in enumerate(approval.public_keys):
            loc = ("update_procedures", "approvals", i, "public_keys", j)
            try:
                key = load_pem_public_key(key_path.read_bytes())
            except OSError as exc:
                yield loc, f"cannot read public key {str(key_path)!r}: {exc.strerror or exc}"
                continue
            except ValueError:
                key = None
            if not isinstance(key, Ed25519PublicKey):
                yield loc, f"{str(key_path)!r} is not an Ed25519 public key in PEM format"


# --------------------------------------------------------------------------- scope check


@dataclass(frozen=True)
class ScopeResult:
    """Which modification a candidate's change is, and how it leaves the policy's bounds.

    An empty ``deviations`` list means the change is in scope. ``modification_id`` is the
    matched modification, ``None`` when none matched or none was declared.
    """

    modification_id: str | None
    deviations: list[str] = field(default_factory=list)

    @property
    def in_scope(self) -> bool:
        return not self.deviations


def provenance_required(policy: Policy) -> bool:
    """``gate.scope.require_provenance``, or by default: whenever a modification declares
    bounds (they cannot be checked without the change's provenance)."""
    explicit = policy.gate.scope.require_provenance
    if explicit is not None:
        return explicit
    return any(m.bounds.model_dump(exclude_defaults=True) for m in policy.modifications)


def check_scope(policy: Policy, provenance: Mapping[str, Any] | None) -> ScopeResult:
    """The gate's scope check: is the candidate's change one the policy pre-authorizes?

    ``provenance`` is what a tuner records: ``modification`` (an id such as ``M1`` or a type
    such as ``lora_adapter_retrain``), ``base_model`` ({name, digest}), ``adapter`` ({rank,
    alpha, target_modules}), ``data`` ({sources, rows, sha256, pii_scrubbed,
    consent_verified}), ``hyperparameters`` ({learning_rate, epochs, max_steps, seed, ...})
    and, for decoding changes, ``decoding`` ({temperature, max_tokens}). Each deviation
    names the clause it breaks. A bound the provenance gives no value for is a deviation
    too: a change that cannot be shown to be in scope is not in scope.
    """
    if provenance is None:
        if provenance_required(policy):
            return ScopeResult(None, [
                "gate.scope.require_provenance: no modification declared: the candidate comes with no "
                "provenance, so it cannot be shown to be a change the policy allows"
            ])
        return ScopeResult(None, [])
    if not isinstance(provenance, Mapping):
        return ScopeResult(None, ["modifications: the provenance is not a mapping"])
    declared = provenance.get("modification")
    allowed = ", ".join(f"{m.id} ({m.type})" for m in policy.modifications)
    if not declared:
        return ScopeResult(None, [
            f"modifications: the provenance names no modification; give an id or type (allowed: {allowed})"
        ])
    candidates = [m for m in policy.modifications if m.id == declared] or [
        m for m in policy.modifications if m.type == declared
    ]
    if not candidates:
        return ScopeResult(None, [
            f"modifications: {declared!r} is not a modification this policy allows (allowed: {allowed})"
        ])
    results = [ScopeResult(mod.id, _deviations(policy, mod, provenance)) for mod in candidates]
    return min(results, key=lambda r: len(r.deviations))


def check_sequestered(
    policy: Policy, content_hashes: Mapping[str, Collection[str]], prior_uses: Mapping[str, int]
) -> list[str]:
    """Deviations from the sequestered test sets' rules, for the suites this check evaluated.

    ``content_hashes`` maps each evaluated suite to the SHA-256 digests of its content (its
    dataset files and the suite's own hash); ``prior_uses`` to how many earlier checks
    evaluated it (from the audit trail). A pinned ``sha256`` none of the digests matches
    means the held-out data changed; ``prior_uses`` at the reuse limit means this
    evaluation would exceed it.
    """
    rules = policy.data_management
    found: list[str] = []
    for test_set in rules.sequestered_test_sets:
        if test_set.suite not in content_hashes:
            continue
        clause = f"data_management.sequestered_test_sets[{test_set.suite}]"
        digests = {d.removeprefix("sha256:") for d in content_hashes[test_set.suite]}
        if test_set.sha256 and test_set.sha256 not in digests:
            shown = ", ".join(sorted(d[:12] for d in digests)) or "none"
            found.append(
                f"{clause}.sha256: the test data of suite {test_set.suite!r} changed "
                f"(pinned {test_set.sha256[:12]}…, found {shown})"
            )
        limit = rules.reuse_limit(test_set)
        used = prior_uses.get(test_set.suite, 0)
        if limit is not None and used >= limit:
            where = f"{clause}.max_reuse" if test_set.max_reuse is not None else "data_management.max_reuse"
            found.append(
                f"{where}: suite {test_set.suite!r} has already been evaluated {used} times; "
                f"the limit is {limit}, so it is no longer a sequestered test set"
            )
    return found


def _deviations(policy: Policy, mod: Modification, provenance: Mapping[str, Any]) -> list[str]:
    found = _bound_deviations(mod, provenance)
    if mod.type in TRAINING_TYPES:
        found += _hyperparameter_deviations(policy.retraining.hyperparameters, mod, provenance)
        found += _data_deviations(policy.data_management, provenance)
    return found


def _section(provenance: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = provenance.get(key)
    return value if isinstance(value, Mapping) else {}


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _fmt(value: float) -> str:
    return f"{value:g}"


def _base_model_names(value: Any) -> tuple[str, set[str]]:
    """How the provenance's base model reads in a message, and every name it goes by."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping):
        return "", set()
    name, digest = str(value.get("name") or ""), str(value.get("digest") or "")
    names = {n for n in (name, digest, digest.removeprefix("sha256:")) if n}
    if ":" in name and not name.startswith("sha256:"):
        try:
            names.add(ModelSpec.parse(name).name)
        except UsageError:
            pass
    shown = repr(name) + (f" (digest {digest})" if digest else "") if name else f"digest {digest}"
    return shown, names


def _missing(clause: str, what: str, key: str) -> str:
    return f"{clause}: the provenance does not state {what} ({key}), so this bound cannot be checked"


def _limit_check(
    clause: str, what: str, value: Any, bound: Range | None, key: str, *, suffixed: bool
) -> list[str]:
    """Check ``value`` against ``bound``; ``suffixed`` clauses are ranges and get ``.min``/``.max``."""
    if bound is None:
        return []
    if value is None:
        return [_missing(clause, what, key)]
    number = _number(value)
    if number is None:
        return [f"{clause}: {what} {value!r} in the provenance is not a number"]
    if bound.max is not None and number > bound.max:
        return [f"{clause}{'.max' if suffixed else ''}: {what} {_fmt(number)} exceeds {_fmt(bound.max)}"]
    if bound.min is not None and number < bound.min:
        return [f"{clause}{'.min' if suffixed else ''}: {what} {_fmt(number)} is below {_fmt(bound.min)}"]
    return []


def _bound_deviations(mod: Modification, provenance: Mapping[str, Any]) -> list[str]:
    bounds, clause = mod.bounds, f"modifications[{mod.id}].bounds"
    adapter, data, hyper = (_section(provenance, k) for k in ("adapter", "data", "hyperparameters"))
    decoding = _section(provenance, "decoding")
    found = _base_model_deviations(bounds, clause, provenance.get("base_model"))

    def at_most(name: str, what: str, value: Any, limit: float | None, key: str) -> list[str]:
        bound = None if limit is None else Range(max=limit)
        return _limit_check(f"{clause}.{name}", what, value, bound, key, suffixed=False)

    rank = _first(adapter.get("rank"), hyper.get("rank"))
    found += at_most("max_adapter_rank", "adapter rank", rank, bounds.max_adapter_rank, "adapter.rank")
    found += _subset_check(
        f"{clause}.allowed_target_modules", "target module",
        _first(adapter.get("target_modules"), hyper.get("target_modules")), bounds.allowed_target_modules,
        "adapter.target_modules",
    )
    found += _subset_check(
        f"{clause}.allowed_data_sources", "data source", data.get("sources"), bounds.allowed_data_sources,
        "data.sources",
    )
    found += at_most(
        "max_training_rows", "training rows", data.get("rows"), bounds.max_training_rows, "data.rows"
    )
    if bounds.require_data_sha256 and not data.get("sha256"):
        found.append(_missing(f"{clause}.require_data_sha256", "the training data's hash", "data.sha256"))
    found += at_most(
        "max_temperature", "temperature", decoding.get("temperature"), bounds.max_temperature,
        "decoding.temperature",
    )
    found += at_most(
        "max_tokens", "max_tokens", decoding.get("max_tokens"), bounds.max_tokens, "decoding.max_tokens"
    )
    return found


def _base_model_deviations(bounds: ModificationBounds, clause: str, base_model: Any) -> list[str]:
    allowed = [bounds.base_model] if bounds.base_model else bounds.allowed_base_models
    if not allowed:
        return []
    where = f"{clause}.{'base_model' if bounds.base_model else 'allowed_base_models'}"
    shown, names = _base_model_names(base_model)
    if not names:
        return [_missing(where, "the base model", "base_model.name/digest")]
    if names.intersection(allowed):
        return []
    wanted = " or ".join(map(repr, allowed))
    return [f"{where}: base model {shown} is not {wanted}"]


def _subset_check(clause: str, what: str, values: Any, allowed: list[str] | None, key: str) -> list[str]:
    if allowed is None:
        return []
    items = [values] if isinstance(values, str) else [str(v) for v in values or []]
    if not items:
        return [_missing(clause, f"the {what}s", key)]
    extra = [v for v in items if v not in allowed]
    if not extra:
        return []
    plural = "s" if len(extra) > 1 else ""
    listed = ", ".join(map(repr, extra))
    return [f"{clause}: {what}{plural} {listed} not allowed (allowed: {', '.join(allowed)})"]


def _hyperparameter_deviations(
    bounds: Hyperparameters, mod: Modification, provenance: Mapping[str, Any]
) -> list[str]:
    clause = "retraining.hyperparameters"
    adapter, hyper = _section(provenance, "adapter"), _section(provenance, "hyperparameters")
    checks: list[tuple[str, str, Any, str]] = []
    found: list[str] = []
    if mod.type in ADAPTER_TYPES:
        checks += [
            ("rank", "adapter rank", _first(adapter.get("rank"), hyper.get("rank")), "adapter.rank"),
            ("alpha", "adapter alpha", _first(adapter.get("alpha"), hyper.get("alpha")), "adapter.alpha"),
        ]
        found += _subset_check(
            f"{clause}.target_modules", "target module",
            _first(adapter.get("target_modules"), hyper.get("target_modules")), bounds.target_modules,
            "adapter.target_modules",
        )
    checks += [
        ("learning_rate", "learning rate", hyper.get("learning_rate"), "hyperparameters.learning_rate"),
        ("epochs", "epochs", hyper.get("epochs"), "hyperparameters.epochs"),
        ("max_steps", "max_steps", hyper.get("max_steps"), "hyperparameters.max_steps"),
    ]
    for name, what, value, key in checks:
        found += _limit_check(f"{clause}.{name}", what, value, getattr(bounds, name), key, suffixed=True)
    if bounds.seed.required and _first(hyper.get("seed"), provenance.get("seed")) is None:
        found.append(
            f"{clause}.seed.required: the provenance records no training seed (hyperparameters.seed)"
        )
    return found


def _data_deviations(rules: DataManagement, provenance: Mapping[str, Any]) -> list[str]:
    data = _section(provenance, "data")
    sources = data.get("sources")
    used = [sources] if isinstance(sources, str) else [str(s) for s in sources or []]
    found: list[str] = []
    if rules.sources:
        for source in used:
            if rules.source(source) is None:
                found.append(f"data_management.sources: {source!r} is not a declared data source")
    consent_sources = [s for s in used if (src := rules.source(s)) is not None and src.consent_required]
    if (rules.consent_required or consent_sources) and data.get("consent_verified") is not True:
        clause = (
            "data_management.consent_required" if rules.consent_required
            else f"data_management.sources[{consent_sources[0]}].consent_required"
        )
        found.append(
            f"{clause}: the provenance does not record verified consent (data.consent_verified: true)"
        )
    if rules.pii_scrubbing_required and data.get("pii_scrubbed") is not True:
        found.append(
            "data_management.pii_scrubbing_required: the provenance does not record that the training "
            "data was PII-scrubbed (data.pii_scrubbed: true)"
        )
    if rules.privacy is not None:
        found += privacy_deviations(rules.privacy, data.get("privacy"))
    if rules.synthetic.training is not None:
        found += synthetic_share_deviations(rules.synthetic.training, data.get("synthetic"),
                                            "data_management.synthetic.training", "training data")
    return found


def privacy_deviations(rules: PrivacyRules, record: Any) -> list[str]:
    """Where a privacy record (``gatekeeper.privacy/1``: PII left in rows, memorization)
    breaks ``data_management.privacy``; a missing record breaks every rule it has."""
    clause = "data_management.privacy"
    if not isinstance(record, Mapping):
        return [f"{clause}: the provenance records no privacy check (data.privacy); run it with "
                "gatekeeper synth or gatekeeper privacy check"]
    found: list[str] = []
    detector = _section(record, "detector").get("name")
    if rules.require_detector is not None and detector != rules.require_detector:
        found.append(f"{clause}.require_detector: the PII check ran with {detector or 'no detector'!r}, "
                     f"not {rules.require_detector!r}")
    pii = _section(record, "pii")
    rows = pii.get("rows_with_pii")
    if rules.max_pii_rows is not None:
        if not isinstance(rows, int):
            found.append(f"{clause}.max_pii_rows: the privacy record has no PII scan (pii.rows_with_pii)")
        elif rows > rules.max_pii_rows:
            found.append(f"{clause}.max_pii_rows: {rows} rows still contain PII (at most {rules.max_pii_rows})")
    memo = _section(record, "memorization")
    for key, limit, what in (("max_ngram_overlap", rules.max_source_similarity, "max_source_similarity"),
                             ("max_embedding_similarity", rules.max_embedding_similarity, "max_embedding_similarity")):
        if limit is None:
            continue
        value = memo.get(key)
        if not isinstance(value, int | float):
            found.append(f"{clause}.{what}: the privacy record has no {key} (memorization not checked)")
        elif value > limit:
            found.append(f"{clause}.{what}: a generated row is {value:.3f} similar to a source row "
                         f"(at most {limit}; see memorization.pairs)")
    return found


# --------------------------------------------------------------------------- synthetic share


def is_synthetic(row: Mapping[str, Any]) -> bool:
    """A row marked synthetic: ``synthetic: true`` or ``origin: synthetic`` (what synth writes)."""
    return row.get("synthetic") is True or str(row.get("origin", "")).lower() == "synthetic"


def _share(rows: int, synthetic: int) -> dict[str, Any]:
    return {"rows": rows, "synthetic": synthetic, "real": rows - synthetic,
            "share": round(synthetic / rows, 6) if rows else None}


def origin_counts(rows: Iterable[Mapping[str, Any]], slices: Sequence[str] = ()) -> dict[str, Any]:
    """Real and synthetic rows, overall and per value of each ``slices`` field (the record
    ``data.synthetic`` of provenance and ``data_origin`` of a decision)."""
    total = synth = 0
    groups: dict[str, dict[str, list[int]]] = {name: {} for name in slices}
    for row in rows:
        flag = is_synthetic(row)
        total += 1
        synth += flag
        for name in slices:
            cell = groups[name].setdefault(str(row.get(name, "unknown")), [0, 0])
            cell[0] += 1
            cell[1] += flag
    return {**_share(total, synth),
            "by_slice": {name: {value: _share(*c) for value, c in sorted(values.items())}
                         for name, values in groups.items()}}


def synthetic_share_deviations(rule: SyntheticShare, counts: Any, clause: str, what: str) -> list[str]:
    """Where ``counts`` (:func:`origin_counts`) break ``rule``; missing counts break it too."""
    if not isinstance(counts, Mapping) or not isinstance(counts.get("rows"), int):
        return [f"{clause}: the synthetic share of the {what} is not recorded (data.synthetic), so the cap "
                "cannot be shown to hold"]
    found: list[str] = []

    def bound(share: Any, low: float | None, high: float | None, where: str, label: str) -> None:
        if share is None:
            return
        if high is not None and share > high:
            found.append(f"{where}: {label} is {share:.1%} synthetic, above the maximum {high:.1%}")
        if low is not None and share < low:
            found.append(f"{where}: {label} is {share:.1%} synthetic, below the minimum {low:.1%}")

    bound(counts.get("share"), rule.min_share, rule.max_share, clause,
          f"the {what} ({counts['synthetic']} of {counts['rows']} rows)")
    by_slice = counts.get("by_slice") or {}
    for name in rule.slices:
        values = by_slice.get(name)
        if values is None:
            found.append(f"{clause}.slices: the {what} records no synthetic share per {name!r}")
            continue
        for value, cell in values.items():
            if cell.get("rows", 0) >= rule.min_slice_n:
                bound(cell.get("share"), rule.slice_min_share, rule.slice_max_share, f"{clause}.slices[{name}]",
                      f"{name}={value} ({cell['synthetic']} of {cell['rows']} rows)")
    return found


def evaluation_origin(policy: Policy, suites: Sequence[Any]) -> tuple[dict[str, Any], list[str]]:
    """The evaluated cases' origins (overall and per slice of the suites and of the rule) and
    the deviations from ``data_management.synthetic.evaluation``."""
    rule = policy.data_management.synthetic.evaluation
    slices = [*(s for suite in suites for s in suite.slices if s != "origin"), *(rule.slices if rule else [])]
    rows = ({**c.vars, **c.slices} for suite in suites for c in suite.cases)  # streamed: a million cases
    counts = origin_counts(rows, list(dict.fromkeys(slices)))
    if rule is None:
        return counts, []
    return counts, synthetic_share_deviations(rule, counts, "data_management.synthetic.evaluation",
                                              "evaluated suites")
