"""A reader that closes the pipe early does not change the exit code (issue 17, item 4).

``gatekeeper status RUN | head -1`` and ``gatekeeper check ... | grep -m1`` used to end in
"internal error: BrokenPipeError" (exit 5). The reader's end is closed before the command
writes anything, so every write meets a closed pipe, deterministically.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gatekeeper.testing import Project, run_paired_check, write_paired_project

GATEKEEPER = str(Path(sys.executable).with_name("gatekeeper"))


def closed_pipe(project: Project, *args: str) -> tuple[int, str]:
    """Run ``gatekeeper ARGS`` with its stdout read by nobody; its exit code and stderr."""
    proc = subprocess.Popen([GATEKEEPER, *args], cwd=project.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "GATEKEEPER_DEBUG": ""})
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head -0`: the reader is gone before the first line
    err = proc.stderr.read().decode()
    return proc.wait(timeout=120), err


def test_check_and_status_keep_the_decisions_exit_code(project: Project) -> None:
    write_paired_project(project, baseline=[True] * 40, candidates={"candidate": [True] * 20 + [False] * 20})
    assert run_paired_check(project).exit_code == 1  # REJECT, read normally
    code, err = closed_pipe(project, "check", "--baseline", "replay:baseline.jsonl", "--candidate",
                            "replay:candidate.jsonl", "--policy", "policy.yaml", "--out", "piped", "--no-progress")
    assert (code, err) == (1, "")
    assert (project.path / "piped/decision.json").is_file()  # the reports were written all the same
    code, err = closed_pipe(project, "status", "piped")
    assert code == 1 and "BrokenPipe" not in err and "internal error" not in err


def test_status_piped_into_head_keeps_the_status_exit_code(project: Project) -> None:
    write_paired_project(project, baseline=[True] * 40, candidates={"candidate": [True] * 40})
    run_paired_check(project)
    expected = project.run("status", "out")
    assert expected.exit_code in (0, 1, 2, 3), expected.output
    shell = f"set -o pipefail; '{GATEKEEPER}' status out | head -1"
    proc = subprocess.run(["bash", "-c", shell], cwd=project.path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == expected.exit_code, proc.stderr
    assert proc.stdout == expected.stdout.splitlines(keepends=True)[0]
    assert proc.stderr == ""
