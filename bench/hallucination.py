"""ROC AUC, precision/recall curve and held-out F1 of every hallucination detector on HaluEval QA.

Each detector scores the 600 labelled answers of ``halueval-qa-dev.jsonl`` (right answer:
label 0, hallucinated: label 1) with its continuous score (``details["score"]``, 0..1,
1 = hallucinated; ``value`` when a detector has no score). Then, for each of two fixed
splits of the 300 rows:

- ``rows``: the threshold is chosen on rows 1-150 and reported on rows 151-300. The
  structural checks were developed by reading misses of rows 1-150 only, so rows 151-300
  are the held-out half for them;
- ``seeded``: the rows are shuffled with ``random.Random(24)``; the first 150 choose, the
  other 150 report (the spread between the two splits is the sampling noise).

The threshold is the one with the best F1 on the choosing half (flag when score > t); the
report half gives ROC AUC, average precision, and precision/recall/F1 at that threshold and
at the detector's default (0.5). The paraphrase probe of ``bench/grounding_halueval.py``
(16 faithful paraphrases, 16 changed answers) and the 80 reviewed answers of the demo suite
(``suites/support_assistant.yaml``, all faithful) count the false alarms at both thresholds:
HaluEval's right answers are copied spans, so its false alarms say little about answers that
paraphrase.

Detectors: the lexical ``grounding`` (structural checks off, as before issue 24), ``grounding``
with its defaults (lexical + structural), ``structural`` alone and each structural check
alone, a naive baseline (share of the answer's content words absent from the passage and
question), gatekeeper-hf's ``embedding_grounding`` when MiniLM is installed, ``nli_grounding``
with ``--nli-model DIR``, and any scores computed elsewhere (judge-based detectors, which
need a judge model) with ``--scores NAME=FILE``: JSONL lines ``{"id": "halueval-ROW-LABEL",
"score": S}`` (ROW 1-based, LABEL 0 right / 1 hallucinated), plus ``probe-I-LABEL`` and
``demo-CASEID`` lines when scored. A detector with no figure is listed as pending.

    .venv/bin/python bench/hallucination.py                       # lexical, structural, baseline, embedding
    .venv/bin/python bench/hallucination.py --no-embedding --curve grounding
    .venv/bin/python bench/hallucination.py --nli-model ~/models/nli --scores claim_verification=claims.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from grounding_halueval import PARAPHRASE_PROBE  # noqa: E402

from gatekeeper.builtin.scoring.grounding import Grounding  # noqa: E402
from gatekeeper.builtin.scoring.lexical import STOPWORDS, scan, stem  # noqa: E402
from gatekeeper.builtin.scoring.structural import CHECKS, Structural  # noqa: E402
from gatekeeper.kinds import Detector, EvalContext  # noqa: E402
from gatekeeper.types import Case, Config, Generation  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "halueval-qa-dev.jsonl"
DEMO_SUITE = ROOT / "suites" / "support_assistant.yaml"
SEED = 24
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Item:
    """One labelled answer: ``row`` is the HaluEval row (1-based; 0 for probe and demo)."""

    id: str
    case: Case
    output: str
    label: int
    row: int = 0


def _case(case_id: str, context: str, question: str) -> Case:
    return Case(id=case_id, suite="hallucination-bench", messages=({"role": "user", "content": question},),
                vars={"input": question, "question": question}, context=context)


def load_halueval(path: Path) -> list[Item]:
    items: list[Item] = []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row, line in enumerate(lines, 1):
        data = json.loads(line)
        case = _case(f"halueval-{row}", data["knowledge"], data["question"].strip())
        items.append(Item(f"halueval-{row}-0", case, data["right_answer"], 0, row))
        items.append(Item(f"halueval-{row}-1", case, data["hallucinated_answer"], 1, row))
    return items


def load_probe() -> list[Item]:
    items: list[Item] = []
    for i, (context, question, faithful, changed) in enumerate(PARAPHRASE_PROBE, 1):
        case = _case(f"probe-{i}", context, question)
        items += [Item(f"probe-{i}-0", case, faithful, 0), Item(f"probe-{i}-1", case, changed, 1)]
    return items


def load_demo() -> list[Item]:
    """The demo suite's reviewed expected answers: faithful answers that paraphrase."""
    from gatekeeper.engine.suites import load_yaml_suite

    suite = load_yaml_suite(DEMO_SUITE) if DEMO_SUITE.is_file() else None
    if suite is None:
        return []
    return [Item(f"demo-{c.id}", c, c.expected or "", 0) for c in suite.cases if c.context and c.expected]


