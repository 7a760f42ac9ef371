"""The distributions build as wheels and install under their own names (issue 17, item 2).

``gatekeeper`` on the public package index is an unrelated project, so the core is
``llm-gatekeeper`` and each first-party plugin ``llm-gatekeeper-<name>`` (the import name
and the command stay ``gatekeeper``). This test builds every wheel with ``python -m build``
(no isolation: offline) from a copy of the sources, installs them ``--no-deps --no-index``
into a fresh virtual environment, and runs the installed command on a bundled-style project.

The fresh environment sees the test environment's third-party packages through a ``.pth``
file naming a directory of links to them — every one except gatekeeper's own
distributions, so what runs is the wheels and nothing from the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

if os.environ.get("GATEKEEPER_ALL_EXTRAS") != "1":
    pytest.importorskip("build")

REPO = Path(__file__).resolve().parents[1]
PLUGINS = sorted(p for p in (REPO / "plugins").iterdir() if (p / "pyproject.toml").is_file())
IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".venv", "tests", ".gatekeeper",
                                "gatekeeper-out", "*.pyc")
OURS = ("gatekeeper", "llm_gatekeeper", "__editable__", "_gatekeeper")
"""Entries of the test environment's site-packages that are gatekeeper's own (kept out of the fresh one)."""


def _build(source: Path, work: Path, wheels: Path) -> None:
    copy = work / source.name
    if source == REPO:
        copy.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, copy / name)
        shutil.copytree(REPO / "gatekeeper", copy / "gatekeeper", ignore=IGNORE)
    else:
        shutil.copytree(source, copy, ignore=IGNORE)
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(wheels),
                           str(copy)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _fresh_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    deps = path / "deps"
    deps.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        low = entry.name.lower()
        if low.startswith(OURS) or low.endswith(".pth") or "gatekeeper" in low:
            continue
        (deps / entry.name).symlink_to(entry)
    purelib = next((path / "lib").glob("python3*/site-packages"))
    (purelib / "_test_deps.pth").write_text(f"{deps}\n")
    return path / "bin" / "python"


def test_wheels_build_and_install_into_a_fresh_environment(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    (tmp_path / "src").mkdir()
    for source in [REPO, *PLUGINS]:
        _build(source, tmp_path / "src", wheels)
    names = sorted(w.name.split("-")[0] for w in wheels.glob("*.whl"))
    assert names == sorted(["llm_gatekeeper", *(f"llm_{p.name.replace('-', '_')}" for p in PLUGINS)])

    python = _fresh_venv(tmp_path / "venv")
    installed = [w for w in wheels.glob("*.whl") if w.name.startswith(("llm_gatekeeper-", "llm_gatekeeper_hf-",
                                                                       "llm_gatekeeper_mlflow-"))]
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--no-index", "--quiet", *map(str, installed)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr

    project = tmp_path / "project"
    shutil.copytree(REPO / "suites", project / "suites")
    shutil.copytree(REPO / "policies", project / "policies")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    gatekeeper = str(python.with_name("gatekeeper"))

    where = subprocess.run([str(python), "-c", "import gatekeeper, importlib.metadata as m; "
                            "print(gatekeeper.__file__); print(m.version('llm-gatekeeper'))"],
                           cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    location, version = where.stdout.split()
    assert location.startswith(str(tmp_path / "venv")) and version == "0.1.0"

    listed = subprocess.run([gatekeeper, "plugins", "--json"], cwd=project, env=env, capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)}
    assert plugins["providers"]["distribution"] == "llm-gatekeeper"
    assert plugins["hf"]["distribution"] == "llm-gatekeeper-hf"
    assert plugins["mlflow"]["distribution"] == "llm-gatekeeper-mlflow"
    assert "example" not in plugins  # the test-only plugin is not in a user's install

    check = subprocess.run([gatekeeper, "check", "suites", "--baseline", "replay:suites/recordings/baseline.jsonl",
                            "--candidate", "replay:suites/recordings/candidate-better.jsonl", "--policy",
                            "policies/support-assistant.yaml", "--out", "out", "--no-progress"],
                           cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode in (0, 1, 2, 3), check.stdout + check.stderr  # a decision, not an error
    assert check.stdout.startswith("decision: ")
    for name in ("report.html", "summary.md", "junit.xml", "decision.json"):  # templates shipped in the wheel
        assert (project / "out" / name).is_file()
