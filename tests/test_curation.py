"""Curation: PII scrubbing, sequestration, consent and de-duplication — and the two
acceptance properties: no evaluation case in any training set, no planted PII in any
built file."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import pytest

from gatekeeper.signals.curation import (
    PiiScrubber,
    Sequestration,
    find_pii,
    iban_valid,
    luhn_valid,
    prompt_hash,
)
from gatekeeper.types import UsageError
from tests.signal_support import NO_AUTOLOAD, make_signal, write_jsonl

BUNDLED = Path(__file__).resolve().parents[1] / "suites" / "signals"


# --------------------------------------------------------------------------- PII


@pytest.mark.parametrize(("text", "kind", "scrubbed"), [
    ("write to zq.planted@example.net today", "email", "write to [EMAIL] today"),
    ("call (555) 201-3344 please", "phone", "call [PHONE] please"),
    ("call +44 20 7946 0958", "phone", "call [PHONE]"),
    ("the line is 1-800-555-0148.", "phone", "the line is [PHONE]."),
    ("card 4111 1111 1111 1111 expired", "card_number", "card [CARD] expired"),
    ("card 5500-0000-0000-0004", "card_number", "card [CARD]"),
    ("refund to GB82 WEST 1234 5698 7654 32 please", "iban", "refund to [IBAN] please"),
    ("IBAN DE89370400440532013000", "iban", "IBAN [IBAN]"),
    ("from 198.51.100.23.", "ipv4", "from [IP]."),
    ("from 2001:db8:85a3::8a2e:370:7334 today", "ipv6", "from [IP] today"),
    ("SSN 219-09-9999 ok", "us_ssn", "SSN [SSN] ok"),
    ("NI number AB 12 34 56 C.", "uk_ni", "NI number [NI_NUMBER]."),
])
def test_each_kind_of_pii_is_replaced_and_counted(text, kind, scrubbed):
    scrubber = PiiScrubber()
    assert scrubber.scrub(text, "answer") == scrubbed
    report = scrubber.report.as_dict()
    assert report["by_type"][kind] == 1 and report["total"] == 1
    assert report["by_field"] == {"answer": {kind: 1}}


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 fails the Luhn check",
    "GB82 WEST 1234 5698 7654 33 fails mod 97",
    "order NW-123456 of $6.95 on 2026-03-01 arrives in 3 to 5 business days",
    "open 7 a.m. to 9 p.m., ticket 1234567890, version v1.2.3.4, at 10:00:00, std::vector",
    "gift card 1234 5678 9012 3456",
    "10.0.0.256 is not an address",
])
def test_lookalikes_are_kept(text):
    scrubber = PiiScrubber()
    assert scrubber.scrub(text, "answer") == text
    assert scrubber.report.as_dict()["total"] == 0


def test_checks_behind_the_patterns():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB82 WEST 1234 5698 7654 33")


def test_allowed_values_and_context_values_are_kept():
    text = "Call 1-800-555-0148 or me at (555) 201-3344."
    assert PiiScrubber(["1-800-555-0148"]).scrub(text, "answer") == "Call 1-800-555-0148 or me at [PHONE]."
    signal = make_signal(1, answer=text)
    scrubbed = PiiScrubber(allow_context=True).scrub_signal(_signal(signal))
    assert scrubbed.answer == "Call 1-800-555-0148 or me at [PHONE]."
    assert "care@shop.example" in scrubbed.context[0]
    strict = PiiScrubber().scrub_signal(_signal(signal))
    assert "1-800-555-0148" not in strict.context[0] and "[EMAIL]" in strict.context[0]


def _signal(row):
    from gatekeeper.signals.records import signal_from_row

    return signal_from_row(row)


# --------------------------------------------------------------------------- sequestration


def test_split_is_deterministic_salted_and_close_to_the_fraction():
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4000)]
    split = Sequestration(0.2)
    sides = [split.is_evaluation(d) for d in digests]
    assert sides == [Sequestration(0.2).is_evaluation(d) for d in digests]
    assert 0.17 < sum(sides) / len(sides) < 0.23
    other = [Sequestration(0.2, salt="another").is_evaluation(d) for d in digests]
    assert other != sides
    with pytest.raises(UsageError, match="between 0 and 1"):
        Sequestration(1.5)


def test_prompt_hash_ignores_case_and_spacing_but_not_roles():
    a = [{"role": "user", "content": "Where is  my parcel?"}]
    b = [{"role": "user", "content": "where is my parcel?\n"}]
    c = [{"role": "system", "content": "Where is my parcel?"}]
    assert prompt_hash(a) == prompt_hash(b) != prompt_hash(c)


# --------------------------------------------------------------------------- builds


def mixed_signals(n: int = 240, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        verdict = rng.choice(["accepted", "accepted", "edited", "rejected", "none"])
        rows.append(make_signal(i, verdict=verdict, topic=rng.choice(["returns", "billing"]),
                                edited=f"Corrected answer {i}." if verdict in ("edited", "rejected") else None))
    return rows


def training_prompts(out: Path) -> set[str]:
    prompts = set()
    for line in (out / "sft.jsonl").open():
        messages = json.loads(line)["messages"]
        assert messages[-1]["role"] == "assistant"
        prompts.add(prompt_hash(messages[:-1]))
    for line in (out / "preference.jsonl").open():
        prompts.add(prompt_hash(json.loads(line)["prompt"]))
    return prompts


def suite_prompts(suite_path: Path) -> set[str]:
    """The prompts of the suite's cases as gatekeeper renders them (loaded through the host)."""
    from gatekeeper.builtin.suite_loader import gatekeeper_load_suite
    from gatekeeper.host.config import load_config

    suite = gatekeeper_load_suite(path=suite_path, config=load_config(None, cwd=suite_path.parent.parent))
    assert suite is not None and suite.cases
    return {prompt_hash(case.messages) for case in suite.cases}


