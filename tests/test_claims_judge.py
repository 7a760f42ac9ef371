"""The claim_verification detector against the fake OpenAI server: one judge call per claim
with its retrieved evidence, three-way verdicts, K votes as a probability, the cache, NODATA
on an unparsable judge, the judge's decomposition, and the claims in a check's decision."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from gatekeeper.testing import CLIResult, Project
from tests.fakes import FakeOpenAIServer
from tests.judging_support import ENV, assert_no_secret, judge_spec, policy, scores, setup, user_text

CONTEXT = (
    "Arthur's Magazine (1844–1846) was an American literary periodical published in Philadelphia. "
    "First for Women is a woman's magazine published by Bauer Media Group in the USA. "
    "The magazine was started in 1989. It is based in Englewood Cliffs, New Jersey."
)
QUESTION = "Which magazine was started first, Arthur's Magazine or First for Women?"
WRONG = "First for Women was started first. It is published by Hearst in New York."
RIGHT = "Arthur's Magazine"


def suite(server: FakeOpenAIServer, params: str = "", n: int = 1) -> str:
    cases = "\n".join(
        f"  - {{id: m{i}, input: {json.dumps(QUESTION)}, context: {json.dumps(CONTEXT)}}}" for i in range(n)
    )
    return f"""\
suite: judged
prompt:
  messages:
    - role: user
      content: "{{{{ input }}}}"
cases:
{cases}
detectors:
  - {{claim_verification: {{judge: '{judge_spec(server)}'{params}}}}}
