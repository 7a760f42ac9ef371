"""The ``nli_grounding`` detector: each claim scored by an NLI cross-encoder against its evidence.

A natural-language-inference model reads a (premise, hypothesis) pair and gives the
probabilities that the premise entails, contradicts or is neutral to the hypothesis. Here
the hypothesis is one claim of the answer (:func:`gatekeeper.claims.split_claims`; a short
answer is read with its question) and the premises are the claim's best context windows
(:func:`gatekeeper.claims.retrieve`, BM25) — the same claims and evidence the built-in
``claim_verification`` judge sees. The window with the highest entailment minus
contradiction is the claim's evidence (SummaC-ZS, Laban et al. 2022, over retrieved windows).

A claim's score is ``1 − p(entailment)`` (``score: non_entailment``) or ``p(contradiction)``
(``score: contradiction``) at its evidence; the answer's value is the max (or mean) over its
claims, a probability-like score with 1 = hallucinated.

The model is any transformers sequence-classification NLI model in a local directory, or
inside an installed package (``package:NAME/SUBDIR``); nothing is downloaded. Its labels are
read from ``config.json``'s ``id2label`` (entailment / neutral / contradiction, or
entailment / not_entailment), or given with ``labels:`` when the config has generic names.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from gatekeeper.claims import Claim, Evidence, context_windows, retrieve, split_claims
from gatekeeper.kinds import Detector, EvalContext, ScoringParams
from gatekeeper.types import Case, Generation, Score, Span, UsageError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PACKAGE_PREFIX = "package:"
KNOWN = ("entailment", "neutral", "contradiction", "not_entailment")
_SYNONYMS = {
    "entailment": "entailment", "entailed": "entailment", "entails": "entailment",
    "neutral": "neutral",
    "contradiction": "contradiction", "contradicted": "contradiction", "contradicts": "contradiction",
    "not_entailment": "not_entailment", "non_entailment": "not_entailment", "not_entailed": "not_entailment",
}
_MODELS: OrderedDict[tuple[str, str], NLIModel] = OrderedDict()
_MODELS_LOCK = threading.Lock()
_KEEP_MODELS = 2


# --------------------------------------------------------------------------- the model


def resolve_model_dir(spec: str, root: Path | None = None) -> Path:
    """The directory ``spec`` names: ``package:NAME[/SUBDIR]`` inside an installed package,
    else a path (relative to ``root``, default the working directory). Raises ``ValueError``
    with what is wrong and how to fix it."""
    if spec.startswith(PACKAGE_PREFIX):
        name, _, sub = spec.removeprefix(PACKAGE_PREFIX).partition("/")
        found = importlib.util.find_spec(name) if name.isidentifier() else None
        locations = list(found.submodule_search_locations or []) if found else []
        if not locations:
            raise ValueError(f"no installed package {name!r} holds the NLI model {spec!r} (pip install it)")
        directory = Path(locations[0]) / sub
    else:
        directory = Path(spec).expanduser()
        if not directory.is_absolute():
            directory = (root or Path.cwd()) / directory
    if not (directory / "config.json").is_file():
        what = "does not exist" if not directory.exists() else "has no config.json"
        raise ValueError(
            f"NLI model directory {str(directory)!r} {what}: give a local transformers sequence-classification "
            "model (config.json, weights, tokenizer), e.g. one saved from cross-encoder/nli-deberta-v3-xsmall; "
            "nothing is downloaded at run time"
        )
    return directory


def label_indices(id2label: dict[Any, Any], override: dict[str, int] | None = None) -> dict[str, int]:
    """Label name → output index, from ``config.json``'s ``id2label`` (or ``override``).
    Needs an entailment label, and a contradiction or not_entailment one."""
    if override:
        found = dict(override)
    else:
        found = {}
        for index, name in id2label.items():
            key = _SYNONYMS.get(str(name).strip().lower().replace("-", "_").replace(" ", "_"))
            if key is not None:
                found[key] = int(index)
    if "entailment" not in found or not ({"contradiction", "not_entailment"} & set(found)):
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(id2label.items(), key=lambda kv: int(kv[0])))
        raise ValueError(
            f"cannot tell the NLI labels from config.json id2label {{{shown}}}: it needs an entailment label and "
            "a contradiction (or not_entailment) label; give them with labels: {entailment: I, neutral: J, "
            "contradiction: K}"
        )
    n = len(id2label)
    bad = [f"{k}={v}" for k, v in found.items() if not 0 <= v < n]
    if bad:
        raise ValueError(f"labels: index out of range for a model with {n} outputs: {', '.join(bad)}")
    return found


def read_config(directory: Path) -> dict[str, Any]:
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {directory / 'config.json'}: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{directory / 'config.json'} is not a JSON object")
    return config


class NLIModel:
    """A cross-encoder NLI model on one device: ``predict(pairs)`` gives label probabilities."""

    def __init__(self, directory: Path, labels: dict[str, int], device: str) -> None:
        from gatekeeper_hf.loading import quiet_transformers

        quiet_transformers()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.directory = directory
        self.labels = labels
        self.device = device
        try:
            self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            loaded = AutoModelForSequenceClassification.from_pretrained(directory, local_files_only=True)
        except Exception as exc:
            raise UsageError(f"cannot load the NLI model {directory}: {type(exc).__name__}: {exc}",
                             field="model") from None
        movable: Any = loaded  # transformers' decorated .to() confuses mypy
        self.model: PreTrainedModel = movable.to(device).eval()
        self.id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        self._lock = threading.Lock()

    def predict(self, pairs: list[tuple[str, str]], *, batch_size: int, max_length: int) -> list[dict[str, float]]:
        """For each (premise, hypothesis): p(entailment), p(contradiction), p(neutral) — the
        last two from ``not_entailment`` when the model has only two labels (contradiction 0)."""
        import torch

        out: list[dict[str, float]] = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start : start + batch_size]
                batch = self.tokenizer(
                    [p for p, _ in chunk], [h for _, h in chunk], padding=True, truncation="only_first",
                    max_length=max_length, return_tensors="pt",
                ).to(self.device)
                probs = torch.softmax(self.model(**batch).logits.float(), dim=-1).cpu().tolist()
                out.extend(self._named(row) for row in probs)
        return out

    def _named(self, row: list[float]) -> dict[str, float]:
        entail = row[self.labels["entailment"]]
        if "contradiction" in self.labels:
            contra = row[self.labels["contradiction"]]
            neutral = row[self.labels["neutral"]] if "neutral" in self.labels else max(0.0, 1 - entail - contra)
        else:
            contra, neutral = 0.0, row[self.labels["not_entailment"]]
        return {"entailment": entail, "contradiction": contra, "neutral": neutral}


def get_model(directory: Path, labels: dict[str, int], device: str) -> NLIModel:
    """The loaded model for (directory, device), kept for the process (the last two used)."""
    key = (str(directory.resolve()), device)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None or model.labels != labels:
            model = NLIModel(directory, labels, device)
            _MODELS[key] = model
        _MODELS.move_to_end(key)
        while len(_MODELS) > _KEEP_MODELS:
            _MODELS.popitem(last=False)
        return model


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------- the detector


class NLIGroundingParams(ScoringParams):
    threshold: float | None = Field(0.5, ge=0, le=1)
    """Flag the output when its score (the claims' non-entailment or contradiction) is above this."""
    emit: Literal["verdict", "score"] = "verdict"
    """What ``value`` holds: the verdict (1.0 flagged / 0.0; the mean is the hallucination rate)
    or the score itself."""
    model: str = Field(min_length=1)
    """A local transformers NLI model directory (relative to the project root), or
    ``package:NAME/SUBDIR`` for weights inside an installed package."""
    labels: dict[str, int] | None = None
    """Label → output index, when config.json's id2label has generic names (LABEL_0, ...)."""
    score: Literal["non_entailment", "contradiction"] = "non_entailment"
    """A claim's score: 1 − p(entailment), or p(contradiction) (neutral claims then pass)."""
    aggregate: Literal["max", "mean"] = "max"
    """Over the claims: the worst one, or the mean."""
    evidence: int = Field(3, ge=1, le=20)
    """Context windows retrieved (BM25) and scored per claim."""
    window: int = Field(2, ge=1, le=10)
    """Sentences per context window (each sentence, and each run of this many)."""
    max_claims: int = Field(30, ge=1, le=200)
    max_length: int = Field(512, ge=16, le=4096)
    """Tokens per (premise, claim) pair; the premise is cut first."""
    batch_size: int = Field(16, ge=1, le=512)
    device: Literal["cpu", "cuda"] | None = None
    """Default: cuda when torch sees one, else cpu."""

    @field_validator("labels")
    @classmethod
    def _known_labels(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is not None:
            unknown = sorted(set(value) - set(KNOWN))
            if unknown:
                raise ValueError(f"unknown label(s) {', '.join(unknown)}: use {', '.join(KNOWN)}")
        return value

    @model_validator(mode="after")
    def _model_is_usable(self) -> NLIGroundingParams:
        # Checked when the suite loads (exit 4 naming the file and line), not at the first case.
        directory = resolve_model_dir(self.model)
        labels = label_indices(read_config(directory).get("id2label") or {}, self.labels)
        if self.score == "contradiction" and "contradiction" not in labels:
            raise ValueError("score: contradiction needs a model with a contradiction label (this one has "
                             "entailment / not_entailment): use score: non_entailment")
        return self


@dataclass
class ClaimScore:
    claim: Claim
    statement: str
    evidence: Evidence
    probs: dict[str, float]
    score: float

    @property
    def label(self) -> str:
        return max(self.probs, key=lambda k: self.probs[k])


class NLIGrounding(Detector):
    """Each claim of the output scored against its best evidence window by an NLI model."""

    name = "nli_grounding"
    description = "each claim scored by an NLI cross-encoder against its best context windows (local model)"
    value_range = ("1 flagged / 0 (emit: verdict), or the score: the claims' non-entailment (or contradiction) "
                   "probability; lower is better")
    Params = NLIGroundingParams
    params: NLIGroundingParams

    def score(self, case: Case, generation: Generation) -> Score:
        return self._score(case, generation, None)

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        root = ctx.config.root if ctx.config is not None else None
        return await asyncio.to_thread(self._score, case, generation, root)

    def _score(self, case: Case, generation: Generation, root: Path | None) -> Score:
        if not case.context or not case.context.strip():
            return self.result(None, reason="the case has no context to check the output against")
        p = self.params
        directory = resolve_model_dir(p.model, root)
        model = get_model(directory, label_indices(read_config(directory).get("id2label") or {}, p.labels),
                          p.device or default_device())
        claims = split_claims(generation.text, max_claims=p.max_claims)
        provenance = {"model": {"path": str(directory), "labels": model.id2label}, "claim_score": p.score}
        if not claims:
            return self.emit(0.0, reason="grounded: the output makes no factual claims",
                             details={**provenance, "faithfulness": 1.0, "claims": [], "unsupported": [],
                                      "contradicted": []})
        question = case.question or ""
        windows = context_windows(case.context, p.window)
        plans = []
        for claim in claims:
            statement = claim.statement(question)
            found = retrieve(statement, windows, p.evidence, related=question) or [
                Evidence(case.context, 0, len(case.context), 0.0)]
            plans.append((claim, statement, found))
        pairs = [(e.text, statement) for _, statement, found in plans for e in found]
        probs = model.predict(pairs, batch_size=p.batch_size, max_length=p.max_length)
        scored: list[ClaimScore] = []
        at = 0
        for claim, statement, found in plans:
            rows = probs[at : at + len(found)]
            at += len(found)
            best = max(range(len(found)), key=lambda i: (rows[i]["entailment"] - rows[i]["contradiction"], -i))
            chosen = rows[best]
            value = 1 - chosen["entailment"] if p.score == "non_entailment" else chosen["contradiction"]
            scored.append(ClaimScore(claim, statement, found[best], chosen, value))
        return self.verdict(scored, provenance)

    def verdict(self, scored: list[ClaimScore], provenance: dict[str, Any]) -> Score:
        p = self.params
        cut = p.threshold if p.threshold is not None else 0.5
        values = [c.score for c in scored]
        value = max(values) if p.aggregate == "max" else sum(values) / len(values)
        rows, spans = [], []
        for c in scored:
            rows.append({
                "text": c.claim.text, "start": c.claim.start, "end": c.claim.end, "hypothesis": c.statement,
                "label": c.label, "score": round(c.score, 6),
                **{f"p_{k}": round(v, 6) for k, v in c.probs.items()},
                "evidence": {"text": c.evidence.text, "start": c.evidence.start, "end": c.evidence.end,
                             "bm25": c.evidence.score},
            })
            if c.score > cut and c.claim.start is not None and c.claim.end is not None:
                spans.append(Span(c.claim.text, c.claim.start, c.claim.end, "claim",
                                  f"{c.label} (p_entailment {c.probs['entailment']:.2f}) against "
                                  f"{_preview(c.evidence.text)!r}"))
        unsupported = [c.claim.text for c in scored if c.score > cut]
        contradicted = [c.claim.text for c in scored if c.label == "contradiction"]
        details = {**provenance, "faithfulness": 1 - len(unsupported) / len(scored),
                   "support": 1 - len(unsupported) / len(scored), "claims": rows,
                   "unsupported": unsupported, "contradicted": contradicted}
        listing = "; ".join(repr(c) for c in unsupported[:3]) + (" …" if len(unsupported) > 3 else "")
        counts = f"{len(unsupported)} of {len(scored)} claims not entailed ({len(contradicted)} contradicted)"
        if p.threshold is not None and value > p.threshold:
            reason = f"hallucinated ({value:.2f} > {p.threshold:g}): {counts}: {listing}"
        elif p.threshold is None:
            reason = f"score {value:.2f}: {counts}" + (f": {listing}" if unsupported else "")
        elif unsupported:
            reason = f"grounded ({value:.2f}): {counts}: {listing}"
        else:
            reason = f"grounded ({value:.2f}): all {len(scored)} claims entailed by their evidence"
        return self.emit(value, reason=reason, spans=spans, details=details)

    def emit(self, score: float, *, reason: str, spans: list[Span] | None = None,
             details: dict[str, Any] | None = None) -> Score:
        """The score convention of every gatekeeper detector: ``details`` has ``score``,
        ``threshold`` and ``flagged`` (score > threshold); ``value`` is the verdict (1.0 / 0.0)
        or, with ``emit: score`` or no threshold, the score."""
        score = min(max(float(score), 0.0), 1.0)
        threshold = self.params.threshold
        flagged = None if threshold is None else score > threshold
        details = {**(details or {}), "score": round(score, 6), "threshold": threshold, "flagged": flagged}
        value = score if flagged is None or self.params.emit == "score" else float(flagged)
        return self.result(value, reason=reason, passed=None if flagged is None else not flagged, spans=spans,
                           details=details)


def _preview(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
