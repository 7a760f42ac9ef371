"""Every detector's continuous score and its verdict at the threshold, as the record shows them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gatekeeper.builtin.scoring.grounding import Grounding
from gatekeeper.builtin.scoring.scores import rule_score
from gatekeeper.builtin.scoring.structural import Structural
from gatekeeper.kinds import Detector
from gatekeeper.testing import Project
from gatekeeper.types import Case, Generation, Score
from tests.fakes import FakeOpenAIServer
from tests.judging_support import ENV, judge_spec, policy, run, scores, setup, user_text

CONTEXT = (
    "Refunds are available within thirty days of purchase. Items must be unused and in their original "
    "packaging. Express shipping costs 9.90 euros and arrives the next business day. Glenn Hughes (born "
    "1951) founded the store; Ross Lynch (born 1995) runs it. Contact Acme Support to start a return."
)
QUESTION = "Can I return my blender?"
OUTPUTS = [
    "Yes, within 30 days if it is unused and in the original packaging.",  # grounded
    "Yes, within 30 days if it is unused and in the original box.",  # a paraphrase: one new word
    "Yes, within 60 days.",  # a changed number
    "Yes, within 30 days, and Globex Support pays the shipping back gladly with vouchers.",  # new name and words
    "Express shipping is free and arrives tomorrow morning by drone.",  # many new words
    "Refunds are not available within thirty days of purchase.",
    "",
]


def case(question: str = QUESTION, context: str = CONTEXT) -> Case:
    return Case(id="c1", suite="unit", messages=({"role": "user", "content": question},),
                vars={"input": question}, context=context)


def detect(detector_class: type[Detector], output: str, **params: Any) -> Score:
    detector = detector_class(detector_class.Params.model_validate(params))
    return detector.score(case(), Generation(text=output))


@pytest.mark.parametrize("detector_class", [Grounding, Structural])
def test_the_verdict_is_the_score_against_the_threshold(detector_class: type[Detector]) -> None:
    for output in [*OUTPUTS, "Ross Lynch is the older one."]:
        default = detect(detector_class, output)
        score = default.details["score"]
        assert 0.0 <= score <= 1.0
        for threshold in (0.0, 0.25, 0.5, 0.75, 1.0):
            for emit in ("verdict", "score"):
                result = detect(detector_class, output, threshold=threshold, emit=emit)
                assert result.details["score"] == score  # the score does not depend on the threshold
                assert result.details["threshold"] == threshold
                assert result.details["flagged"] is (score > threshold)
                assert result.passed is (score <= threshold)
                assert result.value == (score if emit == "score" else float(score > threshold))
        unjudged = detect(detector_class, output, threshold=None)
        assert (unjudged.value, unjudged.passed, unjudged.details["flagged"]) == (score, None, None)


def test_the_default_threshold_keeps_the_rule_and_the_score_orders_the_evidence() -> None:
    scored = {output: detect(Grounding, output) for output in OUTPUTS}
    for output, result in scored.items():
        # flagged at 0.5 exactly when the reason says a limit was passed
        assert result.details["flagged"] is result.reason.startswith("hallucinated:"), (output, result.reason)
    grounded, paraphrase, number, name, words = (scored[o].details["score"] for o in OUTPUTS[:5])
    assert grounded == 0.0 < paraphrase <= 0.5 < number
    assert number == 1.0  # the one number of the answer is unsupported
    assert name > 0.5 and words > 0.5
    # one new word of five distinct items, against the 0.3 limit
    assert paraphrase == pytest.approx(rule_score(1 / 5, 0.3, 1.0), abs=1e-6)
    assert scored[""].details["score"] == 0.0
    older = case("Who is older, Glenn Hughes or Ross Lynch?")
    miss = Grounding(Grounding.Params()).score(older, Generation(text="Ross Lynch is the older one."))
    assert miss.details["score"] == 0.9 and miss.details["structural"][0]["check"] == "comparison"


def test_rule_score_is_above_one_half_exactly_past_the_limit() -> None:
    assert rule_score(0, 0, 3) == 0.0 and rule_score(1, 0, 3) > 0.5 and rule_score(3, 0, 3) == 1.0
    assert rule_score(0.3, 0.3, 1.0) == 0.5 and rule_score(0.31, 0.3, 1.0) > 0.5
    assert rule_score(0.15, 0.3, 1.0) == 0.25
    assert rule_score(5, 2, 1) <= 0.5  # cannot pass a limit above the maximum
    values = [rule_score(x / 10, 0.3, 1.0) for x in range(11)]
    assert values == sorted(values)


def test_parameters_are_checked() -> None:
    for bad in ({"threshold": 1.5}, {"emit": "both"}):
        with pytest.raises(ValueError):
            Grounding.Params.model_validate(bad)


# --------------------------------------------------------------------------- judge_grounding


def _judge(verdicts: dict[int, bool]) -> Any:
    claims = ["You can return the boots within 30 days", "Refunds are paid in cash at the store"]

    def respond(body: dict[str, Any]) -> str:
        if "Claims:\n" in user_text(body):
            rows = [{"claim": i, "supported": ok, "reason": "r"} for i, ok in verdicts.items()]
            return json.dumps({"verdicts": rows})
        return json.dumps({"claims": claims})

    return respond


@pytest.mark.parametrize(("params", "score", "value", "passed"), [
    (", emit: score", 0.75, 0.75, False),  # 1 of 2 claims unsupported, limit 0: past it
    (", max_unsupported_fraction: 0.5, threshold: 0.4", 0.5, 1.0, False),  # at the limit; a stricter threshold
])
def test_judge_grounding_records_its_score(project: Project, fake_openai: FakeOpenAIServer, params: str,
                                           score: float, value: float, passed: bool) -> None:
    setup(project, f"""\