def test_no_evaluation_case_appears_in_any_built_training_set(project):
    """Acceptance: built from the bundled history, the regression suite and the training
    set share no prompt, and neither does a training set built later with other filters."""
    history = str(BUNDLED / "window1.parquet")
    suite = project.run("signals", "build-suite", history, "--out", "suites/regression.yaml",
                        "--pii-allow-context", env=NO_AUTOLOAD)
    assert suite.exit_code == 0, suite.output
    cases = suite_prompts(project.path / "suites/regression.yaml")
    assert len(cases) > 100
    for args in ([], ["--since", "2026-11-09", "--where", "topic=returns,billing", "--holdout", "suites"]):
        out = f"data-{len(args)}"
        built = project.run("signals", "build-dataset", history, "--out", out, "--pii-allow-context", *args,
                            env=NO_AUTOLOAD)
        assert built.exit_code == 0, built.output
        training = training_prompts(project.path / out)
        assert training and not training & cases
    manifest = project.read_json("data-0/manifest.json")
    assert manifest["counts"]["sequestered_for_evaluation"] > 0
    assert manifest["sequestration"]["eval_fraction"] == 0.2


def test_holdout_suite_prompts_never_enter_training(project):
    rows = mixed_signals()
    write_jsonl(project.path / "s.jsonl", rows)
    split = Sequestration()
    training_side = next(r for r in rows if r["feedback"]["verdict"] == "accepted"
                         and not split.is_evaluation(prompt_hash(r["messages"])))
    question = training_side["messages"][1]["content"]
    project.write("holdout/h.yaml", f"""
        suite: held-out
        prompt:
          messages:
            - {{role: system, content: {json.dumps(training_side["messages"][0]["content"])}}}
            - {{role: user, content: "{{{{ input }}}}"}}
        cases:
          - {{id: h1, input: {json.dumps(question)}}}
        evaluators: [rouge_l]
    """)
    free = project.run("signals", "build-dataset", "s.jsonl", "--out", "free", env=NO_AUTOLOAD)
    held = project.run("signals", "build-dataset", "s.jsonl", "--out", "held", "--holdout", "holdout",
                       env=NO_AUTOLOAD)
    assert free.exit_code == held.exit_code == 0, held.output
    target = prompt_hash(PiiScrubber().scrub_signal(_signal(training_side)).messages)
    assert target in training_prompts(project.path / "free")
    assert target not in training_prompts(project.path / "held")
    assert project.read_json("held/manifest.json")["counts"]["in_holdout_suite"] == 1


PLANTED = {
    "email": "zq.planted@example.net",
    "phone": "(415) 555-0199",
    "card_number": "4539 1488 0343 6467",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "ipv4": "198.51.100.23",
    "ipv6": "2001:db8:85a3::8a2e:370:7334",
    "us_ssn": "219-09-9999",
    "uk_ni": "AB 12 34 56 C",
}


def planted_signals() -> list[dict]:
    rows = mixed_signals(160, seed=11)
    values = list(PLANTED.values())
    for i, row in enumerate(rows):
        value = values[i % len(values)]
        row["messages"][1]["content"] += f" My details: {value}."
        if row["feedback"]["edited_text"]:
            row["feedback"]["edited_text"] += f" (noted {values[(i + 3) % len(values)]})"
        row["answer"] += f" We have {values[(i + 5) % len(values)]} on file."
        row["context"] = [row["context"][0] + f" Customer record: {values[(i + 1) % len(values)]}."]
    return rows


