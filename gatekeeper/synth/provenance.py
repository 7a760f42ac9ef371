"""Provenance of generated rows and of the files they are written to.

Every generated row carries ``synthetic: true``, ``origin: synthetic`` and a
``provenance`` object: the generator (provider, name, version, content digest; the spec
with secrets blanked), the template's and the schema's SHA-256, the persona, the seed
row ids it was shown, its taxonomy cell and what each filter found. The manifest's
``data`` section is what ``gatekeeper tune`` adds to a candidate's provenance, where the
policy's ``data_management.synthetic.training`` rule reads the synthetic share.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.engine.judging import redacted_spec
from gatekeeper.files import read_jsonl
from gatekeeper.gate.policy import origin_counts
from gatekeeper.types import ModelSpec, stable_hash

if TYPE_CHECKING:
    from gatekeeper.synth.prompts import Template
    from gatekeeper.synth.state import Candidate, SynthOptions

MANIFEST_FILE = "synth.manifest.json"
MANIFEST_SCHEMA = "gatekeeper.synth/1"


def model_entry(spec: str, model: Any) -> dict[str, Any]:
    ident = model.identity
    return {"spec": redacted_spec(ModelSpec.parse(spec)), "provider": ident.provider, "name": ident.name,
            "version": ident.version, "digest": ident.digest}


def row_provenance(c: Candidate, generator: Any, options: SynthOptions, template: Template,
                   schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "synthetic": True,
        "generator": model_entry(options.generator, generator),
        "template_sha256": template.sha256,
        "template": template.origin,
        "schema_sha256": stable_hash(schema),
        "persona": c.persona.id,
        "seed_ids": [str(s.get("id")) for s in c.seeds],
        "cell": c.cell.key,
        "sampling": {"temperature": options.sampling.temperature, "seed": options.sampling.seed,
                     "max_tokens": options.sampling.max_tokens},
        **({"turns": options.turns, "candidate": options.candidate} if options.turns else {}),
        "filters": {},
    }


def data_card(rows: Sequence[Mapping[str, Any]], slices: Sequence[str], sources: Iterable[str]) -> dict[str, Any]:
    """The ``data`` section of provenance for a data set: its sources and synthetic share."""
    return {"sources": sorted(set(sources)), "synthetic": origin_counts(rows, slices)}


def training_data_card(path: Path, slices: Sequence[str] = ("topic",)) -> dict[str, Any] | None:
    """What ``gatekeeper tune`` records about a JSONL training file's origin: the synthetic
    share overall and per slice (from each row's ``synthetic``/``origin`` marks) and, when a
    synth manifest sits next to it and names this file with the same SHA-256, that manifest's
    hash and privacy record. ``None`` for a file that is not JSONL."""
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return None
    rows = [row for _, row in read_jsonl(path)]
    card: dict[str, Any] = {"synthetic": origin_counts(rows, [s for s in slices if any(s in r for r in rows)])}
    manifest_path = path.parent / MANIFEST_FILE
    if manifest_path.is_file():
        from gatekeeper.signals.curation import file_sha256

        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return card
        entry = (manifest.get("files") or {}).get(path.name)
        if isinstance(entry, dict) and entry.get("sha256") == file_sha256(path):
            card["synth_manifest"] = {"path": str(manifest_path), "sha256": file_sha256(manifest_path)}
            card["sources"] = list((manifest.get("data") or {}).get("sources") or [])
            if entry.get("privacy"):
                card["privacy"] = entry["privacy"]
            if entry.get("pii_scrubbed") is True:
                card["pii_scrubbed"] = True
    return card


def training_origin(data: Path, policy_path: Path | None) -> dict[str, Any] | None:
    """The origin card of a training file for ``gatekeeper tune``; with a policy whose
    ``data_management.synthetic.training`` rule the file breaks, a usage error before any
    training (the same rule the gate's scope check applies to the provenance afterwards)."""
    slices: Sequence[str] = ("topic",)
    rule = None
    if policy_path is not None:
        from gatekeeper.gate.policy import load_policy

        rule = load_policy(policy_path).data_management.synthetic.training
        if rule is not None:
            slices = list(dict.fromkeys([*slices, *rule.slices]))
    card = training_data_card(data, slices)
    if rule is not None:
        from gatekeeper.gate.policy import synthetic_share_deviations
        from gatekeeper.types import UsageError

        found = synthetic_share_deviations(rule, (card or {}).get("synthetic"), "data_management.synthetic.training",
                                           f"training data {data.name}")
        if found:
            raise UsageError("; ".join(found), file=str(policy_path), field="data_management.synthetic.training")
    return card
