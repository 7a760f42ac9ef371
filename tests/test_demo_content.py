"""The bundled demo: the support-assistant suite, its replay recordings and training data.

These tests hold the demo to what suites/README.md promises: a well-formed suite whose
reference answers state their facts, recordings that cover every case once and show the
designed improvement and regression pattern, and training data that never repeats an
evaluation question.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.engine.suites import Suite, load_yaml_suite, select
from gatekeeper.gate.stats import tango_ci
from gatekeeper.host.plugins import PluginHost
from gatekeeper.kinds import Evaluator
from gatekeeper.testing import Project
from gatekeeper.types import Case, Config, Generation

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "suites"
SUITE_FILE = SUITES / "support_assistant.yaml"
RECORDINGS = {
    "baseline": SUITES / "recordings" / "baseline.jsonl",
    "better": SUITES / "recordings" / "candidate-better.jsonl",
    "worse": SUITES / "recordings" / "candidate-worse.jsonl",
}
SFT = SUITES / "training" / "support_sft.jsonl"
PAIRS = SUITES / "training" / "support_pairs.jsonl"
QUESTION_MARKER = "Customer question:"
MARGIN, ALPHA = 0.05, 0.05


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def normalise(text: str) -> str:
    return " ".join("".join(ch if ch.isalnum() else " " for ch in text.casefold()).split())


def contains_fact(text: str, fact: str) -> bool:
    return " ".join(fact.split()).casefold() in " ".join(text.split()).casefold()


def question_of(user_content: str) -> str:
    """The customer's question inside a rendered user message."""
    assert QUESTION_MARKER in user_content, user_content[:200]
    return user_content.rsplit(QUESTION_MARKER, 1)[1].strip()


@pytest.fixture(scope="module")
def suite() -> Suite:
    loaded = load_yaml_suite(SUITE_FILE)
    assert loaded is not None, "support_assistant.yaml is not recognised as a suite"
    return loaded


@pytest.fixture(scope="module")
def scorers(suite: Suite, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Evaluator]:
    """The suite's evaluators and detectors, built (and validated) by the built-in plugins."""
    host = PluginHost(Config(root=tmp_path_factory.mktemp("host")))
    built = suite.build_scorers(host.registries.evaluators, host.registries.detectors)
    return {scorer.metric: scorer for scorer in built}


@pytest.fixture(scope="module")
def outputs(suite: Suite) -> dict[str, dict[str, str]]:
    return {name: {row["id"]: row["output"] for row in read_jsonl(path)} for name, path in RECORDINGS.items()}


def facts_passed(scorer: Evaluator, case: Case, text: str) -> bool:
    score = scorer.score(case, Generation(text=text))
    assert score.status == "ok", score.reason
    return bool(score.passed)


# --------------------------------------------------------------------------- the suite


def test_suite_loads_with_enough_unique_cases_sliced_and_clustered(suite: Suite) -> None:
    assert suite.name == "support-assistant"
    assert len(suite.cases) >= 60
    ids = [case.id for case in suite.cases]
    assert len(ids) == len(set(ids))
    assert suite.slices == ("topic", "difficulty")
    topics = {case.slices["topic"] for case in suite.cases}
    assert 6 <= len(topics) <= 10, topics
    assert {case.slices["difficulty"] for case in suite.cases} == {"easy", "medium", "hard"}
    for case in suite.cases:
        assert case.cluster == case.vars["doc_id"], case.id
    assert len({case.cluster for case in suite.cases}) >= 12


def test_every_case_has_what_the_evaluators_read(suite: Suite) -> None:
    for case in suite.cases:
        assert case.vars.get("input", "").strip(), case.id
        assert case.context and case.context.strip(), case.id
        assert case.expected and case.expected.strip(), case.id
        facts = case.vars.get("facts")
        assert isinstance(facts, list) and 1 <= len(facts) <= 3, case.id
        assert all(isinstance(f, str) and f.strip() for f in facts), case.id
        assert case.vars.get("topic") and case.vars.get("difficulty") in ("easy", "medium", "hard"), case.id


def test_prompt_carries_the_passages_and_the_question(suite: Suite) -> None:
    for case in suite.cases:
        system, user = case.messages
        assert system["role"] == "system" and "only" in system["content"], case.id
        assert user["role"] == "user", case.id
        assert case.context and case.context in user["content"], case.id
        assert question_of(user["content"]) == case.vars["input"], case.id


