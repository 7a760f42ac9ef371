"""Batch scoring of the built-in evaluators (issue 18): ``score_batch`` gives, case by case,
the very Score that ``score`` gives (value, verdict, status, reason, spans, details), BLEU's
numbers are sacrebleu's to the last float, and a real ``gatekeeper check`` decides the same
with the batch paths as with per-case scoring."""

from __future__ import annotations

import dataclasses
import json
import pickle
import random
from pathlib import Path

import pytest

from gatekeeper.builtin.scoring import bleu_batch
from gatekeeper.builtin.scoring import evaluators as ev
from gatekeeper.kinds import Evaluator
from gatekeeper.testing import Project
from gatekeeper.types import Case, Generation, Score, Span
from tests.large_support import bench_module

# --------------------------------------------------------------------------- a varied corpus

WORDS = [
    "You", "have", "30", "days", "from", "delivery.", "Mail-in", "requests", "cost", "$4.95;", "in-store",
    "are", "free.", "the", "a", "an", "THE", "The", "Café", "crème,", "s'il", "vous", "plaît!", "你好", "世界",
    "Zanzibar", "internal", "note", "1,000", "3.5", "U.S.", "e.g.,", "...", "--", "&amp;", "&quot;x&quot;",
    "<skipped>", "x", "ΣΊΣΥΦΟΣ", "naïve", "Straße", "İstanbul", "(yes)", "[no]", "{k:", "v}", "—", "–", "42-",
    "7-day", "it's", "“quoted”", "a/b", "@home", "#1", "50%", "C++", "ﬁne", "x" * 40, "ok", "fee", "days.",
]
SEPARATORS = [" ", " ", " ", "  ", "\n", "\t", " \u00a0", "-\n", ""]


def _text(rng: random.Random) -> str:
    n = rng.choice([0, 1, 2, 3, 4, 6, 9, 14, 25])
    out = ""
    for i in range(n):
        out += (rng.choice(SEPARATORS) if i else "") + rng.choice(WORDS)
    return rng.choice(["", " ", "\n"]) + out + rng.choice(["", "", " ", ".", " .", "\n"]) if n else out


def _variant(rng: random.Random, text: str) -> str:
    """An output close to a reference: the same, re-cased, re-spaced, cut or extended."""
    kind = rng.randrange(6)
    if kind == 0:
        return text
    if kind == 1:
        return text.upper() if rng.random() < 0.5 else text.lower()
    if kind == 2:
        return "  " + "   ".join(text.split()) + " "
    if kind == 3:
        words = text.split()
        return " ".join(words[: max(0, len(words) - rng.randint(1, 3))])
    if kind == 4:
        return text + " " + _text(rng)
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def corpus(n: int = 320, seed: int = 18) -> tuple[list[Case], list[Generation]]:
    """Cases and outputs with the edges: no reference (None, "", missing, empty list), several
    references (some empty), list-valued fields, unicode, empty and whitespace-only outputs,
    case and spacing variants, repeated n-grams, missing latency/usage/cost."""
    rng = random.Random(seed)
    cases, gens = [], []
    for i in range(n):
        shape = rng.randrange(10)
        reference: object
        if shape == 0:
            reference = None
        elif shape == 1:
            reference = ""
        elif shape in (2, 3):
            reference = [_text(rng) for _ in range(rng.randint(1, 3))] + ([""] if rng.random() < 0.3 else [])
        elif shape == 4:
            reference = []
        else:
            reference = _text(rng) or "fallback answer"
        variables: dict[str, object] = {"input": f"question {i}"}
        if reference is not None:
            variables["expected"] = reference
        facts = rng.choice([None, [], "days", ["30 days", "$4.95"], ["free", "THE", "ok"], ["", "fee"]])
        if facts is not None:
            variables["facts"] = facts
        if rng.random() < 0.7:
            variables["answer"] = rng.choice([_text(rng), [_text(rng), _text(rng)], ""])
        if isinstance(reference, list):
            expected = next((r for r in reference if r), None)
        else:
            expected = reference if isinstance(reference, str) else None
        case = Case(id=f"c{i}", suite="s", messages=(), vars=variables, expected=expected)  # type: ignore[arg-type]
        texts = [r for r in (reference if isinstance(reference, list) else [reference]) if isinstance(r, str) and r]
        output = _variant(rng, rng.choice(texts)) if texts and rng.random() < 0.6 else _text(rng)
        usage = rng.choice([{}, {"prompt_tokens": 12, "completion_tokens": rng.randint(0, 3000)},
                            {"total_tokens": 77}])
        gens.append(Generation(
            text=output, latency_ms=rng.choice([None, 0.0, round(rng.uniform(1, 20000), 3)]),
            usage=usage, cost=rng.choice([None, None, 0.002, 0.5]),
        ))
        cases.append(case)
    return cases, gens


