"""Claims of an answer and their evidence (gatekeeper.claims): what the claim_verification
and nli_grounding detectors show in ``details``, on hand-written answers and contexts."""

from __future__ import annotations

from gatekeeper.claims import Claim, context_windows, merge, retrieve, split_claims, split_sentences

CONTEXT = (
    "Arthur's Magazine (1844–1846) was an American literary periodical published in Philadelphia."
    "First for Women is a woman's magazine published by Bauer Media Group in the USA. "
    "It was started in 1989 by Dr. J. Smith in the U.S. state of New Jersey."
)
QUESTION = "Which magazine was started first, Arthur's Magazine or First for Women?"


def texts(answer: str) -> list[str]:
    return [c.text for c in split_claims(answer)]


def test_sentences_keep_offsets_and_abbreviations() -> None:
    sentences = split_sentences(CONTEXT)
    assert [s.text[:20] for s in sentences] == ["Arthur's Magazine (1", "First for Women is a", "It was started in 19"]
    assert all(CONTEXT[s.start:s.end] == s.text for s in sentences)  # "century.First" glued: split anyway
    assert sentences[2].text.endswith("U.S. state of New Jersey.")  # "Dr.", "J.", "U.S." end nothing


def test_an_answer_splits_into_sentence_and_semicolon_claims() -> None:
    answer = "First for Women was started first; it began in 1989. Arthur's Magazine came later!  Thanks."
    claims = split_claims(answer)
    assert [c.text for c in claims] == ["First for Women was started first", "it began in 1989.",
                                        "Arthur's Magazine came later!", "Thanks."]
    assert all(answer[c.start:c.end] == c.text for c in claims if c.start is not None)
    assert not any(c.fragment for c in claims)
    assert texts("Happy to help.\n\n") == ["Happy to help."]
    assert texts("...  \n") == [] and texts("") == []
    assert texts("One. Two. Three.")[:2] == ["One.", "Two."] and len(split_claims("a. " * 50)) == 0
    assert len(split_claims(". ".join(f"Fact {i}" for i in range(40)), max_claims=5)) == 5


def test_a_short_answer_is_a_fragment_read_with_the_question() -> None:
    (claim,) = split_claims("Arthur's Magazine")
    assert claim.fragment and claim == Claim("Arthur's Magazine", 0, 17, fragment=True)
    assert claim.statement(QUESTION) == f"{QUESTION} Arthur's Magazine"
    assert claim.statement("") == "Arthur's Magazine"
    (no,) = split_claims("No.")
    assert no.fragment  # a flipped yes/no is a claim: "no" is not a stop word
    (full,) = split_claims("First for Women was started in 1989 in New Jersey.")
    assert not full.fragment and full.statement(QUESTION) == full.text


def test_windows_are_sentences_and_adjacent_pairs_with_offsets() -> None:
    windows = context_windows(CONTEXT, 2)
    assert len(windows) == 5
    assert all(CONTEXT[w.start:w.end] == w.text for w in windows)
    assert windows[3].text.startswith("Arthur's") and windows[3].text.endswith("in the USA.")
    assert len(context_windows(CONTEXT, 1)) == 3


def test_retrieval_finds_the_window_that_settles_the_claim() -> None:
    windows = context_windows(CONTEXT, 1)
    best = retrieve("First for Women began in 1989 in New Jersey", windows, 1)
    assert best[0].text.startswith("It was started in 1989") and best[0].score > 0
    # The claim names only one magazine; the question names the other, whose window is needed.
    claim = "First for Women was started first."
    without = {e.text[:8]: e.score for e in retrieve(claim, windows, 3)}
    with_question = {e.text[:8]: e.score for e in retrieve(claim, windows, 3, related=QUESTION)}
    assert without["Arthur's"] == 0.0 and with_question["Arthur's"] > 0.0
    # Nothing in common: still k windows, in the context's order, with score 0.
    assert [(e.start, e.score) for e in retrieve("zebra", windows, 2)] == [(0, 0.0), (windows[1].start, 0.0)]
    assert retrieve("zebra", [], 3) == [] and retrieve("zebra", windows, 0) == []


def test_merge_joins_overlapping_windows_in_context_order() -> None:
    windows = context_windows(CONTEXT, 2)
    found = retrieve("Bauer Media Group 1989", windows, 3)
    merged = merge(CONTEXT, found)
    assert [CONTEXT[m.start:m.end] == m.text for m in merged] == [True] * len(merged)
    assert merged[0].start <= min(e.start for e in found) and merged[-1].end == max(e.end for e in found)
    assert len(merged) == 1  # the pairs overlap the sentences they contain
