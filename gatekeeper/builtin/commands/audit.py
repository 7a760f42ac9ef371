"""Built-in commands for the audit trail and signed approvals.

``gatekeeper audit verify|show``, ``gatekeeper keys new|show`` and ``gatekeeper approve``.
The work is done by :mod:`gatekeeper.gate.audit` and :mod:`gatekeeper.gate.approvals`; these
classes only parse arguments and print.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.kinds import Command, Register, Session
from gatekeeper.types import UsageError

DATA_SUMMARY_WIDTH = 60


def _log_path(args: argparse.Namespace, session: Any) -> Path:
    """``--log FILE`` when given, else the project's ``audit_log``."""
    if getattr(args, "log", None):
        return Path(args.log)
    config = session.config
    return Path(config.path(config.audit_log))


def _add_log_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log", metavar="FILE", help="audit log to use (default: audit_log of the project config)"
    )


# --------------------------------------------------------------------------- gatekeeper audit


class AuditCommand(Command):
    """``gatekeeper audit verify`` checks the hash chain; ``audit show`` prints history."""

    name = "audit"
    help = "verify or show the tamper-evident audit trail"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="audit_action", metavar="ACTION", required=True)
        verify = actions.add_parser(
            "verify",
            help="check the hash chain; exit 1 at the first edited, deleted, "
            "reordered, inserted or truncated record",
        )
        _add_log_option(verify)
        verify.add_argument(
            "--anchor",
            metavar="HASH",
            help="a head hash printed by an earlier verify: fail if that record is gone",
        )
        verify.add_argument("--anchor-file", metavar="FILE", type=Path,
                            help="an anchor written by `audit anchor` (its signature is checked too)")
        verify.add_argument("--timestamp-token", metavar="TSR", type=Path,
                            help="an RFC 3161 token over --anchor-file: fail unless it covers that file")
        anchor = actions.add_parser("anchor", help="print (and optionally sign) the head, to keep outside the log")
        _add_log_option(anchor)
        anchor.add_argument("--out", metavar="FILE", type=Path, help="write the anchor document here")
        anchor.add_argument("--key", metavar="FILE", type=Path, help="sign it with this Ed25519 private key")
        repair = actions.add_parser(
            "repair", help="cut a torn last line (a cut-off write) and record the repair; never edits records")
        _add_log_option(repair)
        show = actions.add_parser("show", help="print the records about a run or model alias")
        show.add_argument("subject", nargs="?", metavar="ALIAS_OR_RUN", help="default: every record")
        _add_log_option(show)
        show.add_argument("--json", action="store_true", help="print the records as a JSON array")

    def run(self, args: argparse.Namespace, session: Session) -> int:
        handlers: dict[str, Callable[[argparse.Namespace, Path], int]] = {
            "verify": self._verify,
            "show": self._show,
            "anchor": self._anchor,
            "repair": self._repair,
        }
        return handlers[args.audit_action](args, _log_path(args, session))

    @staticmethod
    def _verify(args: argparse.Namespace, path: Path) -> int:
        from gatekeeper.gate.audit import AuditLog
        if not path.is_file():
            raise UsageError(
                "no audit log here (nothing was recorded yet, or it was removed)", file=str(path)
            )
        from gatekeeper.gate.anchor import read_anchor, token_covers

        anchors = [args.anchor] if args.anchor else []
        if args.timestamp_token and not args.anchor_file:
            raise UsageError("--timestamp-token needs the --anchor-file it stamps", field="--timestamp-token")
        if args.anchor_file:
            document = read_anchor(args.anchor_file)
            anchors.append(document["head"])
            signed = document.get("signature")
            print(f"anchor {args.anchor_file}: seq {document.get('seq')}, head {document['head']}"
                  + (f", signed by {signed.get('signer')} (key {signed.get('key_id')})" if signed else ", unsigned"))
            if args.timestamp_token:
                if not token_covers(args.timestamp_token, args.anchor_file):
                    print(f"timestamp token {args.timestamp_token} does not cover {args.anchor_file}")
                    return 1
                print(f"timestamp token {args.timestamp_token} covers the anchor's SHA-256 "
                      "(check the TSA's signature with `openssl ts -verify`)")
        log = AuditLog(path)
        result = log.verify()
        for anchor in anchors:
            if result.ok:
                result = log.verify(anchor=anchor)
        if not result.ok:
            print(
                f"audit trail BROKEN at record {result.first_bad} (line {result.first_bad}): {result.reason}"
            )
            return 1
        if result.count == 0:
            print("audit trail EMPTY: the log exists but holds no record; records were written here "
                  "(the file is created by the first one), so it was emptied")
            return 1
        print(f"audit trail OK: {result.count} records")
        if result.head:
            print(f"head: {result.head}")
        return 0

    @staticmethod
    def _anchor(args: argparse.Namespace, path: Path) -> int:
        from gatekeeper.gate.anchor import make_anchor

        anchor = make_anchor(path, key_file=args.key)
        text = json.dumps(anchor, indent=1, ensure_ascii=False) + "\n"
        if args.out:
            from gatekeeper.files import write_atomic

            write_atomic(args.out, text)
            print(f"wrote {args.out}: seq {anchor['seq']}, head {anchor['head']}")
            print("keep it where whoever can write the log cannot (and optionally timestamp its SHA-256 "
                  "with an RFC 3161 authority); check later with `gatekeeper audit verify --anchor-file`")
        else:
            print(text, end="")
        return 0

    @staticmethod
    def _repair(args: argparse.Namespace, path: Path) -> int:
        from gatekeeper.gate.audit import AuditLog

        if not path.is_file():
            raise UsageError("no audit log here", file=str(path))
        record = AuditLog(path).repair()
        if record is None:
            print("audit trail ends with a complete record: nothing to repair")
            return 0
        print(f"cut {record['data']['removed_bytes']} bytes of a torn last line after record "
              f"{record['data']['after_seq']} (kept in {path.name}.torn-*) and recorded it as record "
              f"{record['seq']} ({record['hash'][:12]}…)")
        return 0

    @staticmethod
    def _show(args: argparse.Namespace, path: Path) -> int:
        from gatekeeper.gate.audit import AuditLog
        if not path.is_file():
            raise UsageError("no audit log here (nothing was recorded yet)", file=str(path))
        records = AuditLog(path).history(args.subject)
        if args.json:
            print(json.dumps(records, indent=2, ensure_ascii=False))
            return 0
        if not records:
            print(f"no audit records about {args.subject!r}" if args.subject else "the audit log is empty")
            return 0
        print(format_history(records))
        return 0