CASES, GENERATIONS = corpus()

CONFIGS: list[tuple[str, dict[str, object]]] = [
    ("exact_match", {}), ("exact_match", {"case_sensitive": False, "collapse_whitespace": True}),
    ("exact_match", {"strip": False}), ("exact_match", {"value": ["30 days", "free."]}),
    ("exact_match", {"field": "answer", "threshold": None}),
    ("contains", {}), ("contains", {"field": "facts"}), ("contains", {"field": "facts", "mode": "any"}),
    ("contains", {"values": ["30  days", "FREE"], "mode": "any", "case_sensitive": True}),
    ("contains", {"values": ["the", "in-store requests", "x"], "collapse_whitespace": False, "threshold": 0.5}),
    ("contains", {"field": "no_such_field"}),
    ("not_contains", {"values": ["internal note", "Zanzibar"]}),
    ("not_contains", {"values": ["the", "a", "The"], "case_sensitive": True}),
    ("not_contains", {"values": ["days  from", "x"], "collapse_whitespace": False}),
    ("not_contains", {"field": "facts"}), ("not_contains", {"field": "no_such_field"}),
    ("regex", {"pattern": r"\d+ days"}), ("regex", {"pattern": r"^you", "flags": ["ignorecase", "multiline"]}),
    ("regex", {"pattern": r".*", "match": "fullmatch", "flags": ["dotall"]}),
    ("regex", {"pattern": r"(?<=\$)\d+\.\d+", "threshold": None}),
    ("rouge_l", {}), ("rouge_l", {"value": ["30 days", "free."]}), ("rouge_l", {"field": "answer"}),
    ("token_f1", {}), ("token_f1", {"value": ["the fee", "30 days from delivery"]}),
    ("token_f1", {"field": "answer", "threshold": 0.9}),
    ("edit_similarity", {}), ("edit_similarity", {"method": "indel", "case_sensitive": False}),
    ("edit_similarity", {"field": "answer", "threshold": None}),
    ("length", {"max_words": 5}), ("length", {"min_chars": 3, "max_chars": 40, "min_words": 1}),
    ("length", {"min_words": 2, "threshold": None}),
    ("latency", {}), ("latency", {"max_ms": 300}), ("latency", {"threshold": 500}),
    ("tokens", {}), ("tokens", {"count": "total", "max_tokens": 50}),
    ("cost", {}), ("cost", {"prompt_usd_per_1m": 1.5, "completion_usd_per_1m": 2}),
    *[("bleu", {"tokenize": tokenize, "lowercase": lowercase, "smooth_method": smooth})
      for tokenize in ("13a", "intl", "char", "zh", "none") for lowercase in (False, True)
      for smooth in ("exp", "floor", "add-k", "none")],
    ("bleu", {"value": ["You have 30 days from delivery.", "30 days"], "threshold": None}),
    ("bleu", {"field": "answer"}),
]


def _evaluator(name: str, params: dict[str, object]) -> Evaluator:
    cls = {c.name: c for c in ev.BUILTIN_EVALUATORS}[name]
    return cls(cls.Params.model_validate(params), metric=f"m_{name}")


def _batched(evaluator: Evaluator, cases: list[Case], gens: list[Generation], size: int) -> list[Score]:
    out: list[Score] = []
    for start in range(0, len(cases), size):
        out += evaluator.score_batch(cases[start : start + size], gens[start : start + size])
    return out


