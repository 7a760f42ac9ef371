"""Build the demo's data files from the hand-written content in this folder.

Writes, under the output folder (``suites/`` by default):

- ``data/support_cases.jsonl``: the evaluation cases of ``support_assistant.yaml``;
- ``recordings/{baseline,candidate-better,candidate-worse}.jsonl``: replay recordings of
  three simulated model versions, with latency and token usage;
- ``training/support_sft.jsonl`` and ``training/support_pairs.jsonl``: curated chat SFT
  examples and preference pairs, rendered with the suite's own prompt template.

Before writing anything it checks the content: every expected answer states its facts,
every written answer matches its case's ``plan``, the paired pattern between the
recordings is the one the README promises, and no training question repeats or closely
paraphrases an evaluation question. Run ``python suites/tools/build_demo.py`` after
editing the content; ``--check`` only compares the files on disk with a fresh build.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from demo_types import MODELS, EvalCase, TrainingExample
from eval_cases_account import CASES as ACCOUNT_CASES
from eval_cases_orders import CASES as ORDER_CASES
from training_examples import EXAMPLES

SUITES = Path(__file__).resolve().parent.parent
SUITE_FILE = SUITES / "support_assistant.yaml"
PASSAGES = SUITES / "policy_passages"
ALWAYS_RETRIEVED = "customer-care"
"""The contact passage the retriever adds to every context, so a referral is grounded."""
TRAINING_SOURCE = "curated-v1"
RECORDING_FILES = {
    "baseline": "recordings/baseline.jsonl",
    "better": "recordings/candidate-better.jsonl",
    "worse": "recordings/candidate-worse.jsonl",
}
OUTPUT_FILES = (
    "data/support_cases.jsonl",
    *RECORDING_FILES.values(),
    "training/support_sft.jsonl",
    "training/support_pairs.jsonl",
)
PAIRED_PATTERN = {"better": (14, 2), "worse": (3, 19)}
"""(improved, regressed) on the facts metric against the baseline, per candidate."""
NEAR_DUPLICATE_SIMILARITY = 80.0
"""rapidfuzz ``token_sort_ratio`` at or above which a training question counts as a
paraphrase of an evaluation question."""


@dataclass(frozen=True)
class ServingProfile:
    """How a simulated model version answers in time: first token, then per token."""

    seed: int
    first_token_ms: float
    per_prompt_token_ms: float
    per_output_token_ms: float
    jitter: float


SERVING = {
    "baseline": ServingProfile(seed=3, first_token_ms=310.0, per_prompt_token_ms=0.35,
                               per_output_token_ms=13.5, jitter=0.12),
    "better": ServingProfile(seed=41, first_token_ms=335.0, per_prompt_token_ms=0.36,
                             per_output_token_ms=14.2, jitter=0.12),
    "worse": ServingProfile(seed=42, first_token_ms=340.0, per_prompt_token_ms=0.36,
                            per_output_token_ms=14.4, jitter=0.15),
}


class ContentError(Exception):
    """The hand-written content breaks one of the demo's promises."""


# --------------------------------------------------------------------------- text helpers

_TOKEN_PIECE = re.compile(r"[A-Za-z]+|\d{1,3}|[^\sA-Za-z\d]")


def approx_tokens(text: str) -> int:
    """A BPE-like token count: words split every 6 letters, digits in threes, each symbol one."""
    return sum(math.ceil(len(piece) / 6) if piece[0].isalpha() else 1 for piece in _TOKEN_PIECE.findall(text))


def truncate_to_tokens(text: str, limit: int) -> str:
    """``text`` cut after ``limit`` approximate tokens, as a max_tokens stop would cut it."""
    used = 0
    for match in _TOKEN_PIECE.finditer(text):
        piece = match.group(0)
        used += math.ceil(len(piece) / 6) if piece[0].isalpha() else 1
        if used > limit:
            return text[: match.start()].rstrip()
    return text


def has_all_facts(text: str, facts: Iterable[str]) -> bool:
    """Whether every fact occurs in ``text``, ignoring case and runs of whitespace."""
    flat = " ".join(text.split()).casefold()
    return all(" ".join(fact.split()).casefold() in flat for fact in facts)


def normalise_question(text: str) -> str:
    """Lower case, letters and digits only, single spaces: for duplicate checks."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.casefold()).split())


# --------------------------------------------------------------------------- passages and prompt


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    body: str

    def as_context(self) -> str:
        return f"[{self.title}]\n{self.body}"


def load_passages(folder: Path = PASSAGES) -> dict[str, Passage]:
    """Every ``*.md`` passage: a ``# Title`` line, a blank line, one paragraph."""
    passages = {}
    for path in sorted(folder.glob("*.md")):
        title_line, _, body = path.read_text(encoding="utf-8").partition("\n")
        if not title_line.startswith("# "):
            raise ContentError(f"{path}: the first line must be '# Title'")
        passages[path.stem] = Passage(path.stem, title_line[2:].strip(), " ".join(body.split()))
    return passages


