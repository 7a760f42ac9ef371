"""The plugin manager: built-ins, entry points, -p, the local plugin file, blocking, errors."""

from __future__ import annotations

import json

from gatekeeper.testing import Project

LOCAL_PLUGIN = """
from gatekeeper import Evaluator, hookimpl

class Polite(Evaluator):
    name = "polite"
    def score(self, case, generation):
        ok = "please" in generation.text.lower() or "thank" in generation.text.lower()
        return self.result(1.0 if ok else 0.0, passed=ok, reason="polite" if ok else "curt")

@hookimpl
def gatekeeper_register_evaluators(register):
    register(Polite)

@hookimpl
def gatekeeper_configure(config):
    import sys
    print(f"configured with suites {config.suites}", file=sys.stderr)

@hookimpl
def gatekeeper_collection_modifyitems(cases, config):
    cases[:] = [c for c in cases if c.id != "ship-1"]

@hookimpl
def gatekeeper_run_start(run_id, models, cases):
    print(f"run_start {len(cases)} cases for {sorted(models)}")

@hookimpl
def gatekeeper_run_finish(run_id, record):
    record.setdefault("plugins", {})["local"] = {"rows": len(record["cases"])}
"""


def _plugins_json(project: Project, *args: str) -> dict[str, dict]:
    result = project.run(*args, "plugins", "--json")
    assert result.exit_code == 0, result.output
    return {p["name"]: p for p in json.loads(result.stdout)}


def test_plugins_lists_builtins_with_what_they_register(project: Project) -> None:
    plugins = _plugins_json(project)
    assert plugins["providers"]["source"] == "builtin"
    assert plugins["providers"]["distribution"] == "llm-gatekeeper"
    assert set(plugins["providers"]["registered"]["models"]) >= {"replay", "python"}
    assert "gatekeeper_register_models" in plugins["providers"]["hooks"]
    assert "rouge_l" in plugins["evaluators"]["registered"]["evaluators"]
    assert plugins["grounding"]["registered"]["detectors"] == ["grounding"]


def test_entry_point_plugin_is_discovered_with_its_distribution(project: Project) -> None:
    plugins = _plugins_json(project)
    example = plugins["example"]
    assert example["source"] == "entrypoint"
    assert (example["distribution"], example["version"]) == ("gatekeeper-example", "1.2.3")
    assert example["registered"]["evaluators"] == ["shouty"]
    assert "gatekeeper_case_result" in example["hooks"]
    text = project.run("plugins")
    text.fnmatch_lines(["example  [[]entrypoint]  gatekeeper-example 1.2.3", "*evaluators: shouty"])


def test_entry_point_evaluator_used_by_a_suite(mini: Project) -> None:
    mini.write("suites/shout.yaml", """
        suite: shout
        prompt: {messages: [{role: user, content: "{{ input }}"}]}
        cases: [{id: s1, input: hi}]
        evaluators: [shouty]
    """)
    mini.write_jsonl("loud.jsonl", [{"id": "s1", "output": "HELLO"}])
    result = mini.run("run", "suites/shout.yaml", "--model", "replay:loud.jsonl", "--out", "out")
    assert result.exit_code == 0, result.output
    assert json.loads((mini.path / "out/counts.json").read_text()) == {"replay:loud.jsonl": 1}
    row = mini.read_record("out/results.json")["cases"][0]
    assert row["scores"]["shouty"]["value"] == 1.0
    import gatekeeper_example  # its gatekeeper_case_result hook saw the case

    assert gatekeeper_example.SEEN[-1] == "s1"


