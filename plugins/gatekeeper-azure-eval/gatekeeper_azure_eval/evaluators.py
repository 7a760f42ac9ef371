"""azure-ai-evaluation's evaluators as gatekeeper evaluators and a detector.

Judged evaluators (groundedness, relevance, coherence, fluency, similarity, retrieval) score
1..5, higher is better, and pass at ``score >= threshold`` (azure's default 3). gatekeeper's
value is that score mapped to 0..1, ``(score - 1) / 4``, so it sits beside other judges; the
native score, azure's threshold, pass/fail and reason are in ``details`` (docs/ecosystem.md
has the table). Groundedness is also a detector: hallucinated (1) when azure's groundedness
is below its threshold.

Text-overlap evaluators (F1, BLEU, GLEU, ROUGE, METEOR) need no judge; their value is
azure's 0..1 score as is. BLEU, GLEU and METEOR read NLTK data that must be built offline
(:mod:`gatekeeper_azure_eval.nltk_data`): it is checked before azure runs, so azure never
tries to download it.

NaN, None, a reply azure cannot parse or an exception in azure is NODATA with azure's
message, never 0; a judge that could not answer at all is ERROR. The evaluators needing an
Azure AI project (content safety and the other service-backed ones) are refused when the
suite loads, saying what they need.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from gatekeeper import (
    Case,
    Detector,
    EvalContext,
    Evaluator,
    Generation,
    ModelSpec,
    Score,
    ScoringParams,
    UsageError,
)
from gatekeeper_azure_eval import _library
from gatekeeper_azure_eval.nltk_data import TOKENIZER_DATA, require
from gatekeeper_azure_eval.routing import CURRENT, JudgeCall, JudgeUnavailable, install, model_configuration

PLUGIN = _library.PLUGIN
SECRET_PARAMS = ("api_key", "key", "token", "secret", "password")


def redacted(spec: ModelSpec) -> str:
    params = {k: ("***" if k.lower() in SECRET_PARAMS else v) for k, v in spec.params.items()}
    return str(ModelSpec(spec.provider, spec.name, params))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def case_query(case: Case) -> str:
    value = case.vars.get("input")
    if value:
        return str(value)
    for message in reversed(case.messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def case_context(case: Case) -> str | None:
    listed = case.vars.get("retrieval_context")
    if isinstance(listed, list) and listed:
        return "\n".join(str(item) for item in listed)
    return case.context or (str(listed) if listed else None)


class AzureBase(Evaluator):
    """What every azure evaluator shares: the inputs it sends and how its result reads."""

    library_class: ClassVar[str]
    result_key: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]
    """Which of ``query``, ``response``, ``context``, ``ground_truth`` azure is given."""

    def __init__(self, params: ScoringParams, *, metric: str | None = None) -> None:
        super().__init__(params, metric=metric)
        # Import azure now, while the suite loads: importing it (seconds) inside the runner's
        # event loop would stall every request in flight. Missing: a PluginError naming the extra.
        _library.azure_eval()

    def base_details(self) -> dict[str, Any]:
        return {"library": "azure-ai-evaluation", "library_version": _library.version(),
                "library_evaluator": self.library_class}

    def nodata(self, reason: str, details: dict[str, Any], status: str = "nodata") -> Score:
        return Score(metric=self.metric, value=None, reason=reason, status=status,  # type: ignore[arg-type]
                     details=details)

    def arguments(self, case: Case, generation: Generation) -> tuple[dict[str, Any], list[str]]:
        values = {"query": case_query(case), "response": generation.text, "context": case_context(case),
                  "ground_truth": case.expected}
        args = {name: values[name] for name in self.inputs}
        return args, [name for name, value in args.items() if value in (None, "")]

    def construct(self, **extra: Any) -> Any:
        cls = getattr(_library.azure_eval(), self.library_class)
        return cls(**extra)

    async def evaluate(self, evaluator: Any, args: dict[str, Any]) -> dict[str, Any]:
        result = await evaluator._to_async()(**args)
        return dict(result)


# --------------------------------------------------------------------------- judged


class JudgedParams(ScoringParams):
    threshold: float | None = 0.5
    """On gatekeeper's 0..1 value; 0.5 is azure's default threshold 3 on 1..5."""
    judge: str | dict[str, Any] | None = None
    """The judge model spec; default: ``judge`` in gatekeeper.yaml."""

    @field_validator("judge")
    @classmethod
    def _judge_is_a_spec(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if value is not None:
            try:
                ModelSpec.parse(value)
            except UsageError as exc:  # reported by the suite loader with file, line and field
                raise ValueError(exc.message) from None
        return value

    @property
    def native_threshold(self) -> float:
        return 1 + 4 * (self.threshold if self.threshold is not None else 0.5)


class Judged(AzureBase):
    """A prompty-based azure evaluator, its judge calls routed through the runner."""

    value_range = "0..1 = (azure's 1..5 score - 1) / 4, higher is better"
    Params = JudgedParams
    params: JudgedParams

    def score(self, case: Case, generation: Generation) -> Score:
        return self.result(None, reason=f"{PLUGIN} {self.name}: needs a judge model, it scores only inside a run")

    def judge_spec(self, ctx: EvalContext) -> ModelSpec:
        from gatekeeper import UsageError

        raw = self.params.judge if self.params.judge is not None else getattr(ctx.config, "judge", None)
        if raw is None:
            raise UsageError(f"{self.name} needs a judge: set 'judge:' on the evaluator or in gatekeeper.yaml",
                             field="judge")
        return ModelSpec.parse(raw)

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        details = self.base_details()
        args, absent = self.arguments(case, generation)
        if absent:
            return self.nodata(f"{PLUGIN} {self.name}: the case has no {', '.join(absent)} "
                               f"(azure's {self.library_class} needs {', '.join(self.inputs)})", details)
        if ctx.load_model is None or ctx.generate is None:
            raise RuntimeError("azure evaluators need gatekeeper's runner (EvalContext.generate)")
        spec = self.judge_spec(ctx)
        judge = ctx.load_model(spec)
        details["judge"] = {"spec": redacted(spec), "provider": judge.identity.provider,
                            "name": judge.identity.name, "digest": judge.identity.digest}
        call = JudgeCall(ctx=ctx, judge=judge, spec=spec, case=case)
        token = CURRENT.set(call)
        try:
            result = await self.evaluate(self.routed_evaluator(spec), args)
        except JudgeUnavailable as exc:
            self._calls(details, call)
            return self.nodata(f"{PLUGIN} {self.name}: {exc}", details, status="error")
        except Exception as exc:  # azure's own failure: NODATA with its message
            self._calls(details, call)
            return self.nodata(f"{PLUGIN} {self.name} ({self.library_class}) failed: {type(exc).__name__}: {exc}",
                               details)
        finally:
            CURRENT.reset(token)
        self._calls(details, call)
        return self.interpret(result, details)

    def routed_evaluator(self, spec: ModelSpec) -> Any:
        """azure's evaluator for this judge, built once (loading its prompty) and routed; the
        judge call's context travels in a context variable, so concurrent cases share it."""
        cache: dict[str, Any] = self.__dict__.setdefault("_azure", {})
        key = str(spec)
        if key not in cache:
            cache[key] = install(self.construct(model_config=model_configuration(spec),
                                                threshold=self.params.native_threshold))
        return cache[key]

    @staticmethod
    def _calls(details: dict[str, Any], call: JudgeCall) -> None:
        details["judge_calls"] = len(call.exchanges)
        details["judge_cache_hits"] = sum(1 for e in call.exchanges if e["cached"])
        details["judge_cost"] = call.cost
        details["exchanges"] = call.exchanges

    def native(self, result: dict[str, Any], details: dict[str, Any]) -> float | None:
        key = self.result_key
        details["library_result"] = {k: v for k, v in result.items() if not k.endswith(("_prompt_tokens",))}
        details["reason"] = result.get(f"{key}_reason")
        details["library_threshold"] = result.get(f"{key}_threshold")
        details["library_passed"] = result.get(f"{key}_result")
        score = _number(result.get(key))
        details["library_score"] = score
        return score

    def interpret(self, result: dict[str, Any], details: dict[str, Any]) -> Score:
        score = self.native(result, details)
        reason = str(details.get("reason") or "")
        if score is None:
            return self.nodata(f"{PLUGIN} {self.name}: azure returned no score ({result.get(self.result_key)!r})"
                               + (f": {reason}" if reason else ""), details)
        value = (score - 1.0) / 4.0
        return self.result(value, reason=reason, passed=score >= self.params.native_threshold, details=details)


