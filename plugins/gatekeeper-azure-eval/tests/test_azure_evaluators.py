"""azure-ai-evaluation's real evaluators, their judge calls routed through gatekeeper's runner
to the fake OpenAI server, and its NLTK-based ones on data built offline."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
from azure_support import ENV, run, scores, setup, values
from tests.fakes import FakeOpenAIServer
from tests.fakes.netguard import guard

from gatekeeper.testing import Project

JUDGED = """\
  - azure_groundedness
  - azure_relevance
  - azure_coherence
  - azure_fluency
  - azure_similarity
  - azure_retrieval
"""
DETECTOR = "  - {name: azure_groundedness, as: ungrounded}\n"
OVERLAP = """\
  - azure_f1
  - azure_bleu
  - azure_gleu
  - azure_meteor
  - {name: azure_rouge, rouge_type: rougeL}
"""


def test_judged_evaluators_map_azure_scores_and_keep_its_reasons(project: Project,
                                                                 judge_server: FakeOpenAIServer) -> None:
    setup(project, judge_server, JUDGED, DETECTOR)
    _, good = run(project, "good")
    _, bad = run(project, "bad")
    for metric in ("azure_groundedness", "azure_relevance", "azure_coherence", "azure_fluency", "azure_similarity"):
        assert values(good, metric) == {"returns": 1.0, "express": 1.0}, metric
    assert values(bad, "azure_groundedness") == {"returns": 0.0, "express": 0.0}
    assert values(bad, "azure_similarity") == {"returns": 0.0, "express": 0.0}
    assert values(bad, "azure_relevance") == {"returns": 1.0, "express": 0.0}
    assert values(bad, "azure_retrieval") == {"returns": 1.0, "express": 1.0}  # the contexts did not change
    assert values(good, "ungrounded") == {"returns": 0.0, "express": 0.0}
    assert values(bad, "ungrounded") == {"returns": 1.0, "express": 1.0}

    score = scores(bad, "azure_groundedness")["returns"]
    details = score["details"]
    assert score["passed"] is False and score["reason"] == "scripted judge: poor response"
    assert details["library"] == "azure-ai-evaluation"
    assert details["library_version"] == importlib.metadata.version("azure-ai-evaluation")
    assert details["library_evaluator"] == "GroundednessEvaluator"
    assert (details["library_score"], details["library_threshold"], details["library_passed"]) == (1.0, 3.0, "fail")
    assert details["judge_calls"] == 1 and details["judge"]["name"] == "gpt-fake"
    exchange = details["exchanges"][0]
    assert json.loads(exchange["reply"])["score"] == 1
    assert "You can return them within 90 days." in exchange["messages"][-1]["content"]
    # What reached the endpoint is azure's prompty request, sent by gatekeeper's openai provider.
    body = next(b for b in judge_server.requests if b["messages"][-1]["content"] == exchange["messages"][-1]["content"])
    assert body["response_format"] == {"type": "json_object"} and body["max_tokens"] == 800
    assert body["model"] == "gpt-fake"
    assert scores(good, "ungrounded")["express"]["details"]["support"] == 1.0


def test_rerun_asks_the_judge_nothing(project: Project, judge_server: FakeOpenAIServer) -> None:
    setup(project, judge_server, JUDGED)
    _, first = run(project, "bad")
    sent = judge_server.counters["requests"]
    assert sent == 12  # 6 evaluators x 2 cases, each one prompty call
    _, second = run(project, "bad", out="out-again")
    assert judge_server.counters["requests"] == sent
    assert values(second, "azure_relevance") == values(first, "azure_relevance")
    assert all(s["details"]["judge_cache_hits"] == 1 for s in scores(second, "azure_coherence").values())


def test_unparsable_judge_reply_is_nodata_with_azures_message(project: Project) -> None:
    with FakeOpenAIServer(responder=lambda body: "Five out of five, lovely answer.") as server:
        setup(project, server, "  - azure_relevance\n")
        result, record = run(project, "good")
    for score in scores(record, "azure_relevance").values():
        assert score["status"] == "nodata" and score["value"] is None
        assert score["reason"].startswith("azure-eval azure_relevance")
    result.fnmatch_lines(["*azure_relevance*-*0*0*2*0*"])


def test_judge_that_cannot_answer_is_an_error(project: Project) -> None:
    with FakeOpenAIServer() as server:
        server.script([{"status": 500}])
        setup(project, server, "  - azure_fluency\n")
        _, record = run(project, "good", codes=(5,))
    for score in scores(record, "azure_fluency").values():
        assert score["status"] == "error" and "judge openai:gpt-fake failed" in score["reason"]


def test_text_overlap_evaluators_offline(project: Project, nltk_data: Path) -> None:
    setup(project, None, OVERLAP)
    project.write_jsonl("same.jsonl", [{"id": "returns", "output": "You have 30 days to return them."},
                                       {"id": "express", "output": "Express shipping costs $15."}])
    _, same = run(project, "same")
    for metric in ("azure_f1", "azure_bleu", "azure_gleu", "azure_rouge"):
        assert values(same, metric) == {"returns": 1.0, "express": 1.0}, metric
    assert values(same, "azure_meteor")["returns"] == pytest.approx(0.9993, abs=1e-3)
    _, good = run(project, "good")
    # azure's F1: SQuAD normalisation; 5 of 7 tokens shared each way.
    assert values(good, "azure_f1")["returns"] == pytest.approx(5 / 7)
    assert 0 < values(good, "azure_bleu")["returns"] < 1
    assert scores(good, "azure_meteor")["returns"]["details"]["library_evaluator"] == "MeteorScoreEvaluator"


def test_meteor_reads_wordnet_synonyms(project: Project, nltk_data: Path) -> None:
    setup(project, None, "  - azure_meteor\n")
    project.write_jsonl("syn.jsonl", [{"id": "returns", "output": "You have 30 days to give them back."},
                                      {"id": "express", "output": "Express transport costs $15."}])
    _, record = run(project, "syn")
    # "transport" matches "shipping" only through WordNet's synsets.
    assert values(record, "azure_meteor")["express"] > 0.8


def test_missing_nltk_data_is_named_with_how_to_build_it(project: Project, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])
    monkeypatch.delenv("NLTK_DATA", raising=False)
    setup(project, None, "  - azure_bleu\n")
    result = project.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out", "--no-progress", env=ENV)
    assert result.exit_code == 5, result.output
    assert "plugin 'azure-eval': azure-eval azure_bleu needs NLTK data that is not installed: corpora/wordnet.zip, " \
           "misc/perluniprops.zip, tokenizers/punkt.zip, tokenizers/punkt_tab.zip" in result.output
    assert "gatekeeper-nltk-data" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("name", ["azure_violence", "azure_content_safety", "azure_protected_material"])
def test_service_backed_evaluators_are_refused_saying_what_they_need(project: Project, name: str) -> None:
    setup(project, None, f"  - {name}\n")
    result = project.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out", "--no-progress", env=ENV)
    assert result.exit_code == 4, result.output
    assert f"support.yaml:10: evaluators.{name}: azure-eval: this evaluator is scored by the Azure AI Foundry" \
           in result.output
    assert "needs an Azure AI project" in result.output and "refused offline" in result.output


@pytest.mark.parametrize(("entry", "message"), [
    ("  - {name: azure_rouge, rouge_type: rouge9}", "evaluators.azure_rouge.rouge_type: Input should be"),
    ("  - {name: azure_relevance, judge: 'no-provider'}", "evaluators.azure_relevance.judge: model spec"),
    ("  - {name: azure_meteor, alpha: 2}", "evaluators.azure_meteor.alpha: Input should be less than or equal to 1"),
    ("  - azure_summarization", "unknown evaluator 'azure_summarization'"),
])
def test_bad_parameters_are_usage_errors(project: Project, entry: str, message: str) -> None:
    setup(project, None, entry + "\n")
    result = project.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out", "--no-progress", env=ENV)
    assert result.exit_code == 4, result.output
    assert message in result.output and "Traceback" not in result.output


def test_nothing_leaves_for_anywhere_but_the_judge(project: Project, judge_server: FakeOpenAIServer,
                                                   nltk_data: Path) -> None:
    setup(project, judge_server, JUDGED + OVERLAP, DETECTOR)
    with guard() as net:
        run(project, "bad")
    port = int(judge_server.base_url.rsplit(":", 1)[1].split("/")[0])
    assert ("127.0.0.1", port) in net.connections
    assert net.beyond({("127.0.0.1", port)}) == []  # not the .invalid base_url, no telemetry, no NLTK download


def test_built_punkt_parameters_split_english_sentences(nltk_data: Path) -> None:
    import nltk

    if str(nltk_data) not in nltk.data.path:
        nltk.data.path.insert(0, str(nltk_data))
    assert nltk.sent_tokenize("Dr. Smith arrived at 5 p.m. on Monday. Mr. Jones stayed, e.g. to help.") == [
        "Dr. Smith arrived at 5 p.m. on Monday.", "Mr. Jones stayed, e.g. to help."]


def test_a_missing_library_names_the_extra_to_install(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "azure.ai.evaluation", None)  # what Python sees when it is not installed
    setup(project, None, "  - azure_f1\n")
    result = project.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out", "--no-progress", env=ENV)
    assert result.exit_code == 5, result.output
    assert "plugin 'azure-eval': azure-ai-evaluation is not installed" in result.output
    assert "install the extra: pip install 'gatekeeper[azure-eval]'" in result.output
