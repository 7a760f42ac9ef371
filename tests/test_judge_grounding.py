"""The judge_grounding detector against the fake OpenAI server: claim extraction, one
verification call for all claims, spans at the unsupported claims, repair, NODATA."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gatekeeper.builtin.scoring.judge_grounding import locate
from gatekeeper.testing import Project
from tests.fakes import FakeOpenAIServer
from tests.judging_support import judge_spec, run, scores, setup, user_text

CONTEXT = "Returns are accepted within 30 days with a receipt. Refunds go to the original card."
OUTPUT = "You can return the boots within 30 days. Refunds are paid in cash at the store."
CLAIMS = ["You can return the boots within 30 days", "Refunds are paid in cash at the store"]


def suite(server: FakeOpenAIServer, params: str = "", context: str = CONTEXT) -> str:
    return f"""\
suite: judged
prompt:
  messages:
    - role: user
      content: "{{{{ input }}}}"
cases:
  - {{id: r1, input: "How do returns work?", context: {json.dumps(context)}}}
detectors:
  - {{judge_grounding: {{judge: '{judge_spec(server)}'{params}}}}}
"""


def judge(verdicts: dict[int, bool], claims: list[str] = CLAIMS) -> Any:
    """A judge that extracts ``claims`` and gives ``verdicts`` (claim number → supported)."""

    def respond(body: dict[str, Any]) -> str:
        if "Claims:\n" in user_text(body):
            return json.dumps({"verdicts": [
                {"claim": i, "supported": ok, "reason": "stated" if ok else "the context says the card"}
                for i, ok in verdicts.items()
            ]})
        return json.dumps({"claims": claims})

    return respond


def test_unsupported_claim_is_flagged_with_its_span(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, suite(fake_openai), {"candidate": {"r1": OUTPUT}})
    fake_openai.script(judge({1: True, 2: False}))

    result, record = run(project)

    score = scores(record, "judge_grounding")["r1"]
    assert score["value"] == 1.0 and score["passed"] is False
    assert score["reason"] == ("hallucinated: 1 of 2 claims not supported by the context: "
                               "'Refunds are paid in cash at the store'")
    (span,) = score["spans"]
    assert OUTPUT[span["start"]:span["end"]] == "Refunds are paid in cash at the store" == span["text"]
    assert span["reason"] == "the context says the card"
    assert score["details"]["support"] == 0.5
    assert [c["supported"] for c in score["details"]["claims"]] == [True, False]
    assert score["details"]["judge_calls"] == 2 and len(score["details"]["prompt_sha256"]) == 64
    extract, verify = fake_openai.requests
    assert "Text:\nYou can return the boots" in user_text(extract)
    assert CONTEXT in user_text(verify) and "2. Refunds are paid in cash at the store" in user_text(verify)
    assert "(The question asked: How do returns work?)" in user_text(verify)
    assert result.exit_code == 1  # the detector's verdict failed


def test_all_claims_supported_is_grounded(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, suite(fake_openai), {"candidate": {"r1": OUTPUT}})
    fake_openai.script(judge({1: True, 2: True}))

    _, record = run(project)

    score = scores(record, "judge_grounding")["r1"]
    assert score["value"] == 0.0 and score["spans"] == [] and score["details"]["support"] == 1.0
    assert score["reason"] == "grounded: all 2 claims supported by the context"


def test_tolerated_share_of_unsupported_claims(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, suite(fake_openai, ", max_unsupported_fraction: 0.5"), {"candidate": {"r1": OUTPUT}})
    fake_openai.script(judge({1: True, 2: False}))

    _, record = run(project)

    score = scores(record, "judge_grounding")["r1"]
    assert score["value"] == 0.0
    assert score["reason"].startswith("grounded: 1 of 2 claims unsupported, within max_unsupported_fraction 0.5")
    assert len(score["spans"]) == 1  # the unsupported claim is still shown


def test_incomplete_verification_is_repaired(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, suite(fake_openai), {"candidate": {"r1": OUTPUT}})
    good = judge({1: True, 2: False})
    fake_openai.script([
        json.dumps({"claims": CLAIMS}),
        json.dumps({"verdicts": [{"claim": 1, "supported": True, "reason": "stated"}]}),  # claim 2 missing
        good({"messages": [{"role": "user", "content": "Claims:\n"}]}),
    ])

    _, record = run(project)

    score = scores(record, "judge_grounding")["r1"]
    assert score["status"] == "ok" and score["value"] == 1.0
    assert score["details"]["repaired_votes"] == 1
    assert "verdicts: no verdict for claim(s) 2" in user_text(fake_openai.requests[2])


def test_garbage_extraction_reply_is_nodata_with_the_reason(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, suite(fake_openai), {"candidate": {"r1": OUTPUT}})
    fake_openai.script(["Claim 1: you can return boots.", '{"claims": "one"}'])

    _, record = run(project)

    score = scores(record, "judge_grounding")["r1"]
    assert score["status"] == "nodata" and score["value"] is None
    assert score["reason"].startswith("claim extraction: judge reply unusable after 2 attempt(s): claims: 'one' is not")
    assert len(fake_openai.requests) == 2


def test_no_claims_and_no_context(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, suite(fake_openai), {"candidate": {"r1": "Happy to help!"}})
    fake_openai.script([json.dumps({"claims": []})])

    _, record = run(project)

    score = scores(record, "judge_grounding")["r1"]
    assert score["value"] == 0.0 and score["reason"] == "grounded: the output makes no factual claims"
    assert len(fake_openai.requests) == 1

    setup(project, suite(fake_openai, context=""), {"candidate": {"r1": OUTPUT}})
    _, record = run(project)
    score = scores(record, "judge_grounding")["r1"]
    assert score["status"] == "nodata" and "no context" in score["reason"]
    assert len(fake_openai.requests) == 1


def test_votes_on_the_verification(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, suite(fake_openai, ", votes: 3"), {"candidate": {"r1": OUTPUT}})

    def respond(body: dict[str, Any]) -> str:
        if "Claims:\n" not in user_text(body):
            return json.dumps({"claims": CLAIMS})
        # Every vote supports claim 1; only the vote with seed 2 supports claim 2.
        return json.dumps({"verdicts": [{"claim": 1, "supported": True, "reason": "ok"},
                                        {"claim": 2, "supported": body["seed"] == 2, "reason": "no"}]})

    fake_openai.script(respond)

    _, record = run(project)

    score = scores(record, "judge_grounding")["r1"]
    assert score["value"] == 1.0
    assert score["details"]["agreement"] == pytest.approx((1 + 2 / 3) / 2)
    # Fleiss' kappa, claims as items and votes as raters: P̄ = 2/3, Pe = 5/9.
    assert score["details"]["fleiss_kappa"] == pytest.approx(0.25)
    assert score["details"]["votes"] == 3 and score["details"]["judge_calls"] == 4
    assert len(fake_openai.requests) == 4  # one extraction, three verifications


@pytest.mark.parametrize(("claim", "where"), [
    ("Refunds are paid in cash at the store", (41, 78)),
    ("refunds are paid in cash at the store.", (41, 78)),
    ("Refunds get paid in cash at the store", (41, 78)),  # reworded by the judge: fuzzy
    ("The moon is made of cheese", None),
])
def test_locate_claims_in_the_output(claim: str, where: tuple[int, int] | None) -> None:
    assert locate(claim, OUTPUT, 80) == where