class Groundedness(Judged):
    name = "azure_groundedness"
    description = "azure GroundednessEvaluator: is the response supported by the context (1..5 -> 0..1)"
    library_class = "GroundednessEvaluator"
    result_key = "groundedness"
    inputs = ("query", "response", "context")


class Relevance(Judged):
    name = "azure_relevance"
    description = "azure RelevanceEvaluator: does the response address the query (1..5 -> 0..1)"
    library_class = "RelevanceEvaluator"
    result_key = "relevance"
    inputs = ("query", "response")


class Coherence(Judged):
    name = "azure_coherence"
    description = "azure CoherenceEvaluator: logical, orderly response (1..5 -> 0..1)"
    library_class = "CoherenceEvaluator"
    result_key = "coherence"
    inputs = ("query", "response")


class Fluency(Judged):
    name = "azure_fluency"
    description = "azure FluencyEvaluator: well-formed language (1..5 -> 0..1)"
    library_class = "FluencyEvaluator"
    result_key = "fluency"
    inputs = ("response",)


class Similarity(Judged):
    name = "azure_similarity"
    description = "azure SimilarityEvaluator: equivalence with the expected answer (1..5 -> 0..1)"
    library_class = "SimilarityEvaluator"
    result_key = "similarity"
    inputs = ("query", "response", "ground_truth")


