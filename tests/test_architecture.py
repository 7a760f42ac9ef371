"""The layers of docs/architecture.md hold, and lint-imports fails the build when they do not."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports with the project's contracts (core package only) on ``tree``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    contracts = [c for c in config["contracts"] if not any("gatekeeper_" in m for m in c.get("source_modules", []))]
    lines = ["[tool.importlinter]", 'root_packages = ["gatekeeper"]', "exclude_type_checking_imports = true"]
    for contract in contracts:
        lines.append("[[tool.importlinter.contracts]]")
        for key, value in contract.items():
            if key == "ancestors":
                value = ["gatekeeper"]
            lines.append(f"{key} = {value!r}".replace("'", '"'))
    (tree / "lint.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return subprocess.run([str(LINT_IMPORTS), "lint.toml", "--no-cache"], cwd=tree, text=True,
                          capture_output=True, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, timeout=300)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not LINT_IMPORTS.exists():
        pytest.fail("lint-imports is missing: install the dev extra (import-linter)")
    tree = tmp_path_factory.mktemp("layers")
    shutil.copytree(ROOT / "gatekeeper", tree / "gatekeeper", ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_an_import_against_the_layers_fails_lint(tree: Path) -> None:
    runner = tree / "gatekeeper" / "engine" / "runner.py"
    original = runner.read_text(encoding="utf-8")
    runner.write_text(original + "\nimport gatekeeper.builtin.scoring.evaluators  # the engine reaching up\n",
                      encoding="utf-8")
    try:
        result = _lint(tree)
    finally:
        runner.write_text(original, encoding="utf-8")
    assert result.returncode == 1
    assert "gatekeeper.engine is not allowed to import gatekeeper.builtin" in result.stdout
    assert "gatekeeper.engine.runner -> gatekeeper.builtin.scoring.evaluators" in result.stdout


def test_an_import_cycle_between_siblings_fails_lint(tree: Path) -> None:
    wire = tree / "gatekeeper" / "builtin" / "providers" / "openai" / "wire.py"
    original = wire.read_text(encoding="utf-8")
    wire.write_text(original + "\nimport gatekeeper.builtin.providers.openai.batch  # batch imports wire\n",
                    encoding="utf-8")
    try:
        result = _lint(tree)
    finally:
        wire.write_text(original, encoding="utf-8")
    assert result.returncode == 1
    assert "No cycles are allowed" in result.stdout
