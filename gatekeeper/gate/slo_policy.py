"""The policy's ``slo`` section: service-level guardrails checked on load suites.

Kept apart from :mod:`gatekeeper.gate.policy` (which embeds :class:`SloSection` as
``Policy.slo``) so the PCCP schema stays one screen per section; this module imports nothing
from it. docs/load.md documents every field.

A guardrail is *absolute* (``max``: the candidate's p95 latency at most X ms, its error rate at
most Z; ``min``: its capacity at least W requests/s) or *relative* (``max_increase_pct``: its
p95 not worse than the baseline's by more than M %). Each gives PASS, FAIL or INCONCLUSIVE
from a confidence interval, as a quality metric's guardrail does.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

SloMeasure = Literal["latency", "ttft", "error_rate", "rate_429", "throughput"]
QUANTILE_MEASURES = ("latency", "ttft")
RATE_MEASURES = ("error_rate", "rate_429")
DEFAULT_QUANTILE = 0.95
UNITS = {"latency": "ms", "ttft": "ms", "error_rate": "", "rate_429": "", "throughput": "req/s"}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_PERCENTILE = re.compile(r"^[pP](\d{1,2}(?:\.\d+)?)$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SloGuardrail(_Section):
    """One service-level guardrail. Fields are declared so ``measure`` is validated first."""

    name: str
    measure: SloMeasure
    quantile: float | None = None
    """latency/ttft: which quantile (0.95, or ``p95``); default 0.95."""
    max: float | None = Field(default=None, ge=0)
    min: float | None = Field(default=None, gt=0)
    max_increase_pct: float | None = Field(default=None, gt=0)
    alpha: float | None = Field(default=None, gt=0, lt=0.5)
    power: float | None = Field(default=None, gt=0, lt=1)
    critical: bool = True
    suite: str | None = None
    description: str = ""

    @field_validator("name")
    @classmethod
    def _is_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise PydanticCustomError(
                "identifier", "{value} is not a valid name: use letters, digits, '_', '.' and '-'",
                {"value": repr(value)})
        return value

    @field_validator("quantile", mode="before")
    @classmethod
    def _quantile(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return value
        if info.data.get("measure") not in QUANTILE_MEASURES:
            raise PydanticCustomError(
                "slo_quantile", "quantile applies to latency and ttft only, not {measure}",
                {"measure": info.data.get("measure")})
        if isinstance(value, str) and (m := _PERCENTILE.match(value.strip())):
            value = float(m.group(1)) / 100
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise PydanticCustomError(
                "slo_quantile", "quantile {value} is not a share between 0 and 1: write 0.95 or p95",
                {"value": repr(value)})
        return float(value)

    @field_validator("max")
    @classmethod
    def _max_fits(cls, value: float | None, info: ValidationInfo) -> float | None:
        measure = info.data.get("measure")
        if value is None:
            return value
        if measure == "throughput":
            raise PydanticCustomError(
                "slo_limit", "throughput is a floor: write min (requests per second the endpoint must sustain)")
        if measure in RATE_MEASURES and value > 1:
            raise PydanticCustomError(
                "slo_rate", "{measure} is a share of requests from 0 to 1 (1 % is 0.01), got {value}",
                {"measure": measure, "value": value})
        return value

    @field_validator("min")
    @classmethod
    def _min_fits(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("measure") != "throughput":
            raise PydanticCustomError(
                "slo_limit", "min applies to throughput only; {measure} takes max (or max_increase_pct)",
                {"measure": info.data.get("measure")})
        return value

    @field_validator("max_increase_pct")
    @classmethod
    def _relative_fits(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("measure") not in QUANTILE_MEASURES:
            raise PydanticCustomError(
                "slo_relative", "max_increase_pct compares a latency or ttft quantile with the baseline's, "
                "not {measure}", {"measure": info.data.get("measure")})
        return value

    @model_validator(mode="after")
    def _one_limit(self) -> SloGuardrail:
        given = [k for k in ("max", "min", "max_increase_pct") if getattr(self, k) is not None]
        if not given:
            raise PydanticCustomError(
                "slo_no_limit", "give the guardrail a limit: max (latency ms, ttft ms or a rate), "
                "min (throughput req/s) or max_increase_pct (relative to the baseline)")
        if len(given) > 1:
            raise PydanticCustomError(
                "slo_two_limits", "one limit per guardrail ({given}): write one guardrail for each",
                {"given": " and ".join(given)})
        if self.measure in QUANTILE_MEASURES and self.quantile is None:
            self.quantile = DEFAULT_QUANTILE
        return self

    @property
    def relative(self) -> bool:
        return self.max_increase_pct is not None

    def label(self) -> str:
        """``latency p95 ≤ 800 ms``, ``latency p95 ≤ baseline + 10 %``, ``error_rate ≤ 0.01``."""
        what = self.measure + (f" p{100 * self.quantile:g}" if self.quantile is not None else "")
        unit = UNITS[self.measure]
        if self.max_increase_pct is not None:
            return f"{what} ≤ baseline + {self.max_increase_pct:g} %"
        if self.min is not None:
            return f"{what} ≥ {self.min:g} {unit}".rstrip()
        return f"{what} ≤ {self.max:g} {unit}".rstrip()


class SloSection(_Section):
    """Service levels a candidate must meet on the load suites (docs/load.md)."""

    suites: list[str] = Field(default_factory=list)
    """The load suites these guardrails read; empty: every load suite the check runs."""
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    power: float = Field(default=0.8, gt=0, lt=1)
    guardrails: list[SloGuardrail] = Field(min_length=1)

    def alpha_of(self, guardrail: SloGuardrail) -> float:
        return guardrail.alpha if guardrail.alpha is not None else self.alpha

    def power_of(self, guardrail: SloGuardrail) -> float:
        return guardrail.power if guardrail.power is not None else self.power


def slo_problems(section: SloSection | None, metric_names: set[str],
                 suite_names: Any = None) -> list[tuple[tuple[Any, ...], str]]:
    """Cross-field problems of the section, each with its location (for file:line)."""
    if section is None:
        return []
    out: list[tuple[tuple[Any, ...], str]] = []
    seen: set[str] = set()
    for i, g in enumerate(section.guardrails):
        loc = ("slo", "guardrails", i, "name")
        if g.name in seen:
            out.append((loc, f"duplicate SLO guardrail name {g.name!r}"))
        elif g.name in metric_names:
            out.append((loc, f"{g.name!r} is already a performance_evaluation metric name; names must be unique"))
        seen.add(g.name)
        if g.suite is not None and section.suites and g.suite not in section.suites:
            out.append((("slo", "guardrails", i, "suite"),
                        f"suite {g.suite!r} is not one of slo.suites ({', '.join(section.suites)})"))
    criteria = [g for g in section.guardrails if g.max is not None]
    for i, g in enumerate(section.guardrails):
        if g.measure == "throughput" and not criteria:
            out.append((("slo", "guardrails", i, "measure"),
                        "a throughput guardrail needs an absolute latency, ttft or error-rate guardrail (max) "
                        "in slo.guardrails: they define the rate the endpoint can sustain"))
    if suite_names is not None:
        for i, name in enumerate(section.suites):
            if name not in suite_names:
                out.append((("slo", "suites", i),
                            f"unknown load suite {name!r} (known: {', '.join(sorted(suite_names)) or 'none'})"))
    return out