"""


def run(project: Project) -> tuple[CLIResult, dict[str, Any]]:
    result = project.run("run", "suites", "--model", "replay:candidate.jsonl", "--out", "out", "--no-progress",
                         env=ENV)
    return result, project.read_record("out/results.json")


def claim_of(body: dict[str, Any]) -> str:
    match = re.search(r"^Claim: (.*)$", user_text(body), re.M)
    assert match, user_text(body)
    return match.group(1)


def verdicts(table: dict[str, str]) -> Any:
    """A judge that answers each claim (by its first words) with the verdict in ``table``."""

    def respond(body: dict[str, Any]) -> str:
        claim = claim_of(body)
        verdict = next(v for start, v in table.items() if claim.startswith(start))
        return json.dumps({"reasoning": f"the evidence on {claim[:12]}", "verdict": verdict})

    return respond


TABLE = {"First for Women was": "contradicted", "It is published": "not_enough_info",
         QUESTION: "supported"}


def test_each_claim_is_verified_against_its_evidence(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, suite(fake_openai), {"candidate": {"m0": WRONG}})
    fake_openai.script(verdicts(TABLE))

    result, record = run(project)

    score = scores(record, "claim_verification")["m0"]
    assert score["value"] == 1.0 and score["passed"] is False and result.exit_code == 1
    details = score["details"]
    assert (details["score"], details["threshold"], details["flagged"]) == (1.0, 0.5, True)
    assert details["contradicted"] == ["First for Women was started first."]
    assert details["unsupported"] == ["First for Women was started first.", "It is published by Hearst in New York."]
    assert details["faithfulness"] == 0.0
    first, second = details["claims"]
    assert (first["verdict"], first["p_unsupported"], first["p_contradicted"]) == ("contradicted", 1.0, 1.0)
    assert (second["verdict"], second["p_contradicted"]) == ("not_enough_info", 0.0)
    assert WRONG[first["start"]:first["end"]] == first["text"]
    assert [s["text"] for s in score["spans"]] == [first["text"], second["text"]]
    assert score["spans"][0]["reason"] == "contradicted: the evidence on First for Wo"
    assert score["reason"].startswith("hallucinated (1.00 > 0.5): 2 of 2 claims not supported (1 contradicted)")
    # One call per claim; each shows the retrieved evidence, not necessarily the whole context.
    assert len(fake_openai.requests) == 2 and details["judge_calls"] == 2
    asked = {claim_of(b): user_text(b) for b in fake_openai.requests}
    assert "Arthur's Magazine (1844–1846)" in asked[first["text"]]  # the question names it
    assert f"answer to this question: {QUESTION}" in asked[first["text"]]
    assert all(e["bm25"] >= 0 for e in first["evidence"]) and len(first["evidence"]) == 3
    assert all(CONTEXT[e["start"]:e["end"]] == e["text"] for e in first["evidence"])
    assert_no_secret(project)

    # A re-run with nothing changed asks the judge nothing: every verdict is in the cache.
    _, again = run(project)
    assert len(fake_openai.requests) == 2
    assert scores(again, "claim_verification")["m0"]["details"]["judge_cache_hits"] == 2


def test_a_short_answer_is_verified_with_its_question(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, suite(fake_openai), {"candidate": {"m0": RIGHT}})
    fake_openai.script(verdicts(TABLE))

    _, record = run(project)

    score = scores(record, "claim_verification")["m0"]
    assert score["value"] == 0.0 and score["passed"] is True and score["spans"] == []
    assert (score["details"]["score"], score["details"]["flagged"]) == (0.0, False)
    assert score["reason"] == "grounded (0.00): all 1 claims supported by their evidence"
    assert claim_of(fake_openai.requests[0]) == f"{QUESTION} Arthur's Magazine"


def test_votes_give_a_probability_per_claim(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, suite(fake_openai, ", votes: 3, aggregate: mean, emit: score"), {"candidate": {"m0": WRONG}})

    def respond(body: dict[str, Any]) -> str:
        # Claim 1: contradicted by every vote. Claim 2: only the vote with seed 0 calls it supported.
        first = claim_of(body).startswith("First")
        verdict = "contradicted" if first else ("supported" if body["seed"] == 0 else "not_enough_info")
        return json.dumps({"reasoning": "r", "verdict": verdict})

    fake_openai.script(respond)

    _, record = run(project)

    score = scores(record, "claim_verification")["m0"]
    first, second = score["details"]["claims"]
    assert first["votes"] == ["contradicted"] * 3 and second["p_unsupported"] == pytest.approx(2 / 3)
    assert second["verdict"] == "not_enough_info"
    assert score["value"] == pytest.approx((1 + 2 / 3) / 2)  # mean: 1 - faithfulness, vote-weighted
    assert score["details"]["flagged"] is True and score["passed"] is False
    assert score["details"]["agreement"] == pytest.approx((1 + 2 / 3) / 2)
    assert len(fake_openai.requests) == 6
    assert {b["temperature"] for b in fake_openai.requests} == {0.7}


def test_unparsable_judge_is_nodata_naming_the_claim(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, suite(fake_openai), {"candidate": {"m0": RIGHT}})
    fake_openai.script(["I think it is supported.", '{"reasoning": "x", "verdict": "maybe"}'])

    _, record = run(project)

    score = scores(record, "claim_verification")["m0"]
    assert score["status"] == "nodata" and score["value"] is None and score["passed"] is None
    assert score["reason"].startswith(
        "claim \"Arthur's Magazine\": judge reply unusable after 2 attempt(s): verdict: 'maybe' is not one of")
    assert "Your reply could not be used: not valid JSON" in user_text(fake_openai.requests[1])


def test_the_judge_can_decompose_the_answer(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, suite(fake_openai, ", claims: judge"), {"candidate": {"m0": WRONG}})

    def respond(body: dict[str, Any]) -> str:
        if "Claim: " not in user_text(body):
            return json.dumps({"claims": ["First for Women was started first",
                                          "First for Women is published by Hearst"]})
        return json.dumps({"reasoning": "r", "verdict": "supported" if "Hearst" in claim_of(body) else "contradicted"})

    fake_openai.script(respond)

    _, record = run(project)

    score = scores(record, "claim_verification")["m0"]
    rows = score["details"]["claims"]
    assert [r["verdict"] for r in rows] == ["contradicted", "supported"]
    assert (rows[0]["start"], rows[0]["end"]) == (0, len("First for Women was started first"))
    assert rows[1]["start"] is None and score["details"]["unlocated"] == ["First for Women is published by Hearst"]
    assert score["value"] == 1.0 and score["details"]["judge_calls"] == 3


CHECK_POLICY = policy(
    "    - {name: faithful, metric: claim_verification, direction: lower, hypothesis: non_inferiority, "
    "margin: 0.1, ci_method: tango, min_n: 6, critical: true}", "faithful",
)


def test_check_shows_the_candidates_unsupported_claims(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, suite(fake_openai, n=6), {
        "candidate": {f"m{i}": WRONG for i in range(6)},
        "baseline": {f"m{i}": RIGHT for i in range(6)},
    })
    project.write("policy.yaml", CHECK_POLICY)
    fake_openai.script(verdicts(TABLE))

    result = project.run("check", "--candidate", "replay:candidate.jsonl", "--baseline", "replay:baseline.jsonl",
                         "--policy", "policy.yaml", "--out", "out", "--no-progress", env=ENV)
    record = project.read_record("out/decision.json")

    assert record["decision"] == "REJECT" and result.exit_code == 1
    cand = scores(record, "claim_verification", "candidate")["m3"]
    base = scores(record, "claim_verification", "baseline")["m3"]
    assert cand["details"]["contradicted"] == ["First for Women was started first."]
    assert cand["details"]["unsupported"][1] == "It is published by Hearst in New York."
    assert base["value"] == 0.0 and base["details"]["unsupported"] == []
    # One call per claim and case: two for each candidate answer, one for each baseline answer.
    assert len(fake_openai.requests) == 6 * 3