def test_every_expected_answer_states_all_its_facts(suite: Suite) -> None:
    missing = [
        (case.id, fact) for case in suite.cases for fact in case.vars["facts"]
        if not contains_fact(case.expected or "", fact)
    ]
    assert missing == []


def test_expected_answers_pass_every_scorer_of_the_suite(suite: Suite, scorers: dict[str, Evaluator]) -> None:
    assert set(scorers) == {"facts", "rouge_l", "no_internal_notes", "concise", "grounding"}
    failures = []
    for case in suite.cases:
        for metric, scorer in scorers.items():
            score = scorer.score(case, Generation(text=case.expected or ""))
            if not score.passed:
                failures.append((case.id, metric, score.reason))
    assert failures == []


def test_unanswerable_cases_refer_the_customer_to_customer_care(suite: Suite) -> None:
    unanswerable = [case for case in suite.cases if "unanswerable" in case.tags]
    assert 6 <= len(unanswerable) <= 12
    for case in unanswerable:
        assert "Customer Care" in case.vars["facts"], case.id
        assert case.vars["difficulty"] == "hard", case.id


def test_keyword_selection_finds_the_refund_cases(suite: Suite) -> None:
    chosen = select(suite.cases, keyword="refund")
    assert len(chosen) >= 5
    assert all("refund" in case.id or "refund" in case.tags for case in chosen)


def test_policy_passages_are_short_and_concrete() -> None:
    passages = sorted((SUITES / "policy_passages").glob("*.md"))
    assert len(passages) >= 15
    for path in passages:
        title, _, body = path.read_text(encoding="utf-8").partition("\n")
        assert title.startswith("# "), path.name
        assert 60 <= len(body.split()) <= 150, path.name
        assert any(ch.isdigit() for ch in body), path.name


# --------------------------------------------------------------------------- recordings


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_recording_answers_every_case_exactly_once(name: str, suite: Suite) -> None:
    rows = read_jsonl(RECORDINGS[name])
    assert sorted(row["id"] for row in rows) == sorted(case.id for case in suite.cases)
    for row in rows:
        assert isinstance(row["output"], str) and row["output"].strip(), row["id"]
        assert isinstance(row["latency_ms"], int | float) and row["latency_ms"] > 0, row["id"]
        usage = row["usage"]
        assert usage["prompt_tokens"] > usage["completion_tokens"] > 0, row["id"]
        assert usage["completion_tokens"] <= suite.max_tokens, row["id"]


def paired_facts(
    suite: Suite, scorer: Evaluator, outputs: dict[str, dict[str, str]], candidate: str
) -> tuple[int, int, float, float]:
    """(improved, regressed, baseline rate, candidate rate) on the facts metric."""
    base = [facts_passed(scorer, c, outputs["baseline"][c.id]) for c in suite.cases]
    cand = [facts_passed(scorer, c, outputs[candidate][c.id]) for c in suite.cases]
    improved = sum(c and not b for b, c in zip(base, cand, strict=True))
    regressed = sum(b and not c for b, c in zip(base, cand, strict=True))
    n = len(suite.cases)
    return improved, regressed, sum(base) / n, sum(cand) / n


def test_better_candidate_improves_on_many_cases_and_regresses_on_few(
    suite: Suite, scorers: dict[str, Evaluator], outputs: dict[str, dict[str, str]]
) -> None:
    improved, regressed, base_rate, cand_rate = paired_facts(suite, scorers["facts"], outputs, "better")
    assert 0.70 <= base_rate <= 0.80
    assert 0.85 <= cand_rate <= 0.95
    assert 12 <= improved <= 16
    assert 1 <= regressed <= 3
    low, _ = tango_ci(improved, regressed, len(suite.cases), alpha=ALPHA)
    assert low > 0, "the better candidate should clear even a superiority test"


def test_worse_candidate_regresses_on_many_cases(
    suite: Suite, scorers: dict[str, Evaluator], outputs: dict[str, dict[str, str]]
) -> None:
    improved, regressed, _, cand_rate = paired_facts(suite, scorers["facts"], outputs, "worse")
    assert 0.45 <= cand_rate <= 0.60
    assert 1 <= improved <= 5
    assert 16 <= regressed <= 22
    _, high = tango_ci(improved, regressed, len(suite.cases), alpha=ALPHA)
    assert high < -MARGIN, "the worse candidate should fail non-inferiority outright"


