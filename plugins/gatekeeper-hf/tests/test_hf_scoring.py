"""semantic_similarity, embedding_grounding and self_consistency with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gatekeeper.kinds import EvalContext, Model
from gatekeeper.types import Case, Config, Generation, GenerationRequest, ModelIdentity
from gatekeeper_hf.embeddings import embedding_model_dir, get_encoder, split_sentences
from gatekeeper_hf.scoring import EmbeddingGrounding, SelfConsistency, SemanticSimilarity

CONTEXT = (
    "The Oberoi family is an Indian family that is famous for its involvement in hotels, namely through "
    "The Oberoi Group.The Oberoi Group is a hotel company with its head office in Delhi. It was founded "
    "in 1934 and runs 31 hotels."
)
QUESTION = "The Oberoi family is part of a hotel company that has a head office in what city?"


def case(expected: str | None = None, context: str | None = CONTEXT) -> Case:
    return Case(id="q1", suite="s", messages=({"role": "user", "content": QUESTION},),
                expected=expected, context=context, vars={"question": QUESTION})


def score(evaluator: object, output: str, the_case: Case | None = None, ctx: EvalContext | None = None) -> object:
    ctx = ctx or EvalContext(config=Config())
    return asyncio.run(evaluator.ascore(the_case or case(), Generation(text=output), ctx))  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- splitting


def test_sentences_keep_exact_offsets_and_split_glued_sentences() -> None:
    text = "Dr. Smith met J. Doe in the U.S. Army. It cost 3.5 dollars!\nThen he left.Next came 1934."
    sentences = split_sentences(text)
    assert [s.text for s in sentences] == [
        "Dr. Smith met J. Doe in the U.S. Army.", "It cost 3.5 dollars!", "Then he left.", "Next came 1934.",
    ]
    assert all(text[s.start : s.end] == s.text for s in sentences)


# --------------------------------------------------------------------------- semantic_similarity


def test_semantic_similarity_ranks_a_paraphrase_above_an_unrelated_answer() -> None:
    evaluator = SemanticSimilarity(SemanticSimilarity.Params())
    expected = case(expected="The head office is in Delhi.")
    paraphrase = score(evaluator, "Their headquarters are located in Delhi.", expected)
    unrelated = score(evaluator, "Bananas are rich in potassium.", expected)
    assert 0.7 <= paraphrase.value <= 1.0 and paraphrase.passed is True
    assert 0.0 <= unrelated.value < 0.3 and unrelated.passed is False


def test_semantic_similarity_is_nodata_without_expected() -> None:
    result = score(SemanticSimilarity(SemanticSimilarity.Params()), "Delhi", case(expected=None))
    assert result.status == "nodata" and result.value is None


def test_embeddings_match_sentence_transformers() -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(embedding_model_dir()), device="cpu")
    texts = ["The head office is in Delhi.", "Bananas are rich in potassium."]
    ours = get_encoder().encode(texts)
    theirs = reference.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    assert (ours - theirs).abs().max().item() < 1e-4


# --------------------------------------------------------------------------- embedding_grounding


def grounding(**params: float) -> EmbeddingGrounding:
    return EmbeddingGrounding(EmbeddingGrounding.Params(**params))


def test_a_grounded_answer_is_not_flagged() -> None:
    result = score(grounding(), "The Oberoi Group has its head office in Delhi. It runs 31 hotels.")
    assert result.value == 0.0
    assert result.spans == []
    assert result.details["support"] == 1.0
    assert len(result.details["claims"]) == 2


def test_a_short_answer_found_in_the_context_is_grounded() -> None:
    assert score(grounding(), "Delhi").value == 0.0


def test_a_swapped_entity_is_flagged_with_its_exact_span() -> None:
    output = "The Oberoi Group was founded in 1934. Its head office is in Mumbai."
    result = score(grounding(), output)
    assert result.value == 1.0
    [span] = result.spans
    assert output[span.start : span.end] == span.text == "Its head office is in Mumbai."
    assert "mumbai" in span.reason
    assert result.details["support"] == 0.5
    assert [c["supported"] for c in result.details["claims"]] == [True, False]


def test_a_wrong_number_is_flagged_even_if_close() -> None:
    result = score(grounding(), "The Oberoi Group was founded in 1935.")
    assert result.value == 1.0
    assert result.details["claims"][0]["unsupported_words"] == ["1935"]


def test_number_words_and_digit_grouping_count_as_support() -> None:
    numbers = case(context="The chain employs 1600 people. Its first hotel stayed open for nine years.")
    assert score(grounding(), "It employs 1,600 people.", numbers).value == 0.0
    assert score(grounding(), "The first hotel stayed open for 9 years.", numbers).value == 0.0
    assert score(grounding(), "The first hotel stayed open for 8 years.", numbers).value == 1.0


def test_inflections_count_as_support_but_a_new_name_does_not() -> None:
    assert score(grounding(), "The Oberoi Group's head offices are in Delhi.").value == 0.0
    result = score(grounding(), "The Oberoi Group's head offices are in Delhi and Kolkata.")
    assert result.value == 1.0
    assert result.details["claims"][0]["unsupported_words"] == ["kolkata"]


def test_new_ordinary_words_are_tolerated_up_to_a_fraction() -> None:
    output = "The Oberoi family is famous for airline involvement."  # one new word of three
    assert score(grounding(), output).value == 0.0
    strict = score(grounding(max_unsupported_fraction=0.0, synonym_similarity=0.95), output)
    assert strict.value == 1.0
    assert strict.details["claims"][0]["unsupported_words"] == ["airline"]


def test_synonym_similarity_decides_near_synonyms() -> None:
    output = "The Oberoi Group is a hotel business."
    assert score(grounding(max_unsupported_fraction=0.0, synonym_similarity=0.99), output).value == 1.0
    assert score(grounding(max_unsupported_fraction=0.0, synonym_similarity=0.3), output).value == 0.0


def test_an_off_topic_claim_is_flagged_by_its_embedding() -> None:
    off_topic = score(grounding(max_unsupported_fraction=1.0), "Bananas and apples are rich in potassium.")
    assert off_topic.value == 1.0
    assert "off-topic" in off_topic.spans[0].reason


def test_grounding_is_nodata_without_context() -> None:
    result = score(grounding(), "Delhi", case(context=None))
    assert result.status == "nodata"


def test_an_output_without_claims_is_grounded() -> None:
    result = score(grounding(), "...")
    assert result.value == 0.0 and result.details["claims"] == []


def test_the_detector_threshold_makes_a_verdict() -> None:
    detector = EmbeddingGrounding(EmbeddingGrounding.Params(threshold=0.5))
    assert score(detector, "Its head office is in Mumbai.").passed is False
    assert score(detector, "Its head office is in Delhi.").passed is True


# --------------------------------------------------------------------------- self_consistency


class ScriptedModel(Model):
    """Answers sampled requests from a script, keyed by seed; records what it was asked."""

    def __init__(self, answers: dict[int, str]) -> None:
        self.answers = answers
        self.requests: list[GenerationRequest] = []
        self.identity = ModelIdentity("test", "scripted", "0" * 64)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.requests.extend(requests)
        return [Generation(text=self.answers[r.seed or 0]) for r in requests]


def context_for(model: ScriptedModel) -> EvalContext:
    async def generate(m: Model, request: GenerationRequest) -> Generation:
        return (await m.generate([request]))[0]

    return EvalContext(config=Config(), model=model, generate=generate)


def test_self_consistency_flags_the_sentence_the_samples_do_not_back() -> None:
    samples = {
        1: "The Oberoi Group's head office is in Delhi.",
        2: "Its headquarters are in Delhi, India.",
        3: "The company is based in Delhi.",
    }
    model = ScriptedModel(samples)
    detector = SelfConsistency(SelfConsistency.Params(samples=3))
    output = "The head office is in Delhi. The founder owned a purple submarine."
    result = score(detector, output, ctx=context_for(model))
    assert result.value == 1.0
    [span] = result.spans
    assert output[span.start : span.end] == span.text == "The founder owned a purple submarine."
    assert result.details["samples"] == 3
    supports = [c["support"] for c in result.details["claims"]]
    assert supports[0] > 0.5 > supports[1]
    assert [(r.temperature, r.seed) for r in model.requests] == [(1.0, 1), (1.0, 2), (1.0, 3)]
    assert all(r.messages == case().messages for r in model.requests)


def test_self_consistency_passes_an_answer_the_samples_agree_with() -> None:
    model = ScriptedModel({1: "The head office is in Delhi.", 2: "It is headquartered in Delhi."})
    result = score(SelfConsistency(SelfConsistency.Params(samples=2)), "The head office is in Delhi.",
                   ctx=context_for(model))
    assert result.value == 0.0 and result.spans == []


def test_self_consistency_is_nodata_without_a_model() -> None:
    result = score(SelfConsistency(SelfConsistency.Params()), "The head office is in Delhi.")
    assert result.status == "nodata"
    assert "no model" in result.reason
