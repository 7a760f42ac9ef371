"""How big the HTML report gets, and how fast Chromium opens it, for a 5,000-case suite.

Builds a synthetic support suite (N cases over 12 topics, each with a context passage, a
question, facts and a reference answer), baseline and candidate recordings that differ on
a share of cases (dropped facts, invented details), runs a real ``gatekeeper check``,
then measures ``report.html`` (size, render time via ``gatekeeper report``) and opens it in
headless Chromium over DevTools (time to the load event, median of a few loads). The
bundled 80-case demo is measured the same way in the same run as the reference.

    .venv/bin/python bench/report_size.py            # 5,000 cases
    .venv/bin/python bench/report_size.py --cases 20000
    .venv/bin/python bench/report_size.py --cases 2000 --huge-output-mb 6   # one 6 MB candidate output

The record's size is measured whole: ``decision.json`` plus, in record format 2 (issue 18),
``cases.jsonl``, ``case_index.jsonl`` and ``blobs/``. To compare with an older gatekeeper,
run the same command with ``PYTHONPATH`` pointing at its source tree (``git archive``).

Target (issue 7): the 5,000-case report stays under 5 MB and opens in a few seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["returns", "shipping", "billing", "warranty", "orders", "rentals", "loyalty", "account",
          "repairs", "gift-cards", "pickup", "price-match"]
SUITE = """
suite: synthetic-support
description: synthetic support cases for the report-size benchmark
prompt:
  messages:
    - {role: system, content: Answer only from the passage.}
    - {role: user, content: "Passage: {{ context }}\\n\\nQuestion: {{ input }}"}
dataset: cases.jsonl
slices: [topic]
evaluators:
  - {name: contains, as: facts, field: facts, mode: all}
  - {name: rouge_l}
detectors:
  - {name: grounding}
"""
POLICY = """
metadata: {id: bench-pccp, title: Benchmark plan, version: "1", effective_date: 2026-01-01, owner: bench}
modifications:
  - {id: M1, type: lora_adapter_retrain, description: retrain, authorization: automatic,
     evaluation: [facts, grounding, rouge_l]}
performance_evaluation:
  suites: [synthetic-support]
  metrics:
    - {name: facts, metric: facts, measure: passed, direction: higher, hypothesis: non_inferiority,
       margin: 0.05, ci_method: tango, critical: true, slices: [topic], min_slice_n: 20}
    - {name: grounding, metric: grounding, direction: lower, hypothesis: non_inferiority, margin: 0.05,
       ci_method: tango, critical: true, guardrail: {max: 0.5}}
    - {name: rouge_l, metric: rouge_l, direction: higher, hypothesis: non_inferiority, margin: 0.05,
       ci_method: bootstrap_percentile}
gate: {max_failed_noncritical: 1, max_inconclusive_noncritical: 1}
impact_assessment: {intended_use: benchmark}
traceability:
  - {modification: M1, evaluations: [facts, grounding, rouge_l], rationale: benchmark}