def _all_text(root: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(root.rglob("*")) if p.is_file())


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def test_planted_pii_never_reaches_a_built_dataset_or_suite(project):
    """Acceptance: every planted value, in the question, the answer, the edit and the
    context, is gone from every built file; the reports count them by type."""
    assert luhn_valid(_digits(PLANTED["card_number"]))
    write_jsonl(project.path / "signals/s.jsonl", planted_signals())
    for args in (["build-dataset", "signals/s.jsonl", "--out", "built/data"],
                 ["build-suite", "signals/s.jsonl", "--out", "built/suite/regression.yaml"]):
        result = project.run("signals", *args, env=NO_AUTOLOAD)
        assert result.exit_code == 0, result.output
    text = _all_text(project.path / "built")
    squeezed = text.replace(" ", "").replace("-", "")
    for kind, value in PLANTED.items():
        assert value not in text, kind
        assert value.replace(" ", "").replace("-", "") not in squeezed, kind
    assert find_pii(re.sub(r"\b[0-9a-f]{64}\b", "", text)) == []  # (hashes are hex digit runs)
    assert "1-800-555-0148" not in text  # the shop's own number too, unless --pii-allow or --pii-allow-context
    for manifest in (project.read_json("built/data/manifest.json"),
                     project.read_json("built/suite/regression.manifest.json")):
        assert manifest["pii_scrubbed"] is True
        by_type = manifest["pii"]["by_type"]
        assert all(by_type[kind] > 0 for kind in PLANTED), by_type
        assert set(manifest["pii"]["by_field"]) >= {"messages.user", "answer", "context"}
        for value in PLANTED.values():
            assert value not in json.dumps(manifest)
    log = (project.path / ".gatekeeper" / "audit.jsonl")
    audit_text = log.read_text() if log.is_file() else _all_text(project.path / ".gatekeeper")
    assert "signals.build-dataset" in audit_text and "signals.build-suite" in audit_text
    for value in PLANTED.values():
        assert value not in audit_text


def test_consent_retention_and_duplicates(project):
    rows = mixed_signals(200, seed=3)
    for i, row in enumerate(rows):
        if i % 10 == 0:
            row["consent"] = {"training": False, "evaluation": False}
            row["messages"][1]["content"] += " NOCONSENT-MARKER"
        if i % 10 == 1:
            row["retention"] = "legal-hold"
            row["messages"][1]["content"] += " LEGALHOLD-MARKER"
    duplicates = [dict(r, id=f"{r['id']}-retry") for r in rows[:40] if r["feedback"]["verdict"] == "accepted"]
    write_jsonl(project.path / "s.jsonl", rows + duplicates)
    result = project.run("signals", "build-dataset", "s.jsonl", "--out", "data", "--exclude-retention", "legal-hold",
                         "--json", env=NO_AUTOLOAD)
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    counts = manifest["counts"]
    assert counts["read"] == len(rows) + len(duplicates)
    everything = rows + duplicates
    assert counts["no_training_consent"] == sum(not r["consent"]["training"] for r in everything) >= 20
    assert counts["excluded_retention"] == sum(r["retention"] == "legal-hold" for r in everything) >= 20
    data = _all_text(project.path / "data")
    assert "NOCONSENT-MARKER" not in data and "LEGALHOLD-MARKER" not in data
    sft = [json.loads(line) for line in (project.path / "data/sft.jsonl").open()]
    keys = [json.dumps(r["messages"]) for r in sft]
    assert len(keys) == len(set(keys)) == counts["sft_examples"]
    retried = [d for d in duplicates if not Sequestration().is_evaluation(prompt_hash(d["messages"]))
               and d["consent"]["training"] and d["retention"] != "legal-hold"]
    assert counts["duplicate_sft"] == len(retried) > 0
    assert manifest["consent_verified"] is True and manifest["consent"] == "training"


def test_nothing_usable_is_a_usage_error(project):
    write_jsonl(project.path / "s.jsonl", [make_signal(i, consent={"training": False, "evaluation": False})
                                           for i in range(5)])
    result = project.run("signals", "build-dataset", "s.jsonl", "--out", "data", env=NO_AUTOLOAD)
    assert result.exit_code == 4
    assert "no signal is usable for training" in result.stderr
    assert not (project.path / "data" / "sft.jsonl").exists()
