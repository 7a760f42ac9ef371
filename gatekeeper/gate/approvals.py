"""Signed approvals of a decision record (Ed25519, with the ``cryptography`` package).

A person signs the SHA-256 of a run's ``decision.json`` (:func:`record_hash`) together
with their name, role and what the signature means (``approval``, ``review`` or
``responsibility``, as in 21 CFR Part 11 electronic signatures). Signatures are appended
to ``RUN/approvals.jsonl``; :func:`check_approvals` decides whether the approvals a
policy requires are present and valid. A HOLD decision may be promoted only when they
are (:func:`promotable`).

Independent of the policy module: the caller turns the policy's
``update_procedures.approvals`` entries into :class:`RequiredApproval` values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from gatekeeper.gate import MEANINGS, Meaning
from gatekeeper.gate.audit import canonical_json, utc_now
from gatekeeper.types import UsageError

if TYPE_CHECKING:  # imported where used: `gatekeeper --help` does not load the crypto library
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DECISION_FILE = "decision.json"
APPROVALS_FILE = "approvals.jsonl"
UNHASHED_KEYS = ("approvals", "record_hash")
"""Keys of a decision record left out of its hash (they are added after signing)."""

SIGNED_FIELDS = ("record_hash", "signer", "role", "meaning", "time")
APPROVAL_FIELDS = (*SIGNED_FIELDS, "key_id", "public_key", "signature")
_SIGNER_RE = re.compile(r"^#\s*signer:\s*(.+?)\s*$", re.MULTILINE)


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class PublicKey:
    """A signer's public key as read from a ``.pub`` file."""

    key: Ed25519PublicKey
    key_id: str
    pem: str
    signer: str | None
    """The name written into the file by :func:`new_keypair`, if any."""
    path: str = ""


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(raw_public_bytes(key)).hexdigest()[:16]


def public_pem(key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def new_keypair(out_prefix: Path, *, signer: str) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (PEM private key, mode 0600) and ``PREFIX.pub`` (PEM public key).

    Both files start with ``# signer: NAME`` and ``# key id: ID`` comment lines (PEM
    readers skip text before the ``BEGIN`` line), which bind the name to the key.

    :raises UsageError: an empty signer, or either file exists already.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    signer = signer.strip()
    if not signer or "\n" in signer:
        raise UsageError("the signer's name must be one non-empty line", field="signer")
    out_prefix = Path(out_prefix)
    key_path = out_prefix.with_name(out_prefix.name + ".key")
    pub_path = out_prefix.with_name(out_prefix.name + ".pub")
    for path in (key_path, pub_path):
        if path.exists():
            raise UsageError("already exists; choose another prefix or remove it", file=str(path))
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    header = f"# gatekeeper signing key\n# signer: {signer}\n# key id: {key_id(public)}\n"
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(header + private_pem)
    os.chmod(key_path, 0o600)  # the umask may have removed bits, never added: make it exact
    pub_path.write_text(header + public_pem(public), encoding="ascii")
    return key_path, pub_path


def _read_key_file(path: Path, what: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} not found", file=str(path))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what}: {exc.strerror}", file=str(path)) from None


def _signer_of(data: bytes) -> str | None:
    match = _SIGNER_RE.search(data.decode("utf-8", errors="replace"))
    return match.group(1) if match else None


