"""Evidence bundles: one zip with everything an auditor needs to check a decision.

``gatekeeper evidence RUN --out FILE.zip`` packs the run's directory (decision record,
reports, approvals), the exact policy file and the public keys it names, the suites
(YAML, datasets, Prompty files) the run evaluated, and the audit records about the run.
Every file must still hash to what the record says it was; a policy or dataset edited
since the run is refused, never silently packed.

``manifest.json`` lists every member with its SHA-256 and size; the manifest's own
SHA-256 is appended to the audit trail (action ``evidence``), so a bundle whose files
*and* manifest were rewritten is still caught. :func:`verify_bundle` re-hashes a bundle.

Layout::

    manifest.json
    run/decision.json  run/report.html  run/summary.md  run/junit.xml  run/approvals.jsonl ...
    project/policies/support-assistant.yaml  project/policies/keys/qa.pub
    project/suites/support_assistant.yaml    project/suites/data/support_cases.jsonl
    audit/records.jsonl
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from gatekeeper.types import UsageError

EVIDENCE_SCHEMA = "gatekeeper.evidence/1"
MANIFEST = "manifest.json"
SKIPPED_SUFFIXES = (".lock", ".tmp", ".zip")
"""Run-directory files never packed: lock files, half-written files, earlier bundles."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Member:
    """One file of the bundle: its bytes, or (large per-case files) the file they stream from."""

    path: str
    data: bytes
    role: str
    source: Path | None = None

    def entry(self) -> dict[str, Any]:
        if self.source is not None:
            from gatekeeper.files import sha256_file

            return {"path": self.path, "sha256": sha256_file(self.source), "bytes": self.source.stat().st_size,
                    "role": self.role}
        return {"path": self.path, "sha256": sha256_bytes(self.data), "bytes": len(self.data), "role": self.role}

    def write(self, zf: zipfile.ZipFile) -> None:
        if self.source is not None:
            zf.write(self.source, self.path)
        else:
            zf.writestr(self.path, self.data)


@dataclass
class Bundle:
    """What :func:`build_bundle` wrote."""

    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str


# --------------------------------------------------------------------------- building