suite: judged
prompt: {{messages: [{{role: user, content: "{{{{ input }}}}"}}]}}
cases:
  - {{id: r1, input: "How do returns work?", context: "Returns within 30 days with a receipt. Refunds go to the card."}}
detectors:
  - {{judge_grounding: {{judge: '{judge_spec(fake_openai)}'{params}}}}}
""", {"candidate": {"r1": "You can return the boots within 30 days. Refunds are paid in cash at the store."}})
    fake_openai.script(_judge({1: True, 2: False}))
    _, record = run(project)
    got = scores(record, "judge_grounding")["r1"]
    assert (got["details"]["score"], got["value"], got["passed"]) == (score, value, passed)
    assert got["details"]["flagged"] is (not passed)
    assert [c["p_unsupported"] for c in got["details"]["claims"]] == [0.0, 1.0]


# --------------------------------------------------------------------------- a real check


CASES = [
    ("q1", "How long do refunds take?", "Refunds are paid within 5 business days.",
     "Refunds take 5 business days.", "Refunds take 12 business days."),
    ("q2", "Who was born first, Glenn Hughes or Ross Lynch?",
     "Glenn Hughes (born 21 August 1951) is an English bassist.Ross Lynch (born December 29, 1995) is an actor.",
     "Glenn Hughes.", "Ross Lynch was born first."),
    ("q3", "What does express shipping cost?", "Express shipping costs 9.90 euros and arrives the next day.",
     "It costs 9.90 euros.", "It costs 9.90 euros and it is free for members on weekends."),
    ("q4", "Where is the head office?", "The head office is in Delhi. The company runs 31 hotels.",
     "It is in Delhi.", "It is in Delhi."),
]


def test_a_check_records_score_and_verdict_and_gates_on_rate_and_mean_score(project: Project) -> None:
    cases = CASES * 3
    rows = "\n".join(f"  - {{id: {cid}-{i}, input: '{q}', context: '{c}'}}"
                     for i, (cid, q, c, _, _) in enumerate(cases))
    setup(project, f"""\
suite: judged
prompt: {{messages: [{{role: user, content: "{{{{ input }}}}"}}]}}
cases:
{rows}
detectors:
  - grounding
  - {{name: grounding, as: grounding_score, emit: score}}
""", {
        "baseline": {f"{cid}-{i}": good for i, (cid, _, _, good, _) in enumerate(cases)},
        "candidate": {f"{cid}-{i}": bad for i, (cid, _, _, _, bad) in enumerate(cases)},
    })
    metrics = """\
    - {name: rate, metric: grounding, direction: lower, hypothesis: guardrail_only, guardrail: {max: 0.5},
       ci_method: tango, min_n: 12, critical: true}
    - {name: mean_score, metric: grounding_score, direction: lower, hypothesis: guardrail_only,
       guardrail: {max: 0.25}, ci_method: t, min_n: 12, critical: true}"""
    project.write("policy.yaml", policy(metrics, "rate, mean_score"))
    result = project.run("check", "--candidate", "replay:candidate.jsonl", "--baseline", "replay:baseline.jsonl",
                         "--policy", "policy.yaml", "--out", "out", "--no-progress", env=ENV)
    record = project.read_record("out/decision.json")
    rate, mean = (scores(record, m, "candidate") for m in ("grounding", "grounding_score"))
    for cid, got in rate.items():
        details = got["details"]
        assert got["value"] == float(details["flagged"]) and got["passed"] is (not details["flagged"])
        assert details["threshold"] == 0.5 and details["flagged"] is (details["score"] > 0.5)
        assert mean[cid]["value"] == details["score"] == mean[cid]["details"]["score"]
    flagged = {cid.split("-")[0] for cid, got in rate.items() if got["value"] == 1.0}
    assert flagged == {"q1", "q2", "q3"}  # a changed number, the wrong option, new words; q4 is unchanged
    assert {round(mean[f"q2-{i}"]["value"], 3) for i in (1, 5, 9)} == {0.9}  # the comparison check
    verdicts = {m["name"]: m["verdict"] for m in record["metrics"]}
    # 9 of 12 flagged: the rate (0.75) breaks its guardrail; the mean score (0.65) its own
    assert verdicts == {"rate": "FAIL", "mean_score": "FAIL"}, result.output
    assert record["decision"] == "REJECT" and result.exit_code == 1