def splits(rows: int) -> dict[str, tuple[set[int], set[int]]]:
    """``name -> (rows that choose the threshold, rows it is reported on)``."""
    half = rows // 2
    shuffled = list(range(1, rows + 1))
    random.Random(SEED).shuffle(shuffled)
    return {
        "rows": (set(range(1, half + 1)), set(range(half + 1, rows + 1))),
        "seeded": (set(shuffled[:half]), set(shuffled[half:])),
    }


# --------------------------------------------------------------------------- scoring


Scorer = Callable[[Item], "float | None"]


def detector_scorer(detector: Detector) -> Scorer:
    """Score an item with a real detector (``ascore``, as the runner calls it)."""
    ctx = EvalContext(config=Config(root=ROOT))

    def run(item: Item) -> float | None:
        score = asyncio.run(detector.ascore(item.case, Generation(text=item.output), ctx))
        if score.value is None:
            return None
        return float(score.details.get("score", score.value))

    return run


def naive_share(item: Item) -> float | None:
    """The share of the answer's distinct content words that the passage and question lack."""
    support = {stem(t.norm) for text in (item.case.context or "", item.case.question) for t in scan(text).tokens}
    words = {stem(t.norm) for t in scan(item.output).tokens if t.norm not in STOPWORDS and len(t.norm) > 2}
    return sum(w not in support for w in words) / len(words) if words else 0.0


def file_scorer(name: str, path: Path) -> Scorer:
    """Scores from a JSONL file (lines of another detector, by ``detector``, are skipped)."""
    scores: dict[str, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            if name not in str(entry.get("detector", name)):
                continue
            if entry.get("score") is not None:
                scores[str(entry["id"])] = float(entry["score"])
    return lambda item: scores.get(item.id)


def scorers(args: argparse.Namespace) -> tuple[dict[str, Scorer], dict[str, str]]:
    """``(label -> scorer, label -> why it is pending)``."""
    found: dict[str, Scorer] = {
        "naive share of new words": naive_share,
        "grounding, lexical only (before)": detector_scorer(Grounding(Grounding.Params(structural=False))),
        "grounding (default: + structural)": detector_scorer(Grounding(Grounding.Params())),
        "structural (all checks)": detector_scorer(Structural(Structural.Params())),
    }
    for check in CHECKS:
        found[f"  structural: {check}"] = detector_scorer(Structural(Structural.Params(checks=[check])))
    pending: dict[str, str] = {}
    if args.embedding:
        try:
            from gatekeeper_hf.scoring import EmbeddingGrounding

            embedding = EmbeddingGrounding(EmbeddingGrounding.Params())
            found["embedding_grounding (gatekeeper-hf)"] = detector_scorer(embedding)
        except Exception as exc:  # an optional plugin: say why it is missing
            pending["embedding_grounding (gatekeeper-hf)"] = f"not runnable here: {exc}"
    if args.nli_model:
        from gatekeeper_hf.nli import NLIGrounding

        nli = NLIGrounding(NLIGrounding.Params(model=args.nli_model))
        found["nli_grounding (gatekeeper-hf)"] = detector_scorer(nli)
    else:
        pending["nli_grounding (gatekeeper-hf)"] = "needs an NLI model directory (--nli-model DIR)"
    given = dict(spec.split("=", 1) for spec in args.scores)
    for name, path in given.items():
        found[name] = file_scorer(name, Path(path))
    for name in ("judge_grounding", "claim_verification"):
        if name not in given:
            pending[name] = "needs a judge model: score with it elsewhere, then --scores NAME=FILE"
    return found, pending


# --------------------------------------------------------------------------- statistics


@dataclass
class Curve:
    """Scores and labels of one set of items, and what a threshold gives on them."""

    scores: np.ndarray
    labels: np.ndarray
    missing: int = 0

    @classmethod
    def of(cls, pairs: Sequence[tuple[float | None, int]]) -> Curve:
        kept = [(s, y) for s, y in pairs if s is not None]
        scores = np.array([s for s, _ in kept], dtype=float)
        labels = np.array([y for _, y in kept], dtype=int)
        return cls(scores, labels, len(pairs) - len(kept))

    def at(self, threshold: float) -> dict[str, float]:
        flagged = self.scores > threshold
        tp = int(np.sum(flagged & (self.labels == 1)))
        fp = int(np.sum(flagged & (self.labels == 0)))
        fn = int(np.sum(~flagged & (self.labels == 1)))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}

    def best_threshold(self, allowed: Callable[[float], bool] = lambda t: True) -> float | None:
        """The threshold with the best F1 among the ``allowed`` ones; None when none is.

        Candidates: each distinct score (flag what is above it), just below the lowest (flag
        all) and the default 0.5. Thresholds between two neighbouring scores give the same F1
        on these rows; ties go to the one nearest the default."""
        scores = {0.0, DEFAULT_THRESHOLD, *np.unique(self.scores).tolist()}
        candidates = [t for t in [-1e-9, *sorted(scores)] if allowed(t)]
        if not candidates:
            return None
        return float(max(candidates, key=lambda t: (round(self.at(t)["f1"], 12), -abs(t - DEFAULT_THRESHOLD))))

    def auc(self) -> float | None:
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(self.labels, self.scores)) if len(set(self.labels.tolist())) == 2 else None

    def average_precision(self) -> float | None:
        from sklearn.metrics import average_precision_score

        if len(set(self.labels.tolist())) < 2:
            return None
        return float(average_precision_score(self.labels, self.scores))

    def pr_points(self) -> list[tuple[float, float, float]]:
        """(threshold, precision, recall) for flag-when-score->-t at each distinct score."""
        points = []
        for t in [-1e-9, *sorted(set(self.scores.tolist()))[:-1]]:
            m = self.at(t)
            points.append((t, m["precision"], m["recall"]))
        return points


