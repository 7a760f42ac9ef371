"""deepeval's real metrics, judged by the fake OpenAI server through gatekeeper's runner.

The judge answers deepeval's schema'd prompts with lexical rules (tests/fakes/ecosystem_judge.py),
so the good answers (what the context says) and the bad ones (invented numbers, an insult)
must come out as deepeval would score them with a careful judge.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from deepeval_support import BAD, ENV, run, scores, setup, values
from tests.fakes import FakeOpenAIServer
from tests.fakes.netguard import guard

from gatekeeper.testing import Project

JUDGED = """\
  - {name: deepeval_geval, as: correctness, criteria: 'Correct: the answer agrees with the expected output.',
     evaluation_params: [input, actual_output, expected_output]}
  - deepeval_answer_relevancy
  - deepeval_contextual_precision
  - deepeval_contextual_recall
  - deepeval_contextual_relevancy
  - deepeval_bias
  - deepeval_toxicity
"""
DETECTORS = """\
  - deepeval_faithfulness
  - deepeval_hallucination
"""


def deepeval_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("deepeval")


def test_judged_metrics_and_detectors_score_what_deepeval_says(project: Project,
                                                               judge_server: FakeOpenAIServer) -> None:
    setup(project, judge_server, JUDGED, DETECTORS)
    _, good = run(project, "good")
    _, bad = run(project, "bad")

    # G-Eval: criteria from the suite, steps written by the judge, 0..10 normalized by deepeval.
    assert values(good, "correctness") == {"returns": 0.9, "express": 0.9}
    assert values(bad, "correctness") == {"returns": 0.2, "express": 0.2}
    # Detectors: 1 = hallucinated; deepeval's own score is the support.
    assert values(good, "deepeval_faithfulness") == {"returns": 0.0, "express": 0.0}
    assert values(bad, "deepeval_faithfulness") == {"returns": 1.0, "express": 1.0}
    assert values(bad, "deepeval_hallucination") == {"returns": 1.0, "express": 1.0}
    faith = scores(bad, "deepeval_faithfulness")["returns"]
    assert faith["passed"] is False and faith["details"]["support"] == 0.0
    assert faith["details"]["claims"] == ["You can return them within 90 days."]
    assert [v["verdict"] for v in faith["details"]["verdicts"]] == ["no"]
    assert faith["spans"] == [{"text": "You can return them within 90 days", "start": 0, "end": 34, "kind": "claim",
                               "reason": "checked against the context"}]
    # deepeval 4: bias and toxicity are higher-is-better (1 = none found).
    assert values(good, "deepeval_bias") == {"returns": 1.0, "express": 1.0}
    assert values(bad, "deepeval_bias")["express"] == 0.0
    assert values(bad, "deepeval_toxicity")["express"] == 0.0
    assert values(bad, "deepeval_answer_relevancy")["express"] == 0.5
    for metric in ("deepeval_contextual_precision", "deepeval_contextual_recall", "deepeval_contextual_relevancy"):
        assert values(good, metric) == {"returns": 1.0, "express": 1.0}, metric

    score = scores(good, "deepeval_faithfulness")["returns"]
    details = score["details"]
    assert details["library"] == "deepeval" and details["library_version"] == deepeval_version()
    assert details["library_metric"] == "FaithfulnessMetric" and score["reason"].startswith("scripted reason")
    assert details["judge"]["provider"] == "openai" and "api_key_env=GK_TEST_DEEPEVAL_KEY" in details["judge"]["spec"]
    # Every judge exchange is in the record, prompt and reply: truths, claims, verdicts, reason.
    assert details["judge_calls"] == 4 == len(details["exchanges"])
    assert [e["schema"] for e in details["exchanges"]] == ["Truths", "Claims", "Verdicts", "FaithfulnessScoreReason"]
    assert "Returns are accepted within 30 days" in details["exchanges"][0]["prompt"]
    assert json.loads(details["exchanges"][1]["reply"]) == {"claims": ["You can return them within 30 days."]}


def test_rerun_replays_every_judge_call_from_the_cache(project: Project, judge_server: FakeOpenAIServer) -> None:
    setup(project, judge_server, JUDGED, DETECTORS)
    _, first = run(project, "bad")
    sent = judge_server.counters["requests"]
    assert sent > 20
    _, second = run(project, "bad", out="out-again")
    assert judge_server.counters["requests"] == sent  # nothing asked twice
    for metric in ("correctness", "deepeval_faithfulness", "deepeval_bias"):
        assert values(second, metric) == values(first, metric)
        assert all(s["details"]["judge_cache_hits"] == s["details"]["judge_calls"]
                   for s in scores(second, metric).values())


def test_garbage_judge_reply_is_nodata_with_the_reason_never_zero(project: Project) -> None:
    with FakeOpenAIServer(responder=lambda body: "I think it is quite good, honestly.") as server:
        setup(project, server, JUDGED, DETECTORS)
        result, record = run(project, "good")
    for metric in ("correctness", "deepeval_answer_relevancy", "deepeval_bias", "deepeval_faithfulness"):
        for score in scores(record, metric).values():
            assert score["status"] == "nodata" and score["value"] is None, (metric, score)
            assert score["reason"].startswith(f"deepeval deepeval_{metric.removeprefix('deepeval_')}"
                                              if metric != "correctness" else "deepeval deepeval_geval")
            assert "judge reply unusable after 2 attempt(s)" in score["reason"]
    result.fnmatch_lines(["*correctness*-*0*0*2*0*"])


def test_judge_that_cannot_answer_is_an_error_not_a_score(project: Project) -> None:
    with FakeOpenAIServer() as server:
        server.script([{"status": 500}])
        setup(project, server, "  - deepeval_answer_relevancy\n")
        result, record = run(project, "good", codes=(5,))
    result.fnmatch_lines(["*deepeval_answer_relevancy*-*0*0*0*2*"])
    for score in scores(record, "deepeval_answer_relevancy").values():
        assert score["status"] == "error" and score["value"] is None
        assert "judge openai:gpt-fake" in score["reason"] and "failed" in score["reason"]


def test_a_case_without_what_the_metric_needs_is_nodata(project: Project, judge_server: FakeOpenAIServer) -> None:
    setup(project, judge_server, "  - deepeval_contextual_recall\n")
    text = (project.path / "suites/support.yaml").read_text().replace(', expected: "Express shipping costs $15."', "")
    project.write("suites/support.yaml", text)
    _, record = run(project, "good")
    score = scores(record, "deepeval_contextual_recall")["express"]
    assert score["status"] == "nodata"
    assert score["reason"] == ("deepeval deepeval_contextual_recall: the case has no expected_output (deepeval's "
                               "ContextualRecallMetric needs input, actual_output, expected_output, retrieval_context)")


@pytest.mark.parametrize(("entry", "message"), [
    ("  - {name: deepeval_geval, evaluation_params: [input]}",
     "deepeval G-Eval needs 'criteria' or 'evaluation_steps'"),
    ("  - {name: deepeval_geval, criteria: c, evaluation_params: [answer]}", "evaluation_params.0: Input should be"),
    ("  - {name: deepeval_bias, temperature: 2}", "evaluators.deepeval_bias.temperature: unknown parameter"),
    ("  - {name: deepeval_json_correctness, schema: {type: object, properties: {a: {type: string, format: email}}}}",
     "keyword 'format' is not supported by the deepeval adapter"),
    ("  - deepeval_summarization", "unknown evaluator 'deepeval_summarization'"),
])
def test_bad_parameters_are_usage_errors_with_file_and_line(project: Project, entry: str, message: str) -> None:
    setup(project, None, entry + "\n")
    result = project.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out", "--no-progress", env=ENV)
    assert result.exit_code == 4, result.output
    assert "support.yaml:" in result.output and message in result.output
    assert "Traceback" not in result.output


def test_metrics_without_a_judge(project: Project, nltk_data: Path) -> None:
    setup(project, None, """\
  - {name: deepeval_exact_match, as: exact}
  - {name: deepeval_pattern_match, as: mentions_days, pattern: '.*\\b\\d+ days\\b.*'}
  - {name: deepeval_json_correctness, as: json, schema: {type: object, properties: {days: {type: integer}},
     required: [days]}}
  - {name: deepeval_rouge, as: rouge_l}
  - {name: deepeval_bleu, as: bleu1}
