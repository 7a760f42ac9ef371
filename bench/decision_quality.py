"""How often the gate makes the right call, next to the rules other evaluation tools use.

Each simulated dataset is a set of paired binary outcomes: per case, is the baseline's
answer right, and is the candidate's? The baseline is right on 80 % of cases, about 12 %
of the pairs are discordant (one model right, the other wrong), and the candidate's true
accuracy differs from the baseline's by a known delta:

    P(candidate right, baseline wrong) = (0.12 + delta) / 2
    P(baseline right, candidate wrong) = (0.12 - delta) / 2

Every dataset is written as a suite (a JSONL dataset whose cases carry the expected fact)
plus two replay recordings, and pushed through the real ``gatekeeper check`` command,
in-process (:class:`gatekeeper.testing.Project`), with a fresh cache and audit trail per
check. The policy has one critical metric, ``facts`` (the ``contains`` evaluator, 0/1
per case), non-inferiority with margin 0.03, alpha 0.05, Tango's score interval.

On the same data the script applies the rules other tools use:

* point: PROMOTE when the candidate's accuracy is at least the baseline's (the
  comparison promptfoo or deepeval users write in CI);
* tolerance: PROMOTE when candidate >= baseline - 0.02, a fixed allowance on the raw
  difference (MLflow's ``MetricThreshold`` compares raw values the same way, though its
  ``min_absolute_change`` must be positive; TFMA's ``GenericChangeThreshold`` takes a
  negative absolute change);
* floor: PROMOTE when the candidate's accuracy is at least 0.78, whatever the baseline.

A full check costs about half a second at n = 500 and two at n = 2000, so the real path can
afford only some tens of repetitions per cell in a quarter of an hour. To pin the rates
down more tightly the script also feeds many more simulated datasets (``--api-reps``)
through the gate's own decision functions (``decision.evaluate_metric`` and
``decision.decide`` with the same policy object, without the suite, runner and report
I/O) and checks, rep by rep, that they agree with the real command.

    .venv/bin/python bench/decision_quality.py                      # the documented run
    .venv/bin/python bench/decision_quality.py --reps 5 --api-reps 500 --sizes 500   # smoke test
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from gatekeeper.testing import Project

SIZES = (500, 2000)
DELTAS = (0.02, 0.0, -0.01, -0.02, -0.03, -0.05, -0.08)
BASELINE_ACCURACY = 0.80
DISCORDANT_SHARE = 0.12
MARGIN = 0.03
TOLERANCE = Fraction("0.02")
FLOOR = Fraction("0.78")
DECISIONS = ("PROMOTE", "INCONCLUSIVE", "REJECT")
EXIT_CODES = {"PROMOTE": 0, "REJECT": 1, "INCONCLUSIVE": 3}
ENV = {"GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD": "1", "HF_HUB_OFFLINE": "1"}

SUITE = """
suite: simulated
description: paired binary outcomes with a known true difference
prompt: {messages: [{role: user, content: "{{ input }}"}]}
dataset: cases.jsonl
evaluators:
  - {name: contains, as: facts, field: facts, mode: all}
"""

POLICY = f"""
metadata: {{id: decision-quality-bench, title: Decision-quality benchmark, version: "1",
            effective_date: 2026-01-01, owner: bench}}
modifications:
  - id: M1
    type: lora_adapter_retrain
    description: adapter retrain
    authorization: automatic
    evaluation: [facts]
performance_evaluation:
  suites: [simulated]
  metrics:
    - name: facts
      metric: facts
      direction: higher
      hypothesis: non_inferiority
      margin: {MARGIN}
      alpha: 0.05
      ci_method: tango
      critical: true
impact_assessment:
  intended_use: benchmark of the gate's decisions
  risks: [{{id: R1, description: loses facts, mitigation: gate, metrics: [facts]}}]
traceability:
  - {{modification: M1, evaluations: [facts], rationale: re-training can lose facts}}
