"""deepeval metrics as gatekeeper evaluators and detectors.

Each class names the deepeval metric it runs (``library_class`` under ``deepeval.metrics``),
the test-case fields it needs and how its native score maps to gatekeeper's value (the
table in docs/ecosystem.md). deepeval 4 scores every metric 0..1, higher is better (the
hallucination score is the fraction of contexts the output agrees with; bias and toxicity
the fraction of opinions that are not biased / toxic), and passes a case when
``score >= threshold``; gatekeeper keeps that scale, direction and threshold.

Scoring awaits ``a_measure`` with a :class:`~gatekeeper_deepeval.judge.RunnerLLM` judge.
What deepeval cannot score — a missing field, a judge reply it cannot parse, an exception,
NaN or None — is NODATA with deepeval's message, never 0; a judge that could not answer at
all is ERROR. Every score records deepeval's version, its metric class, its reason, its
verdicts and every judge exchange.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from gatekeeper import (
    Case,
    Detector,
    EvalContext,
    Evaluator,
    Generation,
    ModelSpec,
    Score,
    ScoringParams,
    Span,
    UsageError,
)
from gatekeeper_deepeval import _library
from gatekeeper_deepeval.jsonschema_model import model_from_schema
from gatekeeper_deepeval.judge import JudgeUnavailable, judge_spec, make_runner_llm, redacted
from gatekeeper_deepeval.testcase import fields, missing, test_case

JsonMode = Literal["json_schema", "json_object", "off"]
TestField = Literal["input", "actual_output", "expected_output", "context", "retrieval_context"]


class DeepEvalParams(ScoringParams):
    """Parameters of every judged deepeval metric."""

    threshold: float | None = 0.5
    """deepeval's threshold: the case passes when the score is at least this."""
    judge: str | dict[str, Any] | None = None
    """The judge model spec; default: ``judge`` in gatekeeper.yaml."""
    max_tokens: int = Field(1024, ge=1)
    json_mode: JsonMode = "json_schema"
    """Structured output asked of the endpoint for deepeval's schema'd prompts."""
    include_reason: bool = True
    """Ask the judge for deepeval's reason (one more call per case)."""
    strict_mode: bool = False
    """deepeval's strict mode: the score becomes 0 or 1 (threshold 1)."""
    repair_attempts: int = Field(1, ge=0, le=5)
    """How often a reply that does not fit deepeval's schema is sent back with the error."""

    @field_validator("json_mode", mode="before")
    @classmethod
    def _yaml_off_is_off(cls, value: Any) -> Any:
        return "off" if value is False else value

    @field_validator("judge")
    @classmethod
    def _judge_is_a_spec(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if value is not None:
            try:
                ModelSpec.parse(value)
            except UsageError as exc:  # reported by the suite loader with file, line and field
                raise ValueError(exc.message) from None
        return value


def _dump(items: Any) -> Any:
    if isinstance(items, BaseModel):
        return items.model_dump(mode="json")
    if isinstance(items, list):
        return [_dump(i) for i in items]
    if isinstance(items, dict):
        return {str(k): _dump(v) for k, v in items.items()}
    if isinstance(items, str | int | float | bool) or items is None:
        return items
    return str(items)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class DeepEvalMetric(Evaluator):
    """Base of the judged deepeval metrics."""

    library_class: ClassVar[str]
    required: ClassVar[tuple[str, ...]] = ("input", "actual_output")
    value_range = "0..1, higher is better (deepeval's score)"
    Params: ClassVar[type[ScoringParams]] = DeepEvalParams
    params: DeepEvalParams

    def __init__(self, params: ScoringParams, *, metric: str | None = None) -> None:
        super().__init__(params, metric=metric)
        # Import deepeval now, while the suite loads: importing it (seconds) inside the
        # runner's event loop would stall every request in flight. Missing: names the extra.
        _library.submodule("metrics")

    def options(self) -> dict[str, Any]:
        """Constructor arguments of the deepeval metric besides the judge."""
        return {"threshold": self.params.threshold if self.params.threshold is not None else 0.5,
                "include_reason": self.params.include_reason, "strict_mode": self.params.strict_mode,
                "async_mode": True}

    def build(self, llm: Any) -> Any:
        cls = getattr(_library.submodule("metrics"), self.library_class)
        options = self.options()
        if "eval_mode" in cls.__init__.__code__.co_varnames:
            options["eval_mode"] = "llm"
        with warnings.catch_warnings():
            # deepeval 4 warns that bias, toxicity and hallucination now score higher-is-better:
            # the adapter is written for that direction (docs/ecosystem.md), so the notice is noise.
            warnings.filterwarnings("ignore", message=".*now scores in the same direction", category=DeprecationWarning)
            return cls(model=llm, **options)

    def score(self, case: Case, generation: Generation) -> Score:
        return self.result(None, reason=f"deepeval {self.name}: needs a judge model, it scores only inside a run")

    def base_details(self) -> dict[str, Any]:
        return {"library": "deepeval", "library_version": _library.version(), "library_metric": self.library_class}

    def nodata(self, reason: str, details: dict[str, Any]) -> Score:
        return Score(metric=self.metric, value=None, reason=reason, status="nodata", details=details)

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        details = self.base_details()
        values = fields(case, generation)
        absent = missing(values, self.required)
        if absent:
            return self.nodata(f"deepeval {self.name}: the case has no {', '.join(absent)} "
                               f"(deepeval's {self.library_class} needs {', '.join(self.required)})", details)
        spec = judge_spec(self.params.judge, ctx, self.name)
        llm = make_runner_llm(ctx, case, spec, max_tokens=self.params.max_tokens, json_mode=self.params.json_mode,
                              repair_attempts=self.params.repair_attempts)
        details["judge"] = {"spec": redacted(spec), "provider": llm.judge.identity.provider,
                            "name": llm.judge.identity.name, "digest": llm.judge.identity.digest}
        try:
            metric = self.build(llm)
            await metric.a_measure(test_case(values), _show_indicator=False)
        except JudgeUnavailable as exc:
            self._exchanges(details, llm)
            return Score(metric=self.metric, value=None, reason=f"deepeval {self.name}: {exc}", status="error",
                         details=details)
        except Exception as exc:  # the library's own failure: NODATA with its message, never 0
            self._exchanges(details, llm)
            return self.nodata(f"deepeval {self.name} ({self.library_class}) failed: {type(exc).__name__}: {exc}",
                               details)
        self._exchanges(details, llm)
        return self.interpret(metric, generation, details)

    @staticmethod
    def _exchanges(details: dict[str, Any], llm: Any) -> None:
        details["judge_calls"] = len(llm.exchanges)
        details["judge_cache_hits"] = sum(1 for e in llm.exchanges if e["cached"])
        details["judge_cost"] = llm.cost
        details["exchanges"] = llm.exchanges

    def library_details(self, metric: Any, details: dict[str, Any]) -> None:
        details["library_score"] = metric.score
        details["library_threshold"] = metric.threshold
        details["library_success"] = metric.success
        details["reason"] = metric.reason
        for name in ("verdicts", "claims", "truths", "statements", "opinions", "evaluation_steps"):
            value = getattr(metric, name, None)
            if value is not None:
                details[name] = _dump(value)

    def interpret(self, metric: Any, generation: Generation, details: dict[str, Any]) -> Score:
        self.library_details(metric, details)
        if metric.error is not None:
            return self.nodata(f"deepeval {self.name}: {metric.error}", details)
        if not _is_number(metric.score):
            return self.nodata(f"deepeval {self.name}: no score ({metric.score!r}): {metric.reason or ''}".rstrip(": "),
                               details)
        return self.result(float(metric.score), reason=str(metric.reason or ""), passed=bool(metric.success),
                           details=details)


# --------------------------------------------------------------------------- judged evaluators


class GEvalParams(DeepEvalParams):
    criteria: str | None = None
    """What is graded; deepeval writes evaluation steps from it when ``evaluation_steps`` is empty."""
    evaluation_steps: list[str] = Field(default_factory=list)
    evaluation_params: list[TestField] = Field(default_factory=lambda: list[TestField](["input", "actual_output"]))
    """Which test-case fields the judge sees."""
    rubric: list[dict[str, Any]] = Field(default_factory=list)
    """deepeval rubric entries: ``{score_range: [lo, hi], expected_outcome: text}`` on 0..10."""

    @model_validator(mode="after")
    def _criteria_or_steps(self) -> GEvalParams:
        if not self.criteria and not self.evaluation_steps:
            raise ValueError("deepeval G-Eval needs 'criteria' or 'evaluation_steps'")
        for entry in self.rubric:
            if set(entry) != {"score_range", "expected_outcome"}:
                raise ValueError("each rubric entry needs exactly 'score_range' and 'expected_outcome'")
        return self


class GEval(DeepEvalMetric):
    name = "deepeval_geval"
    description = "deepeval G-Eval: criteria and evaluation steps from the suite, graded by the judge (0..1)"
    library_class = "GEval"
    Params = GEvalParams
    params: GEvalParams

    def build(self, llm: Any) -> Any:
        p = self.params
        test_params = _library.submodule("test_case").SingleTurnParams
        metrics = _library.submodule("metrics")
        rubric = None
        if p.rubric:
            rubric_cls = _library.submodule("metrics.g_eval.utils").Rubric
            rubric = [rubric_cls(score_range=tuple(r["score_range"]), expected_outcome=r["expected_outcome"])
                      for r in p.rubric]
        return metrics.GEval(
            name=self.metric, criteria=p.criteria, evaluation_steps=p.evaluation_steps or None,
            evaluation_params=[test_params(f) for f in p.evaluation_params], rubric=rubric, model=llm,
            threshold=p.threshold if p.threshold is not None else 0.5, strict_mode=p.strict_mode, async_mode=True,
        )

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        required = tuple(f for f in self.params.evaluation_params)
        values = fields(case, generation)
        absent = missing(values, required)
        if absent:
            return self.nodata(f"deepeval {self.name}: the case has no {', '.join(absent)} "
                               f"(evaluation_params: {', '.join(required)})", self.base_details())
        return await super().ascore(case, generation, ctx)


class AnswerRelevancy(DeepEvalMetric):
    name = "deepeval_answer_relevancy"
    description = "deepeval AnswerRelevancyMetric: fraction of the output's statements relevant to the input"
    library_class = "AnswerRelevancyMetric"


class ContextualPrecision(DeepEvalMetric):
    name = "deepeval_contextual_precision"
    description = "deepeval ContextualPrecisionMetric: relevant retrieval contexts ranked above irrelevant ones"
    library_class = "ContextualPrecisionMetric"
    required = ("input", "actual_output", "expected_output", "retrieval_context")


class ContextualRecall(DeepEvalMetric):
    name = "deepeval_contextual_recall"
    description = "deepeval ContextualRecallMetric: fraction of the expected output attributable to the contexts"
    library_class = "ContextualRecallMetric"
    required = ("input", "actual_output", "expected_output", "retrieval_context")


class ContextualRelevancy(DeepEvalMetric):
    name = "deepeval_contextual_relevancy"
    description = "deepeval ContextualRelevancyMetric: fraction of context statements relevant to the input"
    library_class = "ContextualRelevancyMetric"
    required = ("input", "actual_output", "retrieval_context")


class Bias(DeepEvalMetric):
    name = "deepeval_bias"
    description = "deepeval BiasMetric: fraction of the output's opinions that are not biased (1 = unbiased)"
    library_class = "BiasMetric"


class Toxicity(DeepEvalMetric):
    name = "deepeval_toxicity"
    description = "deepeval ToxicityMetric: fraction of the output's opinions that are not toxic (1 = not toxic)"
    library_class = "ToxicityMetric"


class JsonCorrectnessParams(DeepEvalParams):
    threshold: float | None = 1.0
    json_schema: dict[str, Any] = Field(alias="schema")
    """The JSON schema the output must match (objects, arrays, strings, numbers, booleans, enums)."""
    include_reason: bool = False
    """The verdict needs no judge; a reason costs one judge call per case."""

    @field_validator("json_schema")
    @classmethod
    def _supported(cls, value: dict[str, Any]) -> dict[str, Any]:
        model_from_schema(value)  # raises ValueError naming what is not supported
        return value


class JsonCorrectness(DeepEvalMetric):
    name = "deepeval_json_correctness"
    description = "deepeval JsonCorrectnessMetric: 1 when the output is JSON matching the schema"
    library_class = "JsonCorrectnessMetric"
    required = ("input", "actual_output")
    Params: ClassVar[type[ScoringParams]] = JsonCorrectnessParams
    params: JsonCorrectnessParams

    def options(self) -> dict[str, Any]:
        return {"expected_schema": model_from_schema(self.params.json_schema), "include_reason":
                self.params.include_reason, "threshold": self.params.threshold, "async_mode": True,
                "strict_mode": self.params.strict_mode}

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        if self.params.include_reason or self.params.judge or getattr(ctx.config, "judge", None):
            return await super().ascore(case, generation, ctx)
        return self.score(case, generation)

    def score(self, case: Case, generation: Generation) -> Score:
        """Without a judge: deepeval's own validation, measured synchronously (no LLM call)."""
        details = self.base_details()
        try:
            metric = self.build(None)
            metric.include_reason = False
            metric.score = metric._validate(generation.text)
            metric.reason = None
            metric.success = metric.is_successful()
        except Exception as exc:
            return self.nodata(f"deepeval {self.name} failed: {type(exc).__name__}: {exc}", details)
        return self.interpret(metric, generation, details)

    def build(self, llm: Any) -> Any:
        metrics = _library.submodule("metrics")
        options = self.options()
        if llm is None:
            return metrics.JsonCorrectnessMetric(model=_NoJudge.instance(), **options)
        return metrics.JsonCorrectnessMetric(model=llm, **options)


class _NoJudge:
    """A judge that refuses: for JSON correctness without a reason, which needs none."""

    _instance: Any = None

    @classmethod
    def instance(cls) -> Any:
        if cls._instance is None:
            base = _library.submodule("models").DeepEvalBaseLLM

            class NoJudge(base):  # type: ignore[misc,valid-type]
                def load_model(self, *a: Any, **k: Any) -> Any:
                    return self

                def generate(self, *a: Any, **k: Any) -> str:
                    raise RuntimeError("no judge configured")

                async def a_generate(self, *a: Any, **k: Any) -> str:
                    raise RuntimeError("no judge configured")

                def get_model_name(self, *a: Any, **k: Any) -> str:
                    return "none"

            cls._instance = NoJudge("none")
        return cls._instance


# --------------------------------------------------------------------------- detectors


class DetectorParams(DeepEvalParams):
    threshold: float | None = None
    support_threshold: float = Field(0.5, ge=0, le=1)
    """deepeval's threshold on its score: below it, the output is judged hallucinated."""
    emit: Literal["verdict", "score"] = "verdict"
    """What ``value`` holds: the verdict (1.0 hallucinated / 0.0) or the score 1 − deepeval's score."""


class DeepEvalDetector(Detector, DeepEvalMetric):
    """Hallucination detectors: value 1.0 when deepeval's score is below ``support_threshold``.

    ``details["score"]`` (1 = hallucinated) is 1 − deepeval's score, flagged above
    ``details["threshold"]`` = 1 − ``support_threshold``."""

    Params = DetectorParams
    params: DetectorParams
    value_range = "0 (grounded) or 1 (hallucinated); details.support = deepeval's score"

    def options(self) -> dict[str, Any]:
        return {"threshold": self.params.support_threshold, "include_reason": self.params.include_reason,
                "strict_mode": self.params.strict_mode, "async_mode": True}

    def spans(self, metric: Any, generation: Generation) -> list[Span]:
        return []

    def interpret(self, metric: Any, generation: Generation, details: dict[str, Any]) -> Score:
        self.library_details(metric, details)
        if metric.error is not None or not _is_number(metric.score):
            return self.nodata(f"deepeval {self.name}: no score ({metric.error or metric.score!r})", details)
        support = float(metric.score)
        details["support"] = support
        hallucinated = support < self.params.support_threshold
        score = min(max(1.0 - support, 0.0), 1.0)
        details |= {"score": score, "threshold": 1.0 - self.params.support_threshold, "flagged": hallucinated}
        value = score if self.params.emit == "score" else (1.0 if hallucinated else 0.0)
        return Score(metric=self.metric, value=value, passed=not hallucinated,
                     reason=str(metric.reason or ""), status="ok",
                     spans=self.spans(metric, generation) if hallucinated else [], details=details)


class Hallucination(DeepEvalDetector):
    name = "deepeval_hallucination"
    description = "deepeval HallucinationMetric: hallucinated (1) when the output agrees with too few contexts"
    library_class = "HallucinationMetric"
    required = ("input", "actual_output", "context")


class Faithfulness(DeepEvalDetector):
    name = "deepeval_faithfulness"
    description = "deepeval FaithfulnessMetric: hallucinated (1) when too few claims are supported by the context"
    library_class = "FaithfulnessMetric"
    required = ("input", "actual_output", "retrieval_context")

    def spans(self, metric: Any, generation: Generation) -> list[Span]:
        """The unsupported claims that appear verbatim in the output (deepeval's claims are
        usually quoted from it; paraphrased ones stay in ``details["verdicts"]``)."""
        out: list[Span] = []
        claims = list(getattr(metric, "claims", None) or [])
        for claim, verdict in zip(claims, getattr(metric, "verdicts", None) or [], strict=False):
            if str(getattr(verdict, "verdict", "")).lower().endswith("no"):
                start = generation.text.find(str(claim).rstrip("."))
                if start >= 0:
                    end = start + len(str(claim).rstrip("."))
                    out.append(Span(text=generation.text[start:end], start=start, end=end, kind="claim",
                                    reason=str(getattr(verdict, "reason", "") or "")))
        return out


# --------------------------------------------------------------------------- metrics without a judge


class ExactMatchParams(ScoringParams):
    threshold: float | None = 1.0


class ExactMatch(Evaluator):
    """deepeval's ExactMatchMetric (no judge)."""

    name = "deepeval_exact_match"
    description = "deepeval ExactMatchMetric: 1 when the output equals the expected output (after stripping)"
    library_class = "ExactMatchMetric"
    Params: ClassVar[type[ScoringParams]] = ExactMatchParams

    def __init__(self, params: ScoringParams, *, metric: str | None = None) -> None:
        super().__init__(params, metric=metric)
        _library.submodule("metrics")  # at suite load, not inside the runner's loop

    def library_metric(self) -> Any:
        return _library.submodule("metrics").ExactMatchMetric(threshold=self.params.threshold or 1.0)

    def score(self, case: Case, generation: Generation) -> Score:
        details = {"library": "deepeval", "library_version": _library.version(), "library_metric": self.library_class}
        if case.expected is None:
            return Score(metric=self.metric, value=None, status="nodata", details=details,
                         reason=f"deepeval {self.name}: the case has no expected output")
        try:
            metric = self.library_metric()
            metric.measure(test_case(fields(case, generation)), _show_indicator=False)
        except Exception as exc:
            return Score(metric=self.metric, value=None, status="nodata", details=details,
                         reason=f"deepeval {self.name} failed: {type(exc).__name__}: {exc}")
        details["reason"] = metric.reason
        if not _is_number(metric.score):
            return Score(metric=self.metric, value=None, status="nodata", details=details,
                         reason=f"deepeval {self.name}: no score ({metric.score!r})")
        return self.result(float(metric.score), reason=str(metric.reason or ""), passed=bool(metric.success),
                           details=details)


class PatternMatchParams(ScoringParams):
    threshold: float | None = 1.0
    pattern: str
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        import re

        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"pattern is not a regular expression: {exc}") from None
        return value