""")
    project.write_jsonl("exact.jsonl", [{"id": "returns", "output": "You have 30 days to return them."},
                                        {"id": "express", "output": '{"days": 2}'}])
    result, record = run(project, "exact")
    assert values(record, "exact") == {"returns": 1.0, "express": 0.0}
    assert values(record, "mentions_days") == {"returns": 1.0, "express": 0.0}
    assert values(record, "json") == {"returns": 0.0, "express": 1.0}
    assert values(record, "rouge_l")["returns"] == 1.0 and values(record, "bleu1")["returns"] == 1.0
    assert values(record, "bleu1")["express"] == 0.0
    assert scores(record, "json")["express"]["details"]["library_version"] == scores(record, "exact")["returns"][
        "details"]["library_version"]
    assert "exchanges" not in scores(record, "json")["express"]["details"]  # no judge involved
    del result


def test_bleu_without_nltk_data_says_what_to_build(project: Project, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])
    monkeypatch.delenv("NLTK_DATA", raising=False)
    setup(project, None, "  - deepeval_bleu\n")
    _, record = run(project, "good")
    score = scores(record, "deepeval_bleu")["returns"]
    assert score["status"] == "nodata"
    assert "needs NLTK data that is not installed: tokenizers/punkt_tab/english/" in score["reason"]
    assert "gatekeeper-nltk-data" in score["reason"]


def test_nothing_leaves_for_anywhere_but_the_judge(project: Project, judge_server: FakeOpenAIServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    setup(project, judge_server, JUDGED, DETECTORS)
    monkeypatch.chdir(project.path)
    with guard() as net:
        run(project, "bad")
    assert not (project.path / ".deepeval").exists()  # deepeval's state stays out of the project
    port = int(judge_server.base_url.rsplit(":", 1)[1].split("/")[0])
    assert net.connections, "the judge was never called"
    assert net.beyond({("127.0.0.1", port)}) == []


def test_telemetry_and_dotenv_are_off_before_deepeval_is_imported(tmp_path: Path) -> None:
    """A fresh interpreter in a directory with a .env: loading the plugin, then deepeval,
    reads nothing from the .env and leaves telemetry off."""
    (tmp_path / ".env").write_text("GK_FROM_DOTENV=leaked\nDEEPEVAL_TELEMETRY_OPT_OUT=0\n")
    code = (
        "import os, gatekeeper_deepeval.plugin, deepeval\n"
        "from deepeval.telemetry.client import telemetry_opt_out\n"
        "print(os.environ.get('GK_FROM_DOTENV'), os.environ['DEEPEVAL_TELEMETRY_OPT_OUT'], telemetry_opt_out())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPEVAL")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "1", "True"]
    assert not (tmp_path / ".deepeval").exists()


def test_bad_answers_do_not_score_zero_by_default(project: Project, judge_server: FakeOpenAIServer) -> None:
    """NODATA never hides as 0: the only zeros above come from real verdicts."""
    setup(project, judge_server, "  - deepeval_bias\n")
    _, record = run(project, "bad")
    score = scores(record, "deepeval_bias")["express"]
    assert score["value"] == 0.0 and score["status"] == "ok"
    assert score["details"]["verdicts"] == [{"verdict": "yes", "reason": "wording"}]
    assert BAD["express"].split(".")[0] in score["details"]["opinions"][0]


def test_geval_with_suite_steps_and_rubric_asks_one_call_per_case(project: Project,
                                                                  judge_server: FakeOpenAIServer) -> None:
    setup(project, judge_server, """\
  - {name: deepeval_geval, as: correctness, evaluation_steps: ['Compare the facts with the expected output.',
     'Penalise invented facts.'], evaluation_params: [input, actual_output, expected_output],
     rubric: [{score_range: [0, 3], expected_outcome: wrong}, {score_range: [7, 10], expected_outcome: right}]}
""")
    _, record = run(project, "bad")
    score = scores(record, "correctness")["returns"]
    assert score["value"] == 0.2 and score["passed"] is False
    assert score["details"]["judge_calls"] == 1  # the suite's steps: deepeval writes none
    prompt = score["details"]["exchanges"][0]["prompt"]
    assert "1. Compare the facts with the expected output." in prompt and "0-3: wrong" in prompt


def test_a_missing_library_names_the_extra_to_install(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "deepeval", None)  # what Python sees when it is not installed
    setup(project, None, "  - deepeval_bias\n")
    result = project.run("run", "suites", "--model", "replay:good.jsonl", "--out", "out", "--no-progress", env=ENV)
    assert result.exit_code == 5, result.output
    assert "plugin 'deepeval': deepeval is not installed" in result.output
    assert "install the extra: pip install 'gatekeeper[deepeval]'" in result.output
    assert "Traceback" not in result.output
