"""How the single-machine gate scales: 10^4, 10^5 and 10^6 cases x 10 metrics (issue 18).

Generates, into a temporary directory, a synthetic suite with N cases (a prompt template,
slices over 12 topics, clusters of 5 cases per document), baseline and candidate
recordings that differ on a share of cases, and a policy over 10 metrics (exact match,
contains, not_contains, regex, ROUGE-L, BLEU, token F1, edit similarity, length, latency),
some per slice. Each size runs a real ``gatekeeper check`` (replayed: no model is called)
in a child process, so peak memory is that run's alone; the child times each stage and
samples its resident memory:

* ``load``       -- collecting the suite (YAML, dataset, templates) and loading the models;
* ``score``      -- the runner: cache look-ups, replay, scoring, cache writes;
* ``statistics`` -- per-metric and per-slice intervals and verdicts;
* ``reports``    -- the record, the reports and the audit entry (the rest of the check).

Then the growth exponent of each stage (slope of log time against log n) and, for the
smallest size, a re-run of the same check with everything cached. ``--profile`` writes
cProfile's top functions for each size.

    python bench/large_suites.py                          # 10^4 and 10^5
    python bench/large_suites.py --sizes 10000 100000 1000000
    python bench/large_suites.py --sizes 10000 --profile

Targets (issue 18): 10^5 x 10 decided in < 10 s of the gate's own work on 2 cores; peak
memory < 2 GB at 10^6; a cached re-run of 10^4 < 2 s; report.html < 5 MB and opening in
headless Chromium in < 2 s at every size. The machine is shared: absolute times are noisy,
ratios within one run are not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["returns", "shipping", "billing", "warranty", "orders", "rentals", "loyalty", "account",
          "repairs", "gift-cards", "pickup", "price-match"]
CLUSTER_SIZE = 5

SUITE = """
suite: large
description: synthetic cases for the scaling benchmark (bench/large_suites.py)
prompt:
  messages:
    - {role: system, content: "Answer only from the passage. Be brief."}
    - {role: user, content: "Passage: {{ context }}\\n\\nQuestion: {{ input }}"}
dataset: cases.jsonl
slices: [topic]
cluster: doc
evaluators:
  - {name: exact_match, as: exact}
  - {name: contains, as: facts, field: facts, mode: all}
  - {name: not_contains, as: no_internal, values: ["internal note", "Zanzibar"]}
  - {name: regex, as: has_days, pattern: "\\\\d+ days"}
  - {name: rouge_l}
  - {name: bleu}
  - {name: token_f1}
  - {name: edit_similarity}
  - {name: length, max_words: 40}
  - {name: latency, max_ms: 2000}
"""

POLICY = """
metadata: {id: bench-large, title: Scaling benchmark plan, version: "1", effective_date: 2026-01-01, owner: bench}
modifications:
  - {id: M1, type: lora_adapter_retrain, description: retrain, authorization: automatic,
     evaluation: [exact, facts, no_internal, has_days, rouge_l, bleu, token_f1, edit_similarity, length, latency]}
performance_evaluation:
  suites: [large]
  metrics:
    - {name: exact, metric: exact, measure: passed, direction: higher, hypothesis: non_inferiority,
       margin: 0.05, critical: true, slices: [topic], min_slice_n: 20}
    - {name: facts, metric: facts, direction: higher, hypothesis: non_inferiority, margin: 0.05,
       ci_method: bootstrap_percentile, critical: true, slices: [topic], min_slice_n: 20}
    - {name: no_internal, metric: no_internal, measure: passed, direction: higher,
       hypothesis: non_inferiority, margin: 0.05, critical: true}
    - {name: has_days, metric: has_days, measure: passed, direction: higher, hypothesis: non_inferiority,
       margin: 0.05}
    - {name: rouge_l, metric: rouge_l, direction: higher, hypothesis: non_inferiority, margin: 0.05,
       ci_method: bootstrap_bca, slices: [topic], min_slice_n: 20}
    - {name: bleu, metric: bleu, direction: higher, hypothesis: non_inferiority, margin: 0.05,
       ci_method: bootstrap_percentile}
    - {name: token_f1, metric: token_f1, direction: higher, hypothesis: non_inferiority, margin: 0.05,
       ci_method: t}
    - {name: edit_similarity, metric: edit_similarity, direction: higher, hypothesis: non_inferiority,
       margin: 0.05, ci_method: cluster}
    - {name: length, metric: length, measure: passed, direction: higher, hypothesis: non_inferiority,
       margin: 0.05}
    - {name: latency, metric: latency, direction: lower, hypothesis: non_inferiority, margin: 50,
       ci_method: t}
