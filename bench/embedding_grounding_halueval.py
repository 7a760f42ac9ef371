"""Precision, recall and F1 of hallucination detectors on HaluEval QA (600 labelled pairs).

Each row of ``halueval-qa-dev.jsonl`` gives two cases with the same question and
knowledge: ``right_answer`` (grounded, label 0) and ``hallucinated_answer`` (label 1).
The positive class is "hallucinated". Runs gatekeeper-hf's ``embedding_grounding`` (its
defaults and two other settings) and, when it exists, the built-in ``grounding`` detector,
in the same run. When ``bench/grounding_halueval.py`` is there, every setting also runs on
its paraphrase probe (16 contexts, each with a faithful paraphrased answer and one with a
changed claim): HaluEval's right answers are short spans copied from the knowledge, so the
probe shows what a setting costs on answers that paraphrase, as a model's do.

    .venv/bin/python bench/embedding_grounding_halueval.py [--data PATH] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "halueval-qa-dev.jsonl"


def load_cases(path: Path, limit: int | None) -> list[tuple[Any, int]]:
    """(case, label) pairs: label 1 for the hallucinated answer."""
    from gatekeeper.types import Case

    pairs = []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for i, line in enumerate(lines[:limit]):
        row = json.loads(line)
        for label, answer in ((0, row["right_answer"]), (1, row["hallucinated_answer"])):
            case = Case(
                id=f"{i}-{label}",
                suite="halueval-qa",
                messages=({"role": "user", "content": row["question"]},),
                vars={"question": row["question"], "answer": answer},
                context=row["knowledge"],
                source=f"{path}:{i + 1}",
            )
            pairs.append((case, label))
    return pairs


SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("embedding_grounding (default)", {}),
    ("  names+numbers+meaning only", {"max_unsupported_fraction": 1.0}),
    ("  every new word", {"max_unsupported_fraction": 0.0}),
    ("  half of the new words", {"max_unsupported_fraction": 0.5}),
]


def detectors() -> dict[str, Any]:
    """label → detector instance: ours in several settings, and the built-in one if present."""
    from gatekeeper_hf.scoring import EmbeddingGrounding

    found: dict[str, Any] = {
        label: EmbeddingGrounding(EmbeddingGrounding.Params(**params)) for label, params in SETTINGS
    }
    try:
        from gatekeeper.builtin.scoring import grounding
    except ImportError:
        print("built-in grounding detector: gatekeeper/builtin/grounding.py not present, skipped")
        return found
    from gatekeeper.kinds import Detector

    for value in vars(grounding).values():
        if isinstance(value, type) and issubclass(value, Detector) and getattr(value, "name", "") == "grounding":
            found["grounding (built-in)"] = value(value.Params())
    return found


def probe_cases() -> list[tuple[Any, int]]:
    """The paraphrase probe of bench/grounding_halueval.py as (case, label) pairs, if present."""
    from gatekeeper.types import Case

    try:
        from grounding_halueval import PARAPHRASE_PROBE
    except ImportError:
        return []
    pairs = []
    for i, (context, question, faithful, changed) in enumerate(PARAPHRASE_PROBE, 1):
        for label, answer in ((0, faithful), (1, changed)):
            case = Case(id=f"probe-{i}-{label}", suite="probe", messages=({"role": "user", "content": question},),
                        vars={"question": question, "answer": answer}, context=context)
            pairs.append((case, label))
    return pairs


def measure(detector: Any, pairs: list[tuple[Any, int]]) -> dict[str, Any]:
    """Confusion counts, precision/recall/F1 of the hallucinated class, and time per case."""
    from gatekeeper.kinds import EvalContext
    from gatekeeper.types import Config, Generation

    ctx = EvalContext(config=Config())
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0, "nodata": 0}
    started = time.perf_counter()
    for case, label in pairs:
        score = asyncio.run(detector.ascore(case, Generation(text=case.vars["answer"]), ctx))
        if score.value is None:
            counts["nodata"] += 1
            continue
        flagged = score.value >= 0.5
        counts[("tp" if label else "fp") if flagged else ("fn" if label else "tn")] += 1
    elapsed = time.perf_counter() - started
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = (tp + counts["tn"]) / max(len(pairs) - counts["nodata"], 1)
    return counts | {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy,
                     "ms_per_case": 1000 * elapsed / len(pairs)}


def sentence_only_auc(pairs: list[tuple[Any, int]]) -> float:
    """AUC of the plain sentence-embedding support (no word check), for the docs' ablation:
    how well the best context cosine of an answer's weakest sentence separates the classes."""
    from gatekeeper_hf.embeddings import context_windows, get_encoder, split_sentences
    from scipy.stats import mannwhitneyu

    encoder = get_encoder()
    grounded: list[float] = []
    hallucinated: list[float] = []
    for case, label in pairs:
        claims = [s.text for s in split_sentences(case.vars["answer"])] or [case.vars["answer"]]
        windows = context_windows(split_sentences(case.context)) or [case.context]
        support = float(encoder.similarity(claims, windows).max(dim=1).values.min())
        (hallucinated if label else grounded).append(support)
    statistic = mannwhitneyu(grounded, hallucinated).statistic
    return float(statistic) / (len(grounded) * len(hallucinated))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N rows")
    args = parser.parse_args()
    pairs = load_cases(args.data, args.limit)
    probe = probe_cases()
    print(f"data: {args.data} ({len(pairs)} labelled answers, positive = hallucinated); "
          f"paraphrase probe: {len(probe)} answers")
    print(f"{'detector':<32} {'precision':>9} {'recall':>7} {'F1':>6} {'accuracy':>8} "
          f"{'tp':>4} {'fp':>4} {'fn':>4} {'tn':>4} {'nodata':>6} {'ms/case':>8}  probe: false alarms, missed")
    for name, detector in detectors().items():
        m = measure(detector, pairs)
        line = (f"{name:<32} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>6.3f} {m['accuracy']:>8.3f} "
                f"{m['tp']:>4} {m['fp']:>4} {m['fn']:>4} {m['tn']:>4} {m['nodata']:>6} {m['ms_per_case']:>8.1f}")
        if probe:
            p = measure(detector, probe)
            line += f"  {p['fp']} of {p['fp'] + p['tn']}, {p['fn']} of {p['tp'] + p['fn']}"
        print(line, flush=True)
    auc = sentence_only_auc(pairs)
    print(f"ablation: sentence-embedding support alone, AUC(grounded > hallucinated) = {auc:.3f} "
          "(0.5 = chance; below 0.5 = inverted)")


if __name__ == "__main__":
    main()
