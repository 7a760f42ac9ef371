"""Write the bundled production telemetry of the support assistant (``suites/signals/``).

The signals are synthetic, written for this project: the Northwind Outfitters assistant
(model ``support-assistant``) answering the curated training questions of
``training_examples.py`` as customers and agents ask them — with greetings, typos, order
numbers, and now and then personal data (emails, phone numbers, card numbers, IBANs, IP
addresses, SSNs, UK NI numbers) that curation must scrub. Agents accept, edit or reject
each draft with rates that depend on the topic, the agent's role and the model version;
some users gave no consent for training or evaluation; some signals are retries
(duplicates). No question of the evaluation suite is used.

Files (Parquet, the flat layout of ``gatekeeper.signals.records``):

- ``window1.parquet``: two weeks of version "1" in production (the history);
- ``window2-better.parquet`` / ``window2-worse.parquet``: three days of canary, version
  "1" on 90 % of traffic and version "2" on 10 %; version 2 is accepted at least as often
  as version 1 in the first, clearly less often in the second. The version-1 part of both
  is the same.

Deterministic by ``--seed``: ``python suites/tools/make_signals.py`` rewrites the files,
``--check`` compares them with a fresh build (exit 1 when they differ).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from build_demo import context_for, load_passages, prompt_templates, render_messages
from demo_types import TrainingExample
from training_examples import EXAMPLES

SUITES = Path(__file__).resolve().parent.parent
OUT = SUITES / "signals"
MODEL = "support-assistant"
SEED = 20261116

TOPIC_OF_DOC = {
    "returns-policy": "returns", "refund-processing": "returns", "damaged-items": "returns",
    "shipping-domestic": "shipping", "shipping-international": "shipping",
    "store-pickup": "orders", "order-changes": "orders",
    "price-match": "billing", "payment-methods": "billing", "gift-cards": "billing",
    "trailhead-rewards": "loyalty", "warranty": "warranty", "repairs-care": "warranty",
    "account-privacy": "account", "gear-rentals": "rentals",
}
"""The suite's topic of each passage (as in ``data/support_cases.jsonl``)."""

ACCEPT_V1 = {"returns": 0.70, "billing": 0.60, "shipping": 0.74, "orders": 0.68, "warranty": 0.56,
             "loyalty": 0.64, "account": 0.70, "rentals": 0.60}
"""Version 1's acceptance rate among drafts that got feedback, by topic."""
ROLE_SHIFT = {"agent": 0.0, "senior_agent": -0.08, "customer": 0.05}
"""Senior agents correct more; customers in self-service chat accept more readily."""
VERSION_SHIFT = {"1": 0.0, "2-better": 0.07, "2-worse": -0.20}
ROLES = (("agent", 0.66), ("senior_agent", 0.22), ("customer", 0.12))
CHANNELS = (("chat", 0.55), ("email", 0.35), ("web", 0.10))
LOCALES = (("en-US", 0.78), ("en-CA", 0.10), ("en-GB", 0.12))
RETENTION = (("standard-1y", 0.85), ("short-30d", 0.13), ("legal-hold", 0.02))

PREFIXES = ("", "", "", "hi, ", "Hello! ", "hey - ", "Quick question: ", "Hi there, ", "good morning, ")
SUFFIXES = ("", "", "", " thanks", " Thanks!", " thx", " Thank you.", " ??")


@dataclass(frozen=True)
class Window:
    name: str
    start: datetime
    days: int
    signals: int
    versions: tuple[tuple[str, str, float], ...]
    """(model version, behaviour key of VERSION_SHIFT, share of traffic)"""


