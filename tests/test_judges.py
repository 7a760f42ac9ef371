"""The judge evaluators (rubric, pairwise, reference_match) against the fake OpenAI server:
strict parsing with repair and NODATA, K votes, logprob weighting, position-swapped pairwise
judging in ``gatekeeper check``, and the judge's provenance."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from gatekeeper.engine.judging import ReplyError, ReplyFormat, extract_json, object_schema
from gatekeeper.testing import Project
from tests.fakes import FakeOpenAIServer
from tests.judging_support import (
    ENV,
    answer,
    assert_no_secret,
    judge_spec,
    policy,
    reply,
    run,
    scores,
    setup,
    user_text,
)

CASES = [
    ("returns", "How long do I have to return boots?", "Returns are accepted within 30 days.", "30 days."),
    ("receipt", "Do I need a receipt?", "A receipt is required for every return.", "Yes, a receipt."),
    ("express", "How much is express shipping?", "Express shipping costs $15.", "$15."),
    ("hours", "When does the store open?", "The store opens at 9 am.", "At 9 am."),
]


def suite(evaluators: str, cases: list[tuple[str, str, str, str]] = CASES) -> str:
    rows = "\n".join(
        f"  - {{id: {i}, input: {json.dumps(q)}, context: {json.dumps(c)}, expected: {json.dumps(e)}}}"
        for i, q, c, e in cases
    )
    return f"""\
suite: judged
prompt:
  messages:
    - role: user
      content: "{{{{ context }}}} {{{{ input }}}}"
