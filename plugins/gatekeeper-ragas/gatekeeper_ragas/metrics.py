"""The ragas metrics this plugin offers: what each needs from a case, its native scale and
direction, the options it takes, and how its ragas object is built and asked.

The table is plain data (no ragas import), so the plugin registers at start-up without
loading ragas; :func:`build` imports ragas when a metric is first used. docs/ecosystem.md
renders the same table for users.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gatekeeper_ragas.library import require

Input = Literal["user_input", "response", "reference", "retrieved_contexts", "reference_contexts"]


class Options(BaseModel):
    """A metric's own options (none by default); unknown options are errors."""

    model_config = ConfigDict(extra="forbid")


class RelevancyOptions(Options):
    strictness: int = Field(3, ge=1, le=10)
    """How many questions the judge writes back from the answer (one judge call each)."""


class FactualOptions(Options):
    mode: Literal["precision", "recall", "f1"] = "f1"
    beta: float = Field(1.0, gt=0)
    atomicity: Literal["low", "high"] = "low"
    coverage: Literal["low", "high"] = "low"


class NoiseOptions(Options):
    mode: Literal["relevant", "irrelevant"] = "relevant"


class SacrebleuOptions(Options):
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Passed to sacrebleu's ``corpus_bleu`` / ``corpus_chrf`` by ragas."""


class RougeOptions(Options):
    rouge_type: Literal["rouge1", "rougeL"] = "rougeL"
    mode: Literal["fmeasure", "precision", "recall"] = "fmeasure"


Distance = Literal["levenshtein", "hamming", "jaro", "jaro_winkler"]


class SimilarityOptions(Options):
    distance_measure: Distance = "levenshtein"


class ContextMatchOptions(Options):
    distance_measure: Distance = "levenshtein"
    match_threshold: float = Field(0.5, ge=0, le=1)
    """ragas' ``threshold``: the string similarity at which two contexts count as the same."""


@dataclass(frozen=True)
class MetricInfo:
    """One ragas metric as gatekeeper sees it."""

    name: str  # the gatekeeper name, without the ``ragas_`` prefix
    ragas_class: str  # module:Class
    inputs: tuple[Input, ...]
    native: str  # the native scale and direction, as documented
    options: type[Options] = Options
    judge: bool = False
    embeddings: bool = False
    lower_is_better: bool = False
    legacy: bool = False  # a ragas.metrics (pre-collections) metric, scored with single_turn_ascore
    default_threshold: float | None = None
    judge_calls: str = "0"  # judge calls per case, for the docs and the benchmark

    @property
    def metric(self) -> str:
        return f"ragas_{self.name}"


COLLECTIONS = "ragas.metrics.collections"

