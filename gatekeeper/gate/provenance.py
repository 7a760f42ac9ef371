"""The candidate's provenance: where it is found, and which of its claims the gate can verify.

A tuner writes ``provenance.json`` next to the candidate it made (``OUT/provenance.json``; an
hf adapter directory, a recording's directory). The gate finds it in one documented order
(:func:`find_provenance`) and checks what it can against the files and the loaded model
(:func:`verify_claims`): a claim the gate recomputed is ``verified``, one it contradicts is
a ``mismatch`` (a scope deviation), and one it cannot check is labelled ``declared`` in every
report — an auditor sees which is which.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from gatekeeper.files import sha256_file as _file_sha256
from gatekeeper.types import Config, ModelIdentity, ModelSpec, UsageError

PROVENANCE_FILE = "provenance.json"
"""The one file name every tuner writes next to the candidate it made."""

ClaimStatus = Literal["verified", "declared", "mismatch"]


@dataclass(frozen=True)
class Claim:
    """One statement of the provenance and what the gate could make of it."""

    field: str
    status: ClaimStatus
    detail: str


def provenance_locations(spec: str, explicit: Path | None, config: Config) -> list[Path]:
    """Where the candidate's provenance may be, in the order they are tried.

    ``--provenance`` (must exist), ``?provenance=`` in the spec, ``ADAPTER/provenance.json``
    for an adapter, and for a replay recording ``REC.provenance.json`` then the recording
    directory's ``provenance.json`` (a tuner's output directory).
    """
    parsed = ModelSpec.parse(spec)
    places: list[Path] = []
    if explicit is not None:
        places.append(explicit)
    if "provenance" in parsed.params:
        places.append(config.path(parsed.params["provenance"]))
    if "adapter" in parsed.params:
        places.append(config.path(parsed.params["adapter"]) / PROVENANCE_FILE)
    if parsed.provider == "replay":
        recording = config.path(parsed.name)
        places += [recording.with_name(recording.stem + ".provenance.json"), recording.parent / PROVENANCE_FILE]
    return places


def find_provenance(spec: str, explicit: Path | None, config: Config) -> tuple[dict[str, Any] | None, str | None]:
    """The candidate's provenance record and its path, or ``(None, None)`` when there is none."""
    for i, path in enumerate(provenance_locations(spec, explicit, config)):
        if path.is_file():
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                line = getattr(exc, "lineno", None)
                raise UsageError(f"invalid provenance JSON: {exc}", file=str(path), line=line) from None
            if not isinstance(record, dict):
                raise UsageError("a provenance record must be a JSON object", file=str(path))
            return record, str(path)
        if i == 0 and explicit is not None:
            raise UsageError("provenance file not found", file=str(path), field="--provenance")
    return None, None




def _compare(field: str, declared: Any, actual: Any, what: str) -> Claim:
    if actual is None:
        return Claim(field, "declared", f"{declared} (not checkable: {what} unknown)")
    if str(declared).removeprefix("sha256:") == str(actual).removeprefix("sha256:"):
        return Claim(field, "verified", f"{str(actual)[:16]}… matches {what}")
    return Claim(field, "mismatch", f"declared {str(declared)[:16]}…, but {what} is {str(actual)[:16]}…")


def _section(provenance: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = provenance.get(key)
    return value if isinstance(value, Mapping) else {}


def verify_claims(provenance: Mapping[str, Any], candidate: ModelIdentity, config: Config) -> list[Claim]:
    """Each checkable statement of ``provenance`` against the files and the loaded candidate.

    Data: ``data.sha256`` is recomputed from ``data.path`` when that file exists. Model:
    ``base_model.digest`` and ``adapter.digest`` are compared with the digests the provider
    reports in the candidate's identity (``details.base_digest`` / ``details.adapter_digest``;
    the hf provider reports both). Everything else (the modification, hyperparameters, data
    sources, PII and consent flags) is what the tuner declared.
    """
    claims: list[Claim] = []
    data = _section(provenance, "data")
    if data.get("sha256"):
        path = config.path(str(data["path"])) if data.get("path") else None
        actual = _file_sha256(path) if path is not None and path.is_file() else None
        claims.append(_compare("data.sha256", data["sha256"], actual,
                               f"the training file {path}" if path else "the training file"))
    details = candidate.details or {}
    base = _section(provenance, "base_model")
    if base.get("digest"):
        claims.append(_compare("base_model.digest", base["digest"], details.get("base_digest"),
                               "the candidate's base weights"))
    adapter = _section(provenance, "adapter")
    if adapter.get("digest"):
        claims.append(_compare("adapter.digest", adapter["digest"], details.get("adapter_digest"),
                               "the candidate's adapter files"))
    for field in ("modification", "hyperparameters", "data.sources", "data.pii_scrubbed", "data.consent_verified"):
        head, _, tail = field.partition(".")
        value = (data.get(tail) if head == "data" else provenance.get(head))
        if value is not None:
            claims.append(Claim(field, "declared", json.dumps(value, default=str)[:120]))
    return claims


DIVERGENCE_RISE = 0.10
"""How much higher the end of a training run's loss curve must be than its start (10 %) to
count as divergence; smaller moves between a few noisy batches are not."""


def training_warning(provenance: Mapping[str, Any] | None) -> str | None:
    """What the tuner's training report says against the candidate: a loss curve whose last
    third averages more than :data:`DIVERGENCE_RISE` above its first third (``training.losses``;
    or ``loss_first`` / ``loss_last`` when no curve was kept)."""
    training = (provenance or {}).get("training")
    if not isinstance(training, Mapping):
        return None
    losses = [float(x) for x in training.get("losses") or [] if isinstance(x, int | float)]
    first: Any = training.get("loss_first")
    last: Any = training.get("loss_last")
    if len(losses) >= 2:
        k = max(1, len(losses) // 3)
        first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    if not (isinstance(first, int | float) and isinstance(last, int | float)) or first <= 0:
        return None
    if last > first * (1 + DIVERGENCE_RISE):
        return (f"training loss rose from {first:.3f} to {last:.3f} (the tuner's training report; more than "
                f"{DIVERGENCE_RISE:.0%} up): the run diverged")
    return None


def scope_summary(checked: bool, claims: list[Claim], path: str | None) -> str:
    """One line for consoles and reports: whether the scope was checked and on what evidence."""
    if not checked:
        return "scope not checked: no provenance was found for the candidate"
    verified = sum(1 for c in claims if c.status == "verified")
    declared = sum(1 for c in claims if c.status == "declared")
    mismatched = sum(1 for c in claims if c.status == "mismatch")
    return (f"scope checked against {path}: {verified} claim(s) verified, {declared} declared "
            f"(not verifiable), {mismatched} contradicted")


def claims_as_dicts(claims: list[Claim]) -> list[dict[str, str]]:
    return [asdict(c) for c in claims]