cases:
{rows}
evaluators:
{evaluators}
"""


GOOD = {"returns": "Within 30 days.", "receipt": "Yes, you need it.", "express": "It costs $15.",
        "hours": "It opens at 9 am."}


@pytest.fixture
def judged(project: Project, fake_openai: FakeOpenAIServer) -> tuple[Project, FakeOpenAIServer]:
    return project, fake_openai


def rubric_suite(server: FakeOpenAIServer, extra: str = "", cases: list[tuple[str, str, str, str]] = CASES) -> str:
    return suite(
        f"  - {{rubric: {{judge: '{judge_spec(server)}', criteria: 'Correctness: the answer is right.', "
        f"steps: ['Compare the answer with the context.', 'Score it.']{extra}}}}}",
        cases,
    )


# --------------------------------------------------------------------------- parsing (unit)


def test_extract_json_finds_the_object_in_fences_and_prose() -> None:
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('Sure!\n```json\n{"a": 2}\n```') == {"a": 2}
    assert extract_json('Here it is: {"a": 3} -- done') == {"a": 3}
    with pytest.raises(ReplyError, match="not valid JSON"):
        extract_json("score: four")
    with pytest.raises(ReplyError, match="empty"):
        extract_json("  ")


def test_reply_format_validates_against_the_schema() -> None:
    fmt = ReplyFormat("x", object_schema({"score": {"type": "integer", "enum": [1, 2, 3]}}))
    assert fmt.parse('{"score": 2}') == ({"score": 2}, {"score": 2})
    with pytest.raises(ReplyError, match="score: 7 is not one of"):
        fmt.parse('{"score": 7}')
    with pytest.raises(ReplyError, match="'score' is a required property"):
        fmt.parse('{"points": 2}')
    assert fmt.response_format("json_object") == {"type": "json_object"}
    assert fmt.response_format("json_schema")["json_schema"]["strict"] is True  # type: ignore[index]
    assert fmt.response_format("off") is None


# --------------------------------------------------------------------------- rubric


def test_rubric_normalizes_the_score_and_records_judge_provenance(judged: tuple[Project, FakeOpenAIServer]) -> None:
    project, server = judged
    setup(project, rubric_suite(server), {"candidate": GOOD})
    server.script([reply(score=4)])

    result, record = run(project)

    assert result.exit_code == 0, result.output
    got = scores(record, "rubric")
    assert {s["value"] for s in got.values()} == {0.75}
    assert got["returns"]["reason"] == "score 4 on 1..5 → 0.750"
    assert got["returns"]["passed"] is True
    details = got["returns"]["details"]
    assert details["judge"]["provider"] == "openai" and len(details["judge"]["digest"]) == 64
    assert "api_key_env=GK_TEST_JUDGE_KEY" in details["judge"]["spec"]
    assert len(details["prompt_sha256"]) == 64
    assert len({s["details"]["prompt_sha256"] for s in got.values()}) == 1  # same prompt, every case
    body = server.requests[0]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]
    prompt = user_text(body)
    assert "Correctness: the answer is right." in prompt and "1. Compare the answer with the context." in prompt
    assert len(server.requests) == 4
    assert_no_secret(project)

    # Nothing changed: a second run asks the judge nothing (the calls are cached).
    again, record2 = run(project)
    assert again.exit_code == 0 and len(server.requests) == 4
    assert scores(record2, "rubric")["returns"]["value"] == 0.75


def test_malformed_reply_is_repaired_on_retry(judged: tuple[Project, FakeOpenAIServer]) -> None:
    project, server = judged
    setup(project, rubric_suite(server, cases=CASES[:1]), {"candidate": {"returns": GOOD["returns"]}})
    server.script(["The answer deserves a four.", reply(score=5)])

    result, record = run(project)

    assert result.exit_code == 0, result.output
    score = scores(record, "rubric")["returns"]
    assert score["status"] == "ok" and score["value"] == 1.0
    assert score["details"]["repaired_votes"] == 1 and score["details"]["judge_calls"] == 2
    repair = server.requests[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": "The answer deserves a four."}
    assert "could not be used: not valid JSON" in repair[-1]["content"]


def test_reply_still_bad_after_repair_is_nodata_never_zero(judged: tuple[Project, FakeOpenAIServer]) -> None:
    project, server = judged
    setup(project, rubric_suite(server, cases=CASES[:2]), {"candidate": GOOD})
    # returns: out of scale twice; receipt: truncated JSON twice.
    server.script(lambda body: reply(score=9) if "boots" in json.dumps(body) else '{"reasoning": "ok", "sco')

    result, record = run(project)

    assert result.exit_code == 0, result.output
    got = scores(record, "rubric")
    for score in got.values():
        assert score["status"] == "nodata" and score["value"] is None and score["passed"] is None
    assert got["returns"]["reason"].startswith("judge reply unusable after 2 attempt(s): score: 9 is not one of")
    assert "not valid JSON" in got["receipt"]["reason"]
    assert len(server.requests) == 4
    assert record["summary"]["replay:candidate.jsonl"]["rubric"]["nodata"] == 2
    assert record["summary"]["replay:candidate.jsonl"]["rubric"]["mean"] is None
    result.fnmatch_lines(["*rubric*-*0*0*2*0*"])


def test_k_votes_are_aggregated_with_their_agreement(judged: tuple[Project, FakeOpenAIServer]) -> None:
    project, server = judged
    setup(project, rubric_suite(server, ", votes: 3", cases=CASES[:1]), {"candidate": GOOD})
    server.script(lambda body: reply(score={0: 4, 1: 4, 2: 2}[body["seed"]]))

    result, record = run(project)

    assert result.exit_code == 0, result.output
    score = scores(record, "rubric")["returns"]
    assert score["details"]["scores"] == [4, 4, 2]
    assert score["details"]["agreement"] == pytest.approx(2 / 3)
    assert score["value"] == pytest.approx((0.75 + 0.75 + 0.25) / 3, abs=1e-6)
    assert "3 votes, 67% agree on 4" in score["reason"]
    assert sorted(b["seed"] for b in server.requests) == [0, 1, 2]
    assert {b["temperature"] for b in server.requests} == {0.7}


def test_logprob_weighted_rubric_score(judged: tuple[Project, FakeOpenAIServer]) -> None:
    project, server = judged
    setup(project, rubric_suite(server, ", logprobs: true, top_logprobs: 5", cases=CASES[:1]), {"candidate": GOOD})
    tokens = ['{"', "reasoning", '":"', "ok", '","', "score", '":', "4", "}"]
    content = "".join(tokens)
    alternatives = {"4": 0.6, "5": 0.3, "3": 0.1}
    logprobs = {"content": [
        {"token": t, "logprob": 0.0, "top_logprobs": (
            [{"token": k, "logprob": math.log(p)} for k, p in alternatives.items()] + [{"token": "x", "logprob": -9}]
            if t == "4" else [{"token": t, "logprob": 0.0}]
        )} for t in tokens
    ]}
    server.script([{"content": content, "logprobs": logprobs}])

    result, record = run(project)

    assert result.exit_code == 0, result.output
    score = scores(record, "rubric")["returns"]
    expected = 4 * 0.6 + 5 * 0.3 + 3 * 0.1  # 4.2 on 1..5
    assert score["details"]["weighted_scores"] == [pytest.approx(expected, abs=1e-3)]
    assert score["value"] == pytest.approx((expected - 1) / 4, abs=1e-4)
    assert "logprob-weighted" in score["reason"]
    assert server.requests[0]["logprobs"] is True and server.requests[0]["top_logprobs"] == 5


def test_rubric_without_logprobs_from_the_endpoint_falls_back_to_the_plain_score(
    judged: tuple[Project, FakeOpenAIServer],
) -> None:
    project, server = judged
    setup(project, rubric_suite(server, ", logprobs: true", cases=CASES[:1]), {"candidate": GOOD})
    # An endpoint that answers logprobs without any token in them.
    server.script([{"content": '{"reasoning": "fine", "score": 3}', "logprobs": {"content": []}}])

    _, record = run(project)

    score = scores(record, "rubric")["returns"]
    assert score["value"] == 0.5
    assert "no usable logprobs" in score["details"]["logprobs"]


def test_judge_endpoint_down_is_an_error_not_a_score(judged: tuple[Project, FakeOpenAIServer]) -> None:
    project, server = judged
    setup(project, rubric_suite(server, cases=CASES[:1]), {"candidate": GOOD})
    server.script([{"status": 500}])

    result, record = run(project)

    score = scores(record, "rubric")["returns"]
    assert score["status"] == "error" and score["value"] is None
    assert score["reason"].startswith("judge openai:gpt-fake failed:")
    assert "HTTP 500" in score["reason"] or "500" in score["reason"], score["reason"]
    assert result.exit_code == 5  # a harness error, not a low score


def test_judge_spec_is_checked_when_the_suite_loads(project: Project) -> None:
    setup(project, suite("  - {rubric: {judge: 'no-provider', criteria: c}}"), {"candidate": GOOD})
    result = project.run("run", "suites", "--model", "replay:candidate.jsonl")
    assert result.exit_code == 4
    assert "judged.yaml:" in result.output and "evaluators.rubric.judge" in result.output


def test_scale_must_run_upwards(project: Project) -> None:
    setup(project, suite("  - {rubric: {judge: 'openai:x', criteria: c, scale: [5, 1]}}"), {"candidate": GOOD})
    result = project.run("run", "suites", "--model", "replay:candidate.jsonl")
    assert result.exit_code == 4 and "scale [5, 1] must go from a lower to a higher score" in result.output


def test_custom_prompty_template(judged: tuple[Project, FakeOpenAIServer]) -> None:
    project, server = judged
    project.write("prompts/grade.prompty", """\
        ---
        name: grade
        ---
        system:
        You grade support answers for the shop.
        user:
        Question: {{ input }}
        Answer: {{ output }}
        Criteria: {{ criteria }}
        {{ format_instructions }}
        """)
    setup(project, rubric_suite(server, ", template: prompts/grade.prompty", cases=CASES[:1]), {"candidate": GOOD})
    server.script([reply(score=2)])

    _, record = run(project)

    assert scores(record, "rubric")["returns"]["value"] == 0.25
    messages = server.requests[0]["messages"]
    assert messages[0] == {"role": "system", "content": "You grade support answers for the shop."}
    assert messages[1]["content"].startswith("Question: How long do I have to return boots?\nAnswer: Within 30 days.")
    assert messages[1]["content"].count("JSON Schema") == 1


# --------------------------------------------------------------------------- reference_match


def test_reference_match_verdicts_and_missing_reference(judged: tuple[Project, FakeOpenAIServer]) -> None:
    project, server = judged
    cases = [*CASES[:3], ("noref", "Hi?", "Greeting.", "")]
    setup(project, suite(f"  - {{reference_match: {{judge: '{judge_spec(server)}'}}}}", cases),
          {"candidate": {**GOOD, "noref": "Hello!"}})
    by_reference = {"- 30 days.": "match", "- Yes, a receipt.": "partial", "- $15.": "mismatch"}
    server.script(lambda body: reply(verdict=next(v for ref, v in by_reference.items() if ref in user_text(body))))

    result, record = run(project)

    assert result.exit_code == 1, result.output  # two answers fail the threshold (1.0)
    got = scores(record, "reference_match")
    assert {k: s["value"] for k, s in got.items()} == {"returns": 1.0, "receipt": 0.5, "express": 0.0, "noref": None}
    assert got["returns"]["passed"] is True and got["receipt"]["passed"] is False
    assert got["noref"]["reason"] == "no reference: the case has no expected answer"
    assert len(server.requests) == 3  # no judge call without a reference
    assert any("Reference answer:\n- 30 days.\n" in user_text(b) for b in server.requests)


# --------------------------------------------------------------------------- pairwise in gatekeeper check

CHECK_POLICY = policy(
    "    - {name: preference, metric: pairwise, direction: higher, hypothesis: superiority, ci_method: t, min_n: 12, "
    "critical: true}", "preference",
)

MANY = [(f"q{i}", f"Question {i}?", f"Fact {i} is true.", f"Fact {i}.") for i in range(12)]


def pairwise_project(project: Project, server: FakeOpenAIServer) -> None:
    setup(project, suite(f"  - {{pairwise: {{judge: '{judge_spec(server)}'}}}}", MANY), {
        "candidate": {f"q{i}": f"Fact {i} is true, as the context says." for i in range(12)},
        "baseline": {f"q{i}": f"I am not sure about {i}." for i in range(12)},
    })
    project.write("policy.yaml", CHECK_POLICY)


def check(project: Project) -> tuple[int, dict[str, Any], str]:
    result = project.run("check", "--candidate", "replay:candidate.jsonl", "--baseline", "replay:baseline.jsonl",
                         "--policy", "policy.yaml", "--out", "out", "--no-progress", env=ENV)
    return result.exit_code, project.read_record("out/decision.json"), result.output


def test_pairwise_position_bias_cancels_out(judged: tuple[Project, FakeOpenAIServer]) -> None:
    project, server = judged
    pairwise_project(project, server)
    server.script([reply(winner="A")])  # a judge that always prefers whatever it sees first

    code, record, output = check(project)

    cand, base = scores(record, "pairwise", "candidate"), scores(record, "pairwise", "baseline")
    assert {s["value"] for s in cand.values()} == {0.5} and {s["value"] for s in base.values()} == {0.5}
    first = cand["q0"]
    assert first["details"]["position_consistent"] is False
    assert first["details"]["answer_first"] == ["win"] and first["details"]["answer_second"] == ["loss"]
    assert "orders disagree" in first["reason"] and "position bias" in first["reason"]
    # Two judge calls per case (both orders); the baseline's comparison reuses them from the cache.
    assert len(server.requests) == 2 * 12
    assert record["decision"] == "REJECT" and code == 1  # no superiority from a biased judge
    assert "preference" in output
    assert_no_secret(project)


def test_pairwise_consistent_preference_wins(judged: tuple[Project, FakeOpenAIServer]) -> None:
    project, server = judged
    pairwise_project(project, server)

    def prefers_the_grounded_answer(body: dict[str, Any]) -> str:
        return reply(winner="A" if "as the context says" in answer(body, "A") else "B")

    server.script(prefers_the_grounded_answer)

    code, record, _ = check(project)

    cand, base = scores(record, "pairwise", "candidate"), scores(record, "pairwise", "baseline")
    assert {s["value"] for s in cand.values()} == {1.0} and {s["value"] for s in base.values()} == {0.0}
    assert cand["q3"]["details"]["position_consistent"] is True
    assert cand["q3"]["reason"] == "win against baseline in both orders; value 1.000"
    assert base["q3"]["reason"] == "loss against candidate in both orders; value 0.000"
    assert len(server.requests) == 2 * 12
    metric = next(m for m in record["metrics"] if m["name"] == "preference")
    assert metric["verdict"] == "PASS" and metric["delta"] == 1.0
    assert record["decision"] == "PROMOTE" and code == 0


def test_pairwise_tie_and_identical_answers(judged: tuple[Project, FakeOpenAIServer]) -> None:
    project, server = judged
    pairwise_project(project, server)
    project.write_jsonl("baseline.jsonl", [
        {"id": f"q{i}", "output": "Fact 0 is true, as the context says." if i == 0 else f"Other {i}."}
        for i in range(12)
    ])
    server.script([reply(winner="tie")])

    _, record, _ = check(project)

    cand = scores(record, "pairwise", "candidate")
    assert cand["q0"]["value"] == 0.5 and cand["q0"]["details"]["identical"] is True
    assert cand["q1"]["value"] == 0.5 and cand["q1"]["details"]["outcome"] == "tie"
    assert cand["q1"]["details"]["position_consistent"] is True
    assert len(server.requests) == 2 * 11  # identical answers need no judge


def test_pairwise_needs_another_model_in_a_single_model_run(judged: tuple[Project, FakeOpenAIServer]) -> None:
    project, server = judged
    pairwise_project(project, server)

    _, record = run(project)

    score = scores(record, "pairwise")["q0"]
    assert score["status"] == "nodata"
    assert "pairwise needs another model's answer" in score["reason"]
    assert server.requests == []


def test_pairwise_against_a_model_spec_in_run(judged: tuple[Project, FakeOpenAIServer]) -> None:
    project, server = judged
    pairwise_project(project, server)
    project.write("suites/judged.yaml", suite(
        f"  - {{pairwise: {{judge: '{judge_spec(server)}', against: 'replay:baseline.jsonl'}}}}", MANY))
    server.script(lambda body: reply(winner="A" if "as the context says" in answer(body, "A") else "B"))

    _, record = run(project)

    got = scores(record, "pairwise")
    assert {s["value"] for s in got.values()} == {1.0}
    assert got["q0"]["details"]["against"] == "replay:baseline.jsonl"


def test_the_project_judge_from_gatekeeper_yaml(judged: tuple[Project, FakeOpenAIServer]) -> None:
    project, server = judged
    setup(project, suite("  - {rubric: {criteria: Correctness}}", CASES[:1]), {"candidate": GOOD})
    project.write("gatekeeper.yaml", f"judge: '{judge_spec(server)}'\nrunner: {{retries: 0}}\n")
    server.script([reply(score=3)])

    _, record = run(project)

    score = scores(record, "rubric")["returns"]
    assert score["value"] == 0.5 and score["details"]["judge"]["provider"] == "openai"


def test_no_judge_anywhere_is_an_error_that_says_where_to_set_it(project: Project) -> None:
    setup(project, suite("  - {rubric: {criteria: Correctness}}", CASES[:1]), {"candidate": GOOD})

    result, record = run(project)

    score = scores(record, "rubric")["returns"]
    assert score["status"] == "error"
    assert "no judge model: set 'judge:' on the evaluator or in gatekeeper.yaml" in score["reason"]
    assert result.exit_code == 5


def test_endpoint_without_structured_outputs_is_told_and_json_mode_off_works(
    judged: tuple[Project, FakeOpenAIServer],
) -> None:
    project, server = judged
    setup(project, rubric_suite(server, cases=CASES[:1]), {"candidate": GOOD})
    server.script(lambda body: {"status": 400, "message": "unsupported parameter: response_format"}
                  if "response_format" in body else reply(score=5))

    _, record = run(project)

    score = scores(record, "rubric")["returns"]
    assert score["status"] == "error"
    assert score["reason"].endswith("(the endpoint takes no response_format: set json_mode: off or json_object)")

    setup(project, rubric_suite(server, ", json_mode: off", cases=CASES[:1]), {"candidate": GOOD})
    result, record = run(project)

    assert result.exit_code == 0, result.output
    assert scores(record, "rubric")["returns"]["value"] == 1.0
    assert "response_format" not in server.requests[-1]


def test_judge_down_in_check_is_a_harness_error(judged: tuple[Project, FakeOpenAIServer]) -> None:
    project, server = judged
    pairwise_project(project, server)
    server.script([{"status": 500}])

    code, record, output = check(project)

    metric = next(m for m in record["metrics"] if m["name"] == "preference")
    assert metric["verdict"] == "ERROR" and "could not be computed" in metric["reason"]
    assert record["decision"] == "ERROR" and code == 5
    assert "judge openai:gpt-fake failed" in output
