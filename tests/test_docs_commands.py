"""Executable documentation (issue 17, item 1): every documented command works as written.

Every fenced shell block of README.md and docs/*.md that holds a ``gatekeeper`` command is
checked, in one of three ways chosen by an HTML comment on the line before the block (the
comment is visible in the Markdown source, so a skip is never silent):

``<!-- docs-test: run -->``
    Each command runs, in order, inside a fresh copy of the bundled project (``suites/``,
    ``policies/``): one session per document; a plain ``gatekeeper ...`` line runs in-process
    (as ``gatekeeper.testing.Project.run`` does, saving an interpreter start), anything with
    shell syntax (``&&``, ``|``, ``$``) in ``bash``. A command must end with a
    decision's exit code (0 to 3), never 4 (usage or configuration) or 5 (internal). A
    command that needs what CI does not have (the real embedded model, a network, Chromium)
    ends in the comment ``# docs-test: skip (why)``, shown in the doc.
(no comment)
    Each ``gatekeeper`` command (in ``$``-prompted transcripts: each prompted line) is parsed
    by the real command-line parser, with every installed plugin's commands: a flag or a
    required argument that drifted fails, without running anything.
``<!-- docs-test: skip (why) -->``
    Not checked: synopses with placeholders (``[--since T]``), and examples for other
    machines. The reason is required.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gatekeeper.cli import parse_command_line
from gatekeeper.testing import Project
from gatekeeper.types import UsageError

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELLS = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```", re.S | re.M)
MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<mode>run|skip)\b(?P<why>[^>]*)-->\s*$")
SKIP_LINE = re.compile(r"#\s*docs-test:\s*skip\b(?P<why>.*)$")
BIN = Path(sys.executable).parent


@dataclass
class Command:
    line: int
    text: str
    skip: str | None = None


@dataclass
class Block:
    doc: Path
    line: int
    mode: str  # run, parse or skip
    why: str = ""
    commands: list[Command] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def _commands(body: str, first_line: int) -> list[Command]:
    """The block's commands, ``\\``-continuations joined; in a transcript only the ``$`` lines."""
    lines = body.splitlines()
    transcript = any(ln.startswith("$ ") for ln in lines)
    out: list[Command] = []
    pending: Command | None = None
    for i, raw in enumerate(lines):
        text = raw.rstrip()
        if pending is not None:
            pending.text += " " + text.rstrip("\\").strip()
            if not text.endswith("\\"):
                pending = None
            continue
        if transcript:
            if not text.startswith("$ "):
                continue
            text = text[2:]
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        cmd = Command(first_line + i, text.rstrip("\\").strip())
        out.append(cmd)
        if text.endswith("\\"):
            pending = cmd
    for cmd in out:
        m = SKIP_LINE.search(cmd.text)
        if m:
            cmd.skip = m.group("why").strip() or "?"
    return out


def blocks() -> list[Block]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            if m.group("lang") not in SHELLS:
                continue
            line = text.count("\n", 0, m.start()) + 1
            commands = _commands(m.group("body"), line + 1)
            if not any(_gatekeeper_argvs(c.text) for c in commands):
                continue
            before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = MARKER.search(before)
            mode, why = (marker.group("mode"), marker.group("why").strip()) if marker else ("parse", "")
            found.append(Block(doc, line, mode, why, commands))
    return found


def _gatekeeper_argvs(command: str) -> list[list[str]]:
    """The ``gatekeeper ...`` argument lists of a shell line (pipelines, ``&&`` and ``;`` split)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:
        return []
    argvs, current = [], []
    for token in [*tokens, ";"]:
        if token in ("|", "||", "&&", ";", "&", "|&"):
            while current and re.match(r"^[A-Z_][A-Z0-9_]*=", current[0]):  # VAR=value prefixes
                current.pop(0)
            if current and current[0] == "gatekeeper":
                argvs.append(current[1:])
            current = []
        elif token in ("<", ">", ">>", "2>", "2>&1"):
            current.append(token)
        else:
            current.append(token)
    return [argv[: argv.index(">")] if ">" in argv else argv for argv in argvs]


ALL = blocks()


def test_the_docs_have_command_blocks_and_every_skip_says_why() -> None:
    assert len(ALL) > 20
    assert any(b.mode == "run" for b in ALL)
    for b in ALL:
        assert b.mode != "skip" or b.why.strip("() "), f"{b.where}: docs-test: skip needs a reason"
        for c in b.commands:
            assert c.skip is None or c.skip.strip("() ") != "?", f"{b.doc.name}:{c.line}: skip needs a reason"


@pytest.mark.parametrize("block", [b for b in ALL if b.mode == "parse"], ids=lambda b: b.where)
def test_documented_commands_parse(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no gatekeeper.yaml of the repository's in the way
    for command in block.commands:
        if command.skip:
            continue
        for argv in _gatekeeper_argvs(command.text):
            try:
                parse_command_line(argv)
            except UsageError as exc:
                pytest.fail(f"{block.doc.name}:{command.line}: `gatekeeper {shlex.join(argv)}`: {exc}")


def _session(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("suites", "policies"):
        shutil.copytree(REPO / name, project / name)
    return project


@pytest.mark.parametrize("doc", sorted({b.doc for b in ALL if b.mode == "run"}), ids=lambda d: d.name)
def test_documented_sessions_run(doc: Path, tmp_path: Path) -> None:
    project = _session(tmp_path)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "GATEKEEPER_DEBUG": "",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    failures = []
    for block in (b for b in ALL if b.doc == doc and b.mode == "run"):
        for command in block.commands:
            if command.skip:
                continue
            argvs = _gatekeeper_argvs(command.text)
            plain = re.sub(r"\s+#.*$", "", command.text)
            if len(argvs) == 1 and not re.search(r"[|&;$<>`]", plain) and plain.startswith("gatekeeper "):
                result = Project(project).run(*argvs[0], env={"GATEKEEPER_DEBUG": ""})
                code, output = result.exit_code, result.output
            else:
                proc = subprocess.run(["bash", "-c", command.text], cwd=project, env=env, capture_output=True,
                                      text=True, timeout=300)
                code, output = proc.returncode, proc.stdout + proc.stderr
            if code > 3:
                failures.append(f"{doc.name}:{command.line}: `{command.text}` exited {code}:\n{output[-1500:]}")
    assert not failures, "\n\n".join(failures)