def context_for(docs: Sequence[str], passages: dict[str, Passage]) -> str:
    """The retrieved context of a case: its passages, then the always-retrieved contact one."""
    missing = [d for d in docs if d not in passages]
    if missing:
        raise ContentError(f"unknown passage(s) {missing}")
    ids = [*docs, ALWAYS_RETRIEVED] if ALWAYS_RETRIEVED not in docs else list(docs)
    return "\n\n".join(passages[d].as_context() for d in ids)


def prompt_templates(suite_file: Path = SUITE_FILE) -> list[tuple[str, str]]:
    """(role, template) of the suite's prompt messages, read from the suite itself."""
    data = yaml.safe_load(suite_file.read_text(encoding="utf-8"))
    return [(m["role"], m["content"]) for m in data["prompt"]["messages"]]


def max_tokens_of(suite_file: Path = SUITE_FILE) -> int:
    data = yaml.safe_load(suite_file.read_text(encoding="utf-8"))
    return int(data.get("generation", {}).get("max_tokens", 256))


def render_messages(templates: list[tuple[str, str]], context: str, question: str) -> list[dict[str, str]]:
    """The chat messages a model sees, rendered in gatekeeper's jinja2 sandbox."""
    from gatekeeper.engine.suites import render

    scope = {"context": context, "input": question}
    return [{"role": role, "content": render(text, scope, where=str(SUITE_FILE))} for role, text in templates]


def prompt_tokens(messages: list[dict[str, str]]) -> int:
    """Approximate prompt size of a chat request: content plus a few tokens per message."""
    return sum(approx_tokens(m["content"]) + 4 for m in messages) + 3


# --------------------------------------------------------------------------- checks


def all_cases() -> list[EvalCase]:
    return [*ORDER_CASES, *ACCOUNT_CASES]


def check_cases(cases: list[EvalCase], passages: dict[str, Passage]) -> None:
    """Ids unique, known passages and labels, facts in every expected answer, plans kept."""
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise ContentError(f"{case.id}: duplicate id")
        seen.add(case.id)
        context_for(case.docs, passages)
        if case.difficulty not in ("easy", "medium", "hard"):
            raise ContentError(f"{case.id}: difficulty {case.difficulty!r}")
        if not 1 <= len(case.facts) <= 3:
            raise ContentError(f"{case.id}: give 1 to 3 facts")
        if not has_all_facts(case.expected, case.facts):
            raise ContentError(f"{case.id}: the expected answer lacks one of {case.facts}")
        if len(case.plan) != len(MODELS) or set(case.plan) - {"0", "1"}:
            raise ContentError(f"{case.id}: plan {case.plan!r} is not three of 0/1")
        for model, planned in zip(MODELS, case.plan, strict=True):
            states_all = has_all_facts(case.output(model), case.facts)
            if states_all != (planned == "1"):
                raise ContentError(
                    f"{case.id}: the {model} answer {'states' if states_all else 'lacks'} "
                    f"the facts {case.facts}, but the plan says {planned}"
                )


def paired_counts(cases: list[EvalCase], candidate: str, truncated: dict[str, dict[str, str]]) -> tuple[int, int]:
    """(improved, regressed) of ``candidate`` against the baseline on the facts metric."""
    improved = regressed = 0
    for case in cases:
        base = has_all_facts(truncated["baseline"][case.id], case.facts)
        cand = has_all_facts(truncated[candidate][case.id], case.facts)
        improved += cand and not base
        regressed += base and not cand
    return improved, regressed


def check_paired_pattern(cases: list[EvalCase], outputs: dict[str, dict[str, str]]) -> None:
    for candidate, promised in PAIRED_PATTERN.items():
        got = paired_counts(cases, candidate, outputs)
        if got != promised:
            raise ContentError(f"{candidate} vs baseline: (improved, regressed) is {got}, promised {promised}")


def check_sequestration(cases: list[EvalCase], examples: Sequence[TrainingExample]) -> None:
    """No training question equals, contains or closely paraphrases an evaluation question."""
    from rapidfuzz import fuzz, process

    eval_questions = [normalise_question(c.input) for c in cases]
    seen: set[str] = set()
    for example in examples:
        question = normalise_question(example.question)
        if question in seen:
            raise ContentError(f"training question repeated: {example.question!r}")
        seen.add(question)
        best = process.extractOne(question, eval_questions, scorer=fuzz.token_sort_ratio)
        if best is not None and best[1] >= NEAR_DUPLICATE_SIMILARITY:
            raise ContentError(
                f"training question {example.question!r} is too close to evaluation case "
                f"{cases[best[2]].id!r} ({best[1]:.0f} >= {NEAR_DUPLICATE_SIMILARITY:.0f})"
            )


