"""External anchors of the audit trail: a head someone outside the log can hold you to.

A hash chain proves that no record *inside* it was edited; it cannot prove that the tail
was not cut off or that the whole chain was not rewritten with recomputed hashes by
someone who can write the file. Anchors kept where that person cannot write close the gap:

* every ``decision.json`` carries the head before its check (:mod:`gatekeeper.gate.integrity`);
* every registry history event carries the head at the time (``audit_head``);
* ``gatekeeper audit anchor --out FILE [--key KEY]`` writes the head to an anchor file,
  optionally signed with an Ed25519 key, to be kept elsewhere (a ticket, a WORM bucket,
  an e-mail to QA). The file's SHA-256 can be submitted to an RFC 3161 timestamp
  authority (``openssl ts -query -data FILE -sha256``); ``audit verify --anchor-file FILE
  --timestamp-token TOKEN.tsr`` then checks that the token covers exactly this file.

Verifying the token's signature chain is the TSA's certificate business
(``openssl ts -verify``); this module checks that the token names this anchor's digest.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from gatekeeper.types import UsageError, utc_now

ANCHOR_SCHEMA = "gatekeeper.audit-anchor/1"
SIGNED_ANCHOR_FIELDS = ("schema", "log", "seq", "head", "record_time", "made")


def _payload(anchor: dict[str, Any]) -> bytes:
    from gatekeeper.gate.audit import canonical_json

    return canonical_json({k: anchor.get(k) for k in SIGNED_ANCHOR_FIELDS}).encode("utf-8")


def make_anchor(log_path: Path, *, key_file: Path | None = None) -> dict[str, Any]:
    """The current head of a verifying, non-empty log as an anchor document (signed with ``key_file``)."""
    from gatekeeper.gate.approvals import key_id, load_private_key, public_pem
    from gatekeeper.gate.audit import AuditLog

    if not log_path.is_file():
        raise UsageError("no audit log here: nothing to anchor", file=str(log_path))
    log = AuditLog(log_path)
    result = log.verify()
    if not result.ok:
        raise UsageError(f"the audit trail is broken at line {result.first_bad} ({result.reason}): "
                         "anchoring it would vouch for the damage", file=str(log_path))
    head = log.head()
    if head is None:
        raise UsageError("the audit log is empty: nothing to anchor", file=str(log_path))
    anchor: dict[str, Any] = {"schema": ANCHOR_SCHEMA, "log": log_path.name, "seq": head["seq"],
                              "head": head["hash"], "record_time": head["time"], "made": utc_now()}
    if key_file is not None:
        private, signer = load_private_key(key_file)
        public = private.public_key()
        anchor["signature"] = {"signer": signer, "key_id": key_id(public), "public_key": public_pem(public),
                               "value": base64.b64encode(private.sign(_payload(anchor))).decode("ascii")}
    return anchor


def read_anchor(path: Path) -> dict[str, Any]:
    """An anchor file, with its signature checked when it has one.

    :raises UsageError: not an anchor, or a signature that does not verify.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        anchor = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError("anchor file not found", file=str(path)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"not an audit anchor (invalid JSON: {exc})", file=str(path)) from None
    if not isinstance(anchor, dict) or anchor.get("schema") != ANCHOR_SCHEMA or not isinstance(
            anchor.get("head"), str):
        raise UsageError(f"not an audit anchor (schema {ANCHOR_SCHEMA!r} with a head expected)", file=str(path))
    signature = anchor.get("signature")
    if signature is not None:
        try:
            key = serialization.load_pem_public_key(str(signature["public_key"]).encode("ascii"))
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not Ed25519")
            key.verify(base64.b64decode(str(signature["value"]), validate=True), _payload(anchor))
        except (KeyError, TypeError, ValueError, InvalidSignature):
            raise UsageError("the anchor's signature does not verify: the file was altered after signing",
                             file=str(path), field="signature") from None
    return anchor


def token_covers(token: Path, anchor_file: Path) -> bool:
    """Whether an RFC 3161 timestamp token (DER ``.tsr``/``.tst``) names the SHA-256 of ``anchor_file``.

    The token's ``messageImprint`` holds the 32-byte digest of the stamped data verbatim.
    """
    try:
        der = token.read_bytes()
    except FileNotFoundError:
        raise UsageError("timestamp token not found", file=str(token)) from None
    return hashlib.sha256(anchor_file.read_bytes()).digest() in der