def test_disable_autoload_env_skips_entry_points(project: Project) -> None:
    plugins = _plugins_json_env(project, {"GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert "example" not in plugins
    assert "providers" in plugins


def _plugins_json_env(project: Project, env: dict[str, str]) -> dict[str, dict]:
    result = project.run("plugins", "--json", env=env)
    assert result.exit_code == 0, result.output
    return {p["name"]: p for p in json.loads(result.stdout)}


def test_p_no_blocks_a_plugin(mini: Project) -> None:
    assert "example" not in _plugins_json(mini, "-p", "no:example")
    assert "grounding" not in _plugins_json(mini, "-p", "no:grounding")
    # A suite that needs a blocked built-in says what is unknown.
    mini.write("suites/g.yaml", """
        suite: g
        prompt: {messages: [{role: user, content: "{{ input }}"}]}
        cases: [{id: g1, input: hi, context: hello}]
        detectors: [grounding]
    """)
    result = mini.run("-p", "no:grounding", "run", "suites/g.yaml", "--model", "replay:good.jsonl")
    assert result.exit_code == 4
    assert "unknown detector 'grounding'" in result.stderr
    assert "suites/g.yaml:4" in result.stderr


def test_p_loads_a_module_by_name(project: Project) -> None:
    import sys

    project.write("myplug.py", LOCAL_PLUGIN)
    # -p imports by module name from sys.path; the test puts the project root there.

    sys.path.insert(0, str(project.path))
    try:
        result = project.run("-p", "myplug", "plugins")
    finally:
        sys.path.remove(str(project.path))
        sys.modules.pop("myplug", None)
    assert result.exit_code == 0, result.output
    result.fnmatch_lines(["myplug  [[]option]*", "*evaluators: polite"])


def test_local_plugin_file_is_loaded_like_conftest(mini: Project) -> None:
    mini.write("gatekeeper_plugins.py", LOCAL_PLUGIN)
    mini.write("suites/mini.yaml", (mini.path / "suites/mini.yaml").read_text() + "  - polite\n")
    plugins = _plugins_json(mini)
    assert plugins["gatekeeper_plugins"]["source"] == "local"
    assert plugins["gatekeeper_plugins"]["registered"]["evaluators"] == ["polite"]
    result = mini.run("run", "--model", "replay:good.jsonl", "--out", "out")
    assert "configured with suites ['suites']" in result.stderr
    assert "run_start 2 cases for ['replay:good.jsonl']" in result.stdout  # ship-1 removed by the hook
    record = mini.read_record("out/results.json")
    assert [r["key"] for r in record["cases"]] == ["mini::refund-1", "mini::refund-2"]
    assert record["plugins"] == {"local": {"rows": 2}}
    assert record["cases"][0]["scores"]["polite"]["value"] == 0.0
    # and it can be blocked like any plugin
    assert "gatekeeper_plugins" not in _plugins_json(mini, "-p", "no:gatekeeper_plugins")


def test_plugin_that_fails_to_import_is_named(project: Project) -> None:
    project.write("gatekeeper_plugins.py", "import does_not_exist_anywhere\n")
    result = project.run("plugins")
    assert result.exit_code == 5
    assert result.stderr.startswith("error: plugin 'gatekeeper_plugins':")
    assert "ModuleNotFoundError" in result.stderr and "Traceback" not in result.output


def test_plugin_that_raises_in_a_register_hook_is_named(project: Project) -> None:
    project.write("gatekeeper_plugins.py", """
        from gatekeeper import hookimpl
        @hookimpl
        def gatekeeper_register_models(register):
            raise RuntimeError("boom")
    """)
    result = project.run("plugins")
    assert result.exit_code == 5
    assert "plugin 'gatekeeper_plugins': gatekeeper_register_models raised RuntimeError: boom" in result.stderr


def test_duplicate_registration_names_both_plugins(project: Project) -> None:
    project.write("gatekeeper_plugins.py", """
        from gatekeeper import ModelProvider, hookimpl
        class Replay(ModelProvider):
            name = "replay"
        @hookimpl
        def gatekeeper_register_models(register):
            register(Replay)
    """)
    result = project.run("plugins")
    assert result.exit_code == 5
    assert "model provider 'replay' is already registered by plugin 'providers'" in result.stderr


def test_unknown_hook_in_a_plugin_is_rejected(project: Project) -> None:
    project.write("gatekeeper_plugins.py", """
        from gatekeeper import hookimpl
        @hookimpl
        def gatekeeper_no_such_hook():
            pass
    """)
    result = project.run("plugins")
    assert result.exit_code == 5
    assert "gatekeeper_no_such_hook" in result.stderr


def test_trace_plugins_prints_hook_calls(mini: Project) -> None:
    result = mini.run("--trace-plugins", "run", "--model", "replay:good.jsonl", "--out", "out")
    assert result.exit_code == 0, result.output
    result.fnmatch_lines(["[[]trace] gatekeeper_load_suite -> *suite_loader*", "[[]trace] * done in *ms"])


def test_a_wrapper_on_a_register_hook_wraps_every_registration(project: Project, monkeypatch) -> None:
    # pluggy's own path: a wrapper runs around each plugin's registration and sees the result;
    # tryfirst registers before the built-ins (so it wins the name, and a built-in's clash names it).
    project.write("gatekeeper_plugins.py", """
        from pathlib import Path
        from gatekeeper import hookimpl

        @hookimpl(wrapper=True)
        def gatekeeper_register_evaluators(register):
            with Path("wrapped.log").open("a") as log:
                log.write(f"before {register._plugin}\\n")
            result = yield
            with Path("wrapped.log").open("a") as log:
                log.write(f"after {register._plugin}\\n")
            return result
    """)
    project.write("gatekeeper_early.py", """
        from gatekeeper import Evaluator, hookimpl

        class Early(Evaluator):
            name = "early"
            def score(self, case, generation):
                return self.result(1.0)

        @hookimpl(tryfirst=True)
        def gatekeeper_register_evaluators(register):
            register(Early)
    """)
    monkeypatch.syspath_prepend(str(project.path))
    monkeypatch.delitem(__import__("sys").modules, "gatekeeper_early", raising=False)
    plugins = _plugins_json(project, "-p", "gatekeeper_early")
    assert plugins["gatekeeper_early"]["registered"]["evaluators"] == ["early"]
    assert "rouge_l" in plugins["evaluators"]["registered"]["evaluators"]
    log = (project.path / "wrapped.log").read_text().splitlines()
    registering = [line.split()[1] for line in log if line.startswith("before")]
    assert registering[0] == "gatekeeper_early"
    assert registering.count("evaluators") == 1 and "example" in registering
    assert len(log) == 2 * len(registering)
    traced = project.run("--trace-plugins", "-p", "gatekeeper_early", "plugins")
    assert traced.exit_code == 0, traced.output
    assert "gatekeeper_register_evaluators" in traced.stderr and "gatekeeper_early" in traced.stderr


LAZY_PLUGIN = """
from gatekeeper import hookimpl

@hookimpl
def gatekeeper_register_evaluators(register):
    register("lazy_polite:Polite", name="polite")
"""

LAZY_MODULE = """
import sys
from gatekeeper import Evaluator
print("lazy_polite imported", file=sys.stderr)

class Polite(Evaluator):
    name = "polite"
    def score(self, case, generation):
        ok = "please" in generation.text.lower()
        return self.result(1.0 if ok else 0.0, passed=ok)

class NotAnEvaluator:
    name = "polite"
"""


def _with_project_on_path(project: Project, *args: str):
    import sys

    sys.path.insert(0, str(project.path))
    try:
        return project.run(*args)
    finally:
        sys.path.remove(str(project.path))
        sys.modules.pop("lazy_polite", None)


def test_a_class_registered_by_path_is_imported_when_a_run_uses_it(mini: Project) -> None:
    mini.write("gatekeeper_plugins.py", LAZY_PLUGIN)
    mini.write("lazy_polite.py", LAZY_MODULE)
    listed = _with_project_on_path(mini, "plugins")
    assert listed.exit_code == 0, listed.output
    listed.fnmatch_lines(["gatekeeper_plugins  [[]local]*", "*evaluators: polite"])
    assert "lazy_polite imported" not in listed.stderr  # listing plugins does not import the class

    mini.write("suites/mini.yaml", (mini.path / "suites/mini.yaml").read_text() + "  - polite\n")
    result = _with_project_on_path(mini, "run", "--model", "replay:good.jsonl", "--out", "out")
    assert "lazy_polite imported" in result.stderr
    record = mini.read_record("out/results.json")
    assert record["cases"][0]["scores"]["polite"]["value"] == 0.0


def test_a_class_registered_by_path_that_does_not_import_is_named_when_used(mini: Project) -> None:
    mini.write("gatekeeper_plugins.py", LAZY_PLUGIN.replace("lazy_polite:Polite", "lazy_missing:Polite"))
    assert mini.run("plugins").exit_code == 0  # registering by path imports nothing
    mini.write("suites/mini.yaml", (mini.path / "suites/mini.yaml").read_text() + "  - polite\n")
    result = mini.run("run", "--model", "replay:good.jsonl", "--out", "out")
    assert result.exit_code == 5
    assert ("plugin 'gatekeeper_plugins': evaluator 'polite': cannot import 'lazy_missing:Polite': "
            "ModuleNotFoundError") in result.stderr
    loaded = mini.run("plugins", "--load")
    assert loaded.exit_code == 5
    loaded.fnmatch_lines(["FAILED plugin 'gatekeeper_plugins': evaluator 'polite': cannot import*",
                          "* registered classes import; 1 fail"])


def test_a_class_registered_by_path_must_be_of_the_kind_and_named(mini: Project) -> None:
    mini.write("lazy_polite.py", LAZY_MODULE)
    mini.write("gatekeeper_plugins.py", LAZY_PLUGIN.replace("lazy_polite:Polite", "lazy_polite:NotAnEvaluator"))
    result = _with_project_on_path(mini, "plugins", "--load")
    assert result.exit_code == 5
    assert "is not a subclass of Evaluator" in result.stdout

    mini.write("gatekeeper_plugins.py", LAZY_PLUGIN.replace(', name="polite"', ""))
    result = mini.run("plugins")
    assert result.exit_code == 5
    assert "register('lazy_polite:Polite') needs a 'module:Class' path and a name=" in result.stderr


def test_every_installed_class_registered_by_path_imports_under_its_name(project: Project) -> None:
    # The plugins list their classes by path and name without importing them: the two must
    # agree, or a suite naming the metric would get another class's name in its record.
    from gatekeeper.host.config import load_config
    from gatekeeper.host.plugins import PluginHost

    host = PluginHost(load_config(cwd=project.path))
    lazy = [(key, entry) for key, registry in host.registries.items() for entry in registry if not entry.loaded]
    assert len(lazy) >= 40, "the hf, ragas, deepeval, azure, spark and mlflow plugins register by path"
    wrong = [(key, entry.name, entry.obj.name) for key, entry in lazy if entry.obj.name != entry.name]
    assert wrong == []
    from gatekeeper_ragas.metrics import METRICS

    assert {f"ragas_{m}" for m in METRICS} <= set(host.registries.evaluators.names())
