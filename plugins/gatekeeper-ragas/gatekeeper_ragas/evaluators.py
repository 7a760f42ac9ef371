"""ragas metrics as gatekeeper evaluators (``ragas_<metric>``, or ``ragas`` with ``metric:``)
and faithfulness as a hallucination detector (``ragas_hallucination``).

A case gives ragas its sample: ``user_input`` is the case's question (``input``, else its
last user message), ``response`` the output being scored, ``reference`` the case's
``expected``, ``retrieved_contexts`` the case's ``retrieved_contexts`` / ``contexts``
list or else its ``context``, ``reference_contexts`` its ``reference_contexts`` list.

Scores keep ragas' native value (docs/ecosystem.md has each scale and direction). NaN,
None, an input ragas needs but the case lacks, a judge reply that stays unusable after a
repair, or an exception inside ragas is NODATA with the reason, never 0; a judge that
could not answer at all is ERROR, as for gatekeeper's own judges. Every score carries the
ragas version and, for LLM metrics, the judge's identity and every exchange with it.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any, ClassVar, Literal

from pydantic import Field, create_model, field_validator, model_validator

from gatekeeper.kinds import Detector, EvalContext, Evaluator, ScoringParams
from gatekeeper.types import Case, Generation, ModelSpec, PluginError, Score, Span, UsageError
from gatekeeper_ragas.library import PLUGIN, ragas_version, require
from gatekeeper_ragas.metrics import METRICS, MetricInfo, Options, build, unknown_metric

JsonMode = Literal["json_schema", "json_object", "off"]


class RagasParams(ScoringParams):
    """What every ragas evaluator accepts besides the metric's own options."""