METRICS: dict[str, MetricInfo] = {m.name: m for m in (
    MetricInfo("faithfulness", f"{COLLECTIONS}:Faithfulness", ("user_input", "response", "retrieved_contexts"),
               "0..1, share of the answer's claims the context supports; higher is better",
               judge=True, default_threshold=0.5, judge_calls="2"),
    MetricInfo("response_relevancy", f"{COLLECTIONS}:AnswerRelevancy", ("user_input", "response"),
               "0..1 (cosine, can dip below 0), mean similarity of questions written back from the answer to the "
               "question; 0 when every answer is noncommittal; higher is better",
               options=RelevancyOptions, judge=True, embeddings=True, default_threshold=0.5,
               judge_calls="strictness (3)"),
    MetricInfo("context_precision", f"{COLLECTIONS}:ContextPrecisionWithReference",
               ("user_input", "reference", "retrieved_contexts"),
               "0..1, average precision of the useful contexts in retrieval order; higher is better",
               judge=True, default_threshold=0.5, judge_calls="one per context"),
    MetricInfo("context_recall", f"{COLLECTIONS}:ContextRecall", ("user_input", "retrieved_contexts", "reference"),
               "0..1, share of the reference's statements the contexts support; higher is better",
               judge=True, default_threshold=0.5, judge_calls="1"),
    MetricInfo("factual_correctness", f"{COLLECTIONS}:FactualCorrectness", ("response", "reference"),
               "0..1 (2 decimals), claim precision/recall/F-beta of the answer against the reference; higher is better",
               options=FactualOptions, judge=True, default_threshold=0.5, judge_calls="4 (f1), 2 (precision/recall)"),
    MetricInfo("noise_sensitivity", f"{COLLECTIONS}:NoiseSensitivity",
               ("user_input", "response", "reference", "retrieved_contexts"),
               "0..1, share of the answer's claims that are wrong yet drawn from a (relevant or irrelevant) "
               "context; LOWER is better", options=NoiseOptions, judge=True, lower_is_better=True,
               default_threshold=0.5, judge_calls="3 + 2 per context"),
    MetricInfo("bleu", f"{COLLECTIONS}:BleuScore", ("reference", "response"),
               "0..1, sacrebleu's corpus BLEU of the one pair / 100; higher is better", options=SacrebleuOptions),
    MetricInfo("chrf", f"{COLLECTIONS}:CHRFScore", ("reference", "response"),
               "0..1, sacrebleu's chrF / 100; higher is better", options=SacrebleuOptions),
    MetricInfo("rouge", f"{COLLECTIONS}:RougeScore", ("reference", "response"),
               "0..1, rouge_score's ROUGE-1 or ROUGE-L (F1, precision or recall); higher is better",
               options=RougeOptions),
    MetricInfo("exact_match", f"{COLLECTIONS}:ExactMatch", ("reference", "response"),
               "0 or 1, the answer equals the reference exactly", default_threshold=1.0),
    MetricInfo("string_presence", f"{COLLECTIONS}:StringPresence", ("reference", "response"),
               "0 or 1, the reference occurs in the answer", default_threshold=1.0),
    MetricInfo("string_similarity", f"{COLLECTIONS}:NonLLMStringSimilarity", ("reference", "response"),
               "0..1, 1 - normalised edit distance (or Jaro similarity); higher is better",
               options=SimilarityOptions),
    MetricInfo("nonllm_context_precision", "ragas.metrics._context_precision:NonLLMContextPrecisionWithReference",
               ("retrieved_contexts", "reference_contexts"),
               "0..1, average precision of retrieved contexts that match a reference context by string "
               "similarity; higher is better", options=ContextMatchOptions, legacy=True),
    MetricInfo("nonllm_context_recall", "ragas.metrics._context_recall:NonLLMContextRecall",
               ("retrieved_contexts", "reference_contexts"),
               "0..1, share of reference contexts matched by a retrieved context; higher is better",
               options=ContextMatchOptions, legacy=True),
)}


def unknown_metric(name: str) -> str:
    return f"gatekeeper-ragas has no metric {name!r} (known: {', '.join(sorted(METRICS))})"


def _distance(ragas_string: Any, name: str) -> Any:
    return ragas_string.DistanceMeasure[name.upper()]


def build(info: MetricInfo, options: Options, *, llm: Any = None, embeddings: Any = None) -> Any:
    """The ragas metric object for ``info`` with ``options`` (imports ragas)."""
    module_name, _, class_name = info.ragas_class.partition(":")
    cls: Callable[..., Any] = getattr(require(module_name, info.metric), class_name)
    kwargs: dict[str, Any] = {}
    if info.judge:
        kwargs["llm"] = llm
    if info.embeddings:
        kwargs["embeddings"] = embeddings
    values = options.model_dump()
    if isinstance(options, ContextMatchOptions):
        string = require("ragas.metrics._string", info.metric)
        similarity = string.NonLLMStringSimilarity(distance_measure=_distance(string, options.distance_measure))
        if info.name == "nonllm_context_precision":
            return cls(distance_measure=similarity, threshold=options.match_threshold)
        metric = cls(threshold=options.match_threshold)
        metric.distance_measure = _distance(string, options.distance_measure)
        return metric
    if isinstance(options, SimilarityOptions):
        string = require(COLLECTIONS, info.metric)
        values["distance_measure"] = _distance(string, options.distance_measure)
    if info.name == "rouge":
        require("rouge_score", info.metric)  # ragas imports it only when scoring
    return cls(**kwargs, **values)
