"""The built-in ``grounding`` hallucination detector, as a suite author sees its scores."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gatekeeper.builtin.scoring import grounding
from gatekeeper.builtin.scoring.grounding import Grounding, scan, stem
from gatekeeper.host.registry import Register, make_registries
from gatekeeper.types import Case, Generation, Score

HALUEVAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "halueval-qa-dev.jsonl"

POLICY = (
    "Acme Outdoor accepts returns within thirty days of purchase. A restocking fee of $1,200 applies to "
    "kayaks, which is 15 percent of their price. The policy took effect on March 2, 1991. "
    "Questions go to the Customer Care team in Denver."
)


def case(context: str | None = POLICY, question: str = "What is the return policy?", **fields: Any) -> Case:
    return Case(
        id="c1", suite="unit", messages=({"role": "user", "content": question},),
        vars={"input": question, **fields}, context=context,
    )


def detect(output: str, the_case: Case | None = None, **params: Any) -> Score:
    detector = Grounding(Grounding.Params.model_validate(params))
    return detector.score(the_case or case(), Generation(text=output))


def flagged(result: Score) -> list[tuple[str, str]]:
    return [(span.kind, span.text) for span in result.spans]


def test_grounding_is_registered_as_a_detector() -> None:
    registry = make_registries()["detectors"]
    grounding.gatekeeper_register_detectors(register=Register(registry, "grounding"))
    assert registry.names() == ["grounding"]
    assert Grounding.lower_is_better is True


def test_grounded_answer_passes_with_normalised_numbers_and_dates() -> None:
    output = "You can return it within 30 days. Kayaks have a 1200 dollar fee (15%); the policy took effect 1991-03-02."
    result = detect(output)
    assert (result.value, result.passed, result.status) == (0.0, True, "ok")
    assert result.spans == []
    assert result.details["support"] == 1.0
    assert result.details["unsupported"] == []
    assert result.reason == f"grounded: all {result.details['checked']} checked items are in the context"


def test_changed_number_is_flagged_with_exact_offsets() -> None:
    output = "Returns are accepted within 60 days of purchase."
    result = detect(output)
    assert (result.value, result.passed) == (1.0, False)
    [span] = result.spans
    assert (span.kind, span.text, span.start, span.end) == ("number", "60", 28, 30)
    assert output[span.start : span.end] == "60"
    assert result.reason == "hallucinated: 1 number not in the context: '60'"
    assert result.details["unsupported"] == ["60"]
    assert result.details["support"] == pytest.approx(4 / 5)  # returns, accepted, days, purchase supported


def test_money_percent_and_dates_are_compared_by_value() -> None:
    assert detect("The fee is $1200.").value == 0.0
    assert detect("The fee is $1.2 thousand.").value == 0.0  # written precision: 1.2 thousand ~ 1200
    assert flagged(detect("The fee is $1,500.")) == [("number", "$1,500")]
    assert flagged(detect("That is 20% of the price.")) == [("number", "20%")]
    assert detect("It took effect in March 1991.").value == 0.0
    assert flagged(detect("It took effect on 2 April 1991.")) == [("number", "2 April 1991")]


def test_invented_name_is_flagged_but_names_from_the_context_are_not() -> None:
    output = "Questions go to the Customer Care team in Boulder or to Globex Support."
    result = detect(output)
    assert result.value == 1.0
    assert flagged(result) == [("entity", "Boulder"), ("entity", "Globex Support")]
    boulder, globex = result.spans
    assert (boulder.start, boulder.end) == (42, 49)
    assert (globex.start, globex.end) == (56, 70)
    assert output[globex.start : globex.end] == "Globex Support"
    assert globex.reason == "not in the context: 'Globex', 'Support'"
    assert result.reason == "hallucinated: 2 names not in the context: 'Boulder', 'Globex Support'"
    assert detect("Questions go to the Customer Care team in Denver.").value == 0.0


def test_restating_the_question_is_not_hallucination() -> None:
    question = "Does the Trailblazer warranty cover kayaks?"
    output = "The Trailblazer warranty does not cover kayaks; returns are accepted within thirty days."
    assert detect(output, case(question=question)).value == 0.0
    without_question = detect(output, case(question=question), question_as_support=False)
    assert without_question.value == 1.0
    assert ("entity", "Trailblazer") in flagged(without_question)


def test_question_falls_back_to_the_last_user_message() -> None:
    the_case = Case(
        id="c2", suite="unit", context=POLICY,
        messages=(
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Is Trailblazer gear included?"},
        ),
    )
    assert detect("Trailblazer gear can be returned within thirty days.", the_case).value == 0.0


def test_many_unsupported_content_words_flip_the_verdict_a_few_do_not() -> None:
    invented = detect("Returns are free, processed instantly by friendly robots.")
    assert invented.value == 1.0
    assert flagged(invented) == [("word", "free"), ("word", "processed"), ("word", "instantly"),
                                 ("word", "friendly"), ("word", "robots")]
    assert "5 of 6 content words not in the context, 83% of the checked items (limit 30%)" in invented.reason
    paraphrase = detect("Acme Outdoor gladly accepts returns for thirty days; kayaks have a 15 percent restocking fee.")
    assert paraphrase.value == 0.0
    assert flagged(paraphrase) == [("word", "gladly")]
    assert paraphrase.reason == (
        "grounded: 9 of 10 checked items supported; within the limits: 1 of 7 content words ('gladly')"
    )


def test_word_limits_are_parameters() -> None:
    output = "Acme Outdoor gladly accepts returns for thirty days; kayaks have a 15 percent restocking fee."
    assert detect(output, max_unsupported_words=0).value == 1.0
    assert detect(output, max_unsupported_word_fraction=0.05).value == 1.0
    assert detect("Returns are free, processed instantly by friendly robots.", check_words=False).value == 0.0
    assert detect("Returns are accepted within 60 days.", check_numbers=False).value == 0.0
    assert detect("Questions go to Globex.").value == 1.0
    assert detect("Questions go to Globex.", check_entities=False).value == 0.0
    assert detect("Returns are accepted within 60 days.", max_unsupported_numbers=1).value == 0.0


def test_light_stemming_and_prefixes_accept_inflections() -> None:
    assert stem("returns") == stem("returned") == stem("return")
    assert stem("located") == stem("location") == stem("locate")
    assert detect("Returning a kayak costs a restocking fee.").value == 0.0
    # prefix_match: "purchasing" shares "purcha" with "purchase" once both are stemmed.
    assert detect("Purchasing a kayak means a restocking fee.", prefix_match=0).details["unsupported"] == ["means"]


def test_nodata_without_context() -> None:
    for context in (None, "", "   "):
        result = detect("Anything at all.", case(context=context))
        assert (result.value, result.status, result.passed) == (None, "nodata", None)
        assert result.reason == "the case has no context to check the output against"


def test_empty_output_is_grounded_with_a_clear_reason() -> None:
    result = detect("")
    assert (result.value, result.details["checked"]) == (0.0, 0)
    assert result.reason == "grounded: the output has no numbers, names or content words to check"


def test_parameters_are_validated() -> None:
    with pytest.raises(ValidationError):
        Grounding.Params.model_validate({"max_unsupported_word_fraction": 1.5})
    with pytest.raises(ValidationError):
        Grounding.Params.model_validate({"question_support": False})


def test_scan_finds_numbers_words_and_dates() -> None:
    found = scan(
        "Thirty-two people paid $5k and 1.5 million euros in the 2nd year, on 7 June 1981; the boat is 6 m long."
    )
    values = [(n.text, n.value, n.date) for n in found.numbers]
    assert values == [
        ("Thirty-two", Decimal(32), None),
        ("$5k", Decimal(5000), None),
        ("1.5 million", Decimal("1500000.0"), None),
        ("2nd", Decimal(2), None),
        ("7 June 1981", None, (1981, 6, 7)),
        ("6", Decimal(6), None),  # "6 m" is six metres, not six million
    ]


def halueval_figures(rows: int) -> tuple[float, float]:
    detector = Grounding(Grounding.Params())
    tp = fp = fn = 0
    with HALUEVAL.open(encoding="utf-8") as fh:
        for line in list(fh)[:rows]:
            row = json.loads(line)
            the_case = case(context=row["knowledge"], question=row["question"])
            for output, hallucinated in ((row["right_answer"], False), (row["hallucinated_answer"], True)):
                is_flagged = detector.score(the_case, Generation(text=output)).value == 1.0
                tp += is_flagged and hallucinated
                fp += is_flagged and not hallucinated
                fn += hallucinated and not is_flagged
    return tp / (tp + fp), tp / (tp + fn)


@pytest.mark.skipif(not HALUEVAL.is_file(), reason=f"{HALUEVAL} is not present")
def test_precision_and_recall_on_50_halueval_rows() -> None:
    # Measured with the defaults: precision 1.00, recall 0.60 (30 of 50 hallucinated answers).
    precision, recall = halueval_figures(50)
    assert precision >= 0.95
    assert recall >= 0.55


def test_docs_describe_every_parameter_of_the_detector() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "evaluators.md").read_text(encoding="utf-8")
    section = docs.split("## Detector `grounding`", 1)[1]
    for name in Grounding.Params.model_fields:
        assert f"`{name}`" in section, f"docs/evaluators.md does not describe grounding's {name!r}"
