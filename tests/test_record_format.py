"""The run record, format 2 (issue 18, item 1): per-case files beside decision.json, hashed
in it; readers stream them; older inline records still read; newer formats refused; huge
outputs stored once as blobs."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from gatekeeper.testing import Project, run_paired_check, write_paired_project

N = 60
BASE = [i % 5 != 0 for i in range(N)]
CAND = [i % 6 != 0 for i in range(N)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def checked_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real ``gatekeeper check`` (PROMOTE); each test gets a copy of the project after it."""
    project = Project(tmp_path_factory.mktemp("checked"))
    write_paired_project(project, baseline=BASE, candidates={"candidate": CAND}, margin=0.2)
    result = run_paired_check(project)
    assert result.exit_code == 0 and result.decision == "PROMOTE", result.output
    return project.path


def _checked(project: Project, source: Path) -> dict:
    shutil.copytree(source, project.path, dirs_exist_ok=True)
    return project.read_json("out/decision.json")


def test_a_check_writes_per_case_files_whose_hashes_the_decision_keeps(project: Project, checked_once: Path) -> None:
    stored = _checked(project, checked_once)
    out = project.path / "out"
    assert stored["record_format"] == 2 and "cases" not in stored and "case_index" not in stored
    files = stored["case_files"]
    assert files["cases"]["path"] == "cases.jsonl" and files["cases"]["rows"] == 2 * N
    assert files["cases"]["sha256"] == _sha(out / "cases.jsonl")
    assert files["case_index"]["sha256"] == _sha(out / "case_index.jsonl") and files["case_index"]["rows"] == N
    lines = (out / "cases.jsonl").read_text().splitlines()
    assert len(lines) == 2 * N and json.loads(lines[0])["scores"]["facts"]["status"] == "ok"
    assert not list(out.glob(".staging-*")) and not (out / "CHECK_INCOMPLETE").exists()
    # the readers stream the file: status vouches for it, the report lists the cases
    assert project.run("status", "out").exit_code == 0
    rendered = project.run("report", "out", "--format", "html")
    assert rendered.exit_code == 0, rendered.output
    assert "c059" in (out / "report.html").read_text()


def test_one_edited_case_line_is_detected_by_every_reader(project: Project, checked_once: Path) -> None:
    _checked(project, checked_once)
    cases = project.path / "out/cases.jsonl"
    lines = cases.read_text().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if json.loads(line)["scores"]["facts"]["passed"] is False)
    row = json.loads(lines[n])
    row["scores"]["facts"].update(value=1.0, passed=True)  # a failed case made to pass
    lines[n] = json.dumps(row, ensure_ascii=False) + "\n"
    cases.write_text("".join(lines))

    status = project.run("status", "out")
    assert status.exit_code == 4
    assert "cases.jsonl was changed after the record was written: it hashes to" in status.stderr
    report = project.run("report", "out", "--format", "html")
    assert report.exit_code == 4 and "TAMPERED" in report.stderr
    assert '<h1 class="decision" id="decision-state">TAMPERED</h1>' in (project.path / "out/report.html").read_text()
    evidence = project.run("evidence", "out", "--out", "bundle.zip")
    assert evidence.exit_code == 4 and "cases.jsonl" in evidence.stderr
    assert not (project.path / "bundle.zip").exists()


