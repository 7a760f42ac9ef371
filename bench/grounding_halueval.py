"""Precision, recall, F1 and accuracy of the ``grounding`` detector on HaluEval QA.

Each row of the HaluEval QA file gives a knowledge passage (the context), a question, a
right answer and a hallucinated answer: two labelled outputs per row, positive =
hallucinated. Every output goes through the real detector class, as a suite would run it.

HaluEval's right answers are short spans copied from the knowledge, so on this file no
setting raises a false alarm and the most suspicious setting always looks best. A model's
real answers paraphrase. To show what each setting costs there, the script also runs a
small hand-written probe (:data:`PARAPHRASE_PROBE`): 16 contexts, each with a faithful
paraphrased answer and an answer that changes or adds a claim. It is a sanity check of
the trade-off, not a benchmark.

The default parameters come first, then variations, so the choice of each default is
visible; the default is also scored on each half of the file to show how much the
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

from gatekeeper.builtin.scoring.grounding import Grounding, support_index
from gatekeeper.types import Case, Generation

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "halueval-qa-dev.jsonl"

VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("default", {}),
    ("numbers + names only", {"check_words": False}),
    ("question not support", {"question_as_support": False}),
    ("max_unsupported_words=0", {"max_unsupported_words": 0}),
    ("max_unsupported_words=3", {"max_unsupported_words": 3}),
    ("word fraction 0.2", {"max_unsupported_word_fraction": 0.2}),
    ("word fraction 0.4", {"max_unsupported_word_fraction": 0.4}),
    ("word fraction 0.5", {"max_unsupported_word_fraction": 0.5}),
    ("prefix_match=0 (off)", {"prefix_match": 0}),
]


# (context, question, faithful paraphrased answer, answer with a changed or added claim)
PARAPHRASE_PROBE: list[tuple[str, str, str, str]] = [
    (
        (
            "Refunds are available within thirty days of purchase. Items must be unused and in their "
            "original packaging. Contact Acme Support to start a return."
        ),
        "Can I return my blender?",
        (
            "Yes, you can return it within 30 days if it is unused and in the original packaging. "
            "Reach out to Acme Support to begin the return process."
        ),
        (
            "Yes, you can return it within 60 days, even if it has been used. Reach out to Acme "
            "Support to begin the return process."
        ),
    ),
    (
        (
            "The adult dose of ibuprofen for pain is 200 to 400 mg every four to six hours. Do not "
            "take more than 1,200 mg in 24 hours without a doctor's advice."
        ),
        "How much ibuprofen can I take?",
        (
            "Adults usually take 200-400 mg every 4 to 6 hours, and should not go above 1200 mg a day"
            " unless a doctor says so."
        ),
        (
            "Adults usually take 200-400 mg every 4 to 6 hours, and can safely go up to 3200 mg a "
            "day."
        ),
    ),
    (
        (
            "The Model X200 vacuum weighs 2.4 kg and runs for up to 45 minutes on a full charge. "
            "Charging takes about three hours. It ships with two brush heads."
        ),
        "How long does the X200 battery last?",
        (
            "On a full charge the X200 runs for up to 45 minutes, and recharging it takes roughly "
            "three hours."
        ),
        (
            "On a full charge the X200 runs for up to 90 minutes, and recharging it takes roughly "
            "three hours."
        ),
    ),
    (
        (
            "Employees accrue 1.5 vacation days per month of service. Unused days carry over to the "
            "next year, up to a maximum of ten days. Requests go through the HR portal."
        ),
        "How does vacation carry-over work?",
        (
            "Any vacation days you don't use roll over into the following year, but you can carry at "
            "most ten days. You earn 1.5 days for each month worked."
        ),
        (
            "Any vacation days you don't use are paid out in cash at the end of the year, and "
            "managers can approve unlimited carry-over."
        ),
    ),
    (
        (
            "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. It was designed by"
            " the engineering company of Gustave Eiffel and is 330 metres tall."
        ),
        "Who built the Eiffel Tower?",
        (
            "It was designed by Gustave Eiffel's engineering company and finished in 1889 for the "
            "World's Fair held in Paris."
        ),
        (
            "It was designed by Alexandre Dumas and finished in 1889 for the World's Fair held in "
            "Paris."
        ),
    ),
    (
        (
            "Photosynthesis converts light energy into chemical energy. Plants take in carbon dioxide"
            " and water and release oxygen, storing the energy as glucose."
        ),
        "What does photosynthesis produce?",
        (
            "Photosynthesis turns light into chemical energy: plants use carbon dioxide and water, "
            "give off oxygen, and store the energy in glucose."
        ),
        (
            "Photosynthesis turns light into chemical energy: plants absorb oxygen and nitrogen from "
            "the soil and give off carbon dioxide."
        ),
    ),
    (
        (
            "To reset your password, open Settings, choose Security, and click Reset Password. A link"
            " valid for 15 minutes is sent to your registered email address."
        ),
        "How do I reset my password?",
        (
            "Go to Settings, then Security, and click Reset Password. You will get an email with a "
            "link that stays valid for 15 minutes."
        ),
        (
            "Go to Settings, then Security, and click Reset Password. You will get a text message "
            "with a code that stays valid for 24 hours."
        ),
    ),
    (
        (
            "Flights from Lisbon to Madrid take about one hour and fifteen minutes. TAP Air Portugal "
            "and Iberia operate the route several times a day."
        ),
        "Which airlines fly from Lisbon to Madrid?",
        (
            "TAP Air Portugal and Iberia both fly between Lisbon and Madrid several times daily; the "
            "trip takes around an hour and a quarter."
        ),
        (
            "Ryanair and Iberia both fly between Lisbon and Madrid several times daily; the trip "
            "takes around an hour and a quarter."
        ),
    ),
    (
        (
            "The library opens at 9 a.m. on weekdays and closes at 8 p.m. On Saturdays it is open "
            "from 10 a.m. to 4 p.m. It is closed on Sundays and public holidays."
        ),
        "When is the library open on weekends?",
        (
            "On Saturdays the library is open from 10 a.m. until 4 p.m.; it stays closed on Sundays."
        ),
        (
            "On Saturdays the library is open from 10 a.m. until 6 p.m., and on Sundays from noon to "
            "5 p.m."
        ),
    ),
    (
        (
            "Marie Curie won the Nobel Prize in Physics in 1903, shared with Pierre Curie and Henri "
            "Becquerel, and the Nobel Prize in Chemistry in 1911 for discovering polonium and radium."
        ),
        "What did Marie Curie win the Nobel Prize for?",
        (
            "She received two Nobel Prizes: Physics in 1903, together with Pierre Curie and Henri "
            "Becquerel, and Chemistry in 1911 for discovering polonium and radium."
        ),
        (
            "She received two Nobel Prizes: Physics in 1903, together with Albert Einstein, and "
            "Chemistry in 1911 for discovering uranium."
        ),
    ),
    (
        (
            "The API rate limit is 100 requests per minute per key. Requests above the limit receive "
            "HTTP 429 and should be retried after the time given in the Retry-After header."
        ),
        "What happens if I exceed the rate limit?",
        (
            "Once you go past 100 requests a minute on a key, the API answers with HTTP 429; wait for"
            " the time in the Retry-After header before trying again."
        ),
        (
            "Once you go past 100 requests a minute on a key, your key is permanently revoked and you"
            " must contact sales to get a new one."
        ),
    ),
    (
        (
            "Our standard shipping takes three to five business days within Germany. Express shipping"
            " arrives the next business day if ordered before 2 p.m. and costs 9.90 euros."
        ),
        "How fast is express shipping?",
        (
            "If you order before 2 p.m., express shipping delivers on the next business day, for 9.90"
            " euros."
        ),
        (
            "If you order before 2 p.m., express shipping delivers on the same day, free of charge "
            "for members."
        ),
    ),
    (
        (
            "The Amazon River is about 6,400 km long and flows through Peru, Colombia and Brazil into"
            " the Atlantic Ocean. It carries more water than any other river."
        ),
        "Where does the Amazon River end?",
        (
            "The Amazon runs roughly 6,400 km across Peru, Colombia and Brazil and empties into the "
            "Atlantic Ocean."
        ),
        (
            "The Amazon runs roughly 6,400 km across Peru, Colombia and Venezuela and empties into "
            "the Pacific Ocean."
        ),
    ),
    (
        (
            "The warranty covers manufacturing defects for two years from the date of purchase. It "
            "does not cover accidental damage, water damage or normal wear."
        ),
        "Is water damage covered by the warranty?",
        (
            "No. The two-year warranty only covers manufacturing defects; water damage, accidental "
            "damage and normal wear are excluded."
        ),
        (
            "Yes. The two-year warranty covers water damage as long as you register the product "
            "online within a week."
        ),
    ),
    (
        (
            "Python 3.12 was released in October 2023. It improved error messages, added a "
            "per-interpreter GIL option for subinterpreters, and made f-strings more flexible."
        ),
        "What changed in Python 3.12?",
        (
            "Released in October 2023, Python 3.12 brought clearer error messages, more flexible "
            "f-strings and an option for a per-interpreter GIL in subinterpreters."
        ),
        (
            "Released in October 2023, Python 3.12 removed the GIL entirely and made the interpreter "
            "twice as fast."
        ),
    ),
    (
        (
            "The museum's permanent collection includes more than 2,000 paintings, mostly Dutch and "
            "Flemish works from the 17th century, including three by Vermeer."
        ),
        "Does the museum have works by Vermeer?",
        (
            "Yes, the permanent collection, which has over 2,000 paintings mostly from 17th-century "
            "Dutch and Flemish artists, includes three by Vermeer."
        ),
        (
            "Yes, the permanent collection, which has over 2,000 paintings mostly from 17th-century "
            "Dutch and Flemish artists, includes three by Vermeer and five by Rembrandt."
        ),
    ),
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


def _case(case_id: str, context: str, question: str) -> Case:
    return Case(
        id=case_id, suite="grounding-bench", messages=({"role": "user", "content": question},),
        vars={"input": question}, context=context,
    )


def load_examples(path: Path) -> list[Example]:
    """Two labelled examples per HaluEval row: the right and the hallucinated answer."""
    examples = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            case = _case(f"halueval-{lineno}", row["knowledge"], row["question"].strip())
            examples.append(Example(case, row["right_answer"], False))
            examples.append(Example(case, row["hallucinated_answer"], True))
    return examples


def probe_examples() -> list[Example]:
    """Two labelled examples per probe entry: the faithful and the changed answer."""
    examples = []
    for i, (context, question, faithful, changed) in enumerate(PARAPHRASE_PROBE, 1):
        case = _case(f"probe-{i}", context, question)
        examples += [Example(case, faithful, False), Example(case, changed, True)]
    return examples


def evaluate(examples: list[Example], params: dict[str, Any]) -> tuple[Figures, list[tuple[Example, str]]]:
    """Run the detector over ``examples``; the figures and the misclassified examples.

    The detector caches the index of each context; the cache is emptied first so that the
    time includes scanning every context once (as for one model's outputs in a run).
    """
    support_index.cache_clear()
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


def table(rows: list[tuple[str, Figures, Figures]]) -> str:
    """HaluEval figures and the probe's false alarms and misses, one row per setting."""
    lines = [
        "| setting | precision | recall | F1 | accuracy | TP | FP | FN | TN "
        "| probe: false alarms | probe: missed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, f, probe in rows:
        lines.append(
            f"| {label} | {f.precision:.3f} | {f.recall:.3f} | {f.f1:.3f} | {f.accuracy:.3f} "
            f"| {f.tp} | {f.fp} | {f.fn} | {f.tn} "
            f"| {probe.fp} of {probe.fp + probe.tn} | {probe.fn} of {probe.tp + probe.fn} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HaluEval QA JSONL file")
    parser.add_argument("--errors", type=int, default=0, help="print this many misclassified examples")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"{args.data}: not found (give --data PATH)", file=sys.stderr)
        return 2
    examples = load_examples(args.data)
    probe = probe_examples()
    print(
        f"{args.data.name}: {len(examples) // 2} rows, {len(examples)} labelled outputs "
        f"(positive = hallucinated); paraphrase probe: {len(probe)} outputs\n"
    )
    rows = [(label, evaluate(examples, params)[0], evaluate(probe, params)[0]) for label, params in VARIANTS]
    print(table(rows))

    half = len(examples) // 4 * 2
    print("\n| default on | n | precision | recall | F1 | accuracy |\n|---|---:|---:|---:|---:|---:|")
    for label, part in (("rows 1-150", examples[:half]), ("rows 151-300", examples[half:])):
        f = evaluate(part, {})[0]
        print(f"| {label} | {f.n} | {f.precision:.3f} | {f.recall:.3f} | {f.f1:.3f} | {f.accuracy:.3f} |")

    default, wrong = evaluate(examples, {})
    rate = default.n / default.seconds if default.seconds else float("inf")
    print(
        f"\nthroughput: {rate:,.0f} outputs per second ({default.n} outputs, {default.n // 2} contexts, "
        f"in {default.seconds * 1000:.0f} ms)"
    )
    for example, reason in (wrong + evaluate(probe, {})[1])[: args.errors]:
        label = "missed hallucination" if example.hallucinated else "false alarm"
        print(f"\n[{label}] {example.case.id} Q: {example.case.vars['input']}\n  output: {example.output}\n  {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
