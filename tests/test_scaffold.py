"""`gatekeeper new-plugin`: a plugin of every kind, installed, listed, used, and tested."""

from __future__ import annotations

import json
import os
import py_compile
import re
import subprocess
from pathlib import Path

import pytest

from gatekeeper.builtin.commands.scaffold import KINDS, api_spec
from gatekeeper.testing import CLIResult, Project

REPO = Path(__file__).resolve().parents[1]
PREFIX = f"sc{os.getpid()}"
"""Names unique to this test process."""


def name_of(kind: str) -> str:
    return f"{PREFIX}-{kind}"


class LayeredVenv:
    """A throwaway virtual environment layered on the one running the tests.

    Its site-packages first loads the test environment's (gatekeeper, pip, setuptools, the
    first-party plugins), then its own, where the scaffolds are pip-installed. Installing
    into the running environment instead would show half-installed entry points to every
    test running concurrently (pytest-xdist) — an entry point whose module that process
    cannot import — and leave them behind if the run were killed.
    """

    def __init__(self, root: Path) -> None:
        import sysconfig
        import venv

        venv.EnvBuilder(with_pip=False).create(root)
        self.python = root / "bin" / "python"
        own = subprocess.run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
        layered = sysconfig.get_paths()["purelib"]
        Path(own, "00-gatekeeper-test-env.pth").write_text(f"import site; site.addsitedir({layered!r})\n")

    def run(self, *args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.python), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "GATEKEEPER_DEBUG": ""})

    def gatekeeper(self, project: Project, *args: str) -> CLIResult:
        proc = self.run("-m", "gatekeeper.cli", *args, cwd=project.path)
        return CLIResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Project, list[Path], LayeredVenv]:
    """All six kinds scaffolded under tmp_path/plugins and pip-installed, in one pip call."""
    (tmp_path / "project").mkdir()
    project = Project(tmp_path / "project")
    dists = []
    for kind in KINDS:
        result = project.run("new-plugin", name_of(kind), "--kind", kind, "--out", "plugins")
        assert result.exit_code == 0, result.output
        dists.append(project.path / "plugins" / f"gatekeeper-{name_of(kind)}")
    env = LayeredVenv(tmp_path / "venv")
    editable = [arg for d in dists for arg in ("-e", str(d))]
    done = env.run("-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", *editable, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return project, dists, env


SUITE = """
suite: scaffolded
prompt:
  messages:
    - {{role: user, content: "{{{{ input }}}}"}}
cases:
  - id: c1
    input: "How long is the return window?"
    context: Returns are accepted within 30 days.
    keywords: [30 days]
  - id: c2
    input: "How much is express shipping?"
    context: Express shipping costs $15 and takes 2 days.
    keywords: [$15, 2 days]
evaluators:
  - {{name: {evaluator}, threshold: 1.0}}
detectors: [{detector}]
"""


def test_every_kind_is_installed_listed_used_and_passes_its_own_tests(
    installed: tuple[Project, list[Path], LayeredVenv],
) -> None:
    project, dists, env = installed
    gatekeeper = env.gatekeeper
    listed = gatekeeper(project, "plugins", "--json")
    assert listed.exit_code == 0, listed.output
    plugins = {p["name"]: p for p in json.loads(listed.stdout)}
    for kind, spec in KINDS.items():
        info = plugins[name_of(kind)]
        assert (info["source"], info["distribution"], info["version"]) == (
            "entrypoint", f"gatekeeper-{name_of(kind)}", "0.1.0")
        assert info["api"] == api_spec() == ">=1.0,<2"
        assert info["registered"][spec.registry] == [name_of(kind)]

    # evaluator and detector: a suite lists both; provider: the suite runs on it.
    project.write("suites/scaffolded.yaml", SUITE.format(evaluator=name_of("evaluator"),
                                                         detector=name_of("detector")))
    project.write_jsonl("answers.jsonl", [{"id": "c1", "output": "You have 30 days."},
                                          {"id": "c2", "output": "It costs $25 and takes 2 days."}])
    ran = gatekeeper(project, "run", "suites", "--model", "replay:answers.jsonl", "--out", "out", "--no-progress")
    assert ran.exit_code == 1, ran.output
    rows = {r["key"]: r["scores"] for r in project.read_record("out/results.json")["cases"]}
    assert rows["scaffolded::c1"][name_of("evaluator")]["value"] == 1.0
    assert rows["scaffolded::c2"][name_of("evaluator")]["value"] == 0.5  # "2 days", not "$15"
    assert rows["scaffolded::c1"][name_of("detector")]["value"] == 0.0
    assert [s["text"] for s in rows["scaffolded::c2"][name_of("detector")]["spans"]] == ["25"]

    echoed = gatekeeper(project, "run", "suites", "--model", f"{name_of('provider')}:echo", "--out", "echo",
                        "--no-progress")
    assert echoed.exit_code == 1, echoed.output  # the echo of the question holds no keyword
    record = project.read_record("echo/results.json")
    assert {r["key"]: r["output"] for r in record["cases"]} == {
        "scaffolded::c1": "How long is the return window?", "scaffolded::c2": "How much is express shipping?"}
    assert next(iter(record["models"].values()))["identity"]["provider"] == name_of("provider")

    # tuner: `gatekeeper tune` makes a candidate, which a suite then runs on.
    project.write_jsonl("train.jsonl", [{"id": "c1", "output": "Within 30 days."},
                                        {"id": "c2", "output": "$15, in 2 days."}])
    tuned = gatekeeper(project, "tune", "--tuner", name_of("tuner"), "--base", "replay:answers.jsonl",
                       "--data", "train.jsonl", "--out", "cand")
    assert tuned.exit_code == 0, tuned.output
    assert project.read_json("cand/provenance.json")["tuner"] == name_of("tuner")
    on_candidate = gatekeeper(project, "run", "suites", "--model", "replay:cand/answers.jsonl", "--out", "cand-out",
                              "--no-progress")
    assert on_candidate.exit_code == 0, on_candidate.output

    # deploy target: the registry commands work through it.
    target = ("--target", name_of("deploy-target"), "--registry", "deploy/registry.json", "--model", "support")
    registered = gatekeeper(project, "registry", "register", "replay:cand/answers.jsonl", "--alias", "production",
                            *target)
    assert registered.exit_code == 0, registered.output
    shown = gatekeeper(project, "registry", "show", *target, "--json")
    assert shown.exit_code == 0, shown.output
    state = json.loads(shown.stdout)
    assert "replay:cand/answers.jsonl" in shown.stdout and "production" in json.dumps(state)
    assert (project.path / "deploy/registry.json").is_file()

    # signal source: `gatekeeper signals` finds it by its location prefix.
    project.write("export.json", json.dumps([{
        "id": f"s{i}", "conversation_id": f"c{i}", "time": "2025-03-01T10:00:00Z", "model": "support",
        "model_version": "3", "messages": [{"role": "user", "content": "Boots?"}], "answer": "45 days.",
        "feedback": {"verdict": verdict}} for i, verdict in enumerate(["accepted", "accepted", "rejected"])]))
    summary = gatekeeper(project, "signals", "summarize", f"{name_of('signal-source')}:export.json", "--json")
    assert summary.exit_code == 0, summary.output
    (group,) = json.loads(summary.stdout)["groups"]
    assert (group["model_version"], group["signals"], group["acceptance_rate"]["k"]) == ("3", 3, 2)

    # Each distribution's own test passes, against the installed plugin.
    own = env.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
                  *(str(d / "tests") for d in dists), cwd=project.path)
    assert own.returncode == 0, own.stdout[-3000:] + own.stderr[-2000:]
    assert re.search(r"\b18 passed\b", own.stdout), own.stdout[-500:]