gate: {max_failed_noncritical: 3, max_inconclusive_noncritical: 5}
impact_assessment: {intended_use: benchmark}
traceability:
  - {modification: M1, evaluations: [exact, facts, no_internal, has_days, rouge_l, bleu, token_f1,
                                      edit_similarity, length, latency], rationale: benchmark}
"""


# --------------------------------------------------------------------------- the project


def write_project(root: Path, n: int, seed: int = 0) -> None:
    """The suite, its dataset, both recordings and the policy for ``n`` cases (streamed to disk)."""
    rng = random.Random(seed)
    (root / "suites").mkdir(parents=True, exist_ok=True)
    (root / "suites/large.yaml").write_text(SUITE)
    (root / "policy.yaml").write_text(POLICY)
    (root / "gatekeeper.yaml").write_text("suites: [suites]\n")
    with (root / "suites/cases.jsonl").open("w") as cases, (root / "baseline.jsonl").open("w") as base, \
            (root / "candidate.jsonl").open("w") as cand:
        for i in range(n):
            topic = TOPICS[i % len(TOPICS)]
            days = rng.choice([14, 30, 45, 60, 90])
            fee = rng.choice(["$4.95", "$6.95", "$9.95"])
            doc = i // CLUSTER_SIZE
            context = (f"[{topic} policy {doc}] Items can be handled within {days} days of delivery. "
                       f"A {fee} fee applies to mail-in requests; in-store requests are free.")
            question = f"Case {i}: how long do I have for my {topic} request, and is there a fee?"
            right = f"You have {days} days from delivery. Mail-in requests cost {fee}; in-store requests are free."
            key = f"case-{i:07d}"
            cases.write(json.dumps({"id": key, "input": question, "context": context, "expected": right,
                                    "facts": [f"{days} days", fee], "topic": topic, "doc": f"doc-{doc}"}) + "\n")
            b = right if rng.random() < 0.82 else f"You have {days} days. There may be a fee."
            base.write(json.dumps({"id": key, "output": b, "latency_ms": round(rng.uniform(200, 900), 1)}) + "\n")
            r = rng.random()
            c = (right if r < 0.86 else
                 f"You have {days} days, and Zanzibar members get 200 days free on Wednesdays." if r < 0.93 else
                 f"You have {days} days from delivery.")
            cand.write(json.dumps({"id": key, "output": c, "latency_ms": round(rng.uniform(180, 850), 1)}) + "\n")


# --------------------------------------------------------------------------- the child: one check, timed


class MemorySampler(threading.Thread):
    """Samples this process's resident memory every 20 ms; ``peak()`` since the last ``mark()``."""

    def __init__(self, limit_mb: float | None = None) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self._peak = 0
        self.limit = None if limit_mb is None else limit_mb * 2**20
        self.stage = "load"
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            rss = self.process.memory_info().rss
            self._peak = max(self._peak, rss)
            if self.limit is not None and rss > self.limit:
                # The machine is shared: stop before the run takes everyone's memory.
                print(json.dumps({"aborted": f"resident memory {rss / 2**20:.0f} MB passed the "
                                  f"--max-rss-mb limit during the {self.stage} stage"}), flush=True)
                os._exit(9)
            time.sleep(0.02)

    def mark(self) -> int:
        rss = self.process.memory_info().rss
        peak, self._peak = max(self._peak, rss), rss
        return peak


