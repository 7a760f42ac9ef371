"""The privacy filters of a synth run, on the privacy API of :mod:`gatekeeper.signals.privacy`:
PII in the generated rows (anonymized with ``--pii scrub``, the rows dropped with ``--pii
drop``) and memorization — a generated row too close to a seed row (character n-grams,
MiniLM embeddings) is dropped as ``memorized``. The privacy record and its Markdown section
go into the synth report; each row's provenance gets its own findings and closest seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gatekeeper.synth import filters
from gatekeeper.synth.seeds import row_text
from gatekeeper.types import UsageError

if TYPE_CHECKING:
    from gatekeeper.synth.seeds import Seeds
    from gatekeeper.synth.state import Candidate, SynthOptions

PII_MODES = ("scrub", "drop", "off")


def detector(session: Any, mode: str, name: str) -> Any:
    """The PII detector for ``--pii``/``--pii-detector``, or ``None`` for ``--pii off``."""
    if mode not in PII_MODES:
        raise UsageError(f"--pii must be one of {', '.join(PII_MODES)}, not {mode!r}", field="--pii")
    if mode == "off":
        return None
    from gatekeeper.signals.privacy import pii_detector

    registries = getattr(session, "registries", None)
    if registries is not None and not hasattr(registries, "pii_detectors"):
        registries = None  # a host without the detector kind: the built-in patterns
    return pii_detector(registries, name)


def _fields(c: Candidate) -> dict[str, str]:
    """The generated text of a candidate, by field (conversation turns as ``turn1``...)."""
    value = c.value or {}
    out = {k: v for k, v in value.items() if isinstance(v, str)}
    for i, m in enumerate(value.get("messages") or [], 1):
        out[f"turn{i}"] = str(m.get("content", ""))
    return out


def _write_back(c: Candidate, fields: dict[str, str]) -> None:
    assert c.value is not None
    for key, text in fields.items():
        if key.startswith("turn") and key[4:].isdigit() and "messages" in c.value:
            c.value["messages"][int(key[4:]) - 1]["content"] = text
            if "messages" in c.row:
                c.row["messages"] = c.value["messages"]
        else:
            c.value[key] = text
            if key in c.row:
                c.row[key] = text


def apply(pii_detector: Any, candidates: list[Candidate], seeds: Seeds, options: SynthOptions) -> dict[str, Any]:
    """Run PII and memorization over the surviving candidates; returns the report section."""
    from gatekeeper.signals.privacy import (
        anonymize_rows,
        check_memorization,
        embedding_encoder,
        privacy_record,
        render_privacy_markdown,
        scan_rows,
    )

    alive = [c for c in candidates if c.dropped is None]
    texts = [_fields(c) for c in alive]
    residual = scan = None
    if pii_detector is None:  # --pii off: memorization is still checked
        pass
    elif options.pii == "scrub":
        cleaned, scan = anonymize_rows(pii_detector, texts)
        for c, before, after in zip(alive, texts, cleaned, strict=True):
            if after != before:
                _write_back(c, after)
        residual = scan_rows(pii_detector, cleaned)
    else:
        scan = scan_rows(pii_detector, texts)
    for c, found in zip(alive, scan.rows if scan is not None else [], strict=False):
        types: dict[str, int] = {}
        for counts in found.values():
            for t, n in counts.items():
                types[t] = types.get(t, 0) + n
        c.filters["pii"] = {"found": types, "anonymized": options.pii == "scrub" and bool(types)}
        if options.pii == "drop" and types:
            c.drop("pii", "personal data found: " + ", ".join(f"{t} {n}" for t, n in sorted(types.items())))
    if pii_detector is not None and options.pii == "drop":
        residual = scan_rows(pii_detector, [_fields(c) for c in alive if c.dropped is None])

    remaining = [c for c in alive if c.dropped is None]
    gen_texts = [row_text(c.row) for c in remaining]
    seed_texts = [row_text(r) for r in seeds.rows]
    encoder = embedding_encoder() if options.max_embedding_similarity is not None else None
    memo = check_memorization(
        gen_texts, seed_texts, max_ngram_overlap=options.max_ngram_overlap,
        max_embedding_similarity=options.max_embedding_similarity,
        embed=filters.embed if encoder else None, embedding_model=encoder[1] if encoder else None,
    )
    for c, closest in zip(remaining, memo.closest, strict=True):
        if closest is None:
            c.filters["memorization"] = {"closest_seed": None}
            continue
        c.filters["memorization"] = {
            "closest_seed": seeds.rows[closest.source]["id"], "ngram_overlap": round(closest.ngram_overlap, 4),
            "embedding_similarity": None if closest.embedding_similarity is None
            else round(closest.embedding_similarity, 4), "flagged": closest.flagged,
        }
    for i in memo.flagged_rows:
        c = remaining[i]
        m = c.filters["memorization"]
        c.drop("memorized", f"too close to seed {m['closest_seed']} (n-gram {m['ngram_overlap']}, "
                            f"embedding {m['embedding_similarity']})")
    record = privacy_record(scan, memo, anonymized=options.pii == "scrub", residual=residual)
    gen_ids = [c.id for c in remaining]
    seed_ids = [str(r["id"]) for r in seeds.rows]
    record["generated_ids"] = gen_ids
    record["source_ids"] = seed_ids
    record["pii_mode"] = options.pii
    markdown = render_privacy_markdown(record, gen_texts, seed_texts, generated_ids=gen_ids, source_ids=seed_ids)
    return {"record": record, "markdown": markdown}
