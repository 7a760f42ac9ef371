"""Each hook in use: register hooks of every kind, custom suite loading, decision hook."""

from __future__ import annotations

import json

from gatekeeper.testing import Project

ALL_KINDS_PLUGIN = """
import json
from pathlib import Path
from gatekeeper import hookimpl
from gatekeeper.kinds import Command, DeployTarget, Detector, SignalSource, Tuner
from gatekeeper.engine.suites import Suite, load_yaml_suite

class Echoes(Detector):
    name = "echoes"
    def score(self, case, generation):
        flagged = generation.text.strip() == (case.vars.get("input") or "")
        return self.result(1.0 if flagged else 0.0, passed=not flagged, reason="echo" if flagged else "ok")

class Lines(SignalSource):
    name = "lines"
    schemes = ("txt",)
    def read(self, location, **filters):
        for line in Path(location).read_text().splitlines():
            yield {"answer": line}

class Copy(Tuner):
    name = "copy"
    def tune(self, base, data, out, params, config, bounds=None):
        return {"base": str(base)}

class Folder(DeployTarget):
    name = "folder"

class Hello(Command):
    name = "hello"
    help = "say hello"
    def configure(self, parser):
        parser.add_argument("who")
    def run(self, args, session):
        session.echo(f"hello {args.who}")
        return 0

@hookimpl
def gatekeeper_register_detectors(register):
    register(Echoes)

@hookimpl
def gatekeeper_register_signal_sources(register):
    register(Lines)

@hookimpl
def gatekeeper_register_tuners(register):
    register(Copy)

@hookimpl
def gatekeeper_register_deploy_targets(register):
    register(Folder)

@hookimpl
def gatekeeper_register_commands(register):
    register(Hello)

@hookimpl
def gatekeeper_load_suite(path, config):
    # JSON suites: same schema as YAML (JSON is YAML), own file extension.
    if path.suffix == ".json":
        return load_yaml_suite(path)
    return None
"""


def test_register_hooks_of_every_kind(project: Project) -> None:
    project.write("gatekeeper_plugins.py", ALL_KINDS_PLUGIN)
    plugins = {p["name"]: p for p in json.loads(project.run("plugins", "--json").stdout)}
    assert plugins["gatekeeper_plugins"]["registered"] == {
        "commands": ["hello"], "deploy_targets": ["folder"], "detectors": ["echoes"],
        "signal_sources": ["lines"], "tuners": ["copy"],
    }
    result = project.run("hello", "auditor")
    assert (result.exit_code, result.stdout) == (0, "hello auditor\n")


def test_load_suite_hook_reads_another_format(project: Project) -> None:
    project.write("gatekeeper_plugins.py", ALL_KINDS_PLUGIN)
    project.write("gatekeeper.yaml", "suite_patterns: ['*.json']\n")
    project.write("suites/s.json", json.dumps({
        "suite": "json-suite",
        "prompt": {"messages": [{"role": "user", "content": "{{ input }}"}]},
        "cases": [{"id": "a", "input": "ping"}, {"id": "b", "input": "pong"}],
        "detectors": ["echoes"],
    }))
    project.write_jsonl("rec.jsonl", [{"id": "a", "output": "ping"}, {"id": "b", "output": "PONG!"}])
    result = project.run("run", "--model", "replay:rec.jsonl", "--out", "out")
    assert result.exit_code == 1, result.output
    scores = {r["key"]: r["scores"]["echoes"]["value"] for r in project.read_record("out/results.json")["cases"]}
    assert scores == {"json-suite::a": 1.0, "json-suite::b": 0.0}