def test_files_of_a_new_plugin(project: Project) -> None:
    result = project.run("new-plugin", "My_Eval", "--kind", "evaluator")
    assert result.exit_code == 0, result.output
    root = project.path / "gatekeeper-my-eval"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "README.md", "gatekeeper_my_eval/__init__.py", "pyproject.toml", "tests/test_gatekeeper_my_eval.py"]
    pyproject = (root / "pyproject.toml").read_text()
    assert '[project.entry-points.gatekeeper]\nmy_eval = "gatekeeper_my_eval"' in pyproject
    module = (root / "gatekeeper_my_eval/__init__.py").read_text()
    assert f'gatekeeper_api = "{api_spec()}"' in module and "class MyEvalEvaluator(Evaluator)" in module
    for path in root.rglob("*.py"):
        py_compile.compile(str(path), doraise=True)
    result.fnmatch_lines(["wrote *gatekeeper-my-eval/pyproject.toml", "*pip install -e *gatekeeper-my-eval*"])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_renders_valid_python(project: Project, kind: str) -> None:
    result = project.run("new-plugin", "x1", "--kind", kind, "--out", "out")
    assert result.exit_code == 0, result.output
    for path in (project.path / "out/gatekeeper-x1").rglob("*.py"):
        py_compile.compile(str(path), doraise=True)