def false_alarms(curve: Curve, threshold: float | None) -> int:
    if threshold is None:
        return 0
    return int(np.sum((curve.scores > threshold) & (curve.labels == 0)))


def missed(curve: Curve, threshold: float | None) -> int:
    if threshold is None:
        return 0
    return int(np.sum((curve.scores <= threshold) & (curve.labels == 1)))


@dataclass
class Result:
    label: str
    dev: dict[int, tuple[float | None, int]] = field(default_factory=dict)
    dev_items: list[tuple[Item, float | None]] = field(default_factory=list)
    other_items: list[tuple[Item, float | None]] = field(default_factory=list)
    """The probe's and the demo's answers with their scores."""
    probe: Curve | None = None
    demo: Curve | None = None
    seconds: float = 0.0


def measure(label: str, scorer: Scorer, dev: list[Item], probe: list[Item], demo: list[Item]) -> Result:
    started = time.perf_counter()
    dev_scores = [(item, scorer(item)) for item in dev]
    seconds = time.perf_counter() - started
    result = Result(label, dev_items=dev_scores, seconds=seconds)
    result.other_items = [(item, scorer(item)) for item in probe + demo]
    scored = dict((item.id, score) for item, score in result.other_items)
    result.probe = Curve.of([(scored[item.id], item.label) for item in probe])
    result.demo = Curve.of([(scored[item.id], item.label) for item in demo])
    return result


def dev_curve(result: Result, rows: set[int]) -> Curve:
    return Curve.of([(s, item.label) for item, s in result.dev_items if item.row in rows])


def _f(value: float | None) -> str:
    if value is None:
        return "-"
    return "all" if value < 0 else f"{value:.3f}"