def child(root: Path, profile: bool, label: str, max_rss_mb: float | None = None) -> dict[str, Any]:
    """Run one check in this process with its stages timed; returns the figures."""
    os.chdir(root)
    sys.argv = ["gatekeeper"]
    from gatekeeper.engine import session as session_mod
    from gatekeeper.gate import check as check_mod
    from gatekeeper.gate import decision as decision_mod

    sampler = MemorySampler(max_rss_mb)
    sampler.start()
    stages: dict[str, dict[str, float]] = {}
    clock = {"last": time.perf_counter(), "cpu": time.process_time()}
    following = {"load": "score", "score": "reports", "reports": "statistics", "statistics": "reports"}

    def close_stage(name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        entry = stages.setdefault(name, {"s": 0.0, "cpu_s": 0.0, "peak_mb": 0.0})
        entry["s"] += now - clock["last"]
        entry["cpu_s"] += cpu - clock["cpu"]
        entry["peak_mb"] = max(entry["peak_mb"], sampler.mark() / 2**20)
        clock["last"], clock["cpu"] = now, cpu
        sampler.stage = following[name]

    def timed(owner: Any, attr: str, before: str, after: str) -> None:
        original = getattr(owner, attr)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            close_stage(before)
            try:
                return original(*args, **kwargs)
            finally:
                close_stage(after)

        setattr(owner, attr, wrapper)

    # load: from the start until the models run; score: the run; statistics: the metrics;
    # reports: everything after (record, reports, audit).
    timed(session_mod.Session, "run", "load", "score")
    original_metrics = decision_mod.evaluate_metrics

    def metrics(*args: Any, **kwargs: Any) -> Any:
        close_stage("reports")  # the run record is built between the run and the metrics
        result = original_metrics(*args, **kwargs)
        close_stage("statistics")
        return result

    decision_mod.evaluate_metrics = metrics  # type: ignore[assignment]
    from gatekeeper.cli import main

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started, cpu_started = time.perf_counter(), time.process_time()
    clock["last"], clock["cpu"] = started, cpu_started
    code = main(["check", "--baseline", "replay:baseline.jsonl", "--candidate", "replay:candidate.jsonl",
                 "--policy", "policy.yaml", "--out", "out", "--no-progress"])
    close_stage("reports")
    total, cpu_total = time.perf_counter() - started, time.process_time() - cpu_started
    if profiler is not None:
        import io
        import pstats

        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(45)
        text.write("\n--- by own time ---\n")
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
        (root / f"profile-{label}.txt").write_text(text.getvalue())
    sampler.stopped.set()
    import resource

    del check_mod
    return {"exit_code": code, "total_s": total, "cpu_s": cpu_total, "stages": stages,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# --------------------------------------------------------------------------- the parent


def run_child(root: Path, *, profile: bool, label: str, cores: str | None, max_rss_mb: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(root), "--label", label, "--max-rss-mb", str(max_rss_mb)]
    cmd += ["--profile"] if profile else []
    if cores and hasattr(os, "sched_setaffinity"):
        cmd = ["taskset", "-c", cores, *cmd]
    env = {**os.environ, "GATEKEEPER_NO_PROGRESS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode == 9 and '"aborted"' in proc.stdout:
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    if proc.returncode != 0:
        sys.exit(f"the benchmark child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def open_time(report: Path, repeats: int = 3) -> float:
    """Median time Chromium (headless, over DevTools) takes to the load event; NaN without Chromium."""
    from gatekeeper.reports.browser import BrowserPage, find_chromium

    if not find_chromium():
        return float("nan")
    times = []
    with BrowserPage(width=1280, height=900) as page:
        for _ in range(repeats):
            times.append(page.open(report.resolve().as_uri(), settle_s=0.0))
            page.open("about:blank", settle_s=0.0)
    return sorted(times)[len(times) // 2]


def exponent(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of log(y) on log(x): 1.0 is linear growth."""
    pts = [(math.log(x), math.log(max(y, 1e-6))) for x, y in points]
    if len(pts) < 2:
        return float("nan")
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--profile", action="store_true", help="write cProfile's top functions per size")
    parser.add_argument("--cores", default="0,1", help="CPUs the check may use (taskset), default 0,1")
    parser.add_argument("--keep", type=Path, help="build the projects here and keep them")
    parser.add_argument("--no-rerun", action="store_true", help="skip the cached re-run of the smallest size")
    parser.add_argument("--max-rss-mb", type=float, default=4096,
                        help="stop a check whose resident memory passes this (the machine is shared)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--label", default="run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.profile, args.label, args.max_rss_mb)))
        return

    with tempfile.TemporaryDirectory(prefix="gk-large-") as tmp:
        base = args.keep or Path(tmp)
        rows: list[dict[str, Any]] = []
        for n in args.sizes:
            root = base / f"n{n}"
            started = time.perf_counter()
            write_project(root, n)
            print(f"n = {n:,}: project written in {time.perf_counter() - started:.1f} s", flush=True)
            figures = run_child(root, profile=args.profile, label="first", cores=args.cores,
                                max_rss_mb=args.max_rss_mb)
            if "aborted" in figures:
                print(f"  stopped: {figures['aborted']}", flush=True)
                continue
            report, decision = root / "out/report.html", root / "out/decision.json"
            if figures["exit_code"] not in (0, 1, 2, 3):
                why = (root / "out/CHECK_INCOMPLETE").read_text() if (root / "out/CHECK_INCOMPLETE").exists() else ""
                print(f"  the check failed (exit {figures['exit_code']}); stages are up to the failure. {why}")
            figures.update(n=n, report_mb=report.stat().st_size / 1e6 if report.exists() else float("nan"),
                           decision_mb=decision.stat().st_size / 1e6 if decision.exists() else float("nan"),
                           open_s=open_time(report) if report.exists() else float("nan"))
            if n == min(args.sizes) and not args.no_rerun:
                again = run_child(root, profile=args.profile, label="cached", cores=args.cores,
                                  max_rss_mb=args.max_rss_mb)
                figures["cached_total_s"] = again["total_s"]
                figures["cached_cpu_s"] = again["cpu_s"]
                figures["cached_stages"] = again["stages"]
            rows.append(figures)
            stages = "  ".join(f"{name} {v['s']:.2f} s (cpu {v['cpu_s']:.2f} s) / {v['peak_mb']:.0f} MB"
                               for name, v in figures["stages"].items())
            print(f"  exit {figures['exit_code']}, total {figures['total_s']:.2f} s "
                  f"(cpu {figures['cpu_s']:.2f} s), peak RSS "
                  f"{figures['peak_rss_mb']:.0f} MB; {stages}")
            print(f"  decision.json {figures['decision_mb']:.1f} MB, report.html {figures['report_mb']:.2f} MB, "
                  f"Chromium load {figures['open_s']:.2f} s", flush=True)
            if "cached_total_s" in figures:
                cached = "  ".join(f"{name} cpu {v['cpu_s']:.2f} s" for name, v in figures["cached_stages"].items())
                print(f"  cached re-run: {figures['cached_total_s']:.2f} s "
                      f"(cpu {figures['cached_cpu_s']:.2f} s); {cached}", flush=True)
            if args.profile:
                cached_profile = " and profile-cached.txt" if n == min(args.sizes) else ""
                print(f"  profiles: {root}/profile-first.txt{cached_profile}")

    if len(rows) > 1:
        print("\ngrowth exponent (slope of log CPU time on log n; 1 = linear):")
        for stage in rows[0]["stages"]:
            slope = exponent([(r["n"], r["stages"][stage]["cpu_s"]) for r in rows])
            print(f"  {stage:>10}: {slope:.2f}")
        print(f"  {'total':>10}: {exponent([(r['n'], r['cpu_s']) for r in rows]):.2f}")
        print(f"  {'peak RSS':>10}: {exponent([(r['n'], r['peak_rss_mb']) for r in rows]):.2f}")
    print("\ntargets:")
    for r in rows:
        marks = []
        if r["n"] == 100_000:
            marks.append(f"decided in {r['cpu_s']:.1f} s of CPU ({'<' if r['cpu_s'] < 10 else '>='} 10 s; "
                         f"wall {r['total_s']:.1f} s)")
        if r["n"] >= 1_000_000:
            marks.append(f"peak {r['peak_rss_mb']:.0f} MB ({'<' if r['peak_rss_mb'] < 2048 else '>='} 2 GB)")
        if "cached_total_s" in r:
            ok = "<" if r["cached_cpu_s"] < 2 else ">="
            marks.append(f"cached re-run {r['cached_cpu_s']:.2f} s of CPU ({ok} 2 s; wall {r['cached_total_s']:.2f} s)")
        marks.append(f"report.html {r['report_mb']:.2f} MB ({'<' if r['report_mb'] < 5 else '>='} 5 MB)")
        marks.append(f"opens in {r['open_s']:.2f} s")
        print(f"  n = {r['n']:,}: " + "; ".join(marks))


if __name__ == "__main__":
    main()
