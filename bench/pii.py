"""PII detection: precision and recall per entity type on a labelled sample, the presidio
detector against the old pattern scrubber, in the same run.

The sample (``bench/data/pii_labelled.jsonl``, written for this project) has 78 short texts in
the style of support conversations from 13 locales, 159 labelled spans — person names,
street addresses and postcodes, organisations, places, emails, phone numbers, card numbers,
IBANs, IP addresses, US SSNs, UK NI numbers and national IDs of ten countries (checksums
valid) — and 16 texts with no personal data at all (order numbers, versions, prices, product
names, greetings: what a detector must leave alone). Spans are written inline:
``[[person:Maria Gonzalez]]``.

A gold span is *found* when a prediction of the same type overlaps it (types: ``ipv4`` and
``ipv6`` count as ``ip``); a prediction is *correct* when it overlaps a gold span of its
type. ``any type`` ignores the type (what matters for privacy: is the value hidden?), and
``chars hidden`` is the share of gold PII characters covered by some prediction.

    python bench/pii.py [--json out.json]

Needs ``llm-gatekeeper-presidio`` installed for the presidio rows (the patterns rows run
anywhere). Timings are wall-clock on a shared machine: compare the two detectors' times
within one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gatekeeper.pii import PatternDetector, PiiDetector  # noqa: E402

SAMPLE = HERE / "data" / "pii_labelled.jsonl"
MARK = re.compile(r"\[\[([a-z_]+):(.+?)\]\]")
TYPES = ("person", "address", "organization", "location", "email", "phone", "card_number", "iban", "ip",
         "us_ssn", "uk_ni", "national_id")


def load(path: Path = SAMPLE) -> list[dict[str, Any]]:
    """Texts with the markup removed and the gold spans as (start, end, type)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        text, spans, pos, last = [], [], 0, 0
        for m in MARK.finditer(row["text"]):
            text.append(row["text"][last:m.start()])
            pos += m.start() - last
            value = m.group(2)
            spans.append((pos, pos + len(value), m.group(1)))
            text.append(value)
            pos += len(value)
            last = m.end()
        text.append(row["text"][last:])
        out.append({"id": row["id"], "locale": row["locale"], "text": "".join(text), "spans": spans})
    return out


def _type(name: str) -> str:
    return "ip" if name in ("ipv4", "ipv6") else name


def evaluate(detector: PiiDetector, rows: list[dict[str, Any]]) -> dict[str, Any]:
    start = time.perf_counter()
    predictions = detector.analyze_many([r["text"] for r in rows])
    seconds = time.perf_counter() - start
    found: dict[str, list[int]] = defaultdict(lambda: [0, 0])   # type -> [gold found, gold total]
    right: dict[str, list[int]] = defaultdict(lambda: [0, 0])   # type -> [predictions correct, predictions]
    any_found = any_total = any_right = any_pred = chars = chars_total = 0
    negatives_flagged = 0
    for row, preds in zip(rows, predictions, strict=True):
        spans = row["spans"]
        pred = [(f.start, f.end, _type(f.type)) for f in preds]
        if not spans and pred:
            negatives_flagged += 1
        for s, e, t in spans:
            found[t][1] += 1
            found[t][0] += any(ps < e and s < pe and pt == t for ps, pe, pt in pred)
            any_total += 1
            any_found += any(ps < e and s < pe for ps, pe, _ in pred)
            chars_total += e - s
            chars += sum(1 for i in range(s, e) if any(ps <= i < pe for ps, pe, _ in pred))
        for ps, pe, pt in pred:
            right[pt][1] += 1
            right[pt][0] += any(ps < e and s < pe and t == pt for s, e, t in spans)
            any_pred += 1
            any_right += any(ps < e and s < pe for s, e, _ in spans)

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 3) if b else None

    per_type = {}
    for t in TYPES:
        p = ratio(*right[t]) if right[t][1] else None
        r = ratio(*found[t])
        f1 = round(2 * p * r / (p + r), 3) if p and r else (0.0 if r is not None else None)
        per_type[t] = {"gold": found[t][1], "found": found[t][0], "predicted": right[t][1],
                       "precision": p, "recall": r, "f1": f1}
    return {"detector": detector.name, "seconds": round(seconds, 3), "per_type": per_type,
            "any_type": {"precision": ratio(any_right, any_pred), "recall": ratio(any_found, any_total),
                         "predicted": any_pred},
            "chars_hidden": ratio(chars, chars_total),
            "negative_texts_flagged": negatives_flagged,
            "negative_texts": sum(1 for r in rows if not r["spans"])}


def _fmt(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    rows = load()
    print(f"sample: {len(rows)} texts, {sum(len(r['spans']) for r in rows)} labelled spans, "
          f"{sum(1 for r in rows if not r['spans'])} texts without PII")
    detectors: list[tuple[str, PiiDetector]] = [("patterns (old scrubber)", PatternDetector())]
    try:
        from gatekeeper_presidio.detector import ENTITIES, PresidioDetector
    except ImportError:
        print("llm-gatekeeper-presidio is not installed: only the pattern scrubber is measured")
    else:
        load_start = time.perf_counter()
        default = PresidioDetector()
        default.analyze("warm-up: load spaCy and the recognizers")
        print(f"presidio engine loaded in {time.perf_counter() - load_start:.1f} s (once per process)")
        detectors += [("presidio (default types)", default),
                      ("presidio (all types)", PresidioDetector({"entities": list(ENTITIES)}))]
    results = {label: evaluate(d, rows) for label, d in detectors}
    labels = list(results)
    print("\nprecision / recall per type (a gold span is found when a prediction of its type overlaps it)")
    print(f"{'type':<13}{'gold':>5}  " + "  ".join(f"{label:^26}" for label in labels))
    print(f"{'':<13}{'':>5}  " + "  ".join(f"{'P':>8}{'R':>8}{'F1':>8}  " for _ in labels))
    for t in TYPES:
        cells = []
        for label in labels:
            m = results[label]["per_type"][t]
            cells.append(f"{_fmt(m['precision']):>8}{_fmt(m['recall']):>8}{_fmt(m['f1']):>8}  ")
        print(f"{t:<13}{results[labels[0]]['per_type'][t]['gold']:>5}  " + "  ".join(cells))
    print()
    for label in labels:
        r = results[label]
        print(f"{label:<26} any type: P {_fmt(r['any_type']['precision'])} R {_fmt(r['any_type']['recall'])}; "
              f"PII characters hidden {_fmt(r['chars_hidden'])}; texts without PII flagged "
              f"{r['negative_texts_flagged']}/{r['negative_texts']}; {r['seconds']:.2f} s for {len(rows)} texts")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