def load_private_key(path: Path) -> tuple[Ed25519PrivateKey, str | None]:
    """The Ed25519 private key in a PEM file, and the signer named in it (if any).

    :raises UsageError: the file is missing, not PEM, encrypted or not Ed25519.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    data = _read_key_file(path, "private key file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"not an unencrypted PEM private key ({exc}); make one with `gatekeeper keys new`",
            file=str(path),
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{type(key).__name__} is not an Ed25519 key", file=str(path))
    return key, _signer_of(data)


def load_public_key(path: Path) -> PublicKey:
    """The Ed25519 public key in a PEM file.

    :raises UsageError: the file is missing, not PEM or not Ed25519.
    """
    return parse_public_key(_read_key_file(path, "public key file"), str(path))


def parse_public_key(data: bytes, where: str) -> PublicKey:
    """An Ed25519 public key from PEM bytes (a file's, or the copy a decision record keeps)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"not a PEM public key ({exc})", file=where) from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{type(key).__name__} is not an Ed25519 key", file=where)
    return PublicKey(key, key_id(key), public_pem(key), _signer_of(data), where)


# --------------------------------------------------------------------------- the record


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a decision record without ``approvals``/``record_hash``."""
    body = {k: v for k, v in record.items() if k not in UNHASHED_KEYS}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def load_decision(run_dir: Path) -> dict[str, Any]:
    """The decision record of a run (``RUN/decision.json``).

    :raises UsageError: the file is missing or not a JSON object.
    """
    path = Path(run_dir) / DECISION_FILE
    if not path.is_file():
        raise UsageError(
            "no decision record here; pass the output directory of `gatekeeper check`", file=str(path)
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"not valid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
    if not isinstance(record, dict):
        raise UsageError("a decision record must be a JSON object", file=str(path), line=1)
    return record


def signed_payload(approval: Mapping[str, Any]) -> bytes:
    """The bytes an approval's signature covers: canonical JSON of :data:`SIGNED_FIELDS`."""
    return canonical_json({name: approval.get(name) for name in SIGNED_FIELDS}).encode("utf-8")


def sign(
    run_dir: Path,
    *,
    key_file: Path,
    signer: str,
    meaning: Meaning,
    role: str | None = None,
    required: list[RequiredApproval] | None = None,
) -> dict[str, Any]:
    """Sign the run's decision record and append the approval to ``RUN/approvals.jsonl``.

    :param run_dir: the output directory of ``gatekeeper check`` (holds ``decision.json``).
    :param key_file: the signer's PEM private key.
    :param signer: the signer's name; must match the name in the key file, when it has one.
    :param meaning: what the signature means: approval, review or responsibility.
    :param role: the role signed for (e.g. ``qa-lead``), as the policy names it.
    :param required: the approvals the decision requires (from its record): a signature for
        one of those roles that the policy would not count (key, signer, meaning) is refused
        before it is written. A signature for a role the decision does not require is kept as
        a record and counts for nothing.
    :return: the approval record that was appended.
    :raises UsageError: no decision record, a bad key file, a bad meaning or signer, or a
        signature the policy does not allow.
    """
    if meaning not in MEANINGS:
        raise UsageError(f"meaning {meaning!r} is not one of {', '.join(MEANINGS)}", field="meaning")
    signer = signer.strip()
    if not signer:
        raise UsageError("the signer's name is empty", field="signer")
    decision = load_decision(run_dir)
    private, key_signer = load_private_key(key_file)
    if key_signer is not None and key_signer != signer:
        raise UsageError(
            f"this key belongs to {key_signer!r}, not {signer!r}", file=str(key_file), field="signer"
        )
    public = private.public_key()
    approval: dict[str, Any] = {
        "record_hash": record_hash(decision),
        "signer": signer,
        "role": role or None,
        "meaning": meaning,
        "time": utc_now(),
    }
    signature = private.sign(signed_payload(approval))
    approval |= {
        "key_id": key_id(public),
        "public_key": public_pem(public),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    if required is not None and any(r.role == approval["role"] for r in required):
        why = allowed_for_role(approval, required)
        if why:
            raise UsageError(f"not signed: {why} (the policy's update_procedures.approvals name who may sign)",
                             file=str(key_file), field="--key")
    _append_line(Path(run_dir) / APPROVALS_FILE, canonical_json(approval))
    return approval


def _append_line(path: Path, line: str) -> None:
    with FileLock(str(path) + ".lock"), path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class RequiredApproval:
    """One approval a policy requires: a role, the signature's meaning, who may sign.

    ``public_keys`` are the PEM files of the people allowed to sign for the role.
    """

    role: str
    meaning: str
    public_keys: list[Path] = field(default_factory=list)
    key_pems: list[str] = field(default_factory=list)
    """The keys' PEM text as the decision record keeps it: a run stays verifiable after the
    key files move. When given, it is what counts; the paths are only where they came from."""

    @property
    def label(self) -> str:
        return f"{self.role} ({self.meaning})"

    def keys(self) -> list[PublicKey]:
        if self.key_pems:
            return [parse_public_key(pem.encode("ascii"), f"decision record key of role {self.role!r}")
                    for pem in self.key_pems]
        return [load_public_key(p) for p in self.public_keys]

    def record_entry(self) -> dict[str, Any]:
        """What the decision record keeps: role, meaning, key paths, and each key's id and PEM."""
        keys = self.keys()
        return {"role": self.role, "meaning": self.meaning, "public_keys": [str(p) for p in self.public_keys],
                "key_ids": [k.key_id for k in keys], "public_key_pems": [k.pem for k in keys]}


def required_from_record(record: Mapping[str, Any]) -> list[RequiredApproval]:
    """The approvals a decision record requires, with the key material it recorded (older
    records name key files only)."""
    return [RequiredApproval(a["role"], a["meaning"], [Path(p) for p in a.get("public_keys", [])],
                             list(a.get("public_key_pems") or []))
            for a in (record.get("approvals") or {}).get("required", [])]


def allowed_for_role(approval: Mapping[str, Any], required: list[RequiredApproval]) -> str:
    """``""`` when the policy lets this signature count (role, key, signer, meaning), else why not.

    The one rule ``approve``, ``status``, ``promote``, the reports and ``evidence verify`` apply.
    """
    return _match_requirement(approval, required, {id(r): r.keys() for r in required})[1]


@dataclass
class ApprovalStatus:
    """The outcome of :func:`check_approvals`.

    ``valid``: the approvals that count; ``problems``: one line per approval that was
    refused, saying why; ``missing``: the requirements (``"role (meaning)"``) no valid
    approval satisfies. ``satisfied`` when nothing is missing.
    """

    satisfied: bool
    valid: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def read_approvals(run_dir: Path) -> list[tuple[int, dict[str, Any] | None, str]]:
    """``(line, approval or None, why not)`` for every line of ``RUN/approvals.jsonl``."""
    path = Path(run_dir) / APPROVALS_FILE
    if not path.is_file():
        return []
    out: list[tuple[int, dict[str, Any] | None, str]] = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            approval = json.loads(text)
        except json.JSONDecodeError as exc:
            out.append((number, None, f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(approval, dict):
            out.append((number, None, "not a JSON object"))
            continue
        absent = [name for name in APPROVAL_FIELDS if name not in approval]
        out.append(
            (number, None, f"missing field(s) {', '.join(absent)}") if absent else (number, approval, "")
        )
    return out


def verify_signature(approval: Mapping[str, Any]) -> str:
    """Check an approval against the public key it carries; ``""`` when it verifies.

    This proves the line is unchanged since it was signed — not that the key is one the
    policy trusts, which :func:`check_approvals` checks.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    try:
        key = serialization.load_pem_public_key(str(approval["public_key"]).encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        return "its public_key is not a PEM public key"
    if not isinstance(key, Ed25519PublicKey):
        return "its public_key is not an Ed25519 key"
    if approval.get("key_id") != key_id(key):
        return f"key_id {approval.get('key_id')!r} does not match its public key ({key_id(key)})"
    try:
        signature = base64.b64decode(str(approval["signature"]), validate=True)
        key.verify(signature, signed_payload(approval))
    except (binascii.Error, InvalidSignature):
        return "the signature does not verify: the line was altered after it was signed"
    return ""


def check_approvals(run_dir: Path, required: list[RequiredApproval]) -> ApprovalStatus:
    """Which required approvals the run's ``approvals.jsonl`` validly provides.

    An approval counts for a requirement when its signature verifies, it signs the
    current ``decision.json`` (recomputed from the file, so an edit after signing voids
    it), its key is one of the role's public keys, the signer is the name bound to that
    key (when the key file names one), and its meaning is the required one.

    :raises UsageError: no decision record, or a required public key file is missing or bad.
    """
    current = record_hash(load_decision(run_dir))
    allowed = {id(req): req.keys() for req in required}
    status = ApprovalStatus(satisfied=False)
    done: set[int] = set()
    for number, approval, error in read_approvals(run_dir):
        where = f"{APPROVALS_FILE}:{number}"
        if approval is None:
            status.problems.append(f"{where}: {error}")
            continue
        who = (
            f"{where}: {approval.get('signer')!r} "
            f"({approval.get('role') or 'no role'}, {approval.get('meaning')})"
        )
        reason = verify_signature(approval) or _record_problem(approval, current)
        matched: RequiredApproval | None = None
        if not reason:
            matched, reason = _match_requirement(approval, required, allowed)
        if matched is None:
            status.problems.append(f"{who}: {reason}")
            continue
        status.valid.append(approval)
        done.add(id(matched))
    status.missing = [req.label for req in required if id(req) not in done]
    status.satisfied = not status.missing
    return status


def _record_problem(approval: Mapping[str, Any], current: str) -> str:
    if approval.get("record_hash") == current:
        return ""
    return (
        f"it signs a different decision record ({str(approval.get('record_hash'))[:12]}…, "
        f"but decision.json now hashes to {current[:12]}…): the record changed after signing"
    )


def _match_requirement(
    approval: Mapping[str, Any],
    required: list[RequiredApproval],
    allowed: dict[int, list[PublicKey]],
) -> tuple[RequiredApproval | None, str]:
    """The requirement a verified approval satisfies, or ``None`` and the reason it satisfies none."""
    role = approval.get("role")
    same_role = [req for req in required if req.role == role]
    if not same_role:
        roles = ", ".join(sorted({req.role for req in required})) or "none"
        return None, f"role {role!r} is not one the policy requires (required: {roles})"
    reasons: list[str] = []
    for req in same_role:
        key = next((k for k in allowed[id(req)] if k.key_id == approval.get("key_id")), None)
        if key is None or key.pem.strip() != str(approval.get("public_key", "")).strip():
            reasons.append(
                f"key {approval.get('key_id')} is not one of the keys allowed to sign for role {role!r}"
            )
        elif key.signer is not None and key.signer != approval.get("signer"):
            reasons.append(f"signed as {approval.get('signer')!r} with the key of {key.signer!r}")
        elif approval.get("meaning") != req.meaning:
            reasons.append(
                f"its meaning is {approval.get('meaning')!r} but role {role!r} requires {req.meaning!r}"
            )
        else:
            return req, ""
    return None, "; ".join(dict.fromkeys(reasons))


def promotable(run_dir: Path, required: list[RequiredApproval]) -> tuple[bool, str]:
    """Whether the run's decision allows promotion, and why (or why not).

    PROMOTE may be promoted; HOLD only when :func:`check_approvals` is satisfied; any
    other decision (REJECT, INCONCLUSIVE, ROLLBACK) never.
    """
    decision = str(load_decision(run_dir).get("decision", "")).upper()
    if decision == "PROMOTE":
        return True, "the decision is PROMOTE"
    if decision != "HOLD":
        return (
            False,
            f"the decision is {decision or 'missing'}; only PROMOTE or an approved HOLD may be promoted",
        )
    status = check_approvals(run_dir, required)
    if status.satisfied:
        return True, "HOLD with every required approval: " + ", ".join(req.label for req in required)
    return False, "HOLD: missing approval(s) " + ", ".join(status.missing)