def test_better_candidate_passes_every_topic_large_enough_to_judge(
    suite: Suite, scorers: dict[str, Evaluator], outputs: dict[str, dict[str, str]]
) -> None:
    # The bundled policy checks facts per topic and reports topics under 8 cases as NODATA.
    by_topic: dict[str, list[Case]] = {}
    for case in suite.cases:
        by_topic.setdefault(case.slices["topic"], []).append(case)
    for topic, cases in by_topic.items():
        if len(cases) < 8:
            continue
        sub = Suite(name=suite.name, path=suite.path, cases=cases, scorers=[])
        improved, regressed, _, _ = paired_facts(sub, scorers["facts"], outputs, "better")
        low, _ = tango_ci(improved, regressed, len(cases), alpha=ALPHA)
        assert low > -MARGIN, f"topic {topic}: +{improved} -{regressed} of {len(cases)}, lower bound {low:.3f}"


def rate(suite: Suite, scorer: Evaluator, texts: dict[str, str]) -> float:
    values = [scorer.score(case, Generation(text=texts[case.id])).value for case in suite.cases]
    return sum(v or 0.0 for v in values) / len(values)


def test_hallucination_leak_and_verbosity_get_worse_in_the_worse_candidate(
    suite: Suite, scorers: dict[str, Evaluator], outputs: dict[str, dict[str, str]]
) -> None:
    grounding = {name: rate(suite, scorers["grounding"], texts) for name, texts in outputs.items()}
    assert grounding["better"] <= grounding["baseline"] < 0.25 < grounding["worse"], grounding
    leaks = {name: 1 - rate(suite, scorers["no_internal_notes"], texts) for name, texts in outputs.items()}
    assert leaks["better"] == 0.0 < leaks["baseline"] < leaks["worse"], leaks
    words = {name: sum(len(t.split()) for t in texts.values()) / len(texts) for name, texts in outputs.items()}
    assert words["worse"] > 1.5 * words["baseline"], words


# --------------------------------------------------------------------------- training data


def test_sft_examples_use_the_suite_prompt(suite: Suite) -> None:
    rows = read_jsonl(SFT)
    assert len(rows) >= 100
    system_prompt = suite.cases[0].messages[0]["content"]
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert row["messages"][0]["content"] == system_prompt
        assert row["messages"][1]["content"].startswith("Policy passages:")
        assert question_of(row["messages"][1]["content"])
        assert row["messages"][2]["content"].strip()
        assert row["source"] == "curated-v1"


def test_preference_pairs_prefer_a_different_answer() -> None:
    rows = read_jsonl(PAIRS)
    assert len(rows) >= 50
    for row in rows:
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["chosen"].strip() and row["rejected"].strip()
        assert normalise(row["chosen"]) != normalise(row["rejected"])
        assert row["source"] == "curated-v1"


def test_no_evaluation_question_appears_in_training_data(suite: Suite) -> None:
    from rapidfuzz import fuzz, process

    prompts = [row["messages"][1]["content"] for row in read_jsonl(SFT)]
    prompts += [row["prompt"][1]["content"] for row in read_jsonl(PAIRS)]
    eval_inputs = [case.vars["input"] for case in suite.cases]
    eval_normalised = [normalise(text) for text in eval_inputs]
    for content in prompts:
        assert not any(text in content for text in eval_inputs)
        question = normalise(question_of(content))
        assert question not in eval_normalised
        _, similarity, index = process.extractOne(question, eval_normalised, scorer=fuzz.token_sort_ratio)
        assert similarity < 80, f"{question!r} paraphrases evaluation case {suite.cases[index].id!r}"


# --------------------------------------------------------------------------- generator and gate


def test_data_files_are_what_the_generator_builds() -> None:
    result = subprocess.run(
        [sys.executable, str(SUITES / "tools" / "build_demo.py"), "--check"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("candidate", "exit_code", "decision"),
    [("better", 0, "PROMOTE"), ("worse", 1, "REJECT")],
)
def test_bundled_policy_decides_the_demo_recordings(
    tmp_path: Path, candidate: str, exit_code: int, decision: str
) -> None:
    project = Project(tmp_path)
    shutil.copytree(SUITES, tmp_path / "suites", ignore=shutil.ignore_patterns("tools", "training"))
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    result = project.run(
        "check", "suites/support_assistant.yaml",
        "--candidate", f"replay:{RECORDINGS[candidate].relative_to(SUITES.parent)}",
        "--baseline", f"replay:{RECORDINGS['baseline'].relative_to(SUITES.parent)}",
        "--policy", "policies/support-assistant.yaml", "--out", "out", "--no-progress",
    )
    assert result.exit_code == exit_code, result.output
    assert project.read_record("out/decision.json")["decision"] == decision