class Retrieval(Judged):
    name = "azure_retrieval"
    description = "azure RetrievalEvaluator: are the retrieved contexts relevant to the query (1..5 -> 0..1)"
    library_class = "RetrievalEvaluator"
    result_key = "retrieval"
    inputs = ("query", "context")


class GroundednessDetectorParams(JudgedParams):
    threshold: float | None = None
    support_threshold: int = Field(3, ge=1, le=5)
    """azure's threshold on its 1..5 groundedness: below it the response is hallucinated."""
    emit: Literal["verdict", "score"] = "verdict"
    """What ``value`` holds: the verdict (1.0 hallucinated / 0.0) or the score (5 − groundedness) / 4."""

    @property
    def native_threshold(self) -> float:
        return float(self.support_threshold)


class GroundednessDetector(Detector, Groundedness):
    """Groundedness as a hallucination detector. ``details["score"]`` (1 = hallucinated) is
    (5 − groundedness) / 4, flagged above ``details["threshold"]`` = (5 − support_threshold) / 4."""

    name = "azure_groundedness"
    description = "azure GroundednessEvaluator as a detector: hallucinated (1) below azure's threshold (3 of 5)"
    value_range = "0 (grounded) or 1 (hallucinated); details.support = (groundedness - 1) / 4"
    Params = GroundednessDetectorParams
    params: GroundednessDetectorParams

    def interpret(self, result: dict[str, Any], details: dict[str, Any]) -> Score:
        score = self.native(result, details)
        reason = str(details.get("reason") or "")
        if score is None:
            return self.nodata(f"{PLUGIN} {self.name}: azure returned no score ({result.get(self.result_key)!r})"
                               + (f": {reason}" if reason else ""), details)
        details["support"] = (score - 1.0) / 4.0
        hallucinated = score < self.params.native_threshold
        hallucination = min(max((5.0 - score) / 4.0, 0.0), 1.0)
        details |= {"score": hallucination, "threshold": (5.0 - self.params.native_threshold) / 4.0,
                    "flagged": hallucinated}
        value = hallucination if self.params.emit == "score" else (1.0 if hallucinated else 0.0)
        return Score(metric=self.metric, value=value, passed=not hallucinated, reason=reason, details=details)


