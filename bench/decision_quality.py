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
import math
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
        from gatekeeper.gate.score_tables import pairs_of

        both_wrong = c.n - c.both_right - c.base_only - c.cand_only
        base = [1.0] * c.both_right + [1.0] * c.base_only + [0.0] * c.cand_only + [0.0] * both_wrong
        cand = [1.0] * c.both_right + [0.0] * c.base_only + [1.0] * c.cand_only + [0.0] * both_wrong
        ids = [f"q{i:04d}" for i in range(c.n)]
        pairs = pairs_of(dict(zip(ids, base, strict=True)), dict(zip(ids, cand, strict=True)))
        row = evaluate_metric(self.spec, pairs, clusters=None, clause="performance_evaluation.metrics[facts]")
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


# --------------------------------------------------------------------------- the simulation study
#
# Designs beyond one binary metric over independent cases: other baselines, clusters, small
# samples, skewed continuous scores, slices and many critical metrics. Each dataset goes
# through the gate's decision functions (``decision.evaluate_metrics`` and ``decision.decide``
# with a loaded policy: what ``gatekeeper check`` calls after scoring); a sample of the binary
# datasets also goes through the real CLI to show that the two agree.

STUDY_ALPHA = 0.05
STUDY_POWER = 0.8


@dataclass(frozen=True)
class Design:
    """One simulated situation. ``n`` is the number of cases of the 'at the margin' runs."""

    name: str
    kind: str  # "binary" or "rouge"
    n: int
    margin: float
    base_acc: float = 0.80
    discordance: float = 0.12
    icc: float | None = None
    cluster_size: int = 10
    slices: int = 0
    metrics: int = 1
    method: str = "auto"
    reps: int = 2000
    plan: bool = True
    """False: only the 'at the margin' property (a fixed-n design such as small n)."""

    @property
    def binary(self) -> bool:
        return self.kind == "binary"


DESIGNS: tuple[Design, ...] = (
    Design("binary, baseline 0.80, 12% discordant", "binary", 500, 0.03),
    Design("binary, baseline 0.55, 30% discordant", "binary", 500, 0.05, base_acc=0.55, discordance=0.30),
    Design("clustered binary, ICC 0.1 (50 x 10)", "binary", 500, 0.05, discordance=0.30, icc=0.1, reps=1000),
    Design("clustered binary, ICC 0.3 (50 x 10)", "binary", 500, 0.05, discordance=0.30, icc=0.3, reps=1000),
    Design("clustered binary, ICC 0.3, policy says tango", "binary", 500, 0.05, discordance=0.30, icc=0.3,
           method="tango", reps=1000),
    Design("small n = 20, binary", "binary", 20, 0.05, base_acc=0.55, discordance=0.30, plan=False),
    Design("small n = 30, binary", "binary", 30, 0.05, base_acc=0.55, discordance=0.30, plan=False),
    Design("small n = 50, binary", "binary", 50, 0.05, base_acc=0.55, discordance=0.30, plan=False),
    Design("small n = 20, binary, policy says bootstrap_bca", "binary", 20, 0.05, base_acc=0.55,
           discordance=0.30, method="bootstrap_bca", reps=1000, plan=False),
    Design("small n = 20, ROUGE-like", "rouge", 20, 0.03, reps=400, plan=False),
    Design("small n = 50, ROUGE-like", "rouge", 50, 0.03, reps=400, plan=False),
    Design("ROUGE-like, n = 200", "rouge", 200, 0.03, reps=400),
    Design("ROUGE-like, n = 1000", "rouge", 1000, 0.03, reps=200),
    Design("6 critical slices of 100, one at the margin", "binary", 600, 0.05, base_acc=0.55, discordance=0.30,
           slices=6, reps=300),
    Design("10 critical metrics, one at the margin", "binary", 1000, 0.03, metrics=10, reps=200),
)