WINDOW1 = Window("window1", datetime(2026, 11, 2, tzinfo=UTC), 14, 6000, (("1", "1", 1.0),))
WINDOW2_START = datetime(2026, 11, 16, tzinfo=UTC)


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def _luhn_complete(digits: str) -> str:
    """``digits`` plus the check digit that makes the whole number pass the Luhn test."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return digits + str((10 - total % 10) % 10)


def _iban(rng: random.Random) -> str:
    bban = "".join(rng.choice("0123456789") for _ in range(18))
    country = "DE"
    numeric = int(bban + "".join(str(ord(c) - 55) for c in country) + "00")
    check = 98 - numeric % 97
    raw = f"{country}{check:02d}{bban}"
    return " ".join(raw[i:i + 4] for i in range(0, len(raw), 4))


FIRST = ("jane", "omar", "li", "maria", "sam", "priya", "tom", "ana", "kofi", "emma")
LAST = ("doe", "haddad", "chen", "garcia", "lee", "patel", "brown", "silva", "mensah", "wright")


def personal_detail(rng: random.Random, topic: str) -> tuple[str, str]:
    """(kind, sentence) with one piece of personal data, as customers add it."""
    name = f"{rng.choice(FIRST)}.{rng.choice(LAST)}{rng.randint(1, 99)}"
    kinds = ["email", "phone", "card", "iban", "ip", "ssn", "ni"]
    weights = [30, 25, 14 if topic in ("billing", "returns") else 4, 6 if topic in ("billing", "returns") else 1,
               10 if topic == "account" else 2, 3 if topic == "account" else 1, 3]
    kind = rng.choices(kinds, weights=weights)[0]
    if kind == "email":
        return kind, f"My email is {name}@{rng.choice(('example.com', 'mail.example', 'example.org'))}."
    if kind == "phone":
        return kind, f"You can call me at ({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randint(0, 9999):04d}."
    if kind == "card":
        number = _luhn_complete("4" + "".join(rng.choice("0123456789") for _ in range(14)))
        shown = " ".join(number[i:i + 4] for i in range(0, 16, 4))
        return kind, f"I paid with card {shown}."
    if kind == "iban":
        return kind, f"Can the refund go to my bank account {_iban(rng)}?"
    if kind == "ip":
        address = ".".join(str(rng.randint(lo, hi)) for lo, hi in ((11, 199), (0, 255), (0, 255), (1, 254)))
        return kind, f"The login attempt came from {address}."
    if kind == "ssn":
        ssn = f"{rng.randint(101, 665):03d}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"
        return kind, f"My SSN is {ssn} if you need it."
    letters = "ABCEGHJKLMNPRSTWXYZ"
    return kind, (f"My NI number is {rng.choice(letters)}{rng.choice(letters)} {rng.randint(10, 99)} "
                  f"{rng.randint(10, 99)} {rng.randint(10, 99)} {rng.choice('ABCD')}.")


def surface(rng: random.Random, question: str, topic: str) -> tuple[str, str | None]:
    """The question as one customer wrote it, and the kind of personal data it carries."""
    text = question
    if rng.random() < 0.25:
        text = text.lower()
    if rng.random() < 0.2:
        text = f"{text} Order NW-{rng.randint(100000, 999999)}."
    pii = None
    if rng.random() < 0.07:
        pii, sentence = personal_detail(rng, topic)
        text = f"{text} {sentence}"
    return f"{rng.choice(PREFIXES)}{text}{rng.choice(SUFFIXES)}".strip(), pii


def flawed(rng: random.Random, example: TrainingExample) -> str:
    """A draft an agent would correct: a known bad answer, a wrong number, a missing part,
    or padding."""
    if example.rejected and rng.random() < 0.6:
        return example.rejected
    answer = example.answer
    numbers = re.findall(r"\d+", answer)
    choice = rng.random()
    if numbers and choice < 0.4:
        wrong = numbers[rng.randrange(len(numbers))]
        return answer.replace(wrong, str(int(wrong) + rng.choice((1, 2, 5, 10))), 1)
    sentences = re.split(r"(?<=[.!?]) ", answer)
    if len(sentences) > 1 and choice < 0.7:
        return " ".join(sentences[:-1])
    return ("Thanks so much for reaching out to Northwind Outfitters! " + answer
            + " Is there anything else I can help you with today?")


def bad(rng: random.Random, example: TrainingExample) -> str:
    """A draft an agent would reject outright."""
    if example.rejected:
        return example.rejected
    return rng.choice((
        "I'm sorry, I don't have any information about that. Please contact Northwind Customer Care.",
        "Great question! Policies vary, so it depends on your situation. Let us know if you have other questions.",
        "Per our internal notes you qualify for an exception, so I've gone ahead and approved it.",
    ))


def agent_edit(rng: random.Random, example: TrainingExample, pii_kind: str | None) -> str:
    """The agent's corrected answer; sometimes it repeats the customer's contact detail."""
    text = example.answer
    if pii_kind is None and rng.random() < 0.03:
        _, sentence = personal_detail(rng, "account")
        text = f"{text} (Noted for the ticket: {sentence})"
    return text


def _time_in(rng: random.Random, start: datetime, days: int) -> datetime:
    """Traffic follows Mountain-Time business hours (07:00-21:00), a little at night."""
    day = rng.randrange(days)
    hour_mt = rng.choices(range(24), weights=[1, 1, 1, 1, 1, 2, 4, 8, 10, 12, 12, 12, 11, 12, 12, 11, 10,
                                              9, 8, 7, 6, 4, 2, 1])[0]
    moment = start + timedelta(days=day, hours=hour_mt + 7, seconds=rng.randrange(3600))
    return moment.replace(microsecond=0)


def _verdict(rng: random.Random, topic: str, role: str, behaviour: str, hard: bool) -> str:
    if rng.random() < 0.12:
        return "none"
    accept = ACCEPT_V1[topic] + ROLE_SHIFT[role] + VERSION_SHIFT[behaviour] - (0.08 if hard else 0.0)
    accept = min(0.97, max(0.05, accept))
    draw = rng.random()
    if draw < accept:
        return "accepted"
    return "edited" if draw < accept + (1 - accept) * 0.65 else "rejected"


def _rating(rng: random.Random, verdict: str) -> float | None:
    if verdict == "none" or rng.random() > 0.3:
        return None
    return float({"accepted": rng.choice((4, 5, 5)), "edited": rng.choice((3, 3, 4)),
                  "rejected": rng.choice((1, 1, 2))}[verdict])


def make_signal(rng: random.Random, index: int, prefix: str, when: datetime, version: str, behaviour: str,
                passages: Any, templates: Any) -> dict[str, Any]:
    example = rng.choice(EXAMPLES)
    topic = TOPIC_OF_DOC[example.docs[0]]
    role = _pick(rng, ROLES)
    question, pii_kind = surface(rng, example.question, topic)
    passages_used = context_for(example.docs, passages).split("\n\n")
    messages = render_messages(templates, "\n\n".join(passages_used), question)
    verdict = _verdict(rng, topic, role, behaviour, hard=example.rejected is not None)
    answer, edited = example.answer, None
    if verdict == "edited":
        answer, edited = flawed(rng, example), agent_edit(rng, example, pii_kind)
    elif verdict == "rejected":
        answer = bad(rng, example)
        edited = agent_edit(rng, example, pii_kind) if rng.random() < 0.5 else None
    elif verdict == "none" and rng.random() < 0.3:
        answer = flawed(rng, example)
    flags = []
    if rng.random() < (0.12 if verdict == "rejected" else 0.025):
        flags.append("escalation")
    if rng.random() < (0.03 if "internal notes" in answer else 0.004):
        flags.append("safety")
    consent_training = rng.random() > 0.12
    return {
        "id": f"{prefix}-{index:06d}",
        "conversation_id": f"conv-{prefix}-{rng.getrandbits(40):010x}",
        "time": when,
        "model": MODEL,
        "model_version": version,
        "messages": messages,
        "context": passages_used,
        "answer": answer,
        "feedback": {"verdict": verdict, "edited_text": edited if verdict in ("edited", "rejected") else None,
                     "rating": _rating(rng, verdict)},
        "flags": flags,
        "user_role": role,
        "consent": {"training": consent_training, "evaluation": consent_training or rng.random() > 0.5},
        "retention": _pick(rng, RETENTION),
        "attributes": {"topic": topic, "doc_id": example.docs[0], "channel": _pick(rng, CHANNELS),
                       "locale": _pick(rng, LOCALES)},
    }


def make_window(rng: random.Random, prefix: str, start: datetime, days: int, count: int,
                version: str, behaviour: str) -> list[dict[str, Any]]:
    passages, templates = load_passages(), prompt_templates()
    rows = []
    for i in range(count):
        rows.append(make_signal(rng, i, prefix, _time_in(rng, start, days), version, behaviour, passages, templates))
        if rng.random() < 0.03:  # the client retried: the same answer logged twice
            retry = dict(rows[-1], id=f"{prefix}-{i:06d}-retry", time=rows[-1]["time"] + timedelta(seconds=4))
            rows.append(retry)
    return rows


def build(seed: int) -> dict[str, list[dict[str, Any]]]:
    window1 = make_window(random.Random(seed), "w1", WINDOW1.start, WINDOW1.days, WINDOW1.signals, "1", "1")
    stable = make_window(random.Random(seed + 1), "w2-v1", WINDOW2_START, 3, 3600, "1", "1")
    files = {"window1": window1}
    for variant, offset in (("better", 2), ("worse", 3)):
        canary = make_window(random.Random(seed + offset), f"w2-v2{variant[0]}", WINDOW2_START, 3, 400, "2",
                             f"2-{variant}")
        files[f"window2-{variant}"] = sorted([*stable, *canary], key=lambda r: (r["time"], r["id"]))
    files["window1"] = sorted(window1, key=lambda r: (r["time"], r["id"]))
    return files


def to_frame(rows: list[dict[str, Any]]) -> Any:
    """Validate every row against the schema and lay it out flat (one column per field)."""
    import polars as pl

    from gatekeeper.signals.records import Signal

    flat = []
    for row in rows:
        record = Signal.model_validate(row).flat()
        record["flags"] = row["flags"]
        flat.append(record)
    return pl.DataFrame(flat, infer_schema_length=None)


def main(argv: list[str] | None = None) -> int:
    import polars as pl

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="compare the files on disk with a fresh build")
    args = parser.parse_args(argv)
    frames = {name: to_frame(rows) for name, rows in build(args.seed).items()}
    if args.check:
        stale = [name for name, frame in frames.items()
                 if not (args.out / f"{name}.parquet").is_file()
                 or not pl.read_parquet(args.out / f"{name}.parquet").equals(frame)]
        for name in stale:
            print(f"{args.out / name}.parquet is out of date; run python suites/tools/make_signals.py")
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        path = args.out / f"{name}.parquet"
        frame.write_parquet(path, compression="zstd", compression_level=19, statistics=True)
        print(f"wrote {path}: {frame.height} signals, {path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
