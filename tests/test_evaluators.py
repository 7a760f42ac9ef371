"""The built-in evaluators: exact values, pass/fail, NODATA, and parameter errors as a suite author sees them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gatekeeper.builtin.scoring import evaluators
from gatekeeper.builtin.scoring.evaluators import (
    Bleu,
    Contains,
    Cost,
    EditSimilarity,
    ExactMatch,
    JsonSchema,
    JsonValid,
    Latency,
    Length,
    NotContains,
    Regex,
    RougeL,
    TokenF1,
    Tokens,
    rouge_tokens,
)
from gatekeeper.engine.suites import load_yaml_suite
from gatekeeper.host.registry import Register, make_registries
from gatekeeper.kinds import Evaluator
from gatekeeper.types import Case, Generation, Score, UsageError


def make(cls: type[Evaluator], **params: Any) -> Evaluator:
    return cls(cls.Params.model_validate(params))


def case(expected: str | None = None, **fields: Any) -> Case:
    return Case(
        id="c1", suite="unit", messages=({"role": "user", "content": "question"},),
        vars=dict(fields), expected=expected,
    )


def score(cls: type[Evaluator], output: str, the_case: Case | None = None, **params: Any) -> Score:
    return make(cls, **params).score(the_case or case(), Generation(text=output))


def assert_nodata(result: Score, reason_part: str) -> None:
    assert result.value is None
    assert result.status == "nodata"
    assert result.passed is None
    assert reason_part in result.reason


# --------------------------------------------------------------------------- registration and suites


def test_every_builtin_evaluator_is_registered_under_its_name() -> None:
    registry = make_registries()["evaluators"]
    evaluators.gatekeeper_register_evaluators(register=Register(registry, "evaluators"))
    assert registry.names() == sorted([
        "bleu", "contains", "cost", "edit_similarity", "exact_match", "json_schema", "json_valid",
        "latency", "length", "not_contains", "regex", "rouge_l", "token_f1", "tokens",
    ])
    assert all(registry.entry(name).plugin == "evaluators" for name in registry.names())


def write_suite(tmp_path: Path, evaluators_yaml: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(
        "suite: demo\n"
        "prompt:\n"
        "  messages:\n"
        "    - {role: user, content: '{{ input }}'}\n"
        "cases:\n"
        "  - {id: a, input: 'Refund window?', expected: '30 days', facts: ['30 days', 'receipt']}\n"
        f"evaluators:\n{evaluators_yaml}",
        encoding="utf-8",
    )
    return path


def build(path: Path) -> list[Evaluator]:
    registries = make_registries()
    evaluators.gatekeeper_register_evaluators(register=Register(registries["evaluators"], "evaluators"))
    suite = load_yaml_suite(path)
    assert suite is not None
    return suite.build_scorers(registries["evaluators"], registries["detectors"])


def test_suite_scorer_syntax_builds_named_and_aliased_evaluators(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path,
        "  - rouge_l\n"
        "  - {contains: {field: facts, mode: all}}\n"
        "  - {name: rouge_l, as: rouge_strict, threshold: 0.9}\n",
    )
    built = build(path)
    assert [e.metric for e in built] == ["rouge_l", "contains", "rouge_strict"]
    suite = load_yaml_suite(path)
    assert suite is not None
    the_case = suite.cases[0]
    output = Generation(text="You have 30 days.")
    loose, contains, strict = (e.score(the_case, output) for e in built)
    assert loose.value == pytest.approx(2 * (2 / 4) * (2 / 2) / (2 / 4 + 2 / 2))  # LCS "30 days"
    assert loose.passed is True
    assert strict.value == loose.value
    assert strict.passed is False
    assert (contains.value, contains.reason) == (0.5, "missing 1 of 2 facts: 'receipt'")


def test_unknown_parameter_is_a_usage_error_with_file_line_and_field(tmp_path: Path) -> None:
    path = write_suite(tmp_path, "  - rouge_l\n  - {contains: {field: facts, mod: all}}\n")
    with pytest.raises(UsageError) as info:
        build(path)
    assert info.value.file == str(path)
    assert info.value.line == 9
    assert info.value.field == "evaluators.contains.mod"
    assert str(info.value) == f"{path}:9: evaluators.contains.mod: unknown parameter"


def test_invalid_regex_is_a_usage_error_at_construction(tmp_path: Path) -> None:
    path = write_suite(tmp_path, "  - {regex: {pattern: 'refund (\\d+ days'}}\n")
    with pytest.raises(UsageError) as info:
        build(path)
    assert info.value.line == 8
    assert info.value.field == "evaluators.regex.pattern"
    assert "invalid regular expression 'refund (\\\\d+ days'" in info.value.message
    assert "missing ), unterminated subpattern at position 7" in info.value.message


def test_conflicting_parameters_are_reported(tmp_path: Path) -> None:
    path = write_suite(tmp_path, "  - {exact_match: {value: '30 days', field: expected}}\n")
    with pytest.raises(UsageError, match="give 'value' or 'field', not both"):
        build(path)


# --------------------------------------------------------------------------- exact_match


def test_exact_match_strips_by_default_and_is_case_sensitive() -> None:
    hit = score(ExactMatch, "  Paris\n", case("Paris"))
    assert (hit.value, hit.passed, hit.reason) == (1.0, True, "output equals 'Paris'")
    miss = score(ExactMatch, "paris", case("Paris"))
    assert (miss.value, miss.passed) == (0.0, False)
    assert miss.reason == "expected 'Paris', got 'paris'"


def test_exact_match_normalisation_options() -> None:
    loose = {"case_sensitive": False, "collapse_whitespace": True}
    assert score(ExactMatch, "new   YORK\ncity", case("New York City"), **loose).value == 1.0
    assert score(ExactMatch, "new   york city", case("New York City"), case_sensitive=False).value == 0.0
    assert score(ExactMatch, " Paris", case("Paris"), strip=False).value == 0.0


def test_exact_match_reads_value_field_or_a_list_of_references() -> None:
    assert score(ExactMatch, "42", value="42").value == 1.0
    assert score(ExactMatch, "Lyon", case(city="Lyon"), field="city").value == 1.0
    assert score(ExactMatch, "NYC", case(answers=["New York", "NYC"]), field="answers").value == 1.0
    listed = score(ExactMatch, "Boston", case(answers=["New York", "NYC"]), field="answers")
    assert listed.reason == "expected 'New York' (or 1 more), got 'Boston'"


def test_exact_match_without_expected_answer_is_nodata() -> None:
    assert_nodata(score(ExactMatch, "Paris", case()), "no reference: the case has no expected answer")
    assert_nodata(score(ExactMatch, "Paris", case(), field="city"), "the case has no field 'city'")


# --------------------------------------------------------------------------- contains / not_contains


def test_contains_all_scores_the_fraction_found_and_names_what_is_missing() -> None:
    facts = case(facts=["30 days", "original receipt", "store credit"])
    result = score(Contains, "Bring the ORIGINAL\n receipt within 30 days.", facts, field="facts")
    assert result.value == pytest.approx(2 / 3)
    assert result.passed is False
    assert result.reason == "missing 1 of 3 facts: 'store credit'"
    assert result.details == {"found": ["30 days", "original receipt"], "missing": ["store credit"]}
    complete = score(Contains, "30 days, original receipt, store credit", facts, field="facts")
    assert (complete.value, complete.passed, complete.reason) == (1.0, True, "found all 3 facts")


def test_contains_any_is_one_or_zero() -> None:
    assert score(Contains, "We accept cards.", values=["cash", "cards"], mode="any").value == 1.0
    none = score(Contains, "We accept cheques.", values=["cash", "cards"], mode="any")
    assert (none.value, none.passed) == (0.0, False)
    assert none.reason == "none of 2 values found: 'cash', 'cards'"


def test_contains_case_sensitivity_and_string_field() -> None:
    assert score(Contains, "refund", values=["Refund"], case_sensitive=True).value == 0.0
    assert score(Contains, "full REFUND", case(fact="refund"), field="fact").value == 1.0
    assert score(Contains, "30 days", case("30 days")).value == 1.0  # no values or field: the expected answer


def test_contains_with_missing_or_empty_field_is_nodata() -> None:
    assert_nodata(score(Contains, "x", case(), field="facts"), "the case has no field 'facts'")
    assert_nodata(score(Contains, "x", case(facts=[]), field="facts"), "the case has no field 'facts'")
    with pytest.raises(ValidationError):
        Contains.Params.model_validate({"values": []})


def test_not_contains_flags_leaked_phrases_with_their_offsets() -> None:
    output = "Your refund is approved. INTERNAL NOTE: customer is a VIP."
    result = score(NotContains, output, values=["internal note", "do not share"])
    assert (result.value, result.passed) == (0.0, False)
    assert result.reason == "contains forbidden 'INTERNAL NOTE'"
    [span] = result.spans
    assert (span.text, span.start, span.end, span.kind) == ("INTERNAL NOTE", 25, 38, "forbidden")
    assert output[span.start : span.end] == span.text
    clean = score(NotContains, "Your refund is approved.", values=["internal note"])
    assert (clean.value, clean.passed, clean.reason) == (1.0, True, "none of 1 forbidden values found")


def test_not_contains_needs_phrases() -> None:
    with pytest.raises(ValidationError, match="give the forbidden phrases"):
        NotContains.Params.model_validate({})
    assert_nodata(score(NotContains, "x", case(), field="secrets"), "the case has no field 'secrets'")


# --------------------------------------------------------------------------- regex


def test_regex_search_and_fullmatch() -> None:
    found = score(Regex, "Order #A-1234 shipped", pattern=r"#[A-Z]-\d{4}")
    assert (found.value, found.passed, found.reason) == (1.0, True, "matched '#A-1234' at 6")
    assert (found.spans[0].start, found.spans[0].end) == (6, 13)
    assert score(Regex, "Order #A-1234 shipped", pattern=r"#[A-Z]-\d{4}", match="fullmatch").value == 0.0
    assert score(Regex, "ORDER", pattern="order", flags=["ignorecase"], match="fullmatch").value == 1.0
    missing = score(Regex, "no order", pattern=r"\d+")
    assert (missing.value, missing.passed) == (0.0, False)
    assert missing.reason == "pattern '\\\\d+' not found in the output"


def test_regex_parameter_errors() -> None:
    with pytest.raises(ValidationError, match="invalid regular expression"):
        Regex.Params.model_validate({"pattern": "[a-"})
    with pytest.raises(ValidationError):
        Regex.Params.model_validate({"pattern": "a", "flags": ["global"]})
    with pytest.raises(ValidationError):
        Regex.Params.model_validate({})


# --------------------------------------------------------------------------- JSON


def test_json_valid() -> None:
    ok = score(JsonValid, ' {"a": [1, 2]} ')
    assert (ok.value, ok.passed, ok.reason) == (1.0, True, "valid JSON (dict)")
    bad = score(JsonValid, '{"a": 1')
    assert (bad.value, bad.passed) == (0.0, False)
    assert bad.reason == "invalid JSON: Expecting ',' delimiter at line 1 column 8"
    fenced = '```json\n{"a": 1}\n```'
    assert score(JsonValid, fenced).value == 0.0
    assert score(JsonValid, fenced, code_fence=True).value == 1.0
    assert score(JsonValid, "   ").reason == "the output is empty"


ORDER_SCHEMA = {
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": {"type": "string"},
        "items": {"type": "array", "items": {"type": "object", "properties": {"price": {"type": "number"}}}},
    },
}


def test_json_schema_reason_quotes_the_error_path() -> None:
    bad = score(JsonSchema, '{"id": "o1", "items": [{"price": "cheap"}]}', schema=ORDER_SCHEMA)
    assert (bad.value, bad.passed) == (0.0, False)
    assert bad.reason == "$.items[0].price: 'cheap' is not of type 'number'"
    assert bad.details == {"errors": ["$.items[0].price: 'cheap' is not of type 'number'"], "error_count": 1}
    two = score(JsonSchema, '{"items": [{"price": "cheap"}]}', schema=ORDER_SCHEMA)
    assert two.reason == "$: 'id' is a required property (and 1 more)"
    good = score(JsonSchema, '{"id": "o1", "items": [{"price": 9.5}]}', schema=ORDER_SCHEMA)
    assert (good.value, good.passed, good.reason) == (1.0, True, "valid against the schema")
    assert score(JsonSchema, "not json", schema=ORDER_SCHEMA).reason.startswith("invalid JSON: Expecting value")


def test_json_schema_from_json_and_yaml_files(tmp_path: Path) -> None:
    json_file = tmp_path / "order.json"
    json_file.write_text(json.dumps(ORDER_SCHEMA), encoding="utf-8")
    yaml_file = tmp_path / "order.yaml"
    yaml_file.write_text("type: object\nrequired: [id]\n", encoding="utf-8")
    assert score(JsonSchema, '{"id": "x", "items": []}', schema=str(json_file)).value == 1.0
    assert score(JsonSchema, "{}", schema=str(yaml_file)).reason == "$: 'id' is a required property"


def test_json_schema_checks_formats_unless_told_not_to() -> None:
    schema = {"type": "string", "format": "date"}
    assert score(JsonSchema, '"2024-02-30"', schema=schema).value == 0.0
    assert score(JsonSchema, '"2024-02-28"', schema=schema).value == 1.0
    assert score(JsonSchema, '"2024-02-30"', schema=schema, check_formats=False).value == 1.0


def test_json_schema_parameter_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"invalid JSON Schema at \$\.type"):
        JsonSchema.Params.model_validate({"schema": {"type": "strng"}})
    with pytest.raises(ValidationError, match="cannot read schema file"):
        JsonSchema.Params.model_validate({"schema": str(tmp_path / "missing.json")})
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(ValidationError, match="is not valid JSON"):
        JsonSchema.Params.model_validate({"schema": str(broken)})


# --------------------------------------------------------------------------- similarity


def test_edit_similarity_levenshtein_and_indel() -> None:
    lev = score(EditSimilarity, "sitting", case("kitten"))
    assert lev.value == pytest.approx(1 - 3 / 7)  # 3 edits over the longer length 7
    assert lev.passed is False
    assert lev.reason == "levenshtein similarity 0.571 to 'kitten' (3 edits)"
    indel = score(EditSimilarity, "sitting", case("kitten"), method="indel")
    assert indel.value == pytest.approx(1 - 5 / 13)  # LCS 4: 6 + 7 - 2*4 = 5 insertions/deletions over 13
    assert score(EditSimilarity, "Paris", case("paris"), case_sensitive=False).value == 1.0
    close = score(EditSimilarity, "Pariss", case(answers=["Lyon", "Paris"]), field="answers")
    assert (close.value, close.passed) == (pytest.approx(5 / 6), True)
    assert_nodata(score(EditSimilarity, "x", case()), "no reference")


def test_rouge_l_matches_the_rouge_score_readme_example() -> None:
    # rouge-score's README: score(target='The quick brown fox jumps over the lazy dog',
    # prediction='The quick brown dog jumps on the log.') gives rougeL P=0.625, R=0.5556, F=0.5882
    # (LCS "the quick brown jumps the": 5 tokens of 8 predicted and 9 reference tokens).
    result = score(RougeL, "The quick brown dog jumps on the log.", case("The quick brown fox jumps over the lazy dog"))
    assert result.value == pytest.approx(0.5882352941176471)
    assert result.details == {"precision": 0.625, "recall": pytest.approx(5 / 9), "lcs": 5}
    assert result.passed is True
    assert result.reason == "ROUGE-L F 0.588 (precision 0.625, recall 0.556, LCS 5 tokens)"


def test_rouge_l_tokenisation_edge_cases_and_multiple_references() -> None:
    assert rouge_tokens("Police KILLED the gunman!") == ["police", "killed", "the", "gunman"]
    assert rouge_tokens("café, naïve") == ["café", "naïve"]
    assert score(RougeL, "police kill the gunman", case("police killed the gunman")).value == pytest.approx(0.75)
    assert score(RougeL, "", case("police")).value == 0.0
    assert score(RougeL, "dogs", case("cats")).value == 0.0
    best = score(RougeL, "the cat sat", case(refs=["a dog ran", "the cat sat"]), field="refs")
    assert best.value == 1.0
    assert best.reason.endswith("against 'the cat sat'")


def test_rouge_l_agrees_with_the_rouge_score_package() -> None:
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    pairs = [
        ("the cat was found under the bed", "the cat was under the bed"),
        ("Refunds take 5-7 business days.", "A refund takes five to seven business days"),
        ("It is 2,000 km long", "2000 km"),
    ]
    for reference, output in pairs:
        expected = scorer.score(reference, output)["rougeL"].fmeasure
        assert score(RougeL, output, case(reference)).value == pytest.approx(expected)


def test_bleu_is_sacrebleu_sentence_bleu_over_100() -> None:
    result = score(Bleu, "the cat is on the mat", case("the cat sat on the mat"))
    # n-gram precisions 5/6, 3/5, 1/4 and, smoothed ('exp': no 4-gram matches -> 1/(2*3)), 1/6;
    # no brevity penalty (equal lengths).
    expected = math.exp(sum(math.log(p) for p in (5 / 6, 3 / 5, 1 / 4, 1 / 6)) / 4)
    assert result.value == pytest.approx(expected)
    assert result.passed is True
    assert result.reason == "BLEU 37.99 (n-gram precisions 83.3/60.0/25.0/16.7, brevity penalty 1.000)"
    assert score(Bleu, "the cat sat on the mat", case("the cat sat on the mat")).value == 1.0
    assert score(Bleu, "", case("the cat")).value == 0.0
    assert_nodata(score(Bleu, "x", case()), "no reference")


def test_token_f1_squad_normalisation_and_best_reference() -> None:
    result = score(TokenF1, "the Eiffel Tower!", case("Eiffel tower in Paris"))
    assert result.value == pytest.approx(2 / 3)  # P = 2/2, R = 2/4
    assert result.passed is True
    assert score(TokenF1, "An apple", case("apple")).value == 1.0
    assert score(TokenF1, "pear", case("apple")).value == 0.0
    best = score(TokenF1, "Paris", case(answers=["Lyon", "Paris, France"]), field="answers")
    assert best.value == pytest.approx(2 / 3)
    assert best.reason == "token F1 0.667 against 'Paris, France'"
    assert score(TokenF1, "the", case("a")).value == 1.0  # both empty after normalisation


def test_expected_list_row_values_are_references() -> None:
    # The suite loader stringifies `expected`; the row's own list (in vars) is used instead.
    listed = Case(
        id="c", suite="s", messages=(), vars={"expected": ["NYC", "New York"]}, expected="['NYC', 'New York']"
    )
    assert score(ExactMatch, "New York", listed).value == 1.0


# --------------------------------------------------------------------------- length, latency, tokens, cost


def test_length_bounds() -> None:
    text = "one two three four five"
    ok = score(Length, text, min_words=2, max_words=5, max_chars=30)
    assert (ok.value, ok.passed, ok.reason) == (1.0, True, "23 chars, 5 words: within bounds")
    long = score(Length, text, max_words=3, min_chars=30)
    assert (long.value, long.passed) == (0.0, False)
    assert long.reason == "23 chars < min_chars 30; 5 words > max_words 3"
    assert long.details == {"chars": 23, "words": 5}


def test_length_parameter_errors() -> None:
    with pytest.raises(ValidationError, match="give at least one of"):
        Length.Params.model_validate({})
    with pytest.raises(ValidationError, match="min_words \\(9\\) is greater than max_words \\(3\\)"):
        Length.Params.model_validate({"min_words": 9, "max_words": 3})


def test_latency_value_is_milliseconds_and_lower_is_better() -> None:
    fast = make(Latency).score(case(), Generation(text="x", latency_ms=812.4))
    assert (fast.value, fast.passed, fast.reason) == (812.4, True, "812 ms (limit 10000 ms)")
    slow = make(Latency, max_ms=500).score(case(), Generation(text="x", latency_ms=812.4))
    assert (slow.value, slow.passed, slow.reason) == (812.4, False, "812 ms (limit 500 ms)")
    via_threshold = make(Latency, threshold=900).score(case(), Generation(text="x", latency_ms=812.4))
    assert via_threshold.passed is True
    assert Latency.lower_is_better is True
    assert_nodata(make(Latency).score(case(), Generation(text="x")), "carries no latency")
    with pytest.raises(ValidationError, match="give 'max_ms' or 'threshold', not both"):
        Latency.Params.model_validate({"max_ms": 5, "threshold": 5})


def test_tokens_from_usage() -> None:
    usage = {"prompt_tokens": 120, "completion_tokens": 30}
    gen = Generation(text="x", usage=usage)
    completion = make(Tokens).score(case(), gen)
    assert (completion.value, completion.passed, completion.reason) == (30.0, True, "30 completion tokens (limit 1024)")
    assert make(Tokens, count="total").score(case(), gen).value == 150.0  # no total_tokens: prompt + completion
    assert make(Tokens, count="prompt", max_tokens=100).score(case(), gen).passed is False
    assert_nodata(make(Tokens).score(case(), Generation(text="x")), "no usage['completion_tokens']")


def test_cost_reported_or_computed_from_prices() -> None:
    reported = make(Cost).score(case(), Generation(text="x", cost=0.02))
    assert (reported.value, reported.passed) == (0.02, False)  # default limit $0.01
    priced = make(Cost, prompt_usd_per_1m=0.5, completion_usd_per_1m=1.5, max_usd=0.001)
    gen = Generation(text="x", usage={"prompt_tokens": 1000, "completion_tokens": 200})
    result = priced.score(case(), gen)
    assert result.value == pytest.approx((1000 * 0.5 + 200 * 1.5) / 1e6)
    assert result.passed is True
    assert result.reason == "$0.000800 for 1000 prompt + 200 completion tokens (limit $0.001)"
    assert_nodata(make(Cost).score(case(), gen), "no prices are configured")
    assert_nodata(priced.score(case(), Generation(text="x")), "no prompt/completion token counts")
    with pytest.raises(ValidationError, match="give both"):
        Cost.Params.model_validate({"prompt_usd_per_1m": 1})


@pytest.mark.parametrize("cls", evaluators.BUILTIN_EVALUATORS, ids=lambda c: c.name)
def test_every_evaluator_has_a_default_threshold_and_documents_its_range(cls: type[Evaluator]) -> None:
    required = {"regex": {"pattern": "x"}, "json_schema": {"schema": {}}, "length": {"max_chars": 10},
                "not_contains": {"values": ["x"]}}
    params = cls.Params.model_validate(required.get(cls.name, {}))
    assert params.threshold is not None
    assert cls.description and cls.value_range
    with pytest.raises(ValidationError):
        cls.Params.model_validate({**required.get(cls.name, {}), "no_such_parameter": 1})


@pytest.mark.parametrize("cls", evaluators.BUILTIN_EVALUATORS, ids=lambda c: c.name)
def test_docs_describe_every_evaluator_and_its_parameters(cls: type[Evaluator]) -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "evaluators.md").read_text(encoding="utf-8")
    heading = f"\n## `{cls.name}`\n"
    assert heading in docs, f"docs/evaluators.md has no section for {cls.name!r}"
    section = docs.split(heading, 1)[1].split("\n## ", 1)[0]
    documented_elsewhere = {"threshold"}  # the pass rule, described once for all
    if issubclass(cls.Params, evaluators.ReferenceParams):
        documented_elsewhere |= {"value", "field"}  # "Where references come from"
        assert "references (above)" in section or "no reference" in section
    for name, info in cls.Params.model_fields.items():
        shown = info.alias or name
        if shown not in documented_elsewhere:
            described = f"`{shown}`" in section or f"`{shown}:" in section  # `mode: all|any`
            assert described, f"docs/evaluators.md: {cls.name} does not describe {shown!r}"
