"""``claim_verification`` (or ``nli_grounding``) on a sample of HaluEval QA rows, through the real CLI.

Each sampled row gives two labelled answers (right: 0, hallucinated: 1). The script writes
a throw-away project (one suite, one case per answer, the answers as a replay recording),
runs ``gatekeeper run`` with the detector and the judge model given, and prints ROC AUC,
precision/recall/F1 at the detector's threshold, the NODATA count and the time. It also
writes the scores as JSONL lines ``{"id": "halueval-ROW-LABEL", "score": S}`` for
``bench/hallucination.py --scores claim_verification=FILE`` (the split-half protocol).

The judge is any model spec. Offline, the most capable judge this project can run is the
embedded SmolLM2-135M-Instruct (``hf:smollm2``): a 135M model follows a JSON schema poorly
and knows little about entailment, so its figure is a floor, not what the method gives with a
real judge (``openai:...``, a vLLM or Ollama endpoint).

    .venv/bin/python bench/claims_halueval.py --rows 40 --judge hf:smollm2 --out /tmp/claims.jsonl
    .venv/bin/python bench/claims_halueval.py --detector nli_grounding --nli-model ~/models/nli-deberta-v3-xsmall
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from gatekeeper.testing import Project

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "halueval-qa-dev.jsonl"


def sample(path: Path, rows: int, seed: int | None) -> list[tuple[int, dict[str, str]]]:
    """(1-based row number, row) for the first ``rows`` rows, or a seeded sample of them."""
    data = [(i + 1, json.loads(line)) for i, line in enumerate(path.read_text(encoding="utf-8").splitlines())
            if line.strip()]
    if seed is not None:
        random.Random(seed).shuffle(data)
    return sorted(data[:rows])


def auc(pos: list[float], neg: list[float]) -> float:
    """ROC AUC as the Mann-Whitney probability that a hallucinated answer outscores a right one."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(pos, neg).statistic) / (len(pos) * len(neg))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--seed", type=int, default=None, help="sample rows at random with this seed")
    parser.add_argument("--detector", choices=["claim_verification", "nli_grounding"], default="claim_verification")
    parser.add_argument("--judge", default="hf:smollm2?batch_size=16")
    parser.add_argument("--votes", type=int, default=1)
    parser.add_argument("--nli-model", type=Path, help="a local NLI model directory (nli_grounding)")
    parser.add_argument("--out", type=Path, help="append the scores as JSONL for bench/hallucination.py --scores")
    parser.add_argument("--chunk", type=int, default=5, help="rows per gatekeeper run (scores are appended after each)")
    parser.add_argument("--max-tokens", type=int, default=160, help="the judge's reply budget per claim")
    parser.add_argument("--workdir", type=Path, help="keep the project (and the judge cache) here to resume")
    args = parser.parse_args()

    rows = sample(args.data, args.rows, args.seed)
    if args.detector == "claim_verification":
        params = {"judge": args.judge, "votes": args.votes, "emit": "score", "max_tokens": args.max_tokens}
    else:
        if args.nli_model is None:
            parser.error("--detector nli_grounding needs --nli-model DIR")
        params = {"model": str(args.nli_model.resolve()), "emit": "score"}
    labels: dict[str, int] = {}
    scores: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    elapsed = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        # One project for every chunk: the runner's cache keeps the judge's answers across chunks
        # (and across runs with --workdir), so an interrupted measurement resumes where it stopped.
        project = Project(args.workdir or Path(tmp))
        project.write("gatekeeper.yaml", "runner: {retries: 1, timeout_s: 900}\n")
        project.write("suites/halueval.yaml", "suite: halueval\ndataset: halueval.jsonl\n"
                      "prompt:\n  messages:\n    - {role: user, content: '{{ input }}'}\n"
                      f"detectors:\n  - {json.dumps({args.detector: params})}\n")
        for first in range(0, len(rows), args.chunk):
            cases, answers = [], []
            for row, item in rows[first : first + args.chunk]:
                for label, answer in ((0, item["right_answer"]), (1, item["hallucinated_answer"])):
                    cid = f"halueval-{row}-{label}"
                    cases.append({"id": cid, "input": item["question"], "context": item["knowledge"]})
                    answers.append({"id": cid, "output": answer})
                    labels[cid] = label
            project.write_jsonl("suites/halueval.jsonl", cases)
            project.write_jsonl("answers.jsonl", answers)
            start = time.perf_counter()
            result = project.run("run", "suites", "--model", "replay:answers.jsonl", "--out", "out", "--no-progress")
            elapsed += time.perf_counter() - start
            if result.exit_code not in (0, 1):
                print(result.output, file=sys.stderr)
                return result.exit_code
            record = project.read_record("out/results.json")
            for line in record["cases"]:
                cid = record["case_index"][line["key"]]["id"]
                score = line["scores"][args.detector]
                scores[cid] = score["details"].get("score") if score["status"] == "ok" else None
                reasons[cid] = score["reason"]
                if args.out and scores[cid] is not None:
                    with args.out.open("a", encoding="utf-8") as out:
                        out.write(json.dumps({"id": cid, "score": scores[cid]}) + "\n")
            print(f"  rows {first + 1}-{min(first + args.chunk, len(rows))}: {elapsed:.0f} s so far", flush=True)
    usable = {k: v for k, v in scores.items() if v is not None}
    pos = [v for k, v in usable.items() if labels[k] == 1]
    neg = [v for k, v in usable.items() if labels[k] == 0]
    flagged = {k for k, v in usable.items() if v > 0.5}
    tp = sum(1 for k in flagged if labels[k] == 1)
    precision = tp / len(flagged) if flagged else float("nan")
    recall = tp / len(pos) if pos else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
    print(f"{args.detector} on {len(rows)} HaluEval rows ({len(scores)} answers), "
          f"{'judge ' + args.judge if args.detector == 'claim_verification' else 'model ' + str(args.nli_model)}")
    print(f"  scored {len(usable)}/{len(scores)} (NODATA or ERROR: {len(scores) - len(usable)}), {elapsed:.0f} s wall")
    if pos and neg:
        print(f"  ROC AUC {auc(pos, neg):.3f}; at threshold 0.5: precision {precision:.3f} recall {recall:.3f} "
              f"F1 {f1:.3f}")
    missing = [k for k, v in scores.items() if v is None][:3]
    for k in missing:
        print(f"  e.g. {k}: {reasons[k][:160]}")
    if args.out:
        print(f"  scores appended to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