# --------------------------------------------------------------------------- building rows


def case_row(case: EvalCase, passages: dict[str, Passage]) -> dict[str, Any]:
    return {
        "id": case.id,
        "input": case.input,
        "context": context_for(case.docs, passages),
        "doc_id": case.docs[0],
        "expected": case.expected,
        "facts": list(case.facts),
        "topic": case.topic,
        "difficulty": case.difficulty,
        "tags": list(case.tags),
    }


def recording_rows(
    model: str, cases: list[EvalCase], prompts: dict[str, list[dict[str, str]]], max_tokens: int
) -> list[dict[str, Any]]:
    """One replay row per case: the answer (cut at max_tokens), latency and usage."""
    profile = SERVING[model]
    rng = random.Random(profile.seed)
    rows = []
    for case in cases:
        text = truncate_to_tokens(case.output(model), max_tokens)
        completion = min(approx_tokens(text), max_tokens)
        prompt = prompt_tokens(prompts[case.id])
        latency = (
            profile.first_token_ms
            + profile.per_prompt_token_ms * prompt
            + profile.per_output_token_ms * completion
        ) * math.exp(rng.gauss(0.0, profile.jitter))
        rows.append({
            "id": case.id,
            "output": text,
            "latency_ms": round(latency, 1),
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
        })
    return rows


def training_rows(
    examples: Sequence[TrainingExample], passages: dict[str, Passage], templates: list[tuple[str, str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(SFT rows, preference-pair rows) in the suite's own chat format."""
    sft, pairs = [], []
    for example in examples:
        prompt = render_messages(templates, context_for(example.docs, passages), example.question)
        sft.append({
            "messages": [*prompt, {"role": "assistant", "content": example.answer}],
            "source": TRAINING_SOURCE,
        })
        if example.rejected is not None:
            pairs.append({
                "prompt": prompt, "chosen": example.answer, "rejected": example.rejected,
                "source": TRAINING_SOURCE,
            })
    return sft, pairs


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- main


def build(out: Path) -> dict[str, Any]:
    """Check the content and write every output file under ``out``; returns a summary."""
    passages = load_passages()
    cases = all_cases()
    check_cases(cases, passages)
    check_sequestration(cases, EXAMPLES)
    templates = prompt_templates()
    max_tokens = max_tokens_of()

    prompts = {c.id: render_messages(templates, context_for(c.docs, passages), c.input) for c in cases}
    recordings = {model: recording_rows(model, cases, prompts, max_tokens) for model in MODELS}
    outputs = {model: {row["id"]: row["output"] for row in rows} for model, rows in recordings.items()}
    check_paired_pattern(cases, outputs)
    sft, pairs = training_rows(EXAMPLES, passages, templates)

    write_jsonl(out / "data/support_cases.jsonl", (case_row(c, passages) for c in cases))
    for model, rows in recordings.items():
        write_jsonl(out / RECORDING_FILES[model], rows)
    write_jsonl(out / "training/support_sft.jsonl", sft)
    write_jsonl(out / "training/support_pairs.jsonl", pairs)

    def coverage(model: str) -> float:
        return sum(has_all_facts(outputs[model][c.id], c.facts) for c in cases) / len(cases)

    return {
        "cases": len(cases),
        "facts coverage": {model: round(coverage(model), 3) for model in MODELS},
        "paired (improved, regressed)": {m: paired_counts(cases, m, outputs) for m in PAIRED_PATTERN},
        "truncated at max_tokens": {
            model: sum(outputs[model][c.id] != c.output(model) for c in cases) for model in MODELS
        },
        "sft examples": len(sft),
        "preference pairs": len(pairs),
    }


def check_up_to_date(out: Path) -> list[str]:
    """The output files under ``out`` that differ from a fresh build."""
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        return [
            name for name in OUTPUT_FILES
            if not (out / name).is_file() or (out / name).read_bytes() != (Path(tmp) / name).read_bytes()
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=SUITES, help="folder to write into (default: suites/)")
    parser.add_argument("--check", action="store_true", help="only report files that differ from a fresh build")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = check_up_to_date(args.out)
            for name in stale:
                print(f"out of date: {name}")
            return 1 if stale else 0
        summary = build(args.out)
    except ContentError as exc:
        print(f"content error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