def format_history(records: list[dict[str, Any]]) -> str:
    """A plain-text table: seq, time, actor, action, subject, and a short summary of data."""
    header = ("seq", "time", "actor", "action", "subject", "details")
    rows = [header] + [
        (
            str(r["seq"]),
            r["time"],
            r["actor"],
            r["action"],
            r["subject"],
            _summary(r.get("data") or {}, r.get("refs") or {}),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _summary(data: dict[str, Any], refs: dict[str, str]) -> str:
    parts = [f"{k}={v}" for k, v in data.items() if not isinstance(v, dict | list)]
    if refs:
        parts.append("refs=" + ",".join(sorted(refs)))
    text = " ".join(parts)
    return text if len(text) <= DATA_SUMMARY_WIDTH else text[: DATA_SUMMARY_WIDTH - 1] + "…"


# --------------------------------------------------------------------------- gatekeeper keys


class KeysCommand(Command):
    """``gatekeeper keys new PREFIX --signer NAME`` makes an Ed25519 signing key pair."""

    name = "keys"
    help = "make or inspect Ed25519 keys for signing approvals"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
        new = actions.add_parser("new", help="write PREFIX.key (private, mode 0600) and PREFIX.pub")
        new.add_argument("prefix", metavar="PREFIX", type=Path)
        new.add_argument("--signer", required=True, metavar="NAME", help="the key owner's name")
        show = actions.add_parser("show", help="print a public key's id and signer")
        show.add_argument("public_key", metavar="FILE", type=Path)

    def run(self, args: argparse.Namespace, session: Session) -> int:
        from gatekeeper.gate.approvals import load_public_key, new_keypair
        if args.keys_action == "new":
            key_path, pub_path = new_keypair(args.prefix, signer=args.signer)
            public = load_public_key(pub_path)
            print(f"key id {public.key_id} for {args.signer}")
            print(f"private key: {key_path} (keep it secret; mode 0600)")
            print(f"public key:  {pub_path} (list it under the role's public_keys in the policy)")
            return 0
        public = load_public_key(args.public_key)
        print(f"key id {public.key_id} signer {public.signer or '(not named)'}")
        return 0


# --------------------------------------------------------------------------- gatekeeper approve


class ApproveCommand(Command):
    """``gatekeeper approve RUN_DIR`` signs the run's decision record and logs it."""

    name = "approve"
    help = "sign a run's decision record (Ed25519) and record the approval in the audit trail"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        from gatekeeper.gate import MEANINGS
        parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="output directory of a check")
        parser.add_argument("--key", required=True, metavar="FILE", type=Path, help="your private key")
        parser.add_argument("--signer", required=True, metavar="NAME", help="your name, as in the key")
        parser.add_argument("--meaning", required=True, choices=MEANINGS, help="what your signature means")
        parser.add_argument("--role", metavar="ROLE", help="the policy role you sign for")
        _add_log_option(parser)

    def run(self, args: argparse.Namespace, session: Session) -> int:
        from gatekeeper.gate.approvals import load_decision, required_from_record, sign
        from gatekeeper.gate.audit import AuditLog
        decision = load_decision(args.run_dir)
        approval = sign(
            args.run_dir, key_file=args.key, signer=args.signer, meaning=args.meaning, role=args.role,
            required=required_from_record(decision),
        )
        subject = str(decision.get("run_id") or args.run_dir.resolve().name)
        entry = AuditLog(_log_path(args, session)).append(
            "approve",
            subject=subject,
            refs={"decision": approval["record_hash"]},
            data={
                "signer": approval["signer"],
                "role": approval["role"],
                "meaning": approval["meaning"],
                "key_id": approval["key_id"],
                "decision": decision.get("decision"),
                "run_dir": str(args.run_dir),
            },
        )
        print(
            f"signed {subject} ({decision.get('decision', 'no decision')}) as {approval['signer']}, "
            f"role {approval['role'] or '-'}, meaning {approval['meaning']}"
        )
        print(f"decision record {approval['record_hash']}")
        print(f"key {approval['key_id']}, signature {approval['signature'][:16]}…")
        print(f"audit record {entry['seq']} ({entry['hash'][:12]}…)")
        return 0


@hookimpl
def gatekeeper_register_commands(register: Register[Command]) -> None:
    register(AuditCommand)
    register(KeysCommand)
    register(ApproveCommand)
