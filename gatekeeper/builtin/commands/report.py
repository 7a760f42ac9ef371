"""``gatekeeper report`` (re-render a run's reports, or print it to PDF) and ``gatekeeper evidence``.

The work is done by :mod:`gatekeeper.reports` and :mod:`gatekeeper.gate.evidence`; these
classes parse arguments and print.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.kinds import Command, Register, Session
from gatekeeper.types import UsageError

RECORD_SCHEMAS = ("gatekeeper.decision/", "gatekeeper.results/")


def _audit_log(session: Any) -> Path:
    return Path(session.config.path(session.config.audit_log))


def _run_dir(path: Path) -> Path:
    return path if path.is_dir() else path.parent


class ReportCommand(Command):
    name = "report"
    help = "re-render a run's reports from its decision (or run) record; --pdf prints report.html to PDF"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", type=Path, metavar="RUN",
                            help="output directory of a check or run (or its decision.json / results.json)")
        parser.add_argument("--format", action="append", dest="formats",
                            help="report format to write (repeatable; default: every registered format)")
        parser.add_argument("--out", type=Path, help="write the reports here (default: RUN)")
        parser.add_argument("--pdf", action="store_true",
                            help="also print the HTML report to report.pdf with headless Chromium")
        parser.epilog = "exit codes: 0 written, 4 no record / unknown format / no Chromium for --pdf, 5 reporter failed"

    def run(self, args: argparse.Namespace, session: Session) -> int:
        from gatekeeper.engine.session import read_record
        from gatekeeper.gate import integrity
        from gatekeeper.gate.attestations import with_attestations
        from gatekeeper.reports.browser import require_chromium
        from gatekeeper.reports.common import missing_fields

        record = read_record(args.run)
        schema = str(record.get("schema", ""))
        if not schema.startswith(RECORD_SCHEMAS) or record.get("kind") not in ("check", "run"):
            raise UsageError(f"not a gatekeeper decision or run record (schema {schema or 'missing'!r})",
                             file=str(args.run))
        missing = missing_fields(record)
        if missing:
            raise UsageError(f"the {record['kind']} record lacks field(s) {', '.join(missing)}",
                             file=str(args.run))
        chromium = require_chromium() if args.pdf else None
        registry = session.registries.reporters
        formats = list(dict.fromkeys(args.formats or registry.names()))
        for name in formats:
            registry.get(name, field="--format")
        if args.pdf and "html" not in formats:
            formats.append("html")
        run_dir = _run_dir(args.run)
        out = args.out or run_dir
        verdict = integrity.check_record(record, _audit_log(session))
        tampered = verdict.status in (integrity.TAMPERED, integrity.UNRECORDED, integrity.TRAIL_BROKEN)
        shown = integrity.marked_tampered(record, verdict.detail) if tampered else record
        if tampered:  # never write the edited record back as if it were the check's own
            formats = [name for name in formats if name != "json"]
        enriched = with_attestations(shown, run_dir=run_dir, audit_log=_audit_log(session))
        written = session.write_reports(enriched, out, formats)
        if chromium:
            written.append(self._pdf(enriched, out, chromium))
        session.echo(f"re-rendered {record.get('kind')} {record.get('run_id')} "
                     f"({shown.get('decision', 'run')}): " + ", ".join(str(p) for p in written))
        if tampered:
            raise integrity.RecordTampered(f"TAMPERED: {verdict.detail}; the reports were re-rendered marked TAMPERED",
                                 file=str(args.run))
        if verdict.status == integrity.NO_TRAIL:
            session.echo(f"warning: {verdict.detail}")
        return 0

    @staticmethod
    def _pdf(record: dict[str, Any], out: Path, chromium: str) -> Path:
        from gatekeeper.reports.browser import print_pdf
        from gatekeeper.reports.html import render_html
        from gatekeeper.types import GatekeeperError

        printable = out / "report.print.html"
        printable.write_text(render_html(record, print_mode=True), encoding="utf-8")
        try:
            return print_pdf(printable, out / "report.pdf", chromium=chromium)
        except (RuntimeError, OSError) as exc:
            raise GatekeeperError(f"printing to PDF failed: {exc}") from None
        finally:
            printable.unlink(missing_ok=True)


class EvidenceCommand(Command):
    name = "evidence"
    help = "pack a run's evidence into a zip with a SHA-256 manifest, or verify such a bundle"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.usage = "gatekeeper evidence RUN [--out FILE.zip]\n       gatekeeper evidence verify FILE.zip"
        parser.add_argument("target", nargs="+", metavar="RUN | verify FILE.zip",
                            help="the run directory to pack, or 'verify' and a bundle")
        parser.add_argument("--out", type=Path, help="bundle to write (default: evidence-RUN_ID.zip)")
        parser.add_argument("--expect", metavar="SHA256",
                            help="verify: the manifest SHA-256 you were given (from the audit trail)")
        parser.add_argument("--json", action="store_true", help="verify: print the outcome as JSON")
        parser.epilog = (
            "exit codes: 0 written / bundle intact, 1 bundle tampered (missing, extra or changed members), "
            "4 not a run directory, not a bundle, or a file changed since the run"
        )

    def run(self, args: argparse.Namespace, session: Session) -> int:
        if args.target[0] == "verify":
            if len(args.target) != 2:
                raise UsageError("usage: gatekeeper evidence verify FILE.zip", field="verify")
            return self._verify(Path(args.target[1]), args.expect, session, as_json=args.json)
        if len(args.target) != 1:
            raise UsageError("give one run directory (or: evidence verify FILE.zip)", field="RUN")
        return self._build(Path(args.target[0]), args.out, session)

    @staticmethod
    def _build(run_dir: Path, out: Path | None, session: Session) -> int:
        from gatekeeper.engine.record import stored_body
        from gatekeeper.engine.session import read_record
        from gatekeeper.gate.approvals import record_hash
        from gatekeeper.gate.audit import AuditLog
        from gatekeeper.gate.evidence import build_bundle
        from gatekeeper.gate.integrity import require_intact

        record = read_record(run_dir)
        target = out or Path(f"evidence-{record.get('run_id', run_dir.name)}.zip")
        audit_log = _audit_log(session)
        require_intact(record, audit_log, where=run_dir)
        # The bundled report shows the state at bundling time (signatures, audit head), not the
        # state when the check first rendered it.
        from gatekeeper.gate.attestations import with_attestations
        from gatekeeper.reports.html import render_html

        current = render_html(with_attestations(record, run_dir=run_dir, audit_log=audit_log))
        bundle = build_bundle(run_dir, target, project_root=session.config.root, audit_log=audit_log,
                              rendered={"report.html": current.encode("utf-8")})
        refs = {"manifest": bundle.manifest_sha256}
        if record.get("kind") == "check":
            refs["decision"] = record_hash(stored_body(record))
        entry = AuditLog(audit_log).append(
            "evidence", subject=str(record.get("run_id")), refs=refs,
            data={"run_id": record.get("run_id"), "bundle": str(target),
                  "members": len(bundle.manifest["members"])},
        )
        session.echo(f"wrote {target}: {len(bundle.manifest['members'])} files + manifest.json")
        session.echo(f"manifest SHA-256 {bundle.manifest_sha256}")
        session.echo(f"recorded in the audit trail as record {entry['seq']} ({entry['hash'][:12]}…)")
        return 0

    @staticmethod
    def _verify(path: Path, expect: str | None, session: Any, *, as_json: bool = False) -> int:
        import json

        from gatekeeper.gate.evidence import bundled_record_check, find_in_audit, verify_bundle
        from gatekeeper.gate.integrity import TAMPERED, UNRECORDED

        result = verify_bundle(path)
        expected_ok = expect is None or expect.strip().lower() == result.manifest_sha256
        noted = find_in_audit(_audit_log(session), result.manifest_sha256)
        vouched = bundled_record_check(path, result, _audit_log(session))
        if vouched is not None and (vouched.status == TAMPERED or (vouched.status == UNRECORDED and noted)):
            result.problems.append(f"run/decision.json: {vouched.detail}")
        elif vouched is not None and not vouched.ok:
            session.echo(f"  note: this project's audit trail cannot confirm the decision: {vouched.detail}")
        ok = result.ok and expected_ok and not result.problems
        if as_json:
            session.echo(json.dumps({
                "ok": ok, "bundle": str(path), "manifest_sha256": result.manifest_sha256,
                "expected_manifest": expected_ok if expect is not None else None,
                "run_id": result.manifest.get("run_id"), "decision": result.manifest.get("decision"),
                "checked": result.checked, "missing": result.missing, "extra": result.extra,
                "changed": result.changed, "problems": result.problems, "signatures": result.signatures,
                "audit_record": {"seq": noted["seq"], "time": noted["time"], "hash": noted["hash"]} if noted else None,
            }, indent=1))
        else:
            _print_verification(session, path, result, expect if not expected_ok else None, noted)
            session.echo(f"evidence OK: {result.checked} members match the manifest" if ok else "evidence TAMPERED")
        return 0 if ok else 1


def _print_verification(session: Any, path: Path, result: Any, unexpected: str | None,
                        noted: dict[str, Any] | None) -> None:
    m = result.manifest
    session.echo(f"bundle {path}: run {m.get('run_id')} ({m.get('decision') or m.get('kind')}), "
                 f"{len(m['members'])} members, manifest SHA-256 {result.manifest_sha256}")
    for label, items in (("missing: ", result.missing), ("extra:   ", result.extra),
                         ("changed: ", result.changed), ("problem: ", result.problems),
                         ("signature valid: ", result.signatures)):
        for item in items:
            session.echo(f"  {label}{item}")
    if unexpected:
        session.echo(f"  manifest SHA-256 is not the expected {unexpected}: the manifest was rewritten")
    if noted:
        session.echo(f"  manifest recorded in the audit trail: record {noted['seq']} at {noted['time']}")
    else:
        session.echo("  manifest not found in this project's audit trail "
                     "(check it against the trail where the bundle was made, or pass --expect)")


@hookimpl
def gatekeeper_register_commands(register: Register[Command]) -> None:
    register(ReportCommand)
    register(EvidenceCommand)
