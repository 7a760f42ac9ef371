"""Large suites (issue 18, speed): templates compiled once per suite, group-committed cache
writes that survive a kill, batch scoring equal to per-case scoring, chunked bootstrap."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from gatekeeper.builtin.scoring import evaluators as ev
from gatekeeper.engine import templates
from gatekeeper.gate import stats
from gatekeeper.testing import Project
from gatekeeper.types import Case, Generation

# --------------------------------------------------------------------------- templates


def test_a_suite_compiles_each_prompt_template_once_not_once_per_case(project: Project, monkeypatch) -> None:
    project.write("suites/big.yaml", """
        suite: big
        prompt:
          messages:
            - {role: system, content: "You answer about {{ topic }}."}
            - {role: user, content: "Q{{ id }}: {{ input }}"}
        dataset: big.jsonl
        evaluators: [{contains: {values: [ok]}}]
    """)
    project.write_jsonl("suites/big.jsonl", [
        {"id": f"c{i:03d}", "input": f"question {i}", "topic": "refunds"} for i in range(300)
    ])
    project.write_jsonl("rec.jsonl", [{"id": f"c{i:03d}", "output": "ok"} for i in range(300)])
    compiled: list[str] = []
    real_compile = templates.ENV.compile

    def counting(source, *args, **kwargs):  # type: ignore[no-untyped-def]
        compiled.append(str(source))
        return real_compile(source, *args, **kwargs)

    monkeypatch.setattr(templates.ENV, "compile", counting)
    result = project.run("run", "suites", "--model", "replay:rec.jsonl", "--out", "out", "--no-progress")
    assert result.exit_code == 0, result.output
    prompt_compiles = [s for s in compiled if "{{ input }}" in s or "{{ topic }}" in s]
    assert len(prompt_compiles) == 2, prompt_compiles  # one per message, for 300 cases
    rows = [json.loads(line) for line in (project.path / "out/cases.jsonl").read_text().splitlines()] \
        if (project.path / "out/cases.jsonl").exists() else project.read_json("out/results.json")["cases"]
    assert len(rows) == 300


# --------------------------------------------------------------------------- cache, kill, resume

KILLING_MODEL = '''
import os, signal
from pathlib import Path

CALLS = Path(os.environ["CALLS_FILE"])

def answer(messages, params):
    with CALLS.open("a") as fh:
        fh.write(params["case_id"] + "\\n")
    if os.environ.get("KILL_AT") and len(CALLS.read_text().split()) == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)  # a real kill, in the middle of the run
    return "answer to " + messages[-1]["content"]
'''


def test_group_committed_cache_loses_nothing_committed_when_the_run_is_killed(project: Project) -> None:
    cases = "".join(f"  - {{id: c{i:03d}, input: question {i}}}\n" for i in range(60))
    project.write("suites/many.yaml", "suite: many\nprompt: {messages: [{role: user, content: '{{ input }}'}]}\n"
                  "evaluators: [{contains: {values: [answer]}}]\ncases:\n" + cases)
    project.write("killmodel.py", KILLING_MODEL)
    project.write("gatekeeper.yaml", "runner: {concurrency: 1, max_concurrency: 1}\n")
    calls = project.path / "calls.txt"
    env = {**os.environ, "CALLS_FILE": str(calls), "KILL_AT": "30"}
    cmd = [sys.executable, "-m", "gatekeeper.cli", "run", "--model", "python:killmodel:answer",
           "--out", "out", "--no-progress"]
    killed = subprocess.run(cmd, cwd=project.path, env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    assert len(calls.read_text().split()) == 30
    cache = next((project.path / ".gatekeeper").glob("**/*.sqlite*"), None) or next(
        p for p in (project.path / ".gatekeeper").rglob("*") if p.is_file() and p.suffix in (".db", ".sqlite"))
    with sqlite3.connect(cache) as db:
        stored = db.execute("SELECT COUNT(*) FROM entries WHERE namespace = 'generation'").fetchone()[0]
    # The 29 answers given before the kill were each committed (the 30th call never answered).
    assert stored == 29

    done = subprocess.run(cmd, cwd=project.path, env={**env, "KILL_AT": ""}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    allcalls = calls.read_text().split()
    assert sorted(set(allcalls)) == [f"c{i:03d}" for i in range(60)]
    assert len(allcalls) == 61  # only the call the kill interrupted was made twice
    assert "model calls: 31 (cache hits: 29" in done.stdout


# --------------------------------------------------------------------------- batch scoring


def _sample() -> tuple[list[Case], list[Generation]]:
    """Cases and outputs that exercise the edges: several references, none, empty output,
    unicode, punctuation only, repeated n-grams, case and spacing differences."""
    outputs = [
        "You have 30 days from delivery.", "", "the the the cat", "Café crème, s'il vous plaît!",
        "  30 DAYS  from delivery ", "...!?", "A $4.95 fee applies; in-store is free.",
        "Returns: 30 days. Refunds: 5 days. Returns: 30 days.", "zanzibar internal note", "42",
        "你好 世界", "x" * 300,
    ]
    references: list[object] = [
        "You have 30 days from delivery.", "something", ["the cat", "a cat sat"], "Café crème s'il vous plaît",
        None, "!!!", ["A $4.95 fee applies.", "In-store is free; a $4.95 fee applies by mail."],
        "Returns: 30 days.", "", "42", "你好 世界", "x" * 299,
    ]
    cases, gens = [], []
    for i, (out, ref) in enumerate(zip(outputs, references, strict=True)):
        variables: dict[str, object] = {"facts": ["30 days", "$4.95"] if i % 2 else "free"}
        if ref is not None:
            variables["expected"] = ref
        expected = None if ref is None else (ref if isinstance(ref, str) else ref[0])
        cases.append(Case(id=f"c{i}", suite="s", messages=(), vars=variables, expected=expected))  # type: ignore[arg-type]
        gens.append(Generation(text=out))
    return cases * 3, gens * 3


@pytest.mark.parametrize("name, params", [
    ("rouge_l", {}), ("rouge_l", {"value": ["30 days", "free"]}),
    ("bleu", {}), ("bleu", {"tokenize": "intl", "lowercase": True}), ("bleu", {"tokenize": "char"}),
    ("bleu", {"smooth_method": "floor"}), ("bleu", {"smooth_method": "none", "tokenize": "none"}),
    ("bleu", {"tokenize": "zh", "smooth_method": "add-k"}),
    ("token_f1", {}), ("exact_match", {"case_sensitive": False, "collapse_whitespace": True}),
    ("contains", {"field": "facts"}), ("contains", {"values": ["30  days", "FREE"], "mode": "any"}),
    ("not_contains", {"values": ["internal note", "Zanzibar"]}), ("regex", {"pattern": r"\d+ days"}),
    ("edit_similarity", {"method": "indel", "case_sensitive": False}), ("length", {"max_words": 5}),
])
def test_batch_scores_equal_per_case_scores(name: str, params: dict[str, object]) -> None:
    cls = {c.name: c for c in ev.BUILTIN_EVALUATORS}[name]
    evaluator = cls(cls.Params.model_validate(params))
    cases, gens = _sample()
    per_case = [evaluator.score(case, gen) for case, gen in zip(cases, gens, strict=True)]
    assert evaluator.score_batch(cases, gens) == per_case
    assert len({s.value for s in per_case}) >= 2  # the sample is varied


def test_batch_bleu_is_sacrebleu_sentence_bleu() -> None:
    import sacrebleu

    cases, gens = _sample()
    bleu = ev.Bleu(ev.BleuParams())
    for case, gen, score in zip(cases, gens, bleu.score_batch(cases, gens), strict=True):
        refs = bleu.references(case)
        if refs:
            assert score.value == min(1.0, max(0.0, sacrebleu.sentence_bleu(gen.text, refs).score / 100))


def test_a_batch_that_raises_is_scored_case_by_case_and_the_error_names_its_case(project: Project) -> None:
    project.write("gatekeeper_plugins.py", '''
from gatekeeper import hookimpl
from gatekeeper.kinds import Evaluator

class Picky(Evaluator):
    name = "picky"
    def score(self, case, generation):
        if case.id == "b":
            raise ValueError("cannot score b")
        return self.result(1.0, reason="fine")
    def score_batch(self, cases, generations):
        raise RuntimeError("the batch path is broken")

@hookimpl
def gatekeeper_register_evaluators(register):
    register(Picky)
''')
    project.write("suites/s.yaml", """
        suite: s
        prompt: {messages: [{role: user, content: "{{ input }}"}]}
        evaluators: [picky]
        cases: [{id: a, input: x}, {id: b, input: y}, {id: c, input: z}]
    """)
    project.write_jsonl("rec.jsonl", [{"id": k, "output": "o"} for k in "abc"])
    result = project.run("run", "suites", "--model", "replay:rec.jsonl", "--out", "out", "--no-progress")
    out = project.path / "out"
    rows = ([json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
            if (out / "cases.jsonl").exists() else project.read_json("out/results.json")["cases"])
    by_id = {row["key"].rsplit(":", 1)[-1].rsplit("/", 1)[-1]: row["scores"]["picky"] for row in rows}
    assert [by_id[k]["status"] for k in "abc"] == ["ok", "error", "ok"], result.output
    assert "cannot score b" in by_id["b"]["reason"]


# --------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_chunked_bootstrap_gives_the_unchunked_interval_and_scipys(method: str, monkeypatch) -> None:
    rng = np.random.default_rng(11)
    diffs = rng.normal(0.02, 0.3, 2_500)
    whole = stats._array_bootstrap(diffs, None, level=0.9, method=method, n_resamples=2000, seed=4)
    monkeypatch.setattr(stats, "RESAMPLE_ELEMENTS", 3 * diffs.size + 17)  # 3 resamples per chunk
    chunked = stats._array_bootstrap(diffs, None, level=0.9, method=method, n_resamples=2000, seed=4)
    assert chunked.confidence_interval == whole.confidence_interval
    assert np.array_equal(chunked.bootstrap_distribution, whole.bootstrap_distribution)
    reference = sps.bootstrap((diffs,), np.mean, confidence_level=0.9, method=method, n_resamples=2000,
                              batch=256, rng=np.random.default_rng(4)).confidence_interval
    assert chunked.confidence_interval.low == pytest.approx(reference.low, abs=1e-12)
    assert chunked.confidence_interval.high == pytest.approx(reference.high, abs=1e-12)


def test_cluster_bootstrap_above_the_scipy_size_resamples_clusters_as_scipy_does(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    labels = [f"doc{i // 4}" for i in range(10_000)]
    diffs = rng.normal(0.0, 0.2, 10_000) + np.repeat(rng.normal(0, 0.1, 2_500), 4)
    monkeypatch.setattr(stats, "RESAMPLE_ELEMENTS", 1_000)
    low, high = stats.cluster_bootstrap_ci(diffs, labels, method="BCa", seed=2)
    _, group = np.unique(np.asarray(labels), return_inverse=True)
    sums, sizes = np.bincount(group, weights=diffs), np.bincount(group).astype(float)
    reference = sps.bootstrap(
        (sums, sizes), lambda s, m, axis=-1: s.sum(axis=axis) / m.sum(axis=axis), paired=True, vectorized=True,
        confidence_level=0.9, method="BCa", n_resamples=2000, batch=256, rng=np.random.default_rng(2),
    ).confidence_interval
    assert (low, high) == pytest.approx((reference.low, reference.high), abs=1e-12)


def test_many_cases_with_few_distinct_differences_resample_counts_with_the_same_interval() -> None:
    rng = np.random.default_rng(8)
    diffs = rng.choice([-0.5, 0.0, 0.5, 1.0], p=[0.1, 0.7, 0.15, 0.05], size=40_000)
    counts = stats._array_bootstrap(diffs, None, level=0.9, method="percentile", n_resamples=2000, seed=1)
    indices = stats._Distribution(*stats._array_bootstrap(
        diffs, None, level=0.9, method="percentile", n_resamples=2000, seed=1,
        previous=stats._resampled_ratios(diffs, None, 2000, np.random.default_rng(1)),
    ))
    se = diffs.std() / np.sqrt(diffs.size)
    assert counts.confidence_interval.low == pytest.approx(indices.confidence_interval.low, abs=0.15 * se)
    assert counts.confidence_interval.high == pytest.approx(indices.confidence_interval.high, abs=0.15 * se)
    assert counts.bootstrap_distribution.std() == pytest.approx(se, rel=0.08)