# --------------------------------------------------------------------------- text overlap


class OverlapParams(ScoringParams):
    threshold: float | None = 0.5
    """azure's default threshold for these scores."""


class Overlap(AzureBase):
    """A text-overlap evaluator (no judge): azure's 0..1 score against the expected answer."""

    value_range = "0..1, higher is better (azure's score)"
    inputs = ("response", "ground_truth")
    nltk_resources: ClassVar[tuple[str, ...]] = ()
    Params = OverlapParams
    params: OverlapParams

    def __init__(self, params: ScoringParams, *, metric: str | None = None) -> None:
        super().__init__(params, metric=metric)
        # Checked when the suite loads, so azure never falls back to downloading.
        require(self.nltk_resources, f"{PLUGIN} {self.name}")
        self.warm_up()

    def warm_up(self) -> None:
        """Load what the first score would load, before the runner's event loop starts."""

    def options(self) -> dict[str, Any]:
        return {"threshold": self.params.threshold if self.params.threshold is not None else 0.5}

    def score(self, case: Case, generation: Generation) -> Score:
        raise NotImplementedError  # ascore only: azure's evaluators are async underneath

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        details = self.base_details()
        args, absent = self.arguments(case, generation)
        if absent:
            return self.nodata(f"{PLUGIN} {self.name}: the case has no {', '.join(absent)} "
                               f"(azure's {self.library_class} needs {', '.join(self.inputs)})", details)
        require(self.nltk_resources, f"{PLUGIN} {self.name}", root=ctx.config.root)
        try:
            result = await self.evaluate(self.construct(**self.options()), args)
        except Exception as exc:
            return self.nodata(f"{PLUGIN} {self.name} ({self.library_class}) failed: {type(exc).__name__}: {exc}",
                               details)
        details["library_result"] = result
        raw, passed = self.extract(result)
        score = _number(raw)
        if score is None:
            return self.nodata(f"{PLUGIN} {self.name}: azure returned no score ({raw!r})", details)
        return self.result(score, passed=None if passed is None else passed == "pass", details=details)

    def extract(self, result: dict[str, Any]) -> tuple[Any, Any]:
        """azure's score and its pass/fail verdict."""
        return result.get(self.result_key), result.get(f"{self.result_key}_result")


# azure's nltk_tokenize checks (and would download) all four before tokenizing anything.


class F1(Overlap):
    name = "azure_f1"
    description = "azure F1ScoreEvaluator: token F1 of the response against the expected answer"
    library_class = "F1ScoreEvaluator"
    result_key = "f1_score"


class Bleu(Overlap):
    name = "azure_bleu"
    description = "azure BleuScoreEvaluator: sentence BLEU-4 (NLTK tokens, smoothing method 4)"
    library_class = "BleuScoreEvaluator"
    result_key = "bleu_score"
    nltk_resources = TOKENIZER_DATA


class Gleu(Overlap):
    name = "azure_gleu"
    description = "azure GleuScoreEvaluator: sentence GLEU (NLTK tokens)"
    library_class = "GleuScoreEvaluator"
    result_key = "gleu_score"
    nltk_resources = TOKENIZER_DATA


class MeteorParams(OverlapParams):
    alpha: float = Field(0.9, ge=0, le=1)
    beta: float = Field(3.0, ge=0)
    gamma: float = Field(0.5, ge=0, le=1)


