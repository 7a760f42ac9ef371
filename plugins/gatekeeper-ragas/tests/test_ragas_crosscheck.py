"""gatekeeper's built-in ROUGE-L and BLEU against ragas' on the same rows, through one
``gatekeeper run``. Equal to 1e-9 where the two compute the same thing; where they differ,
the test pins down why (docs/ecosystem.md, "Cross-check"):

- ROUGE-L: ragas runs rouge_score with the Porter stemmer, the built-in does not stem
  (``parcels``/``parcel`` match only in ragas); without stemming they agree.
- BLEU: the built-in is sacrebleu's sentence BLEU (effective n-gram order), ragas calls
  corpus BLEU on the one pair, so an answer with no 4-gram match scores 0 in ragas; and
  ragas splits texts at ". " and passes the reference sentences as *alternative*
  references of the first answer sentence, so a multi-sentence answer whose first sentence
  matches any reference sentence scores 1.0 in ragas.
"""

from __future__ import annotations

import pytest
from ragas_support import run, scores, setup, suite

from gatekeeper.testing import Project

# id → (answer, reference)
SAME = {
    "plain": ("Express shipping costs $15 and takes two days.",
              "Express shipping costs $15 and takes two business days."),
    "order": ("You can return the boots within 30 days.", "Boots are returned within 30 days."),
    "price": ("Costs $15.", "It costs $15."),
}
STEMMED = {"stem": ("The parcels arrived quickly today.", "The parcel arrives quickly today.")}
SHORT = {"short": ("Costs $15", "It costs $15 today")}
SENTENCES = {"split": ("Returns take 30 days. Bring a receipt.", "Returns take 30 days. A receipt is needed.")}
ROWS = {**SAME, **STEMMED, **SHORT, **SENTENCES}


@pytest.fixture
def record(project: Project) -> dict[str, dict[str, float]]:
    cases = [(cid, "What is the policy?", "", ref) for cid, (_, ref) in ROWS.items()]
    setup(project, suite("  - rouge_l\n  - bleu\n  - ragas_rouge\n  - ragas_bleu", cases=cases),
          {"candidate": {cid: answer for cid, (answer, _) in ROWS.items()}})
    result, rec = run(project)
    assert result.exit_code in (0, 1), result.output
    return {m: {cid: s["value"] for cid, s in scores(rec, m).items()}
            for m in ("rouge_l", "bleu", "ragas_rouge", "ragas_bleu")}


def test_equal_where_both_compute_the_same(record: dict[str, dict[str, float]]) -> None:
    for cid in SAME:
        assert record["ragas_rouge"][cid] == pytest.approx(record["rouge_l"][cid], abs=1e-9), cid
        assert record["ragas_bleu"][cid] == pytest.approx(record["bleu"][cid], abs=1e-9), cid
    assert record["ragas_rouge"]["short"] == pytest.approx(record["rouge_l"]["short"], abs=1e-9)


def test_rouge_differs_by_stemming_only(record: dict[str, dict[str, float]]) -> None:
    from rouge_score import rouge_scorer

    answer, reference = STEMMED["stem"]
    unstemmed = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False).score(reference, answer)["rougeL"].fmeasure
    assert record["ragas_rouge"]["stem"] == 1.0  # parcels/parcel, arrived/arrives share a stem
    assert record["rouge_l"]["stem"] == pytest.approx(unstemmed, abs=1e-9) == pytest.approx(0.6)


def test_bleu_differs_by_order_and_sentence_split(record: dict[str, dict[str, float]]) -> None:
    import sacrebleu

    answer, reference = SHORT["short"]
    assert record["ragas_bleu"]["short"] == 0.0  # corpus BLEU: no 4-gram in a 3-token answer
    assert record["bleu"]["short"] == pytest.approx(sacrebleu.sentence_bleu(answer, [reference]).score / 100)
    assert record["bleu"]["short"] > 0.25
    assert record["ragas_bleu"]["split"] == pytest.approx(1.0)  # first sentence matches a reference sentence
    assert record["bleu"]["split"] < 0.5
