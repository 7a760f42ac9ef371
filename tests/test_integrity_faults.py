"""Issue 14: a check on a filling disk, and a replay check with no network at all.

The fault test mounts a small tmpfs (in a private mount namespace: ``unshare``), puts the
audit log and the out directory on it, and runs the same check once for every amount of
free space from none to enough, in page steps, so that the disk fills at each of the
check's writes in turn (marker, staged record, audit append, each report). After every
run the audit trail must verify, and the out directory must be complete or clearly marked
failed — never a stale or half-written decision that looks like this run's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gatekeeper.testing import Project, write_paired_project

N = 40


def _namespace(flags: str) -> list[str] | None:
    """``unshare`` with ``flags`` (as root, or mapped to root in a user namespace), if it works here."""
    if not shutil.which("unshare"):
        return None
    for prefix in (["unshare", flags], ["unshare", "-r", flags]):
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return None


FILL_SCRIPT = textwrap.dedent('''
    import contextlib, io, json, os, shutil, sys
    from pathlib import Path
    from gatekeeper.cli import main
    from gatekeeper.gate.audit import AuditLog
    from gatekeeper.gate.integrity import check_record
    from gatekeeper.gate.outdir import MARKER, read_marker

    mnt, page = Path(sys.argv[1]), 4096
    out, log_path = mnt / "out", mnt / "audit.jsonl"
    argv = ["check", "--baseline", "replay:baseline.jsonl", "--candidate", "replay:better.jsonl",
            "--policy", "policy.yaml", "--out", str(out), "--no-progress",
            "--format", "json", "--format", "markdown", "--format", "junit"]

    def run():
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(argv)
        return code, err.getvalue()

    def used():
        st = os.statvfs(mnt)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def fill(leave):
        st = os.statvfs(mnt)
        free = st.f_bavail * st.f_frsize
        with open(mnt / "filler", "wb") as f:
            try:
                f.write(b"\\0" * max(0, free - leave))
            except OSError:
                pass

    def wipe():
        for p in mnt.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    wipe()
    base = used()
    assert run()[0] == 0
    needed = used() - base  # one good check, log and reports
    results = []
    # fresh: the disk fills at each write of a first check in turn; after-good: a good run is
    # in the directory (its files are freed when the new check claims the directory).
    plan = [("fresh", leave) for leave in range(0, needed + 2 * page, page)]
    plan += [("after-good", leave) for leave in range(0, needed + 2 * page, 4 * page)]
    for mode, leave in plan:
        wipe()
        first_id = None
        if mode == "after-good":
            first = run()
            assert first[0] == 0, first
            first_id = json.loads((out / "decision.json").read_text())["run_id"]
        fill(leave)
        code, err = run()
        (mnt / "filler").unlink()
        log = AuditLog(log_path)
        v = log.verify()
        records = log.records() if v.ok else []
        decision = out / "decision.json"
        marker = read_marker(out)
        state = {"mode": mode, "leave": leave, "code": code, "verify": v.ok, "count": v.count,
                 "marker": marker.get("state") if marker else None, "decision": decision.is_file(),
                 "traceback": "Traceback" in err, "err": err.strip()[-200:],
                 "empty": not out.is_dir() or not any(p for p in out.iterdir() if not p.name.startswith("."))}
        if decision.is_file():
            record = json.loads(decision.read_text())
            state["intact"] = check_record(record, log_path).status
            state["new_run"] = record["run_id"] != first_id
        checks = [r["subject"] for r in records if r["action"] == "check"]
        voided = {r["subject"] for r in records if r["action"] == "check.void"}
        published = json.loads(decision.read_text())["run_id"] if decision.is_file() else None
        state["orphans"] = [c for c in checks if c not in (published, first_id) and c not in voided
                            and (marker or {}).get("run_id") != c]
        results.append(state)
    print(json.dumps({"needed": needed, "results": results}))
    for r in results:
        print(r["mode"], r["leave"], "exit", r["code"], r["marker"], r["decision"], r["count"], r["err"][-90:],
              file=sys.stderr)
''')


def test_a_check_on_a_filling_disk_keeps_the_trail_and_never_shows_a_stale_decision(
        project: Project, tmp_path: Path) -> None:
    prefix = _namespace("-m")
    if prefix is None:
        pytest.skip("no mount namespace here (unshare -m / -rm failed): cannot mount a small tmpfs")
    write_paired_project(project, baseline=[i < 30 for i in range(N)],
                         candidates={"better": [i < 34 for i in range(N)]})
    mnt = tmp_path / "small"
    mnt.mkdir()
    project.write("gatekeeper.yaml", f"audit_log: {mnt}/audit.jsonl\n")
    script = tmp_path / "fill.py"
    script.write_text(FILL_SCRIPT)
    shell = f"mount -t tmpfs -o size=2m tmpfs {mnt} && exec {sys.executable} {script} {mnt}"
    proc = subprocess.run([*prefix, "sh", "-c", shell], cwd=project.path, capture_output=True, text=True,
                          timeout=600, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path.cwd()),
                                            "GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD": "1", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    results = report["results"]
    fresh = [r for r in results if r["mode"] == "fresh"]
    assert len(fresh) >= 5, report  # the disk filled at several different writes
    # Each of a check's writes was hit: before the directory was claimed, after the marker,
    # after the audit append (a check record, then voided or named by the marker).
    assert {r["marker"] for r in fresh if r["code"] != 0} >= {"running"} or any(
        r["marker"] == "failed" for r in fresh), fresh
    failures = [r for r in results if r["code"] != 0]
    assert failures and any(r["code"] == 0 for r in results), results  # both sides of the boundary
    for r in results:
        assert r["verify"], r  # the audit trail verifies after every fault
        assert not r["traceback"], r
        assert r["code"] in (0, 4, 5), r
        assert not r["orphans"], r  # an unpublished check record is voided or named by the marker
        if r["code"] == 0:
            assert r["decision"] and r["marker"] is None and r["intact"] == "intact" and r["new_run"], r
            assert r["count"] == (2 if r["mode"] == "after-good" else 1), r
        elif r["decision"]:
            # Failed before touching the directory: the previous run's complete, vouched-for record.
            assert r["marker"] is None and r["intact"] == "intact" and not r["new_run"], r
        else:
            # Marked failed — or, when even the marker could not be written, nothing there at all.
            assert r["marker"] in ("running", "failed") or r["empty"], r
    marked = [r for r in failures if r["marker"]]
    assert marked, "at least one fault hit after the out directory was claimed"


SOCKET_SCRIPT = textwrap.dedent('''
    import json, socket, sys
    events = []
    def hook(event, args):
        if event == "socket.__new__":
            family = args[1]
            if family not in (socket.AF_UNIX, -1):
                events.append(f"{event} family={family}")
        elif event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto",
                       "socket.bind"):
            events.append(f"{event} {args[1:]!r}")
    sys.addaudithook(hook)
    from gatekeeper.cli import main
    code = main(sys.argv[2:])
    open(sys.argv[1], "w").write(json.dumps({"code": code, "events": events}))
''')


def test_a_replay_check_opens_no_socket_in_a_namespace_without_network(project: Project, tmp_path: Path) -> None:
    write_paired_project(project, baseline=[i < 30 for i in range(N)],
                         candidates={"better": [i < 34 for i in range(N)]})
    prefix = _namespace("-n") or []  # without one, the audit hook alone still sees every socket
    script = tmp_path / "guarded.py"
    script.write_text(SOCKET_SCRIPT)
    log = tmp_path / "sockets.json"
    argv = ["check", "--baseline", "replay:baseline.jsonl", "--candidate", "replay:better.jsonl",
            "--policy", "policy.yaml", "--out", "out", "--no-progress"]
    proc = subprocess.run([*prefix, sys.executable, str(script), str(log), *argv], cwd=project.path,
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path.cwd()), "HOME": str(tmp_path),
                               "GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    seen = json.loads(log.read_text())
    assert seen["code"] == 0
    assert seen["events"] == [], seen["events"]
    assert (project.path / "out/decision.json").is_file()
    if prefix:
        ip = subprocess.run([*prefix, "sh", "-c", "cat /proc/net/dev"], capture_output=True, text=True)
        assert "eth" not in ip.stdout  # really no interface but loopback in there