"""


def write_project(root: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    rows, base, cand = [], [], []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        days = rng.choice([14, 30, 45, 60, 90])
        fee = rng.choice(["$4.95", "$6.95", "$9.95"])
        context = (f"[{topic} policy {i}] Items can be handled within {days} days of delivery. A {fee} fee applies "
                   f"to mail-in requests; in-store requests are free. Members of the rewards program get "
                   f"{days * 2} days. Contact Customer Care at 1-800-555-0148 for exceptions. " * 2).strip()
        question = f"Case {i}: how long do I have for my {topic} request, and is there a fee?"
        right = f"You have {days} days from delivery. Mail-in requests cost {fee}; in-store requests are free."
        rows.append({"id": f"case-{i:05d}", "input": question, "context": context, "expected": right,
                     "facts": [f"{days} days", fee], "topic": topic})
        base.append({"id": f"case-{i:05d}", "output": right if rng.random() < 0.82 else
                     f"You have {days} days. There may be a fee."})
        r = rng.random()
        cand.append({"id": f"case-{i:05d}", "output": (
            right if r < 0.86 else
            f"You have {days} days, and Zanzibar members get 200 days free on Wednesdays." if r < 0.93 else
            f"You have {days} days from delivery.")})
    (root / "suites").mkdir(parents=True)
    (root / "suites/synthetic.yaml").write_text(SUITE)
    (root / "suites/cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "baseline.jsonl").write_text("".join(json.dumps(r) + "\n" for r in base))
    (root / "candidate.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cand))
    (root / "policy.yaml").write_text(POLICY)


def huge_output(root: Path, mb: float) -> None:
    """Make the first candidate output ``mb`` MB of sentences: each is a claim the grounding
    detector checks and flags, so spans cover the whole output."""
    lines = (root / "candidate.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    sentence = "Zanzibar members get 200 days free on Wednesdays. "
    first["output"] = sentence * int(mb * 1e6 / len(sentence))
    lines[0] = json.dumps(first)
    (root / "candidate.jsonl").write_text("\n".join(lines) + "\n")


def record_size(out: Path) -> tuple[float, float, int]:
    """MB of decision.json, MB of the whole record (its per-case files and blobs too), and the blob count."""
    decision = (out / "decision.json").stat().st_size
    extra = [p for name in ("cases.jsonl", "case_index.jsonl") if (p := out / name).is_file()]
    blobs = [p for p in (out / "blobs").iterdir()] if (out / "blobs").is_dir() else []
    total = decision + sum(p.stat().st_size for p in extra + blobs)
    return decision / 1e6, total / 1e6, len(blobs)


def case_count(stored: dict) -> int:
    """Cases asked, in either record format (1: inline ``case_index``; 2: ``case_files``)."""
    files = stored.get("case_files") or {}
    return int((files.get("case_index") or {}).get("rows") or len(stored.get("case_index") or {}))


def gatekeeper(root: Path, *args: str) -> tuple[int, float]:
    from gatekeeper.testing import Project

    start = time.perf_counter()
    result = Project(root).run(*args)
    took = time.perf_counter() - start
    if result.exit_code not in (0, 1, 2, 3):
        sys.exit(f"gatekeeper {' '.join(args)} failed ({result.exit_code}):\n{result.output}")
    return result.exit_code, took


def open_times(report: Path, repeats: int) -> list[float]:
    from gatekeeper.reports.browser import BrowserPage, find_chromium

    if not find_chromium():
        return []
    times = []
    with BrowserPage(width=1280, height=900) as page:
        for _ in range(repeats):
            times.append(page.open(report.resolve().as_uri(), settle_s=0.0))
            page.open("about:blank", settle_s=0.0)
        problems = page.events.problems()
    if problems:
        print("  browser reported:", problems[:3])
    return times


def measure(label: str, root: Path, check_args: list[str], repeats: int) -> dict[str, float]:
    code, check_s = gatekeeper(root, "check", *check_args, "--out", "out", "--no-progress")
    _, render_s = gatekeeper(root, "report", "out", "--format", "html")
    report = root / "out/report.html"
    times = open_times(report, repeats)
    decision_mb, record_mb, blobs = record_size(root / "out")
    row = {
        "cases": float(case_count(json.loads((root / "out/decision.json").read_text()))),
        "decision_json_mb": decision_mb,
        "record_mb": record_mb,
        "blobs": float(blobs),
        "report_html_mb": report.stat().st_size / 1e6,
        "check_s": check_s,
        "render_s": render_s,
        "open_s": statistics.median(times) if times else float("nan"),
    }
    print(f"{label:>14}: exit {code}, {int(row['cases'])} cases, decision.json {row['decision_json_mb']:.2f} MB "
          f"(whole record {row['record_mb']:.2f} MB, {int(row['blobs'])} blob(s)), "
          f"report.html {row['report_html_mb']:.3f} MB, check {check_s:.1f} s, render {render_s:.2f} s, "
          f"Chromium load {row['open_s']:.2f} s (median of {len(times)})")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--huge-output-mb", type=float, default=0.0,
                        help="make the first candidate output this many MB (issue 18: one 6 MB output)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gk-report-bench-") as tmp:
        demo = Path(tmp) / "demo"
        demo.mkdir()
        shutil.copytree(REPO / "suites", demo / "suites")
        shutil.copytree(REPO / "policies", demo / "policies")
        ref = measure("demo (ref)", demo, [
            "suites", "--baseline", "replay:suites/recordings/baseline.jsonl",
            "--candidate", "replay:suites/recordings/candidate-better.jsonl",
            "--policy", "policies/support-assistant.yaml"], args.repeats)
        big = Path(tmp) / "big"
        write_project(big, args.cases)
        if args.huge_output_mb:
            huge_output(big, args.huge_output_mb)
        row = measure(f"{args.cases} cases", big, [
            "suites", "--baseline", "replay:baseline.jsonl", "--candidate", "replay:candidate.jsonl",
            "--policy", "policy.yaml"], args.repeats)
    print(f"\nratios vs the demo: cases ×{row['cases'] / ref['cases']:.0f}, "
          f"report.html ×{row['report_html_mb'] / ref['report_html_mb']:.1f}, "
          f"Chromium load ×{row['open_s'] / ref['open_s']:.1f}")
    verdict = "under" if row["report_html_mb"] < 5 else "OVER"
    print(f"target: report.html {row['report_html_mb']:.2f} MB is {verdict} 5 MB; opens in {row['open_s']:.2f} s")


if __name__ == "__main__":
    main()
