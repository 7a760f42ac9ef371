"""Hook-call tracing: --trace-plugins / GATEKEEPER_TRACE_PLUGINS=1 print each hook call,
the plugins that implement it in call order, and the time each implementation took."""

from __future__ import annotations

import re

import pytest

from gatekeeper.testing import Project

TRACED_PLUGIN = """
from gatekeeper import hookimpl

@hookimpl(wrapper=True)
def gatekeeper_load_suite(path, config):
    suite = yield
    return suite

@hookimpl
def gatekeeper_collection_modifyitems(cases, config):
    cases.sort(key=lambda c: c.id, reverse=True)

@hookimpl
def gatekeeper_run_finish(run_id, record):
    raise RuntimeError("notifier is down")
"""

TIMED = r"in \d+\.\d\d ms$"


def trace_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("[trace]")]


@pytest.mark.parametrize("switch", ["flag", "env"])
def test_every_hook_call_with_its_plugins_and_times(mini: Project, switch: str) -> None:
    args = ("--trace-plugins",) if switch == "flag" else ()
    env = {"GATEKEEPER_TRACE_PLUGINS": "1"} if switch == "env" else None
    result = mini.run(*args, "run", "--model", "replay:good.jsonl", "--out", "out", "--no-progress", env=env)
    assert result.exit_code == 0, result.output
    lines = trace_lines(result.stderr)
    # Registration: each plugin's register hook is a traced hook call of its own (through pluggy),
    # timed, before anything else runs.
    assert lines[0] == "[trace] gatekeeper_register_models -> providers (register=Register)"
    assert re.match(r"\[trace\]   providers\.gatekeeper_register_models returned None " + TIMED, lines[1])
    start = lines.index(next(x for x in lines if "gatekeeper_load_suite ->" in x))
    call, impl, done = lines[start : start + 3]
    assert call == f"[trace] gatekeeper_load_suite -> suite_loader (path={mini.path}/suites/mini.yaml, config=Config)"
    assert re.match(r"\[trace\]   suite_loader\.gatekeeper_load_suite returned Suite\(mini\) " + TIMED, impl)
    assert re.match(r"\[trace\] gatekeeper_load_suite returned Suite\(mini\), done in \d+\.\d\d ms$", done)
    results = [x for x in lines if x.startswith("[trace] gatekeeper_case_result -> ")]
    assert len(results) == 3 and "result=CaseResult(mini::refund-1, replay:good.jsonl)" in "".join(results)
    assert "[trace] gatekeeper_run_finish -> " in result.stderr
    assert "[trace]" not in result.stdout  # the trace never mixes with a command's output


def test_call_order_wrappers_and_errors_are_shown(mini: Project) -> None:
    mini.write("gatekeeper_plugins.py", TRACED_PLUGIN)
    result = mini.run("--trace-plugins", "run", "--model", "replay:good.jsonl", "--out", "out", "--no-progress")
    assert result.exit_code == 5  # the local plugin's run_finish raised
    lines = trace_lines(result.stderr)
    call = next(x for x in lines if "gatekeeper_load_suite ->" in x)
    assert call.startswith("[trace] gatekeeper_load_suite -> gatekeeper_plugins, suite_loader (")
    wrapper = next(x for x in lines if x.startswith("[trace]   gatekeeper_plugins.gatekeeper_load_suite"))
    assert re.match(r".* \(wrapper\) returned Suite\(mini\) " + TIMED, wrapper)
    assert any(re.match(r"\[trace\]   gatekeeper_plugins\.gatekeeper_collection_modifyitems returned None "
                        + TIMED, x) for x in lines)
    failed = next(x for x in lines if x.startswith("[trace]   gatekeeper_plugins.gatekeeper_run_finish"))
    assert re.match(r".* raised RuntimeError: notifier is down " + TIMED, failed)
    assert "[trace] gatekeeper_run_finish raised RuntimeError: notifier is down, done in " in result.stderr


def test_no_trace_by_default(mini: Project) -> None:
    result = mini.run("run", "--model", "replay:good.jsonl", "--out", "out", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "[trace]" not in result.output


def test_pytest_plugin_traces_gatekeeper_hooks(pytester: pytest.Pytester) -> None:
    project = Project(pytester.path)
    project.write("suites/mini.yaml", """
        suite: mini
        prompt: {messages: [{role: user, content: "{{ input }}"}]}
        cases: [{id: a, input: hi, expected: hello}]
        evaluators: [{name: contains, field: expected}]
    """)
    project.write_jsonl("good.jsonl", [{"id": "a", "output": "hello"}])
    result = pytester.runpytest_subprocess("suites", "--gatekeeper-model", "replay:good.jsonl",
                                           "--gatekeeper-trace-plugins", "-s")
    result.assert_outcomes(passed=1)
    result.stderr.fnmatch_lines(["[[]trace] gatekeeper_load_suite -> suite_loader (path=*mini.yaml*",
                                 "[[]trace]   suite_loader.gatekeeper_load_suite returned Suite(mini) in *ms"])


pytest_plugins = ["pytester"]