"""

RIGHT_ANSWER = "You can return it within 30 days."
WRONG_ANSWER = "You can return it within 14 days."
FACT = "30 days"


# --------------------------------------------------------------------------- simulation


def outcome_probabilities(delta: float) -> np.ndarray:
    """P(both right), P(baseline only), P(candidate only), P(both wrong) for a true delta."""
    cand_only = (DISCORDANT_SHARE + delta) / 2
    base_only = (DISCORDANT_SHARE - delta) / 2
    both_right = BASELINE_ACCURACY - base_only
    probs = np.array([both_right, base_only, cand_only, 1 - both_right - base_only - cand_only])
    if (probs < 0).any():
        raise ValueError(
            f"delta {delta} does not fit baseline {BASELINE_ACCURACY} and {DISCORDANT_SHARE} discordant pairs"
        )
    return probs


def rng_for(seed: int, stream: int, n: int, delta: float, rep: int) -> np.random.Generator:
    """An independent, reproducible stream per (kind, cell, rep), whatever the scheduling."""
    return np.random.default_rng([seed, stream, n, DELTAS.index(delta), rep])


@dataclass(frozen=True)
class PairedOutcomes:
    """Per-case correctness of both models on one simulated dataset."""

    base_right: np.ndarray
    cand_right: np.ndarray

    @classmethod
    def simulate(cls, n: int, delta: float, rng: np.random.Generator) -> PairedOutcomes:
        kind = rng.choice(4, size=n, p=outcome_probabilities(delta))
        return cls(base_right=np.isin(kind, (0, 1)), cand_right=np.isin(kind, (0, 2)))

    @property
    def counts(self) -> Counts:
        b, c = self.base_right, self.cand_right
        return Counts(n=len(b), base_only=int((b & ~c).sum()), cand_only=int((c & ~b).sum()),
                      both_right=int((b & c).sum()))


@dataclass(frozen=True)
class Counts:
    """A paired 2x2 table; everything the rules below look at."""

    n: int
    base_only: int
    cand_only: int
    both_right: int

    @property
    def base_right(self) -> int:
        return self.both_right + self.base_only

    @property
    def cand_right(self) -> int:
        return self.both_right + self.cand_only


# --------------------------------------------------------------------------- peers' rules


def point_rule(c: Counts) -> bool:
    """promptfoo/deepeval style: the candidate scores at least what the baseline scores."""
    return c.cand_right >= c.base_right


def tolerance_rule(c: Counts) -> bool:
    """MLflow style: the candidate may lose at most TOLERANCE (absolute) accuracy."""
    return Fraction(c.cand_right - c.base_right, c.n) >= -TOLERANCE


def floor_rule(c: Counts) -> bool:
    """A fixed pass-rate threshold on the candidate alone."""
    return Fraction(c.cand_right, c.n) >= FLOOR


PEER_RULES = {"point": point_rule, "tolerance": tolerance_rule, "floor": floor_rule}


# --------------------------------------------------------------------------- the real gate


@dataclass(frozen=True)
class GateRun:
    """What one ``gatekeeper check`` decided, and how long it took."""

    decision: str
    n_needed: int | None
    wall_s: float


class GateProject:
    """A throwaway project with the suite's dataset for ``n`` cases and the policy."""

    def __init__(self, root: Path, n: int) -> None:
        self.project = Project(root)
        self.n = n
        self.ids = [f"q{i:04d}" for i in range(n)]
        self.project.write("suites/simulated.yaml", SUITE)
        self.project.write_jsonl("suites/cases.jsonl", (
            {"id": cid, "input": f"Customer question {i}: how long do I have to return my order?",
             "facts": [FACT]} for i, cid in enumerate(self.ids)
        ))
        self.project.write("policy.yaml", POLICY)

    def _recording(self, relpath: str, right: np.ndarray) -> None:
        self.project.write_jsonl(relpath, (
            {"id": cid, "output": RIGHT_ANSWER if ok else WRONG_ANSWER}
            for cid, ok in zip(self.ids, right, strict=True)
        ))

    def check(self, outcomes: PairedOutcomes) -> GateRun:
        """Write the recordings and run the real CLI with a fresh cache and audit trail."""
        shutil.rmtree(self.project.path / ".gatekeeper", ignore_errors=True)
        shutil.rmtree(self.project.path / "out", ignore_errors=True)
        self._recording("baseline.jsonl", outcomes.base_right)
        self._recording("candidate.jsonl", outcomes.cand_right)
        start = time.perf_counter()
        result = self.project.run(
            "check", "--baseline", "replay:baseline.jsonl", "--candidate", "replay:candidate.jsonl",
            "--policy", "policy.yaml", "--out", "out", "--no-progress", env=ENV,
        )
        wall_s = time.perf_counter() - start
        if result.exit_code not in EXIT_CODES.values():
            raise RuntimeError(f"gatekeeper check exited {result.exit_code}:\n{result.output}")
        record = self.project.read_json("out/decision.json")
        overall = next(m for m in record["metrics"] if m["slice"] is None)
        counts = outcomes.counts
        if EXIT_CODES[record["decision"]] != result.exit_code or overall["n"] != self.n or (
            round(overall["baseline"] * self.n) != counts.base_right
            or round(overall["candidate"] * self.n) != counts.cand_right
        ):
            raise RuntimeError(f"decision.json does not describe the simulated data: {overall}")
        return GateRun(record["decision"], (overall.get("power") or {}).get("n_needed"), wall_s)


