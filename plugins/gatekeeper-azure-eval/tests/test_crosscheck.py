"""Cross-check: gatekeeper's built-in ROUGE-L, token F1 and BLEU against azure-ai-evaluation's and
deepeval's on the same rows, in one real run (docs/ecosystem.md, "Cross-check").

* ROUGE-L: the built-in tokenises like Google's rouge-score without stemming; azure runs its
  vendored rouge-score without stemming, so the two are equal on ASCII text. deepeval's scorer
  turns Porter stemming on: equal wherever no word differs only by its ending, and never lower.
* token F1: built-in and azure both implement SQuAD's normalisation (lower case, no
  punctuation, no articles) and bag-of-words F1: equal.
* BLEU: different definitions, not a tolerance question. The built-in is sacrebleu's sentence
  BLEU-4 (13a tokens, ``exp`` smoothing); azure's is NLTK's sentence BLEU-4 with smoothing
  method 4 on NLTK word tokens; deepeval's ``bleu1`` is the unigram precision with the brevity
  penalty. All three are 1 for an identical answer; azure's ranks the rows like the built-in
  (Spearman >= 0.9); deepeval's unigram score ignores word order, so it ranks them less alike
  (>= 0.8) and parts most on the reordered answer.
"""

from __future__ import annotations

import os

import pytest
from scipy.stats import spearmanr

from gatekeeper.testing import Project

if os.environ.get("GATEKEEPER_ALL_EXTRAS") != "1":
    pytest.importorskip("gatekeeper_deepeval._library")  # first: deepeval's telemetry off before its import
    pytest.importorskip("deepeval")

ROWS = [
    ("same", "You have 30 days to return them.", "You have 30 days to return them."),
    ("reorder", "You have 30 days to return them.", "To return them you have 30 days."),
    ("partial", "Express shipping costs $15 and takes 2 days.", "Express shipping costs $15."),
    ("stems", "Refunds are processed in 5 days.", "Refund processing takes 5 days."),
    ("wrong", "The store opens at 9 am on weekdays.", "It closes at 5 pm on Sundays."),
    ("articles", "The receipt is required for a refund.", "A receipt is required for the refund."),
    ("longer", "Reset your password from the login page.",
     "You can reset your password from the login page, then sign in again with the new one."),
    ("punct", "Yes, a receipt is required.", "yes a receipt is required"),
]

SUITE = """\
suite: crosscheck
prompt:
  messages: [{role: user, content: "{{ input }}"}]
cases:
%s
evaluators:
  - rouge_l
  - token_f1
  - bleu
  - {name: azure_rouge, rouge_type: rougeL}
  - azure_f1
  - azure_bleu
  - {name: deepeval_rouge, rouge_type: rougeL}
  - {name: deepeval_bleu, bleu_type: bleu1}
"""


def run_rows(project: Project) -> dict[str, dict[str, float]]:
    cases = "\n".join(f"  - {{id: {i}, input: q, expected: {ref!r}}}" for i, ref, _ in ROWS)
    project.write("suites/crosscheck.yaml", SUITE % cases)
    project.write_jsonl("out.jsonl", [{"id": i, "output": out} for i, _, out in ROWS])
    result = project.run("run", "suites", "--model", "replay:out.jsonl", "--out", "out", "--no-progress")
    assert result.exit_code in (0, 1), result.output
    record = project.read_record("out/results.json")
    table: dict[str, dict[str, float]] = {}
    for row in record["cases"]:
        case = record["case_index"][row["key"]]["id"]
        table[case] = {m: s["value"] for m, s in row["scores"].items()}
        assert all(s["status"] == "ok" for s in row["scores"].values()), row["scores"]
    return table


def test_builtin_overlap_metrics_agree_with_azure_and_deepeval(project: Project, nltk_data: object) -> None:
    table = run_rows(project)
    for case, v in table.items():
        assert v["rouge_l"] == pytest.approx(v["azure_rouge"], abs=1e-9), case
        assert v["token_f1"] == pytest.approx(v["azure_f1"], abs=1e-9), case
        # Stemming only adds matches (refunds/refund, processed/processing ...).
        assert v["deepeval_rouge"] >= v["rouge_l"] - 1e-9, case
    unstemmed = [c for c in table if c not in ("stems", "longer")]
    for case in unstemmed:
        assert table[case]["deepeval_rouge"] == pytest.approx(table[case]["rouge_l"], abs=1e-9), case
    assert table["stems"]["deepeval_rouge"] > table["stems"]["rouge_l"]

    for metric in ("bleu", "azure_bleu", "deepeval_bleu"):
        assert table["same"][metric] == pytest.approx(1.0), metric
    cases = list(table)
    builtin = [table[c]["bleu"] for c in cases]
    rho = spearmanr(builtin, [table[c]["azure_bleu"] for c in cases]).statistic
    assert rho >= 0.9, ("azure_bleu", rho, {c: (table[c]["bleu"], table[c]["azure_bleu"]) for c in cases})
    # deepeval's bleu1 ignores word order: the reordered answer is where it parts from BLEU-4 most.
    rho = spearmanr(builtin, [table[c]["deepeval_bleu"] for c in cases]).statistic
    assert rho >= 0.8, ("deepeval_bleu", rho, {c: (table[c]["bleu"], table[c]["deepeval_bleu"]) for c in cases})
    gaps = {c: table[c]["deepeval_bleu"] - table[c]["bleu"] for c in cases}
    assert max(gaps, key=lambda c: gaps[c]) == "reorder"