def test_an_evidence_bundle_carries_the_case_files_and_catches_an_edited_one(
        project: Project, checked_once: Path) -> None:
    _checked(project, checked_once)
    built = project.run("evidence", "out", "--out", "bundle.zip")
    assert built.exit_code == 0, built.output
    with zipfile.ZipFile(project.path / "bundle.zip") as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    assert members["run/cases.jsonl"] == (project.path / "out/cases.jsonl").read_bytes()
    assert "run/case_index.jsonl" in members
    assert members["run/scores.npz"] == (project.path / "out/scores.npz").read_bytes()
    assert project.run("evidence", "verify", "bundle.zip").exit_code == 0

    # An attacker edits one case and rewrites the manifest's hashes: decision.json still names the old hash.
    lines = members["run/cases.jsonl"].decode().splitlines(keepends=True)
    lines[0] = lines[0].replace('"ok"', '"ok" ', 1)  # any spacing the writer used
    members["run/cases.jsonl"] = "".join(lines).encode()
    manifest = json.loads(members["manifest.json"])
    for entry in manifest["members"]:
        entry["sha256"] = hashlib.sha256(members[entry["path"]]).hexdigest()
        entry["bytes"] = len(members[entry["path"]])
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(project.path / "forged.zip", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    verified = project.run("evidence", "verify", "forged.zip")
    assert verified.exit_code != 0
    assert "run/cases.jsonl: hashes to" in verified.output and "(a case was edited)" in verified.output


def test_readers_load_the_score_columns_the_record_hashed_and_parse_the_rows_otherwise(
        project: Project, checked_once: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gatekeeper.engine import record as rec
    from gatekeeper.engine.score_columns import columns_of

    stored = _checked(project, checked_once)
    out = project.path / "out"
    entry = stored["case_files"]["scores"]
    assert entry == {"path": "scores.npz", "sha256": _sha(out / "scores.npz"), "rows": 2 * N,
                     "bytes": (out / "scores.npz").stat().st_size}
    parsed = columns_of(json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines())

    def no_parsing(path: Path):  # the rows are not read to make the columns
        raise AssertionError(f"{path} parsed")

    with monkeypatch.context() as patch:
        patch.setattr(rec, "_read_lines_at", no_parsing)
        loaded = rec.score_columns(rec.load(out))
        assert loaded.keys == parsed.keys and list(loaded.metrics) == list(parsed.metrics)
        assert loaded.metrics["facts"].passed.tolist() == parsed.metrics["facts"].passed.tolist()
        row = rec.rows_at(rec.load(out), [5])[5]  # a whole row, found by the saved offset
        assert row == json.loads((out / "cases.jsonl").read_text().splitlines()[5])

        # A large case index (over INDEX_IN_MEMORY entries) finds its entries by the saved offsets.
        patch.setattr(rec, "INDEX_IN_MEMORY", 10)
        index = rec.case_index(rec.load(out))
        assert index["paired::c007"]["id"] == "c007" and len(index) == N
        patch.setattr(rec.CaseIndex, "_scan", lambda self: (_ for _ in ()).throw(AssertionError("scanned")))
        assert index["paired::c042"]["id"] == "c042"

    # A scores.npz that is not the one the record hashed is not used, and every reader says so.
    with np.load(out / "scores.npz") as archive:
        arrays = dict(archive)
    arrays["passed_0"] = np.ones_like(arrays["passed_0"])  # every case made to pass
    np.savez(out / "scores.npz", **arrays)
    fallback = rec.score_columns(rec.load(out))
    assert fallback.metrics["facts"].passed.tolist() == parsed.metrics["facts"].passed.tolist()
    status = project.run("status", "out")
    assert status.exit_code == 4 and "scores.npz was changed after the record was written" in status.stderr
    report = project.run("report", "out", "--format", "html")
    assert report.exit_code == 4 and "TAMPERED" in report.stderr

    # A format-2 record written before scores.npz existed is read from its rows.
    (out / "scores.npz").unlink()
    record = rec.load(out)
    del record["case_files"]["scores"]
    rec.attach(record, out)
    assert rec.score_columns(record).metrics["facts"].passed.tolist() == parsed.metrics["facts"].passed.tolist()


def test_an_older_inline_record_still_renders(project: Project, checked_once: Path) -> None:
    from gatekeeper.gate.approvals import record_hash
    from gatekeeper.gate.audit import AuditLog

    _checked(project, checked_once)
    record = project.read_record("out/decision.json")  # cases read back from the files
    del record["record_format"], record["case_files"]  # as an older gatekeeper wrote it: format 1, inline
    for name in ("cases.jsonl", "case_index.jsonl"):
        (project.path / "out" / name).unlink()
    (project.path / "out/decision.json").write_text(json.dumps(record, indent=1))
    AuditLog(project.path / ".gatekeeper/audit.jsonl").append(
        "check", subject=record["run_id"], refs={"decision": record_hash(record)})
    result = project.run("report", "out", "--format", "html", "--format", "markdown", "--format", "json")
    assert result.exit_code == 0, result.output
    assert "c059" in (project.path / "out/report.html").read_text()
    rewritten = project.read_json("out/decision.json")  # kept in its own format: the audit hash still holds
    assert len(rewritten["cases"]) == 2 * N and "record_format" not in rewritten
    assert not (project.path / "out/cases.jsonl").exists()
    assert project.run("status", "out").exit_code == 0


def test_a_record_of_a_newer_format_is_refused_with_the_version_it_needs(project: Project, checked_once: Path) -> None:
    stored = _checked(project, checked_once)
    stored["record_format"] = 3
    (project.path / "out/decision.json").write_text(json.dumps(stored))
    for command in (("report", "out"), ("status", "out")):
        result = project.run(*command)
        assert result.exit_code == 4, result.output
        assert ("out/decision.json: record_format: this record has record_format 3, this gatekeeper reads "
                "formats 1 to 2: read it with a gatekeeper that supports record format 3") in result.stderr


FLAGGER = """
from gatekeeper import hookimpl
from gatekeeper.kinds import Detector
from gatekeeper.types import Span

class Flagger(Detector):
    name = "flagger"
    def score(self, case, generation):
        text = generation.text
        spans = [Span(text=text, start=0, end=len(text), reason=f"claim {i}") for i in range(3)]
        return self.result(1.0 if len(text) > 1000 else 0.0, passed=len(text) <= 1000, reason="size", spans=spans)

@hookimpl
def gatekeeper_register_detectors(register):
    register(Flagger)
"""


def test_a_6_mb_output_is_stored_once_as_a_blob(project: Project) -> None:
    huge = "The answer is yes. " + "x" * 6_000_000
    write_paired_project(project, baseline=BASE, candidates={"candidate": CAND}, margin=0.2)
    project.write("gatekeeper_plugins.py", FLAGGER)
    project.write("suites/paired.yaml", (project.path / "suites/paired.yaml").read_text() + "detectors: [flagger]\n")
    rows = [json.loads(line) for line in (project.path / "candidate.jsonl").read_text().splitlines()]
    rows[1]["output"] = huge
    project.write_jsonl("candidate.jsonl", rows)
    result = run_paired_check(project)
    assert result.exit_code == 0, result.output
    out = project.path / "out"
    blobs = list((out / "blobs").iterdir())
    digest = hashlib.sha256(huge.encode()).hexdigest()
    assert [b.name for b in blobs] == [f"{digest}.gz"]  # one blob, the whole output
    assert gzip.decompress(blobs[0].read_bytes()).decode() == huge
    assert (out / "decision.json").stat().st_size < 200_000
    assert (out / "cases.jsonl").stat().st_size < 300_000  # three spans and the output: references, not copies
    stored = project.read_json("out/decision.json")
    assert stored["case_files"]["blobs"] == {
        digest: {"path": f"blobs/{digest}.gz", "bytes": len(huge), "stored_bytes": blobs[0].stat().st_size}}
    row = next(r for r in project.read_record("out")["cases"]
               if r["key"] == "paired::c001" and r["model"] == "candidate")
    assert row["output_truncated"]["path"] == f"blobs/{digest}.gz" and row["output"] == huge[:65_536]
    spans = row["scores"]["flagger"]["spans"]  # each span points into the output's blob: no copy
    assert [(s["start"], s["end"], s.get("in_output"), "text" in s) for s in spans] == [(0, len(huge), True, False)] * 3
    assert project.run("status", "out").exit_code == 0
    blobs[0].write_bytes(gzip.compress((huge[:-1] + "y").encode()))  # the blob is covered by the record's hash too
    tampered = project.run("status", "out")
    assert tampered.exit_code == 4 and f"blobs/{digest}.gz was changed" in tampered.stderr


def test_a_file_rewritten_in_place_with_its_size_and_time_kept_is_hashed_again(tmp_path: Path) -> None:
    import os

    from gatekeeper.engine.record import file_sha256

    path = tmp_path / "cases.jsonl"
    path.write_text('{"passed": false}\n')
    before = path.stat()
    assert file_sha256(path) == _sha(path)
    with path.open("r+") as fh:  # the same inode, the same size, the modification time put back
        fh.write('{"passed": true }\n')
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    assert file_sha256(path) == _sha(path) == hashlib.sha256(b'{"passed": true }\n').hexdigest()