class RagasJudgeParams(RagasParams):
    """The judge of a ragas LLM metric: any gatekeeper model spec, called through the runner."""

    judge: str | dict[str, Any] | None = None
    """The judge model spec; default: ``judge`` in gatekeeper.yaml."""
    temperature: float = Field(0.01, ge=0)
    """ragas' own default (its InstructorLLM's ``temperature``)."""
    seed: int = 0
    max_tokens: int = Field(1024, ge=1)
    """ragas' own default; its statement lists can be long."""
    repair_attempts: int = Field(1, ge=0, le=5)
    """How often a reply that does not fit ragas' schema is sent back with the error."""
    json_mode: JsonMode = "json_schema"
    """Ask for structured output (the schema ragas expects), any JSON, or nothing."""

    @field_validator("json_mode", mode="before")
    @classmethod
    def _yaml_off_is_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false

    @field_validator("judge")
    @classmethod
    def _judge_is_a_spec(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if value is not None:
            try:
                ModelSpec.parse(value)
            except UsageError as exc:
                raise ValueError(exc.message) from None
        return value


# --------------------------------------------------------------------------- samples

_WHERE = {
    "user_input": "a question (the case's 'input' or a user message)",
    "response": "an output",
    "reference": "a reference answer (the case's 'expected')",
    "retrieved_contexts": "retrieved contexts (the case's 'retrieved_contexts' or 'contexts' list, or 'context')",
    "reference_contexts": "reference contexts (the case's 'reference_contexts' list)",
}


def _texts(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if str(v).strip()]
    return [str(value)]


def question_of(case: Case) -> str:
    value = case.vars.get("input")
    if value not in (None, ""):
        return str(value)
    for message in reversed(case.messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def sample_of(case: Case, generation: Generation) -> dict[str, Any]:
    """Every field a ragas single-turn sample may have, from the case and the output."""
    retrieved = _texts(case.vars.get("retrieved_contexts")) or _texts(case.vars.get("contexts"))
    return {
        "user_input": question_of(case),
        "response": generation.text,
        "reference": case.expected or "",
        "retrieved_contexts": retrieved or _texts(case.context),
        "reference_contexts": _texts(case.vars.get("reference_contexts")),
    }


# --------------------------------------------------------------------------- scoring


class RagasEvaluator(Evaluator):
    """One ragas metric (subclasses are made per metric, see :func:`evaluator_class`)."""

    info: ClassVar[MetricInfo]
    params: Any

    def __init__(self, params: ScoringParams, *, metric: str | None = None) -> None:
        super().__init__(params, metric=metric)
        self._plain: Any = None

    def metric_info(self) -> MetricInfo:
        return self.info

    def options(self) -> Options:
        info = self.metric_info()
        fields = {k: getattr(self.params, k) for k in info.options.model_fields}
        return info.options(**fields)

    def score(self, case: Case, generation: Generation) -> Score:
        return self.result(None, reason=f"{self.metric}: ragas scores only inside a run (its async API)")

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        info = self.metric_info()
        details: dict[str, Any] = {"ragas_version": ragas_version(), "ragas_metric": info.ragas_class.split(":")[1]}
        sample = sample_of(case, generation)
        missing = [name for name in info.inputs if not sample[name]]
        if missing:
            need = "; ".join(_WHERE[m] for m in missing)
            return self.result(None, reason=f"{self.metric}: ragas needs {need}, which this case lacks",
                               details=details)
        judge = None
        try:
            if info.judge:
                from gatekeeper_ragas.judge import JudgeSettings, RunnerJudge

                p = self.params
                judge = RunnerJudge.load(
                    JudgeSettings(p.judge, p.temperature, p.seed, p.max_tokens, p.repair_attempts, p.json_mode),
                    ctx, case,
                )
            result = await self._run(info, judge, sample)
        except UsageError:
            raise
        except Exception as exc:
            return self._failure(info, exc, judge, details)
        if judge is not None:
            details.update(judge.provenance())
        value = getattr(result, "value", result)
        reason = getattr(result, "reason", None) or ""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return self.result(None, details=details, reason=f"{self.metric}: ragas returned no score"
                               + (f" ({reason})" if reason else " (NaN: nothing to score)"))
        return self.finish(float(value), reason, details, judge)

    def finish(self, value: float, reason: str, details: dict[str, Any], judge: Any) -> Score:
        shown = f"ragas {self.metric_info().name} = {value:.4g}"
        return self.result(value, reason=f"{shown}: {reason}" if reason else shown, details=details)

    async def _run(self, info: MetricInfo, judge: Any, sample: dict[str, Any]) -> Any:
        kwargs = {name: sample[name] for name in info.inputs}
        if info.judge:
            embeddings = None
            if info.embeddings:
                from gatekeeper_ragas.embeddings import shared_embeddings

                embeddings = shared_embeddings()
            metric = build(info, self.options(), llm=judge, embeddings=embeddings)
        else:
            if self._plain is None:
                self._plain = build(info, self.options())
            metric = self._plain
        if info.legacy:
            from ragas.dataset_schema import SingleTurnSample

            return await metric.single_turn_ascore(SingleTurnSample(**kwargs))
        return await metric.ascore(**kwargs)

    def _failure(self, info: MetricInfo, exc: Exception, judge: Any, details: dict[str, Any]) -> Score:
        from gatekeeper_ragas.judge import JudgeFailed

        if judge is not None:
            details.update(judge.provenance())
        message = str(exc) or type(exc).__name__
        if isinstance(exc, JudgeFailed):
            return Score(self.metric, None, status="error", reason=f"{self.metric}: {message}", details=details)
        details["exception"] = type(exc).__name__
        return self.result(None, details=details, reason=f"{self.metric}: ragas failed: {message}")


def _validate_options(info: MetricInfo, values: Any) -> Any:
    """Build the ragas metric once with the options (an unbound judge), so that an option
    ragas rejects fails when the suite loads, naming file, line and field."""
    options = info.options(**{k: getattr(values, k) for k in info.options.model_fields})
    try:
        require("ragas.llms.base", info.metric)  # a clear message when ragas is missing
        llm = None
        if info.judge:
            from gatekeeper_ragas.judge import unbound_judge

            llm = unbound_judge()
        build(info, options, llm=llm, embeddings=_NoEmbeddings.instance() if info.embeddings else None)
    except PluginError as exc:
        raise ValueError(exc.message) from None
    except Exception as exc:
        raise ValueError(f"ragas rejects the options of {info.metric}: {exc}") from None
    return values


class _NoEmbeddings:
    """Stands in for the embedding model while options are checked (it is never called)."""

    @staticmethod
    def instance() -> Any:
        from gatekeeper_ragas.judge import unbound_embeddings

        return unbound_embeddings()


@cache
def evaluator_class(name: str) -> type[RagasEvaluator]:
    """The evaluator class of one metric: ``ragas_<name>``, its params the judge's (for
    LLM metrics) plus the metric's own options, its threshold ragas' customary one."""
    info = METRICS[name]
    base = RagasJudgeParams if info.judge else RagasParams

    def check(self: Any) -> Any:
        return _validate_options(info, self)

    validators: dict[str, Any] = {"_ragas_accepts": model_validator(mode="after")(check)}
    params = create_model(
        f"Ragas_{name}_Params",
        __base__=(base, info.options),
        __validators__=validators,
        threshold=(float | None, info.default_threshold),
    )
    return type(f"Ragas_{name}", (RagasEvaluator,), {
        "name": info.metric,
        "description": f"ragas {info.ragas_class.split(':')[1]}: {info.native}",
        "value_range": info.native,
        "lower_is_better": info.lower_is_better,
        "Params": params,
        "info": info,
        "__module__": __name__,
    })


# --------------------------------------------------------------------------- any metric by name


class AnyMetricParams(RagasJudgeParams):
    metric: str
    """A metric of the table in docs/ecosystem.md, e.g. ``faithfulness``."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The metric's own options (as ``ragas_<metric>`` takes them)."""

    @model_validator(mode="after")
    def _known(self) -> AnyMetricParams:
        if self.metric not in METRICS:
            raise ValueError(unknown_metric(self.metric))
        info = METRICS[self.metric]
        if info.default_threshold is not None and "threshold" not in self.model_fields_set:
            self.threshold = info.default_threshold
        try:
            validated = info.options(**self.options)
        except Exception as exc:
            raise ValueError(f"{info.metric}: {exc}") from None
        _validate_options(info, validated)
        return self


class AnyRagasMetric(RagasEvaluator):
    """``ragas: {metric: NAME, options: {...}}``: any metric of the table by name; the
    score's metric is ``ragas_NAME`` unless the suite names it with ``as:``."""

    name = "ragas"
    description = "any ragas metric by name (metric: faithfulness, bleu, ...); see docs/ecosystem.md"
    value_range = "the metric's native scale (docs/ecosystem.md)"
    Params = AnyMetricParams
    params: AnyMetricParams

    def __init__(self, params: ScoringParams, *, metric: str | None = None) -> None:
        assert isinstance(params, AnyMetricParams)
        super().__init__(params, metric=metric if metric not in (None, "ragas") else METRICS[params.metric].metric)
        self.lower_is_better = METRICS[params.metric].lower_is_better  # type: ignore[misc]

    def metric_info(self) -> MetricInfo:
        return METRICS[self.params.metric]

    def options(self) -> Options:
        return self.metric_info().options(**self.params.options)


# --------------------------------------------------------------------------- the detector


class HallucinationParams(RagasJudgeParams):
    threshold: float | None = 0.5
    min_support: float = Field(1.0, ge=0, le=1)
    """The faithfulness at or above which an answer counts as grounded: with the default,
    one claim the context does not support makes it hallucinated."""
    emit: Literal["verdict", "score"] = "verdict"
    """What ``value`` holds: the verdict (1.0 hallucinated / 0.0) or the score 1 − faithfulness."""


class RagasHallucination(Detector):
    """ragas faithfulness as a hallucination detector: 1.0 when the faithfulness ``s`` is
    below ``min_support`` (some claim unsupported), else 0.0; ``details["support"]`` is
    ``s`` and ``details["unsupported_claims"]`` the claims ragas' judge rejected, with its
    reasons; those found verbatim in the output are marked as spans. The score
    (``details["score"]``, 1 = hallucinated) is ``1 - s``, flagged above
    ``details["threshold"]`` = ``1 - min_support``."""

    name = "ragas_hallucination"
    description = "ragas faithfulness as a detector: 1 when a claim of the answer is not supported by the context"
    Params = HallucinationParams
    params: HallucinationParams

    def __init__(self, params: ScoringParams, *, metric: str | None = None) -> None:
        super().__init__(params, metric=metric)
        self._faithfulness = evaluator_class("faithfulness")(
            evaluator_class("faithfulness").Params(**{
                k: getattr(params, k) for k in RagasJudgeParams.model_fields if k != "threshold"
            }), metric=self.metric,
        )

    def score(self, case: Case, generation: Generation) -> Score:
        return self.result(None, reason=f"{self.metric}: ragas scores only inside a run (its async API)")

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        faith = await self._faithfulness.ascore(case, generation, ctx)
        if faith.value is None:
            return Score(self.metric, None, status=faith.status, reason=faith.reason, details=faith.details)
        support = faith.value
        claims = unsupported_claims(faith.details.get("judge_exchanges", []))
        spans = [span for c in claims if (span := _locate(generation.text, c["statement"], c["reason"]))]
        hallucinated = support < self.params.min_support
        details = {**faith.details, "support": support, "unsupported_claims": claims}
        if hallucinated:
            listed = ", ".join(repr(c["statement"]) for c in claims[:3])
            reason = f"faithfulness {support:.3g} < {self.params.min_support:g}: unsupported {listed or '(claims)'}"
        else:
            reason = f"faithfulness {support:.3g}: every claim supported by the context"
        score = min(max(1.0 - support, 0.0), 1.0)
        details |= {"score": score, "threshold": 1.0 - self.params.min_support, "flagged": hallucinated}
        value = score if self.params.emit == "score" else (1.0 if hallucinated else 0.0)
        return self.result(value, reason=reason, passed=not hallucinated, spans=spans, details=details)


def unsupported_claims(exchanges: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The statements ragas' judge gave verdict 0, from the NLI replies of the exchanges."""
    import json

    claims: list[dict[str, str]] = []
    for exchange in exchanges:
        if exchange.get("schema") != "NLIStatementOutput" or "error" in exchange or "parse_error" in exchange:
            continue
        try:
            reply = json.loads(exchange["reply"][exchange["reply"].find("{"): exchange["reply"].rfind("}") + 1])
        except ValueError:
            continue
        for item in reply.get("statements", []):
            if isinstance(item, dict) and not item.get("verdict"):
                claims.append({"statement": str(item.get("statement", "")), "reason": str(item.get("reason", ""))})
    return claims


def _locate(text: str, statement: str, reason: str) -> Span | None:
    start = text.lower().find(statement.strip().lower().rstrip("."))
    if not statement.strip() or start < 0:
        return None
    end = start + len(statement.strip().rstrip("."))
    return Span(text=text[start:end], start=start, end=end, kind="claim", reason=reason)


def __getattr__(attr: str) -> type[RagasEvaluator]:
    """``Ragas_<metric>``: the evaluator class of one metric, made on first use, so the plugin
    can register every metric by import path (``gatekeeper_ragas.evaluators:Ragas_faithfulness``)."""
    metric = attr.removeprefix("Ragas_")
    if attr.startswith("Ragas_") and metric in METRICS:
        return evaluator_class(metric)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def registered() -> list[type[Evaluator]]:
    """Every evaluator the plugin registers."""
    return [AnyRagasMetric, *(evaluator_class(name) for name in METRICS)]


__all__ = ["PLUGIN", "AnyRagasMetric", "RagasEvaluator", "RagasHallucination", "evaluator_class", "registered"]