class GateFunctions:
    """The gate's decision for a paired 2x2 table, by the functions ``check`` calls.

    Used for the high-repetition estimates. Tango's interval depends only on n and the
    two discordant counts, so decisions are memoized on them; every real check is
    compared with this path to show that the two agree.
    """

    def __init__(self, policy_path: Path) -> None:
        from gatekeeper.gate.policy import check_scope, load_policy

        self.policy = load_policy(policy_path)
        self.spec = self.policy.performance_evaluation.metrics[0]
        self.scope = check_scope(self.policy, None)
        self._memo: dict[tuple[int, int, int], str] = {}

    def decide(self, c: Counts) -> str:
        key = (c.n, c.base_only, c.cand_only)
        if key not in self._memo:
            self._memo[key] = self._decide(c)
        return self._memo[key]

    def _decide(self, c: Counts) -> str:
        from gatekeeper.gate.decision import GateInputs, decide, evaluate_metric

        both_wrong = c.n - c.both_right - c.base_only - c.cand_only
        base = [1.0] * c.both_right + [1.0] * c.base_only + [0.0] * c.cand_only + [0.0] * both_wrong
        cand = [1.0] * c.both_right + [0.0] * c.base_only + [1.0] * c.cand_only + [0.0] * both_wrong
        ids = [f"q{i:04d}" for i in range(c.n)]
        row = evaluate_metric(self.spec, dict(zip(ids, base, strict=True)), dict(zip(ids, cand, strict=True)),
                              clusters=None, clause="performance_evaluation.metrics[facts]")
        decision, _ = decide(self.policy, [row], GateInputs(scope=self.scope))
        return decision


# --------------------------------------------------------------------------- worker processes

_worker: dict[str, Any] = {}


def _init_worker(root: str) -> None:
    _worker["root"] = Path(tempfile.mkdtemp(prefix=f"worker{os.getpid()}-", dir=root))
    _worker["projects"] = {}
    _worker["functions"] = None


def _project(n: int) -> GateProject:
    projects: dict[int, GateProject] = _worker["projects"]
    if n not in projects:
        projects[n] = GateProject(_worker["root"] / f"n{n}", n)
    return projects[n]


def _functions() -> GateFunctions:
    if _worker["functions"] is None:
        _worker["functions"] = GateFunctions(_project(SIZES[0]).project.path / "policy.yaml")
    functions: GateFunctions = _worker["functions"]
    return functions


@dataclass(frozen=True)
class RepResult:
    """One simulated dataset: the real check's decision and the rest, for one cell."""

    n: int
    delta: float
    counts: Counts
    gate: GateRun
    functions_decision: str


def run_check_rep(task: tuple[int, float, int, int]) -> RepResult:
    n, delta, rep, seed = task
    outcomes = PairedOutcomes.simulate(n, delta, rng_for(seed, 0, n, delta, rep))
    gate = _project(n).check(outcomes)
    return RepResult(n, delta, outcomes.counts, gate, _functions().decide(outcomes.counts))


def run_functions_cell(task: tuple[int, float, int, int]) -> tuple[int, float, Counter[str]]:
    """``reps`` datasets of one cell through the decision functions and the peers' rules."""
    n, delta, reps, seed = task
    rng = rng_for(seed, 1, n, delta, 0)
    tables = rng.multinomial(n, outcome_probabilities(delta), size=reps)
    tally: Counter[str] = Counter()
    for both_right, base_only, cand_only, _ in tables:
        c = Counts(n=n, base_only=int(base_only), cand_only=int(cand_only), both_right=int(both_right))
        tally[_functions().decide(c)] += 1
        tally.update(name for name, rule in PEER_RULES.items() if rule(c))
    return n, delta, tally


