"""The versioned plugin API: a plugin declares `gatekeeper_api`; a mismatch is refused by name."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

import gatekeeper
from gatekeeper.testing import Project

LOCAL = """
from gatekeeper import Evaluator, hookimpl

gatekeeper_api = {spec!r}

class Polite(Evaluator):
    name = "polite"
    def score(self, case, generation):
        return self.result(1.0)

@hookimpl
def gatekeeper_register_evaluators(register):
    register(Polite)
"""


def test_provided_version_is_public() -> None:
    assert gatekeeper.PLUGIN_API_VERSION == "1.0"
    assert "PLUGIN_API_VERSION" in gatekeeper.__all__


@pytest.mark.parametrize("spec", [">=1.0,<2", "~=1.0", "==1.*", ">=1"])
def test_a_compatible_plugin_loads_and_shows_what_it_declares(project: Project, spec: str) -> None:
    project.write("gatekeeper_plugins.py", LOCAL.format(spec=spec))
    result = project.run("plugins", "--json")
    assert result.exit_code == 0, result.output
    local = {p["name"]: p for p in json.loads(result.stdout)}["gatekeeper_plugins"]
    assert local["api"] == spec and local["registered"]["evaluators"] == ["polite"]
    project.run("plugins").fnmatch_lines(["gatekeeper_plugins  [[]local]*", f"    plugin API: {spec}"])


def test_a_plugin_for_another_api_is_refused_by_name(project: Project) -> None:
    project.write("gatekeeper_plugins.py", LOCAL.format(spec=">=2,<3"))
    result = project.run("plugins")
    assert result.exit_code == 4
    assert result.stderr.strip() == (
        f"error: plugin 'gatekeeper_plugins': needs gatekeeper plugin API >=2,<3, but gatekeeper "
        f"{gatekeeper.host.plugins._gatekeeper_version()} provides plugin API 1.0; install a version of the plugin "
        "made for API 1.0 (or a gatekeeper that provides >=2,<3), or skip it with -p no:gatekeeper_plugins"
    )
    assert "Traceback" not in result.output
    # The hint works: blocked, the rest of gatekeeper runs.
    assert project.run("-p", "no:gatekeeper_plugins", "plugins").exit_code == 0


@pytest.mark.parametrize("spec", ["one point oh", 1])
def test_a_declaration_that_is_no_specifier_is_refused(project: Project, spec: object) -> None:
    project.write("gatekeeper_plugins.py", LOCAL.format(spec=spec))
    result = project.run("plugins")
    assert result.exit_code == 4
    assert (f"error: plugin 'gatekeeper_plugins': gatekeeper_api = {spec!r} is not a version specifier "
            "such as '>=1,<2' (skip the plugin with -p no:gatekeeper_plugins)") in result.stderr


def test_an_entry_point_plugin_for_an_older_api_is_refused(project: Project, monkeypatch) -> None:
    import gatekeeper_example  # the third-party-style test distribution (tests/plugins/)

    monkeypatch.setattr(gatekeeper_example, "gatekeeper_api", ">=1,<2", raising=False)
    assert project.run("plugins").exit_code == 0
    # gatekeeper moves to plugin API 2.0; the installed plugin was made for 1.x. The
    # first-party plugins declare 1.x as well: block them to see the example's error alone.
    monkeypatch.setattr(gatekeeper, "PLUGIN_API_VERSION", "2.0")
    first_party = tuple(arg for ep in importlib.metadata.entry_points(group="gatekeeper")
                        if ep.name != "example" for arg in ("-p", f"no:{ep.name}"))
    assert project.run("plugins").exit_code == 4
    result = project.run(*first_party, "plugins")
    assert result.exit_code == 4
    assert "error: plugin 'example': needs gatekeeper plugin API >=1,<2, but gatekeeper" in result.stderr
    assert "provides plugin API 2.0" in result.stderr and "-p no:example" in result.stderr
    assert project.run(*first_party, "-p", "no:example", "plugins").exit_code == 0


def test_plugins_without_a_declaration_still_load(project: Project) -> None:
    project.write("gatekeeper_plugins.py", LOCAL.replace("gatekeeper_api = {spec!r}\n", ""))
    result = project.run("plugins", "--json")
    assert result.exit_code == 0, result.output
    assert {p["name"]: p for p in json.loads(result.stdout)}["gatekeeper_plugins"]["api"] == ""
