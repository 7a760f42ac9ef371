"""The structural checks: wrong answers made of the context's own words, and faithful
paraphrases of the same shapes that must pass."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.builtin.scoring.grounding import Grounding
from gatekeeper.builtin.scoring.structural import CHECKS, Structural, find
from gatekeeper.types import Case, Generation, Score

HALUEVAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "halueval-qa-dev.jsonl"
BENCH = Path(__file__).resolve().parents[1] / "bench"

BANDS = (
    "The Wolfhounds are an indie pop band formed in Romford, UK in 1985 by Dave Callahan. "
    "Courtney Love rose to prominence as the frontwoman of the alternative rock band Hole, which she formed in 1989."
)
PEOPLE = (
    "Glenn Hughes (born 21 August 1951) is an English rock bassist and vocalist."
    "Ross Shor Lynch (born December 29, 1995) is an American singer, songwriter, and actor."
)
TOWERS = (
    "The Harbour Tower is 212 metres tall and opened in 2004. The Crane Building, finished in 1931, "
    "rises 156 metres above the river."
)
BANDS_NATIONALITY = (
    "The New Pornographers is a Canadian indie rock band formed in 1997 in Vancouver, British Columbia."
    "Kings of Leon is an American rock band that formed in Nashville, Tennessee, in 1999."
)
MUSICIANS = (
    'Timothy James "Tim" McIlrath (born November 3, 1978) is an American punk rock musician.'
    "Spike Slawson is an American punk rock musician, a member of Me First and the Gimme Gimmes."
)
ROYALS = (
    "Prince William, Duke of Gloucester (24 July 1689 – 30 July 1700) was the son of Princess Anne, later Queen "
    "Anne of Great Britain, and her husband Prince George of Denmark. Anne became monarch of the Kingdom of "
    "Great Britain in 1707."
)
ALBUM = (
    "No Fences is the second studio album by the American country music artist Garth Brooks. "
    '"Friends in Low Places" was the lead single and reached number one on the Billboard chart.'
)
WARRANTY = (
    "The warranty covers manufacturing defects for two years from the date of purchase. It does not cover "
    "accidental damage, water damage or normal wear."
)

# (check, question, context, wrong answer, faithful answer of the same shape)
EXAMPLES: list[tuple[str, str, str, str, str]] = [
    ("comparison", "Which band was founded first, Hole or The Wolfhounds?", BANDS,
     "Hole was founded first.", "The Wolfhounds, formed in 1985, came first."),
    ("comparison", "Who is older, Glenn Hughes or Ross Lynch?", PEOPLE,
     "Ross Lynch is the older one.", "Glenn Hughes is older: he was born in 1951."),
    ("comparison", "Which is taller, the Harbour Tower or the Crane Building?", TOWERS,
     "The Crane Building is taller.", "The Harbour Tower, at 212 metres."),
    ("yes_no", "Are both The New Pornographers and Kings of Leon American rock bands?", BANDS_NATIONALITY,
     "Yes, both are American rock bands.", "No: Kings of Leon is American, The New Pornographers are Canadian."),
    ("yes_no", "Are both Tim McIlrath and Spike Slawson American punk rock musicians?", MUSICIANS,
     "No, only one of them is an American punk rock musician.", "Yes, both are American punk rock musicians."),
    ("negation", "Prince William, Duke of Gloucester and Prince George of Denmark were related to which monarch?",
     ROYALS, "Prince William, Duke of Gloucester and Prince George of Denmark were not related to a monarch.",
     "Prince William was the son of Anne, who became monarch; Prince George of Denmark was her husband."),
    ("name_order", "Who recorded the album No Fences?", ALBUM,
     "No Fences was recorded by Brooks Garth.", "It is an album by the country artist Garth Brooks."),
]


def case(question: str, context: str) -> Case:
    return Case(id="c1", suite="unit", messages=({"role": "user", "content": question},),
                vars={"input": question}, context=context)


def structural(output: str, question: str, context: str, **params: Any) -> Score:
    detector = Structural(Structural.Params.model_validate(params))
    return detector.score(case(question, context), Generation(text=output))


@pytest.mark.parametrize(("check", "question", "context", "wrong", "faithful"), EXAMPLES,
                         ids=[f"{e[0]}-{i}" for i, e in enumerate(EXAMPLES)])
def test_each_check_catches_its_miss_and_passes_the_faithful_answer(
    check: str, question: str, context: str, wrong: str, faithful: str,
) -> None:
    caught = structural(wrong, question, context)
    assert (caught.value, caught.passed) == (1.0, False), caught.reason
    assert [f["check"] for f in caught.details["findings"]] == [check], caught.reason
    assert caught.details["score"] > caught.details["threshold"] == 0.5
    assert caught.spans and caught.spans[0].kind == check
    span = caught.spans[0]
    assert wrong[span.start : span.end] == span.text
    clean = structural(faithful, question, context)
    assert (clean.value, clean.passed, clean.details["score"]) == (0.0, True, 0.0), clean.reason
    assert clean.reason == f"no structural miss found ({', '.join(CHECKS)})"


def test_lexical_grounding_misses_them_and_grounding_with_structural_catches_them() -> None:
    for _check, question, context, wrong, faithful in EXAMPLES:
        the_case = case(question, context)
        lexical = Grounding(Grounding.Params(structural=False)).score(the_case, Generation(text=wrong))
        combined = Grounding(Grounding.Params()).score(the_case, Generation(text=wrong))
        assert lexical.value == 0.0, (wrong, lexical.reason)
        assert combined.value == 1.0 and combined.reason.startswith("hallucinated: "), combined.reason
        assert combined.details["structural"], combined.details
        assert Grounding(Grounding.Params()).score(the_case, Generation(text=faithful)).value == 0.0, faithful


def test_a_check_is_silent_when_the_text_lacks_its_shape() -> None:
    # one option has no date in the context: no decision
    assert find("Which came first, Hole or Nirvana?", BANDS, "Nirvana came first.") == []
    # both options named: the answer is not a pick
    assert find("Who is older, Glenn Hughes or Ross Lynch?", PEOPLE,
                "Glenn Hughes is older than Ross Lynch.") == []
    # a refusal is not a negated claim
    assert find("Prince George of Denmark was married to which monarch?", ROYALS,
                "The passage does not say which monarch Prince George was married to.") == []
    # a restriction in answer to a yes/no question is the yes/no check's, and it has no "both"
    assert find("Is water damage covered by the warranty?", WARRANTY,
                "No. The warranty does not cover water damage, only manufacturing defects.") == []
    # a dropped middle name keeps the order
    assert find("Who plays punk rock?", MUSICIANS, "Timothy McIlrath does.") == []


def test_checks_can_be_chosen_and_a_context_is_needed() -> None:
    question, context, wrong = EXAMPLES[0][1], EXAMPLES[0][2], EXAMPLES[0][3]
    assert structural(wrong, question, context, checks=["negation", "yes_no"]).value == 0.0
    assert structural(wrong, question, context, checks=["comparison"]).value == 1.0
    nodata = Structural(Structural.Params()).score(case(question, ""), Generation(text=wrong))
    assert (nodata.status, nodata.value, nodata.passed) == ("nodata", None, None)
    with pytest.raises(ValueError, match="checks"):
        Structural.Params.model_validate({"checks": ["spelling"]})


def test_structural_checks_raise_recall_on_halueval_without_false_alarms_on_paraphrases() -> None:
    """On the rows the checks were developed on (1-150) and the held-out rows (151-300):
    recall rises; on the bench's paraphrase probe, false alarms stay at today's count."""
    if not HALUEVAL.is_file():
        pytest.skip(f"{HALUEVAL} not present")
    sys.path.insert(0, str(BENCH))
    try:
        from grounding_halueval import PARAPHRASE_PROBE
    finally:
        sys.path.remove(str(BENCH))
    rows = [json.loads(line) for line in HALUEVAL.read_text(encoding="utf-8").splitlines() if line.strip()]
    lexical, combined = Grounding(Grounding.Params(structural=False)), Grounding(Grounding.Params())

    def flags(detector: Grounding, part: list[dict[str, Any]], key: str) -> int:
        return sum(detector.score(case(r["question"], r["knowledge"]), Generation(text=r[key])).value == 1.0
                   for r in part)

    for part in (rows[:150], rows[150:]):
        before, after = flags(lexical, part, "hallucinated_answer"), flags(combined, part, "hallucinated_answer")
        assert after >= before + 0.05 * len(part), (before, after)
        assert flags(combined, part, "right_answer") <= 3
    probe_before = sum(lexical.score(case(q, c), Generation(text=f)).value == 1.0 for c, q, f, _ in PARAPHRASE_PROBE)
    probe_after = sum(combined.score(case(q, c), Generation(text=f)).value == 1.0 for c, q, f, _ in PARAPHRASE_PROBE)
    assert probe_after <= probe_before <= 1