def report(results: list[Result], pending: dict[str, str], split: str, parts: tuple[set[int], set[int]]) -> str:
    choose, held = parts
    n_probe = (len(results[0].probe.labels) // 2) if results and results[0].probe is not None else 0
    n_demo = len(results[0].demo.labels) if results and results[0].demo is not None else 0
    lines = [
        f"### split `{split}`: thresholds chosen on {len(choose)} rows, figures on the other {len(held)} rows",
        "",
        "P/R/F1 = precision/recall/F1 of the hallucinated class on the report half. `0.5`: the default "
        "threshold; `t`: best F1 on the choosing half; `t*`: best F1 on the choosing half among thresholds "
        "with no more false alarms than `0.5` on the probe and the demo answers. False alarms: of "
        f"{n_probe} faithful probe answers / of {n_demo} demo answers; probe missed: of {n_probe}.",
        "",
        "| detector | ROC AUC | avg prec. | 0.5: P / R / F1 | t | t: P / R / F1 | t* | t*: P / R / F1 "
        "| probe false alarms 0.5 / t / t* | probe missed 0.5 / t / t* | demo false alarms 0.5 / t / t* | ms/answer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def prf(curve: Curve, t: float | None) -> str:
        if t is None:
            return "-"
        m = curve.at(t)
        return f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}"

    for r in results:
        chooser, shown = dev_curve(r, choose), dev_curve(r, held)
        if not shown.scores.size or r.probe is None or r.demo is None:
            lines.append(f"| {r.label} | pending: no scores | | | | | | | | | | |")
            continue
        probe, demo = r.probe, r.demo
        base_probe, base_demo = false_alarms(probe, DEFAULT_THRESHOLD), false_alarms(demo, DEFAULT_THRESHOLD)
        t = chooser.best_threshold()
        t_star = chooser.best_threshold(
            lambda x, p=probe, d=demo, bp=base_probe, bd=base_demo: false_alarms(p, x) <= bp
            and false_alarms(d, x) <= bd)
        thresholds = (DEFAULT_THRESHOLD, t, t_star)
        fa_probe = " / ".join(str(false_alarms(probe, x)) if x is not None else "-" for x in thresholds)
        miss_probe = " / ".join(str(missed(probe, x)) if x is not None else "-" for x in thresholds)
        fa_demo = " / ".join(str(false_alarms(demo, x)) if x is not None else "-" for x in thresholds)
        ms = 1000 * r.seconds / max(len(r.dev_items), 1)
        lines.append(
            f"| {r.label} | {_f(shown.auc())} | {_f(shown.average_precision())} | {prf(shown, DEFAULT_THRESHOLD)} "
            f"| {_f(t)} | {prf(shown, t)} | {_f(t_star)} | {prf(shown, t_star)} | {fa_probe} | {miss_probe} "
            f"| {fa_demo} | {ms:.1f} |"
        )
    for name, why in pending.items():
        lines.append(f"| {name} | pending: {why} | | | | | | | | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HaluEval QA JSONL file")
    parser.add_argument("--no-embedding", dest="embedding", action="store_false",
                        help="skip gatekeeper-hf's embedding_grounding (MiniLM)")
    parser.add_argument("--nli-model", default=None, help="a local NLI model directory for nli_grounding")
    parser.add_argument("--scores", action="append", default=[], metavar="NAME=FILE",
                        help="scores computed elsewhere (JSONL of id, score); repeatable")
    parser.add_argument("--only", default=None, metavar="PREFIX",
                        help="score only the detectors whose label starts with PREFIX")
    parser.add_argument("--rows", type=int, default=None, metavar="N",
                        help="score a seeded sample of N HaluEval rows (for slow detectors on a shared CPU)")
    parser.add_argument("--save-scores", type=Path, default=None, metavar="FILE",
                        help="write every score as JSONL (id, detector, score), for --scores in a later run")
    parser.add_argument("--curve", action="append", default=[], metavar="DETECTOR",
                        help="print the precision/recall curve of the detectors whose label starts with this")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"{args.data}: not found (give --data PATH)", file=sys.stderr)
        return 2
    dev, probe, demo = load_halueval(args.data), load_probe(), load_demo()
    rows = max(item.row for item in dev)
    print(f"{args.data.name}: {rows} rows, {len(dev)} labelled answers (positive = hallucinated); "
          f"paraphrase probe: {len(probe)} answers; demo suite: {len(demo)} faithful answers\n")
    found, pending = scorers(args)
    if args.only:
        found = {k: v for k, v in found.items() if k.strip().startswith(args.only)}
        pending = {}
    if args.rows:
        keep = set(random.Random(SEED + 1).sample(range(1, rows + 1), args.rows))
        dev = [item for item in dev if item.row in keep]
        print(f"a seeded sample of {args.rows} rows: {len(dev)} answers\n")
    results = []
    for label, scorer in found.items():
        results.append(measure(label, scorer, dev, probe, demo))
        print(f"scored: {label} ({results[-1].seconds:.1f} s)", file=sys.stderr, flush=True)
    if args.save_scores:
        with args.save_scores.open("w", encoding="utf-8") as fh:
            for r in results:
                for item, score in r.dev_items + r.other_items:
                    fh.write(json.dumps({"id": item.id, "detector": r.label, "score": score}) + "\n")
        print(f"wrote {args.save_scores}", file=sys.stderr)
    for split, parts in splits(rows).items():
        print(report(results, pending, split, parts) + "\n")
    for prefix in args.curve:
        for r in results:
            if not r.label.startswith(prefix):
                continue
            shown = dev_curve(r, splits(rows)["rows"][1])
            print(f"precision/recall curve of {r.label} on rows {rows // 2 + 1}-{rows} (flag when score > t):")
            print("| t | precision | recall |\n|---:|---:|---:|")
            for t, p, rec in shown.pr_points():
                print(f"| {max(t, 0.0):.3f} | {p:.3f} | {rec:.3f} |")
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