# --------------------------------------------------------------------------- summaries


@dataclass
class Cell:
    """Tallies of one (n, delta) cell."""

    reps: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    peers: Counter[str] = field(default_factory=Counter)
    n_needed: list[int] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    disagreements: int = 0

    def add(self, r: RepResult) -> None:
        self.reps += 1
        self.decisions[r.gate.decision] += 1
        self.peers.update(name for name, rule in PEER_RULES.items() if rule(r.counts))
        if r.gate.decision == "INCONCLUSIVE" and r.gate.n_needed is not None:
            self.n_needed.append(r.gate.n_needed)
        self.wall_s.append(r.gate.wall_s)
        self.disagreements += r.functions_decision != r.gate.decision

    def p(self, decision: str) -> float:
        return self.decisions[decision] / self.reps


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def table(title: str, rows: list[tuple[float, Counter[str], int, str]]) -> list[str]:
    """Markdown table: one row per true delta."""
    lines = [
        title, "",
        "| true Δ | gate P(PROMOTE) | gate P(INCONCLUSIVE) | gate P(REJECT) | point P(PROMOTE) "
        "| tolerance P(PROMOTE) | floor P(PROMOTE) | median n_needed |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for delta, tally, reps, n_needed in rows:
        cells = [tally[d] / reps for d in DECISIONS] + [tally[p] / reps for p in PEER_RULES]
        lines.append(f"| {delta:+.2f} | " + " | ".join(f"{x:.3f}" for x in cells) + f" | {n_needed} |")
    return lines


def judge_at_most(k: int, reps: int, limit: float) -> str:
    low, _ = clopper_pearson(k, reps)
    if k / reps <= limit:
        return "holds"
    return "within Monte-Carlo error" if low <= limit else "VIOLATED"


def judge_at_least(k: int, reps: int, limit: float) -> str:
    _, high = clopper_pearson(k, reps)
    if k / reps >= limit:
        return "holds"
    return "within Monte-Carlo error" if high >= limit else "VIOLATED"


def rate(k: int, reps: int) -> str:
    low, high = clopper_pearson(k, reps)
    return f"{k / reps:.3f} ({k}/{reps}, 95% CI {low:.3f}-{high:.3f})"


def acceptance(cells: dict[tuple[int, float], Cell], fast: dict[tuple[int, float], Counter[str]],
               api_reps: int, sizes: tuple[int, ...]) -> list[str]:
    lines = [f"Acceptance (margin {MARGIN}, alpha 0.05; real check, then decision functions "
             f"with {api_reps} reps):"]
    for n in sizes:
        c, f = cells[(n, -0.03)], fast[(n, -0.03)]
        k, kf = c.decisions["PROMOTE"], f["PROMOTE"]
        lines.append(f"- n = {n}, Δ = -0.03, P(PROMOTE) ≤ 0.05: check {rate(k, c.reps)} → "
                     f"{judge_at_most(k, c.reps, 0.05)}; functions {rate(kf, api_reps)} → "
                     f"{judge_at_most(kf, api_reps, 0.05)}")
    if 2000 in sizes:
        c, f = cells[(2000, 0.0)], fast[(2000, 0.0)]
        k, kf = c.decisions["PROMOTE"], f["PROMOTE"]
        lines.append(f"- n = 2000, Δ = 0, P(PROMOTE) ≥ 0.90: check {rate(k, c.reps)} → "
                     f"{judge_at_least(k, c.reps, 0.90)}; functions {rate(kf, api_reps)} → "
                     f"{judge_at_least(kf, api_reps, 0.90)}")
    if 500 in sizes:
        c, f = cells[(500, 0.0)], fast[(500, 0.0)]
        rejects, inconclusive = c.decisions["REJECT"], c.decisions["INCONCLUSIVE"]
        median = f"{statistics.median(c.n_needed):.0f}" if c.n_needed else "—"
        lines.append(
            f"- n = 500, Δ = 0, never REJECT: check REJECT {rejects}/{c.reps} → "
            f"{'holds' if rejects == 0 else 'VIOLATED'}, INCONCLUSIVE {inconclusive}/{c.reps} "
            f"(median n_needed {median}; {len(c.n_needed)} of {inconclusive} report n_needed); "
            f"functions REJECT {rate(f['REJECT'], api_reps)} → "
            f"{'holds' if f['REJECT'] == 0 else 'not strictly: rare extreme draws'}"
        )
    return lines


def timing(cells: dict[tuple[int, float], Cell], sizes: tuple[int, ...], jobs: int,
           phases: dict[str, float]) -> list[str]:
    lines = [f"Wall time per `gatekeeper check` (in-process, {jobs} worker process(es), fresh cache each):"]
    for n in sizes:
        walls = sorted(w for (size, _), c in cells.items() if size == n for w in c.wall_s)
        p90 = statistics.quantiles(walls, n=10)[-1] if len(walls) > 1 else walls[0]
        lines.append(f"- n = {n}: median {statistics.median(walls):.2f} s, "
                     f"mean {statistics.fmean(walls):.2f} s, p90 {p90:.2f} s, max {walls[-1]:.2f} s "
                     f"over {len(walls)} checks")
    lines.append(f"- whole benchmark {sum(phases.values()) / 60:.1f} min: real checks "
                 f"{phases['checks'] / 60:.1f} min, decision functions "
                 f"{phases['functions'] / 60:.1f} min; 1-minute load average at the end "
                 f"{os.getloadavg()[0]:.1f}")
    return lines


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=50, help="real checks per (n, delta) cell (default 50)")
    parser.add_argument("--api-reps", type=int, default=10000,
                        help="datasets per cell through the decision functions (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), choices=SIZES)
    args = parser.parse_args(argv)
    sizes = tuple(args.sizes)
    started = time.perf_counter()

    cells = {(n, d): Cell() for n in sizes for d in DELTAS}
    fast: dict[tuple[int, float], Counter[str]] = {}
    with tempfile.TemporaryDirectory(prefix="gatekeeper-decision-bench-") as root, \
            multiprocessing.get_context("fork").Pool(args.jobs, _init_worker, (root,)) as pool:
        check_tasks = [(n, d, rep, args.seed) for n in sizes for d in DELTAS for rep in range(args.reps)]
        for done, result in enumerate(pool.imap_unordered(run_check_rep, check_tasks), 1):
            cells[(result.n, result.delta)].add(result)
            if done % max(1, len(check_tasks) // 20) == 0:
                print(f"  {done}/{len(check_tasks)} checks, {time.perf_counter() - started:.0f} s",
                      file=sys.stderr, flush=True)
        checks_done = time.perf_counter()
        cell_tasks = [(n, d, args.api_reps, args.seed) for n in sizes for d in DELTAS]
        for n, d, tally in pool.imap_unordered(run_functions_cell, cell_tasks):
            fast[(n, d)] = tally
    phases = {"checks": checks_done - started, "functions": time.perf_counter() - checks_done}

    out = [f"decision_quality.py --reps {args.reps} --api-reps {args.api_reps} --seed {args.seed} "
           f"--jobs {args.jobs}; {os.cpu_count()} CPU cores, Python {sys.version.split()[0]}", ""]
    for n in sizes:
        rows = []
        for d in DELTAS:
            c = cells[(n, d)]
            tally = c.decisions + c.peers
            rows.append((d, tally, c.reps, f"{statistics.median(c.n_needed):.0f}" if c.n_needed else "—"))
        out += [*table(f"### n = {n}: real `gatekeeper check`, {args.reps} runs per row", rows), ""]
        rows = [(d, fast[(n, d)], args.api_reps, "—") for d in DELTAS]
        out += [*table(f"### n = {n}: decision functions, {args.api_reps} datasets per row", rows), ""]
    disagreements = sum(c.disagreements for c in cells.values())
    out.append(f"Real check and decision functions disagreed on {disagreements} of "
               f"{sum(c.reps for c in cells.values())} datasets.")
    out.append("")
    out += [*acceptance(cells, fast, args.api_reps, sizes), ""]
    out += timing(cells, sizes, args.jobs, phases)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
