"""Each ragas metric through ``gatekeeper run`` with the scripted judge: the values ragas
computes, the judge calls each costs, and what a user sees when something is wrong — a
judge answering garbage or not at all, NaN, a case without the field a metric needs, an
unknown metric, an option ragas rejects, ragas missing from the environment."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from ragas_support import CASES, judge_spec, run, scores, setup, suite
from tests.fakes import FakeOpenAIServer
from tests.fakes.ragas_judge import garbage_judge, ragas_judge

from gatekeeper.testing import Project

ROWS = CASES[:2]
ANSWERS = {"item0": "Item 0 costs $10. It ships with a free gift.", "item1": "Item 1 costs $11."}
LLM_METRICS = ["faithfulness", "response_relevancy", "context_precision", "context_recall",
               "factual_correctness", "noise_sensitivity"]
PLAIN_METRICS = ["bleu", "chrf", "rouge", "exact_match", "string_presence", "string_similarity",
                 "nonllm_context_precision", "nonllm_context_recall"]


def every_metric(server: FakeOpenAIServer) -> str:
    judge = f"{{judge: '{judge_spec(server)}'}}"
    lines = [f"  - {{ragas_{m}: {judge}}}" for m in LLM_METRICS] + [f"  - ragas_{m}" for m in PLAIN_METRICS]
    lines.append("  - {name: ragas, metric: rouge, options: {rouge_type: rouge1}, as: rouge1}")
    return "\n".join(lines)


def test_every_metric_scores_through_the_runner(project: Project, judge_server: FakeOpenAIServer) -> None:
    detector_entry = f"  - {{ragas_hallucination: {{judge: '{judge_spec(judge_server)}'}}}}"
    setup(project, suite(every_metric(judge_server), detector_entry, ROWS), {"candidate": ANSWERS})

    result, record = run(project)

    assert result.exit_code == 1, result.output  # item0 fails exact match's threshold
    assert "ragas_exact_match           0.500       1       1       0      0" in result.output
    got = {m: scores(record, f"ragas_{m}") for m in LLM_METRICS + PLAIN_METRICS}
    # item0's second sentence is not in the context; item1 is the reference, word for word.
    assert got["faithfulness"]["item0"]["value"] == 0.5 and got["faithfulness"]["item1"]["value"] == 1.0
    assert got["context_recall"]["item1"]["value"] == 1.0
    assert got["context_precision"]["item1"]["value"] == pytest.approx(1.0)
    assert got["factual_correctness"]["item0"]["value"] == 0.67  # precision 1/2, recall 1/1
    assert got["factual_correctness"]["item1"]["value"] == 1.0
    assert got["noise_sensitivity"]["item0"]["value"] == 0.0  # the wrong claim comes from no context
    assert 0.5 < got["response_relevancy"]["item1"]["value"] <= 1.0
    for name in ("bleu", "chrf", "rouge", "exact_match", "string_presence", "string_similarity"):
        assert got[name]["item1"]["value"] == pytest.approx(1.0), name
    assert got["exact_match"]["item0"]["value"] == 0.0 and got["string_presence"]["item0"]["value"] == 1.0
    assert got["nonllm_context_recall"]["item0"]["value"] == 1.0  # the case's own context is its reference
    assert scores(record, "rouge1")["item0"]["details"]["ragas_metric"] == "RougeScore"
    # Judge calls per case, as docs/ecosystem.md lists them (one context per case).
    calls = {m: got[m]["item1"]["details"]["judge_calls"] for m in LLM_METRICS}
    assert calls == {"faithfulness": 2, "response_relevancy": 3, "context_precision": 1, "context_recall": 1,
                     "factual_correctness": 4, "noise_sensitivity": 5}
    for m in LLM_METRICS + PLAIN_METRICS:
        assert got[m]["item1"]["details"]["ragas_version"] == record["plugins"]["ragas"]["ragas"], m
        assert got[m]["item1"]["status"] == "ok", m
    assert record["plugins"]["ragas"]["telemetry"].startswith("off")
    detector = scores(record, "ragas_hallucination")
    assert detector["item0"]["value"] == 1.0 and detector["item1"]["value"] == 0.0
    assert detector["item0"]["spans"][0]["text"] == "It ships with a free gift"


def one_metric(project: Project, server: FakeOpenAIServer, rows: list[tuple[str, str, str, str]] = ROWS,
               metric: str = "ragas_faithfulness", extra: str = "") -> tuple[Any, dict[str, Any]]:
    setup(project, suite(f"  - {{{metric}: {{judge: '{judge_spec(server)}'{extra}}}}}", cases=rows),
          {"candidate": ANSWERS})
    return run(project)


def test_a_judge_answering_garbage_is_nodata(project: Project, judge_server: FakeOpenAIServer) -> None:
    judge_server.script(garbage_judge)

    result, record = one_metric(project, judge_server)

    assert result.exit_code == 0, result.output
    score = scores(record, "ragas_faithfulness")["item0"]
    assert score["status"] == "nodata" and score["value"] is None
    assert score["reason"] == (
        "ragas_faithfulness: ragas failed: judge reply unusable for StatementGeneratorOutput after 2 attempt(s): "
        "the reply is not valid JSON; last reply 'I think the answer is quite good, honestly.'"
    )
    exchanges = score["details"]["judge_exchanges"]
    assert [e["attempt"] for e in exchanges] == [1, 2]
    assert exchanges[1]["prompt"].startswith("Your reply could not be used: the reply is not valid JSON.")


def test_a_judge_that_cannot_answer_is_an_error(project: Project, judge_server: FakeOpenAIServer) -> None:
    judge_server.script([{"status": 400, "message": "model overloaded"}])

    _, record = one_metric(project, judge_server)

    score = scores(record, "ragas_faithfulness")["item0"]
    assert score["status"] == "error" and score["value"] is None
    assert score["reason"].startswith("ragas_faithfulness: judge openai:gpt-fake failed:")
    assert "model overloaded" in score["reason"]


def test_nan_from_ragas_is_nodata(project: Project, judge_server: FakeOpenAIServer) -> None:
    def finds_no_statements(body: dict[str, Any]) -> str:
        reply = json.loads(ragas_judge(body))
        return json.dumps({"statements": []}) if "statements" in reply else json.dumps(reply)

    judge_server.script(finds_no_statements)

    _, record = one_metric(project, judge_server)

    score = scores(record, "ragas_faithfulness")["item1"]
    assert score["status"] == "nodata" and score["value"] is None
    assert score["reason"] == "ragas_faithfulness: ragas returned no score (NaN: nothing to score)"


def test_a_case_without_what_the_metric_needs_is_nodata(project: Project, judge_server: FakeOpenAIServer) -> None:
    rows = [("item0", "How much does item 0 cost?", "", "Item 0 costs $10.")]

    _, record = one_metric(project, judge_server, rows)

    score = scores(record, "ragas_faithfulness")["item0"]
    assert score["status"] == "nodata"
    assert score["reason"] == ("ragas_faithfulness: ragas needs retrieved contexts (the case's 'retrieved_contexts' "
                               "or 'contexts' list, or 'context'), which this case lacks")
    assert judge_server.counters["requests"] == 0


def test_an_unknown_metric_is_a_usage_error(project: Project, judge_server: FakeOpenAIServer) -> None:
    setup(project, suite("  - {name: ragas, metric: faithfullness}"), {"candidate": ANSWERS})

    result, _ = run(project)

    assert result.exit_code == 4
    assert "suites/rag.yaml:" in result.output
    assert "gatekeeper-ragas has no metric 'faithfullness' (known: bleu, chrf, context_precision," in result.output


@pytest.mark.parametrize(("entry", "expected"), [
    ("{ragas_rouge: {rouge_type: rouge2}}", "evaluators.ragas_rouge.rouge_type: Input should be 'rouge1' or 'rougeL'"),
    ("{ragas_bleu: {smoothing: 1}}", "evaluators.ragas_bleu.smoothing: unknown parameter"),
    ("{name: ragas, metric: factual_correctness, options: {mode: median}}",
     "ragas_factual_correctness: 1 validation error"),
])
def test_a_bad_option_is_a_usage_error(project: Project, entry: str, expected: str) -> None:
    setup(project, suite(f"  - {entry}"), {"candidate": ANSWERS})

    result, _ = run(project)

    assert result.exit_code == 4, result.output
    assert "suites/rag.yaml:" in result.output and expected in result.output


@pytest.mark.parametrize("metric", ["ragas_bleu", "ragas_faithfulness"])
def test_ragas_missing_says_what_to_install(project: Project, monkeypatch: pytest.MonkeyPatch, metric: str) -> None:
    for name in [m for m in sys.modules if m == "ragas" or m.startswith(("ragas.", "gatekeeper_ragas.judge"))]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "ragas", None)
    setup(project, suite(f"  - {metric}"), {"candidate": ANSWERS})

    result, _ = run(project)

    assert result.exit_code == 4, result.output
    assert f"suites/rag.yaml:20: evaluators.{metric}: metric '{metric}' needs ragas, which is not installed: " \
        "pip install gatekeeper-ragas (or the project extra: pip install 'gatekeeper[ragas]')" in result.output
