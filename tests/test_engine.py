"""The engine hook (``gatekeeper_register_engines``): ``run``/``check --engine NAME`` hand the
cases to an engine plugin in partitions; the core checks that each comes back exactly once
and writes the same record as a local run. The Spark engine's own tests are in
plugins/gatekeeper-spark; here a toy engine runs the partitions one after another."""

from __future__ import annotations

from gatekeeper.testing import Project

ENGINES = """\
from gatekeeper import hookimpl
from gatekeeper.kinds import Engine


class Sequential(Engine):
    name = "sequential"
    description = "partitions of two cases, one after another, in this process"

    def map_cases(self, work, keys):
        parts = [list(keys[i:i + 2]) for i in range(0, len(keys), 2)]
        rows = []
        for part in reversed(parts):  # out of order on purpose: the core restores the order
            rows.extend(work(part, 1 / len(parts)))
        return rows


class Doubling(Sequential):
    name = "doubling"

    def map_cases(self, work, keys):
        rows = super().map_cases(work, keys)
        return rows + rows[:1]


class Losing(Sequential):
    name = "losing"

    def map_cases(self, work, keys):
        return super().map_cases(work, keys)[1:]


@hookimpl
def gatekeeper_register_engines(register):
    register(Sequential)
    register(Doubling)
    register(Losing)
"""

SUITE = """\
suite: s
prompt:
  messages: [{role: user, content: "{{ input }}"}]
cases:
%s
evaluators: [exact_match]
"""


def project_with_engines(tmp_path) -> Project:
    project = Project(tmp_path)
    project.write("gatekeeper_plugins.py", ENGINES)
    cases = "\n".join(f"  - {{id: c{i}, input: q{i}, expected: a{i}}}" for i in range(5))
    project.write("suites/s.yaml", SUITE % cases)
    project.write_jsonl("rec.jsonl", [{"id": f"c{i}", "output": f"a{i}" if i != 3 else "no"} for i in range(5)])
    return project


def test_run_on_an_engine_writes_the_record_of_a_local_run(tmp_path) -> None:
    project = project_with_engines(tmp_path)
    local = project.run("run", "suites", "--model", "replay:rec.jsonl", "--out", "local", "--no-progress")
    spread = project.run("run", "suites", "--model", "replay:rec.jsonl", "--out", "engine", "--no-progress",
                         "--engine", "sequential")
    assert local.exit_code == spread.exit_code == 1, spread.output
    on_engine, on_local = project.read_record("engine/results.json"), project.read_record("local/results.json")
    assert [r["key"] for r in on_engine["cases"]] == [r["key"] for r in on_local["cases"]]
    assert on_engine["summary"] == on_local["summary"]
    assert on_engine["stats"]["requests"] == on_local["stats"]["requests"] == 5
    listed = project.run("plugins")
    listed.fnmatch_lines(["gatekeeper_plugins*", "*engines: doubling, losing, sequential"])


def test_an_engine_that_duplicates_or_loses_a_case_is_an_error(tmp_path) -> None:
    project = project_with_engines(tmp_path)
    doubled = project.run("run", "suites", "--model", "replay:rec.jsonl", "--engine", "doubling", "--no-progress")
    lost = project.run("run", "suites", "--model", "replay:rec.jsonl", "--engine", "losing", "--no-progress")
    assert doubled.exit_code == 5 and "engine 'doubling' returned case 's::c4' twice" in doubled.stderr
    assert lost.exit_code == 5 and "engine 'losing' lost case" in lost.stderr


def test_unknown_engines_and_unsupported_work_are_usage_errors(tmp_path) -> None:
    project = project_with_engines(tmp_path)
    project.write_jsonl("signals.jsonl", [])
    unknown = project.run("run", "suites", "--model", "replay:rec.jsonl", "--engine", "nope")
    unsupported = project.run("signals", "summarize", "signals.jsonl", "--engine", "sequential")
    assert unknown.exit_code == 4 and "unknown engine 'nope'" in unknown.stderr
    assert unsupported.exit_code == 4 and "engine 'sequential' cannot summarize signals" in unsupported.stderr
