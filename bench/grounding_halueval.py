"""Precision, recall, F1 and accuracy of the ``grounding`` detector on HaluEval QA.

Each row of the HaluEval QA file gives a knowledge passage (the context), a question, a
right answer and a hallucinated answer: two labelled outputs per row, positive =
hallucinated. Every output goes through the real detector class, as a suite would run
it. The default parameters come first, then variations, so the choice of each default
is visible; the default is also scored on each half of the file to show how much the
figures move between samples.

    .venv/bin/python bench/grounding_halueval.py
    .venv/bin/python bench/grounding_halueval.py --data ../shared/data/halueval-qa-dev.jsonl --errors 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatekeeper.builtin.grounding import Grounding
from gatekeeper.types import Case, Generation

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "halueval-qa-dev.jsonl"

VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("default", {}),
    ("numbers + names only", {"check_words": False}),
    ("question not support", {"question_as_support": False}),
    ("max_unsupported_words=0", {"max_unsupported_words": 0}),
    ("max_unsupported_words=3", {"max_unsupported_words": 3}),
    ("word fraction 0.15", {"max_unsupported_word_fraction": 0.15}),
    ("word fraction 0.34", {"max_unsupported_word_fraction": 0.34}),
    ("word fraction 0.5", {"max_unsupported_word_fraction": 0.5}),
    ("prefix_match=0 (off)", {"prefix_match": 0}),
    ("prefix_match=5", {"prefix_match": 5}),
]


@dataclass(frozen=True)
class Example:
    case: Case
    output: str
    hallucinated: bool


@dataclass(frozen=True)
class Figures:
    n: int
    tp: int
    fp: int
    fn: int
    tn: int
    seconds: float

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.n if self.n else 0.0


def load_examples(path: Path) -> list[Example]:
    """Two labelled examples per HaluEval row: the right and the hallucinated answer."""
    examples = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            question = row["question"].strip()
            case = Case(
                id=f"halueval-{lineno}", suite="halueval-qa",
                messages=({"role": "user", "content": question},),
                vars={"input": question}, context=row["knowledge"],
            )
            examples.append(Example(case, row["right_answer"], False))
            examples.append(Example(case, row["hallucinated_answer"], True))
    return examples


def evaluate(examples: list[Example], params: dict[str, Any]) -> tuple[Figures, list[tuple[Example, str]]]:
    """Run the detector over ``examples``; the figures and the misclassified examples."""
    detector = Grounding(Grounding.Params.model_validate(params))
    tp = fp = fn = tn = 0
    wrong: list[tuple[Example, str]] = []
    started = time.perf_counter()
    for example in examples:
        score = detector.score(example.case, Generation(text=example.output))
        flagged = score.value == 1.0
        if flagged and example.hallucinated:
            tp += 1
        elif flagged:
            fp += 1
            wrong.append((example, score.reason))
        elif example.hallucinated:
            fn += 1
            wrong.append((example, score.reason))
        else:
            tn += 1
    return Figures(len(examples), tp, fp, fn, tn, time.perf_counter() - started), wrong


def table(rows: list[tuple[str, Figures]]) -> str:
    lines = [
        "| setting | n | precision | recall | F1 | accuracy | TP | FP | FN | TN |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, f in rows:
        lines.append(
            f"| {label} | {f.n} | {f.precision:.3f} | {f.recall:.3f} | {f.f1:.3f} | {f.accuracy:.3f} "
            f"| {f.tp} | {f.fp} | {f.fn} | {f.tn} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HaluEval QA JSONL file")
    parser.add_argument("--errors", type=int, default=0, help="print this many misclassified examples")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"{args.data}: not found (give --data PATH)", file=sys.stderr)
        return 2
    examples = load_examples(args.data)
    print(f"{args.data.name}: {len(examples) // 2} rows, {len(examples)} labelled outputs (positive = hallucinated)\n")

    rows = [(label, evaluate(examples, params)[0]) for label, params in VARIANTS]
    print(table(rows))

    half = len(examples) // 2 // 2 * 2
    halves = [("default, first half", examples[:half]), ("default, second half", examples[half:])]
    print()
    print(table([(label, evaluate(part, {})[0]) for label, part in halves]))

    default, wrong = evaluate(examples, {})
    rate = default.n / default.seconds if default.seconds else float("inf")
    print(f"\nthroughput: {rate:,.0f} outputs per second ({default.n} in {default.seconds * 1000:.0f} ms)")

    for example, reason in wrong[: args.errors]:
        label = "missed hallucination" if example.hallucinated else "false alarm"
        print(f"\n[{label}] Q: {example.case.vars['input']}\n  output: {example.output}\n  {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