class _Collector:
    """Gathers members, naming project files by their path under the project root."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.members: dict[str, Member] = {}

    def resolve(self, recorded: str) -> Path:
        """A path as the record wrote it (relative to where the check ran: the project root)."""
        path = Path(recorded)
        if path.is_absolute():
            return path
        for base in (self.root, Path.cwd()):
            if (base / path).exists():
                return base / path
        return self.root / path

    def arcname(self, path: Path) -> str:
        resolved = path.resolve()
        try:
            return "project/" + resolved.relative_to(self.root).as_posix()
        except ValueError:
            digest = sha256_bytes(str(resolved.parent).encode())[:8]
            return f"external/{digest}/{resolved.name}"

    def add(self, arcname: str, data: bytes, role: str, source: Path | None = None) -> None:
        self.members.setdefault(arcname, Member(arcname, data, role, source))

    def add_file(self, path: Path, role: str, *, sha256: str | None = None, what: str = "file") -> None:
        if not path.is_file():
            raise UsageError(f"{what} of the run is missing; restore it to build the bundle", file=str(path))
        data = path.read_bytes()
        if sha256 is not None and sha256_bytes(data) != sha256:
            raise UsageError(
                f"{what} changed since the run (SHA-256 {sha256_bytes(data)[:12]}…, the record says "
                f"{sha256[:12]}…); restore the version the run used", file=str(path),
            )
        self.add(self.arcname(path), data, role)


def _run_files(run_dir: Path) -> Iterator[Path]:
    for path in sorted(run_dir.rglob("*")):
        if path.is_file() and not path.name.endswith(SKIPPED_SUFFIXES):
            yield path


def _add_suites(col: _Collector, record: dict[str, Any]) -> None:
    from gatekeeper.engine.suites import load_yaml_suite
    from gatekeeper.host import yamlfile

    for entry in record.get("suites") or []:
        path = col.resolve(entry["path"])
        if not path.is_file():
            raise UsageError(f"suite {entry['name']!r} of the run is missing", file=str(path))
        suite = load_yaml_suite(path)
        if suite is None or suite.hash != entry["sha256"]:
            raise UsageError(
                f"suite {entry['name']!r} changed since the run (its hash covers the file, its prompt "
                "and its datasets); restore the version the run used", file=str(path),
            )
        col.add_file(path, "suite")
        data, _ = yamlfile.load(path)
        prompty = ((data or {}).get("prompt") or {}).get("prompty") if isinstance(data, dict) else None
        if prompty:
            col.add_file(path.parent / prompty, "suite prompt")
        for ds_path, digest in (entry.get("datasets") or {}).items():
            col.add_file(col.resolve(ds_path), "dataset", sha256=digest, what="dataset")


def _audit_section(col: _Collector, record: dict[str, Any], audit_log: Path | None) -> dict[str, Any]:
    from gatekeeper.gate.attestations import run_audit_records
    from gatekeeper.gate.audit import AuditLog, canonical_json

    if audit_log is None or not audit_log.is_file():
        return {"log": str(audit_log) if audit_log else None, "present": False}
    log = AuditLog(audit_log)
    result = log.verify()
    section: dict[str, Any] = {"log": str(audit_log), "present": True, "chain_ok": result.ok,
                               "records_in_log": result.count, "head": result.head}
    if not result.ok:
        section["problem"] = f"record {result.first_bad}: {result.reason}"
        return section
    records = run_audit_records(log, record)
    col.add("audit/records.jsonl", "".join(canonical_json(r) + "\n" for r in records).encode("utf-8"),
            "audit records of the run")
    section["records"] = len(records)
    return section


def build_bundle(run_dir: Path, out: Path, *, project_root: Path, audit_log: Path | None,
                 rendered: dict[str, bytes] | None = None) -> Bundle:
    """Write the evidence zip for ``run_dir`` to ``out`` and return its manifest.

    ``rendered`` replaces run files by name with fresh renderings (the command re-renders
    ``report.html`` with the signatures and audit state at bundling time).

    :raises UsageError: not a run directory, or a file the record names is missing or changed.
    """
    from gatekeeper.engine.record import file_paths, stored_body, verify_files
    from gatekeeper.engine.results import utc_now
    from gatekeeper.engine.session import read_record
    from gatekeeper.gate.approvals import record_hash
    from gatekeeper.host.plugins import _gatekeeper_version

    if not run_dir.is_dir():
        raise UsageError("not a run directory (give the --out directory of gatekeeper check or run)",
                         file=str(run_dir))
    record = read_record(run_dir)
    problems = verify_files(record, run_dir)  # the per-case files must still be the ones the record names
    if problems:
        raise UsageError("the per-case files do not match the record: " + "; ".join(problems[:3]), file=str(run_dir))
    per_case = set(file_paths(record))
    col = _Collector(project_root)
    for path in _run_files(run_dir):
        if out.exists() and path.resolve() == out.resolve():
            continue
        name = path.relative_to(run_dir).as_posix()
        if name in per_case:  # streamed into the zip, never held in memory whole
            col.add("run/" + name, b"", _run_role(path.name) if "/" not in name else "output blob", source=path)
            continue
        if name.startswith("blobs/"):
            continue  # a blob no row of this record references (left by an earlier run)
        col.add("run/" + name, (rendered or {}).get(name) or path.read_bytes(), _run_role(path.name))
    if record.get("kind") == "check":
        policy = record["policy"]
        col.add_file(col.resolve(policy["path"]), "policy", sha256=policy["sha256"], what="policy file")
        for required in (record.get("approvals") or {}).get("required") or []:
            pems = required.get("public_key_pems") or []
            for i, key in enumerate(required.get("public_keys") or []):
                if i < len(pems) and not col.resolve(key).is_file():  # moved: the record keeps the key
                    col.add(f"keys/{required['role']}-{i + 1}.pub", pems[i].encode("ascii"),
                            f"public key of role {required['role']} (as the decision record keeps it)")
                else:
                    col.add_file(col.resolve(key), f"public key of role {required['role']}", what="public key")
    _add_suites(col, record)
    audit = _audit_section(col, record, audit_log)
    members = [col.members[name] for name in sorted(col.members)]
    manifest = {
        "schema": EVIDENCE_SCHEMA,
        "created": utc_now(),
        "gatekeeper": _gatekeeper_version(),
        "run_id": record.get("run_id"),
        "kind": record.get("kind"),
        "decision": record.get("decision"),
        "record_hash": record_hash(stored_body(record)) if record.get("kind") == "check" else None,
        "audit": audit,
        "members": [m.entry() for m in members],
    }
    manifest_bytes = (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, manifest_bytes)
        for m in members:
            m.write(zf)
    tmp.replace(out)
    return Bundle(out, manifest, sha256_bytes(manifest_bytes))


def _run_role(name: str) -> str:
    return {"decision.json": "decision record", "results.json": "run record", "approvals.jsonl": "approvals",
            "cases.jsonl": "per-case results (hashed in the record)",
            "case_index.jsonl": "cases asked (hashed in the record)",
            "report.html": "report", "report.pdf": "report", "summary.md": "report",
            "junit.xml": "report"}.get(name, "run output")


# --------------------------------------------------------------------------- verifying


@dataclass
class Verification:
    """The outcome of :func:`verify_bundle`; ``ok`` when nothing is missing, extra or changed."""

    manifest_sha256: str
    manifest: dict[str, Any]
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)
    """One line per valid approval signature in ``run/approvals.jsonl``."""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed or self.problems)


def _not_a_bundle(path: Path, why: str) -> UsageError:
    return UsageError(f"not an evidence bundle: {why}", file=str(path))


def _read_manifest(zf: zipfile.ZipFile, path: Path) -> tuple[dict[str, Any], str]:
    try:
        data = zf.read(MANIFEST)
    except KeyError:
        raise _not_a_bundle(path, f"no {MANIFEST}") from None
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _not_a_bundle(path, f"{MANIFEST} is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != EVIDENCE_SCHEMA:
        raise _not_a_bundle(path, f"{MANIFEST} is not a {EVIDENCE_SCHEMA} manifest")
    members = manifest.get("members")
    if not isinstance(members, list) or not all(
        isinstance(m, dict) and isinstance(m.get("path"), str) and isinstance(m.get("sha256"), str)
        for m in members
    ):
        raise _not_a_bundle(path, f"{MANIFEST} has no valid 'members' list")
    return manifest, sha256_bytes(data)


def _unsafe(name: str) -> bool:
    pure = PurePosixPath(name)
    return pure.is_absolute() or ".." in pure.parts or "\\" in name


def verify_bundle(path: Path) -> Verification:
    """Re-hash every member of a bundle against its manifest.

    :raises UsageError: the file is not a zip or has no valid manifest (exit 4).
    """
    if not path.is_file():
        raise UsageError("bundle not found", file=str(path))
    if not zipfile.is_zipfile(path):
        raise _not_a_bundle(path, "not a zip file")
    try:
        with zipfile.ZipFile(path) as zf:
            manifest, digest = _read_manifest(zf, path)
            result = Verification(digest, manifest)
            _check_members(zf, manifest, result)
            _check_record(zf, manifest, result)
            _check_case_files(zf, result)
            _check_audit_records(zf, result)
            _check_bundled_check(zf, manifest, result)
            _check_signatures(zf, manifest, result)
    except zipfile.BadZipFile as exc:
        raise _not_a_bundle(path, f"damaged zip ({exc})") from None
    return result


def _check_members(zf: zipfile.ZipFile, manifest: dict[str, Any], result: Verification) -> None:
    names = [info.filename for info in zf.infolist() if not info.is_dir()]
    for name, count in Counter(names).items():
        if count > 1:
            result.problems.append(f"{name}: stored {count} times (a second copy was added)")
    for name in names:
        if _unsafe(name):
            result.problems.append(f"{name}: unsafe member name")
    listed = {m["path"]: m for m in manifest["members"]}
    present = set(names)
    result.extra = sorted(present - set(listed) - {MANIFEST})
    for name, entry in sorted(listed.items()):
        if name not in present:
            result.missing.append(name)
            continue
        try:
            actual = _member_sha256(zf, name)
        except zipfile.BadZipFile as exc:  # a member whose CRC no longer matches
            result.changed.append(f"{name} (unreadable: {exc})")
            continue
        result.checked += 1
        if actual != entry["sha256"]:
            result.changed.append(f"{name} (SHA-256 {actual[:12]}…, manifest {entry['sha256'][:12]}…)")


def _check_record(zf: zipfile.ZipFile, manifest: dict[str, Any], result: Verification) -> None:
    from gatekeeper.gate.approvals import record_hash

    expected = manifest.get("record_hash")
    if not expected or "run/decision.json" not in zf.namelist():
        return
    try:
        record = json.loads(zf.read("run/decision.json"))
    except (json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile):
        result.problems.append("run/decision.json is not a JSON record")
        return
    if not isinstance(record, dict) or record_hash(record) != expected:
        result.problems.append("run/decision.json does not hash to the manifest's record_hash")


def _member_sha256(zf: zipfile.ZipFile, name: str) -> str:
    digest = hashlib.sha256()
    with zf.open(name) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_case_files(zf: zipfile.ZipFile, result: Verification) -> None:
    """Record format 2: every per-case file the bundled record names is in the bundle and hashes
    to what the record holds (a rewritten manifest does not hide an edited case line)."""
    from gatekeeper.engine.record import content_sha256, expected_hashes

    for record_name in ("run/decision.json", "run/results.json"):
        if record_name not in zf.namelist():
            continue
        try:
            record = json.loads(zf.read(record_name))
        except (json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile):
            return  # reported by _check_record
        if not isinstance(record, dict):
            return
        present = set(zf.namelist())
        for rel, sha in expected_hashes(record).items():
            name = "run/" + rel
            if name not in present:
                result.problems.append(f"{name}: named by {record_name} but not in the bundle")
                continue
            try:
                actual = content_sha256(Path(name), zf.open(name))
            except zipfile.BadZipFile as exc:
                result.problems.append(f"{name}: unreadable ({exc})")
                continue
            if actual != sha:
                result.problems.append(f"{name}: hashes to {actual[:12]}…, {record_name} holds {sha[:12]}… "
                                       "(a case was edited)")
        return


def _check_audit_records(zf: zipfile.ZipFile, result: Verification) -> None:
    from gatekeeper.gate.audit import record_digest

    if "audit/records.jsonl" not in zf.namelist():
        return
    try:
        lines = zf.read("audit/records.jsonl").decode("utf-8").splitlines()
    except (UnicodeDecodeError, zipfile.BadZipFile):
        result.problems.append("audit/records.jsonl is not UTF-8 text")
        return
    for number, line in enumerate(lines, start=1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            result.problems.append(f"audit/records.jsonl:{number}: not JSON")
            continue
        if not isinstance(rec, dict) or rec.get("hash") != record_digest(rec):
            result.problems.append(f"audit/records.jsonl:{number}: the record does not hash to its 'hash'")


def _check_bundled_check(zf: zipfile.ZipFile, manifest: dict[str, Any], result: Verification) -> None:
    """A decision bundle must carry the audit ``check`` record that noted its record's hash."""
    expected = manifest.get("record_hash")
    if not expected or "audit/records.jsonl" not in zf.namelist():
        return
    try:
        lines = zf.read("audit/records.jsonl").decode("utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError, zipfile.BadZipFile):
        return  # already reported by _check_audit_records
    checks = [r for r in records if isinstance(r, dict) and r.get("action") == "check"]
    if not any((r.get("refs") or {}).get("decision") == expected for r in checks):
        noted = ", ".join(str((r.get("refs") or {}).get("decision"))[:12] + "…" for r in checks) or "none"
        result.problems.append(f"run/decision.json: its hash {str(expected)[:12]}… is not the one the bundled "
                               f"audit check record noted ({noted}): the decision was edited")


def bundled_record_check(path: Path, result: Verification, audit_log: Path) -> Any:
    """:func:`gatekeeper.gate.integrity.check_record` of the bundle's decision against ``audit_log``."""
    from gatekeeper.gate.integrity import check_record

    if not result.manifest.get("record_hash"):
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            record = json.loads(zf.read("run/decision.json"))
    except (KeyError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return check_record(record, audit_log) if isinstance(record, dict) else None


def _check_signatures(zf: zipfile.ZipFile, manifest: dict[str, Any], result: Verification) -> None:
    """Each approval in the bundle must verify and sign the bundled decision record."""
    from gatekeeper.gate.approvals import allowed_for_role, required_from_record, verify_signature

    try:
        required = required_from_record(json.loads(zf.read("run/decision.json")))
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError, UnicodeDecodeError):
        required = []

    if "run/approvals.jsonl" not in zf.namelist():
        return
    try:
        lines = zf.read("run/approvals.jsonl").decode("utf-8").splitlines()
    except (UnicodeDecodeError, zipfile.BadZipFile):
        result.problems.append("run/approvals.jsonl is not UTF-8 text")
        return
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            approval = json.loads(line)
            why = verify_signature(approval) if isinstance(approval, dict) else "not a JSON object"
        except (json.JSONDecodeError, KeyError) as exc:
            why = f"not an approval ({exc})"
            approval = {}
        if not why and manifest.get("record_hash") and approval.get("record_hash") != manifest["record_hash"]:
            why = "it signs a different decision record"
        if not why and required:  # the same rule as status and promote: the policy's keys per role
            try:
                why = allowed_for_role(approval, required)
            except UsageError as exc:
                why = str(exc)
        where = f"run/approvals.jsonl:{number}"
        if why:
            result.problems.append(f"{where}: {why}")
        else:
            result.signatures.append(f"{approval.get('signer')} as {approval.get('role') or 'no role'} "
                                     f"({approval.get('meaning')}) at {approval.get('time')}")


def find_in_audit(audit_log: Path, manifest_sha256: str) -> dict[str, Any] | None:
    """The audit record that noted this manifest hash, if the log has one."""
    from gatekeeper.gate.audit import AuditLog

    if not audit_log.is_file():
        return None
    try:
        records = AuditLog(audit_log).records()
    except UsageError:
        return None
    return next((r for r in records if r.get("action") == "evidence"
                 and (r.get("refs") or {}).get("manifest") == manifest_sha256), None)