@pytest.mark.parametrize(("args", "message"), [
    (("new-plugin", "9lives", "--kind", "evaluator"), "NAME: plugin name '9lives' must be lower-case"),
    (("new-plugin", "rouge_l", "--kind", "evaluator"),
     "NAME: evaluator 'rouge_l' is already registered by plugin 'evaluators'; choose another name"),
    (("new-plugin", "replay", "--kind", "provider"), "model provider 'replay' is already registered"),
    (("new-plugin", "x", "--kind", "reporter"), "argument --kind: invalid choice: 'reporter'"),
])
def test_bad_requests_are_usage_errors(project: Project, args: tuple[str, ...], message: str) -> None:
    result = project.run(*args)
    assert result.exit_code == 4, result.output
    assert message in result.stderr
    assert not list(project.path.glob("gatekeeper-*"))


def test_an_existing_directory_is_not_overwritten(project: Project) -> None:
    project.write("gatekeeper-mine/keep.txt", "mine")
    result = project.run("new-plugin", "mine", "--kind", "tuner")
    assert result.exit_code == 4
    assert "gatekeeper-mine: directory exists and is not empty (use --force" in result.stderr
    assert sorted(p.name for p in (project.path / "gatekeeper-mine").iterdir()) == ["keep.txt"]
    assert project.run("new-plugin", "mine", "--kind", "tuner", "--force").exit_code == 0
    assert (project.path / "gatekeeper-mine/keep.txt").read_text() == "mine"


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "docs" / page).read_text(encoding="utf-8"), re.S)


def test_the_walk_through_evaluator_and_its_test_run(project: Project) -> None:
    """docs/writing_plugins.md: the local-plugin evaluator and the test that goes with it."""
    blocks = python_blocks("writing_plugins.md")
    plugin = next(b for b in blocks if b.startswith("# gatekeeper_plugins.py"))
    test_code = next(b for b in blocks if "def test_polite_scores_a_suite" in b)
    project.write("gatekeeper_plugins.py", plugin)
    namespace: dict = {}
    exec(compile(test_code, "writing_plugins.md", "exec"), namespace)
    namespace["test_polite_scores_a_suite"](project)
    project.write("suites/demo.yaml", (project.path / "suites/demo.yaml").read_text().replace(
        "threshold: 1.0", "threshold: 1.0, wrods: [x]"))
    result = project.run("run", "suites", "--model", "replay:answers.jsonl")
    assert result.exit_code == 4 and "evaluators.polite.wrods: unknown parameter" in result.stderr
