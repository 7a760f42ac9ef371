"""From production signals to evaluation cases and training data, safely.

Four steps stand between a signal and a built file, in this order:

1. **consent** — a regression suite takes only signals whose user consented to evaluation
   use, a training set only those that consented to training;
2. **sequestration** — a deterministic split by the content hash of the prompt
   (:func:`prompt_hash`): a prompt whose hash falls in the evaluation share can only ever
   become an evaluation case, every other prompt only training data, so no evaluation case
   enters a training set however often either is rebuilt. Prompts of ``holdout`` suites
   are kept out of training as well;
3. **PII scrubbing** (:class:`PiiScrubber`) — emails, phone numbers, card numbers (Luhn
   checked), IBANs (mod-97 checked), IPv4/IPv6 addresses, US SSNs and UK NI numbers are
   replaced by ``[EMAIL]``, ``[PHONE]``…; the report counts what was removed by type and
   field, never the values;
4. **de-duplication** — by the SHA-256 of the normalised text (case, whitespace).

Each build writes a ``manifest.json``: sources, filters, counts, hashes, the PII report,
``pii_scrubbed: true`` and ``consent_verified: true``. ``gatekeeper tune`` merges the
training manifest into the candidate's provenance, where the policy's data-management
checks read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gatekeeper.files import sha256_file as file_sha256
from gatekeeper.pii import (  # noqa: F401  (PII_KINDS, PiiKind and the checks: re-exported, as before)
    PII_KINDS,
    PII_TYPES,
    PatternDetector,
    PiiDetector,
    PiiFinding,
    PiiKind,
    iban_valid,
    luhn_valid,
    normalize_text,
)
from gatekeeper.signals import DEFAULT_EVAL_FRACTION, DEFAULT_SALT, DEFAULT_SOURCE_ID
from gatekeeper.signals.privacy.pii import replace_findings
from gatekeeper.signals.records import Signal
from gatekeeper.types import UsageError, stable_hash

MANIFEST_FILE = "manifest.json"
DATASET_SCHEMA = "gatekeeper.signals.records-dataset/1"
SUITE_SCHEMA = "gatekeeper.signals.records-suite/1"
SFT_FILE = "sft.jsonl"
PREFERENCE_FILE = "preference.jsonl"


# --------------------------------------------------------------------------- hashing


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prompt_text(messages: Sequence[Mapping[str, str]]) -> str:
    """The prompt as one normalised text (roles kept, so a system prompt counts)."""
    return "\n".join(f"{m.get('role', '')}: {normalize_text(str(m.get('content', '')))}" for m in messages)


def prompt_hash(messages: Sequence[Mapping[str, str]]) -> str:
    """The content hash of a prompt that sequestration and de-duplication key on."""
    return sha256_text(prompt_text(messages))


@dataclass(frozen=True)
class Sequestration:
    """The deterministic split: prompt hash (salted) below ``eval_fraction`` → evaluation."""

    eval_fraction: float = DEFAULT_EVAL_FRACTION
    salt: str = DEFAULT_SALT

    def __post_init__(self) -> None:
        if not 0.0 < self.eval_fraction < 1.0:
            raise UsageError(f"the evaluation fraction must be between 0 and 1, not {self.eval_fraction}",
                             field="--eval-fraction")

    def is_evaluation(self, digest: str) -> bool:
        bucket = int(sha256_text(f"{self.salt}:{digest}")[:15], 16) / float(16**15)
        return bucket < self.eval_fraction

    def describe(self) -> dict[str, Any]:
        return {"method": "sha256(salt:sha256(normalised prompt)) < eval_fraction → evaluation",
                "salt": self.salt, "eval_fraction": self.eval_fraction}




# --------------------------------------------------------------------------- PII


@dataclass
class PiiReport:
    """What was removed: counts by type and by field, and which detector ran. Never the values."""

    detector: dict[str, Any] = field(default_factory=lambda: PatternDetector().describe())
    types: tuple[str, ...] = PII_TYPES
    counts: Counter[str] = field(default_factory=Counter)
    by_field: dict[str, Counter[str]] = field(default_factory=dict)
    texts_changed: int = 0
    signals_changed: int = 0

    def as_dict(self) -> dict[str, Any]:
        types = list(dict.fromkeys([*self.types, *sorted(self.counts)]))
        return {
            "detector": self.detector,
            "types_checked": types,
            "total": sum(self.counts.values()),
            "by_type": {k: self.counts.get(k, 0) for k in types},
            "by_field": {f: dict(sorted(c.items())) for f, c in sorted(self.by_field.items())},
            "texts_changed": self.texts_changed,
            "signals_changed": self.signals_changed,
        }


class PiiScrubber:
    """Replaces personal data with placeholders. ``allow`` lists values to keep (a business's
    own contact details); ``allow_context`` keeps values that also appear in the signal's
    retrieval context (knowledge-base text, not the user's) — off by default, because in
    some products the context itself is personal data.

    ``detector`` finds the data (:mod:`gatekeeper.signals.privacy`): by default the built-in
    patterns; the commands pass the best installed one (presidio with a named-entity model,
    when its plugin is installed). The report names the detector that ran."""

    def __init__(self, allow: Iterable[str] = (), *, allow_context: bool = False,
                 detector: PiiDetector | None = None) -> None:
        self.allow = {normalize_text(a) for a in allow if a.strip()}
        self.allow_context = allow_context
        self.detector = detector if detector is not None else PatternDetector()
        described = self.detector.describe()
        self.report = PiiReport(detector=described,
                                types=tuple(described.get("entities") or self.detector.entities or PII_TYPES))
        self._memo: dict[tuple[str, frozenset[str]], tuple[str, Counter[str]]] = {}
        self._found: dict[str, list[PiiFinding]] = {}

    def _analyse(self, texts: Iterable[str]) -> None:
        """Find the PII of every line not seen yet, in one batch (a model-backed detector
        runs its pipeline over the batch); lines repeat across signals, so each is analysed once."""
        new = list(dict.fromkeys(line for text in texts for line in text.split("\n")
                                 if line not in self._found))
        if new:
            self._found.update(zip(new, self.detector.analyze_many(new), strict=True))

    def scrub(self, text: str, where: str, *, keep: Collection[str] = ()) -> str:
        """``text`` with its PII replaced; counts what was replaced under ``where``."""
        kept = frozenset(keep)
        found: Counter[str] = Counter()
        lines = []
        # Line by line, remembered: prompts repeat the same system text and passages.
        for line in text.split("\n"):
            key = (line, kept)
            if key not in self._memo:
                self._memo[key] = self._replace(line, kept)
            clean, line_found = self._memo[key]
            lines.append(clean)
            found.update(line_found)
        text = "\n".join(lines)
        if found:
            self.report.counts.update(found)
            self.report.by_field.setdefault(where, Counter()).update(found)
            self.report.texts_changed += 1
        return text

    def _replace(self, text: str, keep: Collection[str]) -> tuple[str, Counter[str]]:
        if not text.strip():
            return text, Counter()
        self._analyse([text])
        return replace_findings(text, self._found[text], self.allow | set(keep), self.detector)

    def _context_values(self, signal: Signal) -> set[str]:
        if not self.allow_context:
            return set()
        values: set[str] = set()
        for passage in signal.context:
            for line in passage.split("\n"):
                if line.strip():
                    values.update(normalize_text(line[f.start:f.end]) for f in self._found[line])
        return values

    def scrub_signal(self, signal: Signal) -> Signal:
        """A copy of ``signal`` with messages, context, answer and edit scrubbed."""
        before = sum(self.report.counts.values())
        self._analyse([*(m["content"] for m in signal.messages), *signal.context, signal.answer,
                       signal.feedback.edited_text or ""])
        keep = self._context_values(signal)
        messages = [{**m, "content": self.scrub(m["content"], f"messages.{m['role']}", keep=keep)}
                    for m in signal.messages]
        context = [self.scrub(c, "context", keep=keep) for c in signal.context]
        answer = self.scrub(signal.answer, "answer", keep=keep)
        feedback = signal.feedback
        if feedback.edited_text:
            feedback = feedback.model_copy(update={"edited_text": self.scrub(feedback.edited_text, "edited_text",
                                                                             keep=keep)})
        if sum(self.report.counts.values()) != before:
            self.report.signals_changed += 1
        return signal.model_copy(update={"messages": messages, "context": context, "answer": answer,
                                         "feedback": feedback})


def find_pii(text: str, detector: PiiDetector | None = None) -> list[str]:
    """The PII types present in ``text`` (for tests and checks); values are not returned."""
    return [f.type for f in (detector or PatternDetector()).analyze(text)]


# --------------------------------------------------------------------------- selection


@dataclass
class Curation:
    """What the shared selection steps did, for the manifest and the terminal."""

    counts: Counter[str] = field(default_factory=Counter)

    def count(self, reason: str, n: int = 1) -> None:
        self.counts[reason] += n


@dataclass(frozen=True)
class CurationOptions:
    sequestration: Sequestration = field(default_factory=Sequestration)
    pii_allow: tuple[str, ...] = ()
    pii_allow_context: bool = False
    exclude_retention: tuple[str, ...] = ()
    holdout_hashes: frozenset[str] = frozenset()
    min_rating: float | None = None
    source_id: str = DEFAULT_SOURCE_ID
    # The PII detector (gatekeeper.signals.privacy.pii_detector); None: the built-in patterns.
    pii_detector: PiiDetector | None = None


def holdout_prompt_hashes(suites: Iterable[Any]) -> frozenset[str]:
    """Prompt hashes of every case of the given loaded suites (kept out of training)."""
    return frozenset(prompt_hash(case.messages) for suite in suites for case in suite.cases)


def _target(signal: Signal) -> str | None:
    """The answer a user stands behind: the accepted answer, or the correction."""
    verdict = signal.feedback.verdict
    if verdict == "accepted":
        return signal.answer
    if verdict in ("edited", "rejected") and signal.feedback.edited_text:
        return signal.feedback.edited_text
    return None


def select(
    signals: Iterable[Signal], purpose: str, options: CurationOptions, curation: Curation,
    scrubber: PiiScrubber,
) -> Iterable[tuple[str, Signal]]:
    """(prompt hash, scrubbed signal) for the signals ``purpose`` ("training" or "evaluation")
    may use: consent, retention, sequestration side, holdouts — each exclusion counted."""
    for signal in signals:
        curation.count("read")
        consented = signal.consent.training if purpose == "training" else signal.consent.evaluation
        if not consented:
            curation.count(f"no_{purpose}_consent")
            continue
        if signal.retention is not None and signal.retention in options.exclude_retention:
            curation.count("excluded_retention")
            continue
        # The split keys on the prompt as the user sent it, before scrubbing, so the side a
        # prompt falls on never depends on the scrubber's version.
        digest = prompt_hash(signal.messages)
        evaluation_side = options.sequestration.is_evaluation(digest)
        if purpose == "training" and evaluation_side:
            curation.count("sequestered_for_evaluation")
            continue
        if purpose == "evaluation" and not evaluation_side:
            curation.count("reserved_for_training")
            continue
        clean = scrubber.scrub_signal(signal)
        if purpose == "training" and (digest in options.holdout_hashes
                                      or prompt_hash(clean.messages) in options.holdout_hashes):
            curation.count("in_holdout_suite")
            continue
        yield digest, clean


# --------------------------------------------------------------------------- files


def _publish(tmp: str, path: Path) -> None:
    """Give the temporary file the mode a plain ``open`` would (mkstemp makes it 0600), then
    rename it over ``path``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def write_jsonl_atomic(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as JSONL through a temporary file and a rename; returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
                count += 1
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _gatekeeper_version() -> str:
    from gatekeeper.host.plugins import _gatekeeper_version as installed_version

    return installed_version()


def _manifest_base(kind: str, schema: str, sources: Sequence[str], filters: Mapping[str, Any],
                   options: CurationOptions, curation: Curation, scrubber: PiiScrubber) -> dict[str, Any]:
    return {
        "schema": schema,
        "kind": kind,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "gatekeeper_version": _gatekeeper_version(),
        "sources": [{"location": s, "source_id": options.source_id} for s in sources],
        "filters": dict(filters),
        "sequestration": options.sequestration.describe(),
        "counts": dict(sorted(curation.counts.items())),
        "pii": scrubber.report.as_dict(),
        "pii_scrubbed": True,
        "consent_verified": True,
        "consent": "training" if kind == "dataset" else "evaluation",
    }


# --------------------------------------------------------------------------- datasets


@dataclass
class BuiltDataset:
    out: Path
    manifest: dict[str, Any]


def build_dataset(
    signals: Iterable[Signal], out: Path, *, sources: Sequence[str], filters: Mapping[str, Any],
    options: CurationOptions,
) -> BuiltDataset:
    """Write ``sft.jsonl`` (chat examples ending in the answer users stand behind),
    ``preference.jsonl`` (prompt, chosen correction, rejected original) and the manifest."""
    curation, scrubber = Curation(), PiiScrubber(options.pii_allow, allow_context=options.pii_allow_context,
                                          detector=options.pii_detector)
    sft: dict[str, dict[str, Any]] = {}
    pairs: dict[str, dict[str, Any]] = {}
    for digest, signal in select(signals, "training", options, curation, scrubber):
        target = _target(signal)
        if target is None:
            curation.count("no_usable_answer")
            continue
        rating = signal.feedback.rating
        if options.min_rating is not None and rating is not None and rating < options.min_rating:
            curation.count("below_min_rating")
            continue
        base = {"source": options.source_id, "signal_id": signal.id, "prompt_sha256": digest,
                **({"topic": str(signal.attributes["topic"])} if "topic" in signal.attributes else {})}
        messages = [dict(m) for m in signal.messages]
        key = sha256_text(prompt_text(messages) + "\nassistant: " + normalize_text(target))
        if key in sft:
            curation.count("duplicate_sft")
        else:
            sft[key] = {"messages": [*messages, {"role": "assistant", "content": target}], **base}
        if signal.feedback.verdict in ("edited", "rejected") and normalize_text(target) != normalize_text(
            signal.answer
        ):
            pair_key = sha256_text(prompt_text(messages) + "\n" + normalize_text(target) + "\n"
                                   + normalize_text(signal.answer))
            if pair_key in pairs:
                curation.count("duplicate_pair")
            else:
                pairs[pair_key] = {"prompt": messages, "chosen": target, "rejected": signal.answer, **base}
    if not sft:
        raise UsageError("no signal is usable for training after consent, sequestration and feedback "
                         "filtering (see the counts with --json)", field="location")
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    for name, rows in ((SFT_FILE, sft), (PREFERENCE_FILE, pairs)):
        path = out / name
        count = write_jsonl_atomic(path, rows.values())
        files[name] = {"rows": count, "sha256": file_sha256(path),
                       "format": "sft" if name == SFT_FILE else "preference"}
    curation.count("sft_examples", len(sft))
    curation.count("preference_pairs", len(pairs))
    manifest = _manifest_base("dataset", DATASET_SCHEMA, sources, filters, options, curation, scrubber)
    manifest["files"] = files
    manifest["holdout_prompts"] = len(options.holdout_hashes)
    manifest["data"] = {"sources": [options.source_id], "pii_scrubbed": True, "consent_verified": True}
    write_text_atomic(out / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return BuiltDataset(out, manifest)


def dataset_provenance(data: Path) -> dict[str, Any] | None:
    """What a tuner's provenance should add about ``data`` when it was built from signals:
    the manifest next to it names the file with the same SHA-256. ``None`` otherwise."""
    manifest_path = data.parent / MANIFEST_FILE
    if not manifest_path.is_file() or not data.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UsageError("invalid JSON", file=str(manifest_path)) from None
    entry = (manifest.get("files") or {}).get(data.name)
    if manifest.get("schema") != DATASET_SCHEMA or not isinstance(entry, dict):
        return None
    if entry.get("sha256") != file_sha256(data):
        raise UsageError(f"{data.name} changed after it was built (its SHA-256 differs from the manifest's); "
                         "rebuild it with gatekeeper signals build-dataset", file=str(data), field="--data")
    return {
        "sources": list((manifest.get("data") or {}).get("sources") or []),
        "pii_scrubbed": manifest.get("pii_scrubbed") is True,
        "consent_verified": manifest.get("consent_verified") is True,
        "manifest": {"path": str(manifest_path), "sha256": file_sha256(manifest_path)},
        "pii": manifest.get("pii"),
        "sequestration": manifest.get("sequestration"),
        "signal_sources": [s.get("location") for s in manifest.get("sources") or []],
    }


# --------------------------------------------------------------------------- suites


DEFAULT_SUITE_EVALUATORS: tuple[Any, ...] = (
    {"name": "rouge_l", "as": "rouge_l"},
    {"name": "token_f1", "as": "token_f1"},
)


@dataclass
class BuiltSuite:
    suite_path: Path
    dataset_path: Path
    manifest: dict[str, Any]


def _suite_case(signal: Signal, digest: str, expected: str | None, slices: Sequence[str]) -> dict[str, Any]:
    messages = signal.messages
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    turns = [m for m in messages if m["role"] != "system"]
    user = turns[-1]["content"] if turns else ""
    if len(turns) > 1:  # earlier turns become a transcript in front of the last message
        history = "\n".join(f"{m['role']}: {m['content']}" for m in turns[:-1])
        user = f"{history}\n{turns[-1]['role']}: {user}"
    row: dict[str, Any] = {
        "id": f"sig-{digest[:12]}",
        "input": user,
        "system": system or "",
        "context": "\n\n".join(signal.context),
        "signal_id": signal.id,
        "model_version": signal.model_version,
        "verdict": signal.feedback.verdict,
        "original_answer": signal.answer,
        "tags": [signal.feedback.verdict, *signal.flags],
    }
    if expected is not None:
        row["expected"] = expected
    for name in slices:
        row[name] = str(signal.slice_values.get(name, "unknown"))
    return row


def build_suite(
    signals: Iterable[Signal], suite_path: Path, *, name: str, sources: Sequence[str], filters: Mapping[str, Any],
    options: CurationOptions, slices: Sequence[str] = ("topic",), evaluators: Sequence[Any] | None = None,
    include_uncorrected: bool = False,
) -> BuiltSuite:
    """A regression suite from corrected and rejected answers: the correction is the
    expected answer. Writes the suite YAML, its dataset JSONL (``<stem>.jsonl`` beside it)
    and ``<stem>.manifest.json``. One case per prompt (the latest signal wins)."""
    import yaml

    curation, scrubber = Curation(), PiiScrubber(options.pii_allow, allow_context=options.pii_allow_context,
                                          detector=options.pii_detector)
    cases: dict[str, tuple[datetime, dict[str, Any]]] = {}
    for digest, signal in select(signals, "evaluation", options, curation, scrubber):
        verdict = signal.feedback.verdict
        if verdict not in ("edited", "rejected"):
            curation.count(f"not_corrected_{verdict}")
            continue
        expected = signal.feedback.edited_text
        if expected is None and not include_uncorrected:
            curation.count("rejected_without_correction")
            continue
        if digest in cases:
            curation.count("duplicate_prompt")
            if signal.time <= cases[digest][0]:
                continue
        cases[digest] = (signal.time, _suite_case(signal, digest, expected, slices))
    if not cases:
        raise UsageError("no corrected or rejected signal is usable for evaluation after consent and "
                         "sequestration filtering", field="location")
    rows = [row for _, row in sorted(cases.values(), key=lambda tr: tr[1]["id"])]
    dataset_path = suite_path.with_suffix(".jsonl")
    write_jsonl_atomic(dataset_path, rows)
    has_system = all(r["system"] for r in rows)
    messages = ([{"role": "system", "content": "{{ system }}"}] if has_system else []) + [
        {"role": "user", "content": "{{ input }}" if has_system else "{{ system }}\n\n{{ input }}"}]
    scorers = list(evaluators or DEFAULT_SUITE_EVALUATORS)
    if include_uncorrected:
        scorers.append({"name": "not_contains", "as": "not_rejected_answer", "field": "original_answer"})
    suite = {
        "suite": name,
        "description": (f"Regression cases from {len(rows)} production answers users corrected or rejected "
                        f"(built by gatekeeper signals build-suite from {', '.join(sources)}); "
                        "the correction is the expected answer."),
        "prompt": {"messages": messages},
        "dataset": dataset_path.name,
        "slices": list(slices),
        "evaluators": scorers,
        **({"detectors": ["grounding"]} if any(r["context"] for r in rows) else {}),
        "tags": ["signals", "regression"],
    }
    header = ("# Built by `gatekeeper signals build-suite`; do not edit by hand (rebuild instead).\n"
              f"# Sequestered test set: pin it in the policy with sha256 {file_sha256(dataset_path)}.\n")
    write_text_atomic(suite_path, header + yaml.safe_dump(suite, sort_keys=False, allow_unicode=True, width=100))
    curation.count("cases", len(rows))
    manifest = _manifest_base("suite", SUITE_SCHEMA, sources, filters, options, curation, scrubber)
    dataset_sha = file_sha256(dataset_path)
    manifest.update({
        "suite": name,
        "suite_file": {"path": str(suite_path), "sha256": file_sha256(suite_path)},
        "dataset_file": {"path": str(dataset_path), "sha256": dataset_sha, "rows": len(rows)},
        "prompt_set_sha256": stable_hash(sorted(cases)),
        "policy_snippet": {"data_management": {"sequestered_test_sets": [{"suite": name, "sha256": dataset_sha}]}},
    })
    manifest_path = suite_path.with_name(f"{suite_path.stem}.manifest.json")
    write_text_atomic(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return BuiltSuite(suite_path, dataset_path, manifest)


PROVENANCE_FILE = "provenance.json"


def merge_dataset_provenance(provenance: dict[str, Any], extra: Mapping[str, Any] | None, out: Path) -> dict[str, Any]:
    """Add what the signals manifest says about the training data (sources, ``pii_scrubbed``,
    ``consent_verified``, the manifest's hash) to a tuner's provenance, and rewrite the
    ``provenance.json`` the tuner wrote in ``out`` so the gate reads the same."""
    if not extra:
        return provenance
    data = dict(provenance.get("data") or {})
    sources = list(dict.fromkeys([*(data.get("sources") or []), *extra.get("sources", [])]))
    data.update({k: v for k, v in extra.items() if k != "sources"}, sources=sources)
    merged = {**provenance, "data": data}
    path = out / PROVENANCE_FILE
    if path.is_file():
        write_text_atomic(path, json.dumps(merged, indent=2, sort_keys=True, default=str) + "\n")
    return merged