@pytest.mark.parametrize("name, params", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_score_batch_gives_the_scores_of_score_case_by_case(name: str, params: dict[str, object]) -> None:
    evaluator = _evaluator(name, params)
    assert type(evaluator).score_batch is not Evaluator.score_batch  # a real batch path
    expected = [evaluator.score(case, gen) for case, gen in zip(CASES, GENERATIONS, strict=True)]
    for size in (len(CASES), 64, 7, 1):  # one batch, runner-sized ones, tiny ones
        got = _batched(evaluator, CASES, GENERATIONS, size)
        assert len(got) == len(expected)
        for case, want, have in zip(CASES, expected, got, strict=True):
            assert have == want, (case.id, size)
            assert type(have.value) is type(want.value)  # a float stays a float (no numpy scalars)
    statuses = {s.status for s in expected}
    assert len({s.reason for s in expected}) >= 2 or statuses == {"nodata"}  # the corpus is varied
    assert evaluator.score_batch([], []) == []


def test_the_corpus_reaches_every_kind_of_verdict() -> None:
    """The equality above means something: the corpus gives hits, misses and NODATA."""
    for name, params in [("exact_match", {}), ("bleu", {}), ("contains", {"field": "facts"}),
                         ("not_contains", {"values": ["internal note", "Zanzibar"]}), ("latency", {})]:
        scores = _evaluator(name, params).score_batch(CASES, GENERATIONS)
        assert {True, False} <= {s.passed for s in scores}, name
        if name != "not_contains":
            assert "nodata" in {s.status for s in scores}, name


@pytest.mark.parametrize("tokenize", ["13a", "intl", "char", "zh", "none"])
@pytest.mark.parametrize("smooth", ["exp", "floor", "add-k", "none"])
def test_batch_bleu_is_sacrebleu_sentence_bleu_to_the_last_float(tokenize: str, smooth: str) -> None:
    import sacrebleu

    bleu = _evaluator("bleu", {"tokenize": tokenize, "smooth_method": smooth, "lowercase": smooth == "floor"})
    for case, gen, score in zip(CASES, GENERATIONS, bleu.score_batch(CASES, GENERATIONS), strict=True):
        refs = bleu.references(case)  # type: ignore[attr-defined]
        if not refs:
            assert score.status == "nodata"
            continue
        want = sacrebleu.sentence_bleu(gen.text, refs, smooth_method=smooth, tokenize=tokenize,
                                       lowercase=smooth == "floor")
        assert score.value == min(1.0, max(0.0, want.score / 100))
        assert score.details == {"precisions": want.precisions, "brevity_penalty": want.bp}


def test_bleu_without_integer_keys_counts_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large vocabularies take the numbered-n-gram path or the ``Counter`` path: same scores."""
    bleu = _evaluator("bleu", {})
    expected = [bleu.score(case, gen) for case, gen in zip(CASES, GENERATIONS, strict=True)]
    monkeypatch.setattr(bleu_batch, "_ENTRY_LIMIT", 0)
    assert _batched(bleu, CASES, GENERATIONS, 50) == expected
    monkeypatch.setattr(bleu_batch, "_KEY_LIMIT", 0)
    assert _batched(bleu, CASES, GENERATIONS, 50) == expected


def test_the_13a_batch_tokeniser_cuts_as_sacrebleu_does() -> None:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    rng = random.Random(7)
    alphabet = [*"ab1 2.,-.,\n&;$'\x1c\xa0é<>/", "&amp;", "&quot;", "&lt;", "<skipped>", "-\n", "..",
                "1,000", "3.5", "U.S.", "e.g.,", "ΣΑΣ", "ß"]
    reference = Tokenizer13a()
    for lowercase in (False, True):
        tokens = bleu_batch.Tokens("13a", lowercase)
        assert tokens.by_word  # the word-by-word path is the one under test
        for _ in range(150):
            lines = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
                     for _ in range(rng.randint(1, 30))]
            if rng.random() < 0.05:
                lines.append("a\x00b. c")  # the separator in a text: tokenised line by line
            tokens.start_batch()
            ids, lengths = tokens.ids(lines)
            names = {i: t for t, i in tokens.vocab.items()}
            flat = [names[i] for i in ids.tolist()]
            start = 0
            for line, length in zip(lines, lengths.tolist(), strict=True):
                text = (line.lower() if lowercase else line).rstrip()
                assert flat[start : start + length] == reference(text).split(), repr(line)
                start += length


def test_the_batch_words_of_token_f1_and_rouge_are_their_words() -> None:
    rng = random.Random(3)
    alphabet = [*"aAnNtThHeE .,;!-_'\u0301é—“”\t\n1_\x1c\x1f\x01\x7f", "the", "An", "a—b", "café", "Ǆ", "ﬁ",
                "_the_", "K", "İ"]
    ascii_only = [*"aAnNtThHeE .,;!-_'\t\n1_\x1c\x1f\x01\x7f\x0b$%", "the", "An", " a ", "THE."]
    for i in range(4000):
        text = "".join(rng.choice(ascii_only if i % 2 else alphabet) for _ in range(rng.randint(0, 25)))
        assert ev._squad_tokens(text) == ev.squad_normalise(text).split(), repr(text)
        assert ev._squad_words(text) == [w.encode() for w in ev.squad_normalise(text).split()], repr(text)
        assert ev._rouge_words(text) == [w.encode() for w in ev.rouge_tokens(text)], repr(text)


# --------------------------------------------------------------------------- Score and result


def test_score_is_slotted_and_keeps_its_contract() -> None:
    score = Score("m", 0.5, True, "why", "ok", [Span("x", 0, 1, "match", "r")], {"k": [1]})
    assert not hasattr(score, "__dict__")
    assert dataclasses.asdict(score) == {
        "metric": "m", "value": 0.5, "passed": True, "reason": "why", "status": "ok",
        "spans": [{"text": "x", "start": 0, "end": 1, "kind": "match", "reason": "r"}], "details": {"k": [1]},
    }
    assert dataclasses.replace(score, value=0.25).value == 0.25
    assert pickle.loads(pickle.dumps(score)) == score
    plain = Score(metric="m", value=None)
    assert (plain.passed, plain.reason, plain.status, plain.spans, plain.details) == (None, "", "ok", [], {})
    assert plain.spans is not Score(metric="m", value=None).spans  # no shared default list


def test_result_decides_the_verdict_from_the_threshold_as_before() -> None:
    higher = _evaluator("token_f1", {"threshold": 0.5})
    lower = _evaluator("latency", {"max_ms": 100})
    none = _evaluator("token_f1", {"threshold": None})
    assert higher.result(0.5, reason="r") == Score("m_token_f1", 0.5, True, "r", "ok", [], {})
    assert higher.result(0.4).passed is False
    assert higher.result(0.4, passed=True).passed is True
    assert lower.result(100.0).passed is True and lower.result(100.5).passed is False
    assert none.result(0.9).passed is None
    missing = higher.result(None, reason="no data", details={"a": 1})
    assert missing == Score("m_token_f1", None, None, "no data", "nodata", [], {"a": 1})
    spans: list[Span] = []
    assert higher.result(1.0, spans=spans).spans == [] and higher.result(1.0, spans=spans).spans is not spans


# --------------------------------------------------------------------------- a real check


def _bench_module() -> object:
    return bench_module()


def _check(root: Path) -> tuple[dict[str, object], list[dict[str, object]]]:
    project = Project(root)
    result = project.run("check", "--baseline", "replay:baseline.jsonl", "--candidate", "replay:candidate.jsonl",
                         "--policy", "policy.yaml", "--out", "out", "--no-progress")
    assert result.exit_code in (0, 1), result.output
    record = project.read_record("out/decision.json")
    rows = [{"key": c["key"], "model": c["model"], "scores": c["scores"]} for c in record["cases"]]
    decided = {k: record[k] for k in ("decision", "exit_code", "reasons", "metrics")}
    decided["summary_md"] = (root / "out/summary.md").read_text(encoding="utf-8")
    return decided, rows


def test_a_check_decides_the_same_with_batch_scoring_as_with_per_case_scoring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = _bench_module()
    for name in ("batched", "per_case"):
        bench.write_project(tmp_path / name, 240)  # type: ignore[attr-defined]
    calls: list[int] = []
    real = ev.Bleu.score_batch

    def counting(self: ev.Bleu, cases, generations):  # type: ignore[no-untyped-def]
        calls.append(len(cases))
        return real(self, cases, generations)

    monkeypatch.setattr(ev.Bleu, "score_batch", counting)
    batched, batched_rows = _check(tmp_path / "batched")
    assert sum(calls) == 480  # both models' answers went through the batch path
    for cls in ev.BUILTIN_EVALUATORS:
        monkeypatch.setattr(cls, "score_batch", Evaluator.score_batch)
    per_case, per_case_rows = _check(tmp_path / "per_case")
    assert batched_rows == per_case_rows
    assert len(batched_rows) == 480 and len(batched_rows[0]["scores"]) == 10  # type: ignore[arg-type]
    summary_b = str(batched.pop("summary_md"))
    summary_p = str(per_case.pop("summary_md"))
    assert json.dumps(batched, sort_keys=True) == json.dumps(per_case, sort_keys=True)
    def figures(summary: str) -> list[str]:  # the summary less the run id and the wall time
        return [line for line in summary.splitlines() if "wall time" not in line and " · run `" not in line]

    assert figures(summary_b) == figures(summary_p)
    assert len(figures(summary_b)) > 50
    assert len(batched["metrics"]) >= 10  # type: ignore[arg-type]  # every metric was decided on