class Meteor(Overlap):
    name = "azure_meteor"
    description = "azure MeteorScoreEvaluator: METEOR with WordNet synonyms (NLTK)"
    library_class = "MeteorScoreEvaluator"
    result_key = "meteor_score"
    nltk_resources = TOKENIZER_DATA
    Params = MeteorParams
    params: MeteorParams

    def warm_up(self) -> None:
        """WordNet takes seconds to load (on first use, inside azure's call): load it now."""
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()

    def options(self) -> dict[str, Any]:
        p = self.params
        return {"alpha": p.alpha, "beta": p.beta, "gamma": p.gamma, **super().options()}


class RougeParams(OverlapParams):
    rouge_type: Literal["rouge1", "rouge2", "rouge3", "rouge4", "rouge5", "rougeL"] = "rougeL"
    measure: Literal["f1_score", "precision", "recall"] = "f1_score"
    """Which of azure's three ROUGE numbers is the value."""


class Rouge(Overlap):
    name = "azure_rouge"
    description = "azure RougeScoreEvaluator: ROUGE F1 (or precision/recall) against the expected answer"
    library_class = "RougeScoreEvaluator"
    result_key = "rouge"
    Params = RougeParams
    params: RougeParams

    def options(self) -> dict[str, Any]:
        rouge_type = _library.azure_eval().RougeType(self.params.rouge_type)
        t = self.params.threshold if self.params.threshold is not None else 0.5
        return {"rouge_type": rouge_type, "precision_threshold": t, "recall_threshold": t, "f1_score_threshold": t}

    def extract(self, result: dict[str, Any]) -> tuple[Any, Any]:
        props = result.get("rouge_properties") or {}
        measure = f"rouge_{self.params.measure}"
        return props.get(measure), props.get(f"{measure}_result")


# --------------------------------------------------------------------------- refused offline


class RefusedParams(ScoringParams):
    """Any parameter: the evaluator is refused whatever it is given."""

    model_config = {"extra": "allow"}

    @model_validator(mode="after")
    def _refuse(self) -> RefusedParams:
        raise ValueError(
            "azure-eval: this evaluator is scored by the Azure AI Foundry safety service, not by a judge model: "
            "it needs an Azure AI project (azure_ai_project endpoint), an Azure credential and network access "
            "to that service, none of which gatekeeper sends data to; it is refused offline. Use a judge-based "
            "metric (rubric, deepeval_toxicity, deepeval_bias) instead"
        )


def _refused(evaluator: str, library_class: str) -> type[Evaluator]:
    return type(f"Refused{library_class}", (Evaluator,), {
        "__module__": __name__, "name": evaluator, "library_class": library_class, "Params": RefusedParams,
        "description": f"azure {library_class}: needs an Azure AI project (refused offline)",
        "__doc__": "Refused when the suite loads (see RefusedParams).",
    })


REFUSED = tuple(_refused(name, cls) for name, cls in (
    ("azure_content_safety", "ContentSafetyEvaluator"), ("azure_violence", "ViolenceEvaluator"),
    ("azure_sexual", "SexualEvaluator"), ("azure_self_harm", "SelfHarmEvaluator"),
    ("azure_hate_unfairness", "HateUnfairnessEvaluator"), ("azure_protected_material", "ProtectedMaterialEvaluator"),
    ("azure_indirect_attack", "IndirectAttackEvaluator"), ("azure_groundedness_pro", "GroundednessProEvaluator"),
    ("azure_ungrounded_attributes", "UngroundedAttributesEvaluator"),
    ("azure_code_vulnerability", "CodeVulnerabilityEvaluator"),
))
# Module attributes, so the plugin can register each by import path (``...evaluators:RefusedSexualEvaluator``).
globals().update({cls.__name__: cls for cls in REFUSED})

EVALUATORS: tuple[type[Evaluator], ...] = (
    Groundedness, Relevance, Coherence, Fluency, Similarity, Retrieval, F1, Bleu, Gleu, Meteor, Rouge, *REFUSED,
)
DETECTORS: tuple[type[Detector], ...] = (GroundednessDetector,)