def rouge_like(n: int, shift: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Skewed scores in [0, 1] with many exact 0s and 1s, as ROUGE-L has on short answers.

    Baseline: 20 % exactly 0, 15 % exactly 1, the rest Beta(2, 2.5). The candidate gives the
    same answer on 40 % of cases (difference exactly 0) and otherwise the baseline's score
    plus N(shift, 0.25), clipped to [0, 1] (more exact 0s and 1s).
    """
    u = rng.random(n)
    base = np.where(u < 0.20, 0.0, np.where(u < 0.35, 1.0, rng.beta(2.0, 2.5, n)))
    changed = rng.random(n) < 0.6
    cand = np.where(changed, np.clip(base + rng.normal(shift, 0.25, n), 0.0, 1.0), base)
    return base, cand


_SHIFTS: dict[float, float] = {}


def rouge_shift(delta: float) -> float:
    """The shift whose true mean difference is ``delta`` (clipping bends it), to 1e-4."""
    if delta not in _SHIFTS:
        from scipy import optimize

        def mean_delta(shift: float) -> float:
            base, cand = rouge_like(2_000_000, shift, np.random.default_rng(12345))
            return float((cand - base).mean()) - delta

        _SHIFTS[delta] = float(optimize.brentq(mean_delta, -0.5, 0.5, xtol=1e-5))
    return _SHIFTS[delta]


def binary_pairs(n: int, d: Design, delta: float, rng: np.random.Generator,
                 clusters: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Paired 0/1 outcomes; with clusters each cluster draws its own cell probabilities.

    The four cells (both right, baseline only, candidate only, both wrong) have the mean
    probabilities of :func:`cell_probabilities`; a cluster's probabilities are
    Dirichlet(kappa * p) with kappa = 1/ICC - 1, which makes the intra-cluster correlation
    of the per-case difference exactly ICC (Var_g(p_c - p_b) = Var(d) / (kappa + 1)) while
    the true difference stays delta.
    """
    probs = cell_probabilities(d.base_acc, d.discordance, delta)
    if clusters is None or d.icc is None:
        kind = rng.choice(4, size=n, p=probs)
    else:
        n_clusters = int(clusters.max()) + 1
        kappa = 1.0 / d.icc - 1.0
        per_cluster = rng.dirichlet(kappa * probs, size=n_clusters)
        cumulative = per_cluster.cumsum(axis=1)[clusters]
        kind = (rng.random(n)[:, None] > cumulative).sum(axis=1).clip(0, 3)
    return np.isin(kind, (0, 1)).astype(float), np.isin(kind, (0, 2)).astype(float)


def cell_probabilities(base_acc: float, discordance: float, delta: float) -> np.ndarray:
    cand_only, base_only = (discordance + delta) / 2, (discordance - delta) / 2
    both_right = base_acc - base_only
    probs = np.array([both_right, base_only, cand_only, 1 - both_right - base_only - cand_only])
    if (probs < 0).any():
        raise ValueError(f"delta {delta} does not fit baseline {base_acc} and {discordance} discordant")
    return probs


@dataclass
class Dataset:
    """Per-case scores of every metric for both models, with clusters and slices."""

    scores: dict[str, tuple[np.ndarray, np.ndarray]]
    clusters: np.ndarray | None
    slices: np.ndarray | None

    @property
    def n(self) -> int:
        return len(next(iter(self.scores.values()))[0])


def simulate(d: Design, n: int, at_margin: bool, rng: np.random.Generator) -> Dataset:
    """One dataset: at the margin (one metric or one slice at -margin, the rest equal) or equal."""
    clusters = np.repeat(np.arange(math.ceil(n / d.cluster_size)), d.cluster_size)[:n] if d.icc else None
    slices = np.arange(n) % d.slices if d.slices else None
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for j in range(d.metrics):
        delta = -d.margin if at_margin and j == 0 else 0.0
        if d.kind == "rouge":
            scores[f"m{j}"] = rouge_like(n, rouge_shift(delta), rng)
        elif slices is not None:
            base, cand = np.empty(n), np.empty(n)
            for s in range(d.slices):
                where = slices == s
                slice_delta = -d.margin if at_margin and s == 0 else 0.0
                base[where], cand[where] = binary_pairs(int(where.sum()), d, slice_delta, rng, None)
            scores[f"m{j}"] = (base, cand)
        else:
            scores[f"m{j}"] = binary_pairs(n, d, delta, rng, clusters)
    return Dataset(scores, clusters, slices)


def study_policy(d: Design) -> str:
    metrics = "\n".join(
        f"    - {{name: m{j}, metric: m{j}, direction: higher, hypothesis: non_inferiority, margin: {d.margin}, "
        f"alpha: {STUDY_ALPHA}, power: {STUDY_POWER}, ci_method: {d.method}, critical: true"
        + (", slices: [topic], min_slice_n: 10" if d.slices else "") + "}"
        for j in range(d.metrics)
    )
    names = ", ".join(f"m{j}" for j in range(d.metrics))
    return f"""
metadata: {{id: decision-study, title: Decision study, version: "1", effective_date: 2026-01-01, owner: bench}}
modifications:
  - {{id: M1, type: lora_adapter_retrain, description: retrain, authorization: automatic, evaluation: [{names}]}}
performance_evaluation:
  suites: [simulated]
  metrics:
{metrics}
impact_assessment:
  intended_use: benchmark
  risks: [{{id: R1, description: regressions, mitigation: gate, metrics: [{names}]}}]
traceability:
  - {{modification: M1, evaluations: [{names}], rationale: the retrain may change every metric}}
"""


class StudyGate:
    """The gate's decision functions with one design's policy, loaded like ``check`` loads it."""

    def __init__(self, d: Design, root: Path) -> None:
        from gatekeeper.gate.policy import check_scope, load_policy

        path = root / f"policy-{abs(hash(d.name))}.yaml"
        path.write_text(study_policy(d), encoding="utf-8")
        self.policy = load_policy(path)
        self.scope = check_scope(self.policy, None)

    def decide(self, data: Dataset) -> tuple[str, dict[str, Any] | None]:
        """The decision and the gate's power plan (None when it has none)."""
        from gatekeeper.gate.decision import GateInputs, decide, evaluate_metrics, gate_power_plan

        keys = [f"c{i:05d}" for i in range(data.n)]
        case_index = {
            key: {"suite": "simulated",
                  "cluster": None if data.clusters is None else f"doc{data.clusters[i]}",
                  "slices": {} if data.slices is None else {"topic": f"t{data.slices[i]}"}}
            for i, key in enumerate(keys)
        }
        rows = [
            {"key": key, "model": model,
             "scores": {m: {"status": "ok", "value": float(pair[side][i]), "passed": None}
                        for m, pair in data.scores.items()}}
            for side, model in ((0, "baseline"), (1, "candidate")) for i, key in enumerate(keys)
        ]
        metrics = evaluate_metrics(self.policy, rows, case_index)
        decision, _ = decide(self.policy, metrics, GateInputs(scope=self.scope))
        return decision, gate_power_plan(self.policy, metrics)


_study: dict[str, Any] = {}


def _study_gate(d: Design) -> StudyGate:
    gates: dict[str, StudyGate] = _study.setdefault("gates", {})
    if d.name not in gates:
        gates[d.name] = StudyGate(d, Path(_study.setdefault("root", tempfile.mkdtemp(prefix="study-"))))
    return gates[d.name]


def study_chunk(task: tuple[int, int, bool, int, int, int]) -> tuple[int, bool, int, Counter[str], list[int]]:
    """``count`` datasets of one design at ``n`` through the decision functions."""
    index, n, at_margin, first, count, seed = task
    d = DESIGNS_BY_INDEX[index]
    gate = _study_gate(d)
    tally: Counter[str] = Counter()
    plans: list[int] = []
    for rep in range(first, first + count):
        rng = np.random.default_rng([seed, 7, index, n, int(at_margin), rep])
        decision, plan = gate.decide(simulate(d, n, at_margin, rng))
        tally[decision] += 1
        if plan is not None:
            plans.append(int(plan["n_needed"]))
    return index, at_margin, n, tally, plans


DESIGNS_BY_INDEX: dict[int, Design] = dict(enumerate(DESIGNS))


def planned_n(d: Design, plans: list[int]) -> int:
    """The n the power plan asks for: the median plan of the equal-model runs at the design's n,
    rounded up to whole clusters and whole slices."""
    n = int(statistics.median(plans))
    step = d.cluster_size if d.icc else d.slices or 1
    return max(math.ceil(n / step) * step, step * 2)


def run_study(designs: dict[int, Design], pool: Any, seed: int, scale: float) -> dict[str, Any]:
    """P(PROMOTE) at the margin at the design's n; the plan from equal-model runs; P(PROMOTE)
    of equal models at the planned n."""
    def tasks(index: int, n: int, at_margin: bool, reps: int) -> list[tuple[int, int, bool, int, int, int]]:
        chunk = max(1, reps // 8)
        return [(index, n, at_margin, first, min(chunk, reps - first), seed) for first in range(0, reps, chunk)]

    results: dict[int, dict[str, Any]] = {
        i: {"margin": Counter(), "pilot": Counter(), "equal": Counter(), "plans": []} for i in designs
    }
    first_round = [t for i, d in designs.items() for t in tasks(i, d.n, True, max(20, int(d.reps * scale)))]
    first_round += [t for i, d in designs.items() if d.plan
                    for t in tasks(i, d.n, False, max(20, int(d.reps * scale) // 4))]
    started = time.perf_counter()
    for done, (index, at_margin, _, tally, plans) in enumerate(pool.imap_unordered(study_chunk, first_round), 1):
        print(f"  round 1: {done}/{len(first_round)} chunks, {time.perf_counter() - started:.0f} s",
              file=sys.stderr, flush=True)
        results[index]["margin" if at_margin else "pilot"] += tally
        if not at_margin:
            results[index]["plans"].extend(plans)
    second_round = []
    for i, d in designs.items():
        if d.plan and results[i]["plans"]:
            results[i]["planned_n"] = planned_n(d, results[i]["plans"])
            second_round += tasks(i, results[i]["planned_n"], False, max(20, int(d.reps * scale)))
    for done, (index, _, _, tally, _) in enumerate(pool.imap_unordered(study_chunk, second_round), 1):
        print(f"  round 2: {done}/{len(second_round)} chunks, {time.perf_counter() - started:.0f} s",
              file=sys.stderr, flush=True)
        results[index]["equal"] += tally
    return results


def study_table(designs: dict[int, Design], results: dict[int, dict[str, Any]]) -> list[str]:
    lines = [
        "| design | method | n | P(PROMOTE) at the margin | P(REJECT) at the margin | planned n "
        "| P(PROMOTE), equal models at planned n | P(REJECT), equal |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for i, d in designs.items():
        r = results[i]
        m, e = r["margin"], r["equal"]
        reps_m, reps_e = sum(m.values()), sum(e.values())
        equal = f"{rate(e['PROMOTE'], reps_e)} | {e['REJECT'] / reps_e:.4f}" if reps_e else "— | —"
        lines.append(
            f"| {d.name} | {d.method} | {d.n} | {rate(m['PROMOTE'], reps_m)} | {m['REJECT'] / reps_m:.4f} "
            f"| {r.get('planned_n', '—')} | {equal} |"
        )
    return lines


def study_properties(designs: dict[int, Design], results: dict[int, dict[str, Any]]) -> tuple[list[str], bool]:
    """The acceptance properties, each judged against its Monte-Carlo error (95 % Clopper-Pearson)."""
    lines, ok = ["Properties (95 % Clopper-Pearson interval of the simulated rate against the bound):"], True
    for i, d in designs.items():
        r = results[i]
        k, reps = r["margin"]["PROMOTE"], sum(r["margin"].values())
        verdict = judge_at_most(k, reps, STUDY_ALPHA)
        ok &= verdict != "VIOLATED"
        lines.append(f"- {d.name}: P(PROMOTE) at the margin ≤ {STUDY_ALPHA}: {rate(k, reps)} → {verdict}")
        if d.plan:
            e = r["equal"]
            k, reps = e["PROMOTE"], sum(e.values())
            if not reps:
                lines.append(f"- {d.name}: no power plan came out of the equal-model runs → VIOLATED")
                ok = False
                continue
            verdict = judge_at_least(k, reps, STUDY_POWER)
            ok &= verdict != "VIOLATED"
            lines.append(f"- {d.name}: P(PROMOTE) of equal models at the planned n = {r['planned_n']} "
                         f"≥ {STUDY_POWER}: {rate(k, reps)} → {verdict}")
    return lines, ok


# --------------------------------------------------------------------------- CLI agreement for the study

STUDY_SUITE_HEAD = """
suite: simulated
prompt: {messages: [{role: user, content: "{{ input }}"}]}
dataset: cases.jsonl
slices: [topic]
cluster: doc
evaluators:
"""


def cli_agreement(d: Design, data: Dataset, root: Path) -> tuple[str, str]:
    """The real ``gatekeeper check`` on one binary dataset of the study, and the functions' decision.

    Each metric ``mJ`` is a ``contains`` evaluator on the token ``<mJ>``: a model's output for
    a case holds the tokens of the metrics it got right.
    """
    project = Project(root)
    keys = [f"c{i:05d}" for i in range(data.n)]
    project.write("suites/simulated.yaml", STUDY_SUITE_HEAD + "".join(
        f"  - {{name: contains, as: {m}, field: {m}, mode: all}}\n" for m in data.scores))
    project.write_jsonl("suites/cases.jsonl", (
        {"id": key, "input": f"question {i}", **{m: [f"<{m}>"] for m in data.scores},
         "topic": "all" if data.slices is None else f"t{data.slices[i]}",
         **({} if data.clusters is None else {"doc": f"doc{data.clusters[i]}"})}
        for i, key in enumerate(keys)))
    for side, model in ((0, "baseline"), (1, "candidate")):
        project.write_jsonl(f"{model}.jsonl", (
            {"id": key, "output": "answer " + " ".join(f"<{m}>" for m, pair in data.scores.items()
                                                       if pair[side][i] == 1.0)}
            for i, key in enumerate(keys)))
    project.write("policy.yaml", study_policy(d))
    result = project.run("check", "--baseline", "replay:baseline.jsonl", "--candidate", "replay:candidate.jsonl",
                         "--policy", "policy.yaml", "--out", "out", "--no-progress", env=ENV)
    exists = (project.path / "out/decision.json").exists()
    decision = project.read_json("out/decision.json")["decision"] if exists else f"exit {result.exit_code}"
    return decision, _study_gate(d).decide(data)[0]


def cli_sample(task: tuple[int, int, int]) -> tuple[int, str, str]:
    index, rep, seed = task
    d = DESIGNS_BY_INDEX[index]
    rng = np.random.default_rng([seed, 9, index, rep])
    data = simulate(d, d.n, rep % 2 == 0, rng)
    root = Path(_study.setdefault("root", tempfile.mkdtemp(prefix="study-"))) / f"cli-{index}-{rep}"
    try:
        cli, functions = cli_agreement(d, data, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return index, cli, functions


# --------------------------------------------------------------------------- main


def grid_main(args: argparse.Namespace) -> int:
    """The original grid: one binary metric at n = 500 and 2000, real checks and peers' rules."""
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

    out = [f"decision_quality.py --grid --reps {args.reps} --api-reps {args.api_reps} --seed {args.seed} "
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


def study_main(args: argparse.Namespace) -> int:
    """The simulation study; exit 1 when a property is violated."""
    scale = 0.1 if args.quick else args.scale
    designs = {i: d for i, d in DESIGNS_BY_INDEX.items() if not args.designs or any(
        word in d.name for word in args.designs)}
    started = time.perf_counter()
    for d in designs.values():  # calibrate in the parent so workers inherit it
        if d.kind == "rouge":
            rouge_shift(-d.margin)
            rouge_shift(0.0)
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        results = run_study(designs, pool, args.seed, scale)
        cli_reps = 2 if args.quick else args.cli_reps
        cli_tasks = [(i, rep, args.seed) for i, d in designs.items() if d.binary for rep in range(cli_reps)]
        agreement = list(pool.imap_unordered(cli_sample, cli_tasks))
    disagree = [(designs[i].name, cli, fn) for i, cli, fn in agreement if cli != fn]
    lines = [f"decision_quality.py{' --quick' if args.quick else f' --scale {scale:g}'} --seed {args.seed} "
             + (f"--designs {' '.join(repr(w) for w in args.designs)} " if args.designs else "") +
             f"--jobs {args.jobs}; alpha {STUDY_ALPHA}, power {STUDY_POWER}; {os.cpu_count()} CPU cores, "
             f"{(time.perf_counter() - started) / 60:.1f} min", "", *study_table(designs, results), ""]
    props, ok = study_properties(designs, results)
    lines += props
    lines.append(f"- real `gatekeeper check` and the decision functions agree on every sampled dataset: "
                 f"{len(agreement) - len(disagree)}/{len(agreement)} → {'holds' if not disagree else 'VIOLATED'}")
    lines += [f"  disagreement: {name}: check {cli}, functions {fn}" for name, cli, fn in disagree]
    ok &= not disagree
    lines.append(f"ALL PROPERTIES {'HOLD' if ok else 'DO NOT HOLD'}")
    print("\n".join(lines))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", action="store_true",
                        help="the original binary grid (n = 500, 2000) with real checks and peers' rules")
    parser.add_argument("--quick", action="store_true", help="study at a tenth of the repetitions (smoke test)")
    parser.add_argument("--scale", type=float, default=1.0, help="study: multiply every design's repetitions")
    parser.add_argument("--cli-reps", type=int, default=6, help="study: real checks per binary design")
    parser.add_argument("--designs", nargs="*", default=[], help="study: only designs whose name contains a word")
    parser.add_argument("--reps", type=int, default=50, help="grid: real checks per (n, delta) cell (default 50)")
    parser.add_argument("--api-reps", type=int, default=10000,
                        help="grid: datasets per cell through the decision functions (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), choices=SIZES)
    args = parser.parse_args(argv)
    return grid_main(args) if args.grid else study_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