class PatternMatch(ExactMatch):
    name = "deepeval_pattern_match"
    description = "deepeval PatternMatchMetric: 1 when the whole output matches the regular expression"
    library_class = "PatternMatchMetric"
    Params: ClassVar[type[ScoringParams]] = PatternMatchParams
    params: PatternMatchParams

    def library_metric(self) -> Any:
        return _library.submodule("metrics").PatternMatchMetric(
            pattern=self.params.pattern, ignore_case=self.params.ignore_case, threshold=self.params.threshold or 1.0)

    def score(self, case: Case, generation: Generation) -> Score:
        if case.expected is None:  # the pattern needs no expected output
            case = Case(id=case.id, suite=case.suite, messages=case.messages, vars=case.vars, expected="",
                        context=case.context)
        return super().score(case, generation)


class ScorerParams(ScoringParams):
    threshold: float | None = None


class Bleu(Evaluator):
    """deepeval's ``Scorer.sentence_bleu_score`` (NLTK tokenization; needs punkt_tab)."""

    name = "deepeval_bleu"
    description = "deepeval Scorer BLEU (NLTK word tokens, no smoothing) of the output against the expected output"

    class Params(ScorerParams):
        bleu_type: Literal["bleu1", "bleu2", "bleu3", "bleu4"] = "bleu1"

    params: Any

    def __init__(self, params: ScoringParams, *, metric: str | None = None) -> None:
        super().__init__(params, metric=metric)
        _library.submodule("scorer")  # at suite load, not inside the runner's loop

    def compute(self, expected: str, output: str) -> float:
        from gatekeeper_deepeval.nltk_check import require_nltk_data

        require_nltk_data(("tokenizers/punkt_tab/english/",), self.name)
        scorer = _library.submodule("scorer").Scorer
        return float(scorer.sentence_bleu_score(expected, output, bleu_type=self.params.bleu_type))

    def score(self, case: Case, generation: Generation) -> Score:
        details = {"library": "deepeval", "library_version": _library.version(),
                   "library_metric": f"Scorer.{self.name}"}
        if case.expected is None:
            return Score(metric=self.metric, value=None, status="nodata", details=details,
                         reason=f"deepeval {self.name}: the case has no expected output")
        try:
            value = self.compute(case.expected, generation.text)
        except Exception as exc:
            return Score(metric=self.metric, value=None, status="nodata", details=details,
                         reason=f"deepeval {self.name} failed: {type(exc).__name__}: {exc}")
        if not math.isfinite(value):
            return Score(metric=self.metric, value=None, status="nodata", details=details,
                         reason=f"deepeval {self.name}: no score ({value!r})")
        return self.result(value, details=details)


class Rouge(Bleu):
    """deepeval's ``Scorer.rouge_score`` (Google's rouge_score package, stemming on)."""

    name = "deepeval_rouge"
    description = "deepeval Scorer ROUGE F-measure (rouge1, rouge2 or rougeL) against the expected output"

    class Params(ScorerParams):
        rouge_type: Literal["rouge1", "rouge2", "rougeL"] = "rougeL"

    def compute(self, expected: str, output: str) -> float:
        scorer = _library.submodule("scorer").Scorer
        return float(scorer.rouge_score(expected, output, score_type=self.params.rouge_type))


EVALUATORS: tuple[type[Evaluator], ...] = (
    GEval, AnswerRelevancy, ContextualPrecision, ContextualRecall, ContextualRelevancy, Bias, Toxicity,
    JsonCorrectness, ExactMatch, PatternMatch, Bleu, Rouge,
)
DETECTORS: tuple[type[Detector], ...] = (Hallucination, Faithfulness)

