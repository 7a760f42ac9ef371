"""The privacy record an auditor reads: which detector ran, what PII is left, how close the
generated rows come to the source rows — as JSON (``gatekeeper.privacy/1``) for the
provenance and the policy gate, and as a Markdown section for the report.

The JSON never holds a text value: counts, types and row indices only. The Markdown
section shows the closest pairs' texts (truncated), because an auditor cannot judge a
similarity figure without seeing the two rows; it is written for the data owner's eyes,
next to the data it describes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gatekeeper.gate.policy import PrivacyRules, privacy_deviations
from gatekeeper.signals.privacy.memorization import MemorizationReport
from gatekeeper.signals.privacy.pii import PiiScan

SCHEMA = "gatekeeper.privacy/1"
EXCERPT = 160


def privacy_record(scan: PiiScan | None, memorization: MemorizationReport | None, *,
                   anonymized: bool = False, residual: PiiScan | None = None) -> dict[str, Any]:
    """``scan``: PII found in the rows (before anonymization, if any); ``residual``: a second
    scan after anonymization — ``rows_with_pii`` is what is *left*, the figure the gate reads."""
    record: dict[str, Any] = {"schema": SCHEMA}
    if scan is not None:
        found = scan.as_dict()
        left = residual.as_dict() if residual is not None else (None if anonymized else found)
        record["detector"] = found.pop("detector")
        record["pii"] = {
            "found": {k: found[k] for k in ("rows", "rows_with_pii", "total", "by_type", "by_field")},
            "anonymized": anonymized,
            "rows_with_pii": left["rows_with_pii"] if left is not None else 0,
            "left_by_type": left["by_type"] if left is not None else {},
        }
    if memorization is not None:
        record["memorization"] = memorization.as_dict()
    return record


def check_privacy(rules: PrivacyRules | Mapping[str, Any], record: Mapping[str, Any] | None) -> list[str]:
    """The policy's ``data_management.privacy`` applied to ``record``: deviations, empty when it passes."""
    parsed = rules if isinstance(rules, PrivacyRules) else PrivacyRules.model_validate(dict(rules))
    return privacy_deviations(parsed, record)


def _excerpt(text: str) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= EXCERPT else flat[:EXCERPT - 1] + "…"


def render_privacy_markdown(record: Mapping[str, Any], generated: Sequence[str] = (),
                            sources: Sequence[str] = (), *, generated_ids: Sequence[str] = (),
                            source_ids: Sequence[str] = (), deviations: Sequence[str] | None = None) -> str:
    """The auditor's section: detector, PII by type and field, memorization thresholds and
    the closest pairs with both texts, and the policy's verdict when ``deviations`` is given."""
    lines = ["## Privacy", ""]
    detector = record.get("detector") or {}
    if detector:
        model = detector.get("ner_model") or {}
        lines.append(f"- PII detector: **{detector.get('name')}**"
                     + (f" with NER model `{model.get('name')}` {model.get('version', '')} "
                        f"({model.get('license', 'licence unknown')})" if model else " (no NER model)"))
        if detector.get("note"):
            lines.append(f"- Note: {detector['note']}")
    pii = record.get("pii")
    if pii:
        found = pii["found"]
        lines.append(f"- Rows with PII found: {found['rows_with_pii']} of {found['rows']} "
                     f"({found['total']} findings); anonymized: {'yes' if pii['anonymized'] else 'no'}; "
                     f"rows with PII left: **{pii['rows_with_pii']}**")
        if found["by_type"]:
            lines += ["", "| type | found |", "|---|---:|"]
            lines += [f"| {k} | {v} |" for k, v in found["by_type"].items()]
    memo = record.get("memorization")
    if memo:
        th = memo["thresholds"]
        emb = memo.get("embedding_model")
        lines += ["", f"Memorization: {memo['generated']} generated rows against {memo['sources']} source rows; "
                      f"{memo['method']}.",
                  f"Thresholds: n-gram overlap > {th['ngram_overlap']}"
                  + (f", embedding similarity > {th['embedding_similarity']}" if th.get("embedding_similarity")
                     is not None else ", embedding similarity not checked"
                     + ("" if emb else " (the MiniLM model is not installed)"))
                  + f". Flagged rows: **{memo['flagged']}**; highest n-gram overlap {memo['max_ngram_overlap']}"
                  + (f", highest embedding similarity {memo['max_embedding_similarity']}"
                     if memo.get("max_embedding_similarity") is not None else "") + ".", ""]
        if memo["pairs"]:
            lines += ["| # | generated | source | n-gram | contain. | embedding | flagged | generated text "
                      "| source text |", "|---:|---|---|---:|---:|---:|---|---|---|"]
            for k, p in enumerate(memo["pairs"], 1):
                g, s = p["generated"], p["source"]
                gid = generated_ids[g] if g < len(generated_ids) else str(g)
                sid = source_ids[s] if s < len(source_ids) else str(s)
                gtext = _excerpt(generated[g]) if g < len(generated) else ""
                stext = _excerpt(sources[s]) if s < len(sources) else ""
                cos = "" if p["embedding_similarity"] is None else f"{p['embedding_similarity']:.3f}"
                lines.append(f"| {k} | {gid} | {sid} | {p['ngram_overlap']:.3f} | {p['containment']:.3f} | {cos} | "
                             f"{'**yes**' if p['flagged'] else 'no'} | {gtext} | {stext} |")
    if deviations is not None:
        lines += ["", "Policy `data_management.privacy`: " + ("**passes**" if not deviations else "**fails**")]
        lines += [f"- {d}" for d in deviations]
    return "\n".join(lines) + "\n"
