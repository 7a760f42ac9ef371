"""pytest collects gatekeeper suites: case × model items, -k/-m/-x/--lf/-n/--junitxml,
the gate as verdict items (--gatekeeper-check), and the gatekeeper_eval fixture."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gatekeeper.testing import Project

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
BASELINE = "replay:suites/recordings/baseline.jsonl"
POLICY = "policies/support-assistant.yaml"


@pytest.fixture
def demo(pytester: pytest.Pytester) -> pytest.Pytester:
    """The bundled support-assistant suite, its recordings and policy, in a fresh directory."""
    root = pytester.path
    (root / "suites").mkdir()
    shutil.copy(REPO / "suites/support_assistant.yaml", root / "suites")
    shutil.copytree(REPO / "suites/data", root / "suites/data")
    shutil.copytree(REPO / "suites/recordings", root / "suites/recordings")
    (root / "policies").mkdir()
    shutil.copy(REPO / POLICY, root / POLICY)
    if (REPO / "policies/keys").is_dir():  # public keys of the approvers the policy names
        shutil.copytree(REPO / "policies/keys", root / "policies/keys")
    return pytester


def dataset() -> list[dict]:
    lines = (REPO / "suites/data/support_cases.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def refund_ids() -> list[str]:
    """What `-k refund` must select: the word in the case id or one of its tags (markers)."""
    return [c["id"] for c in dataset() if "refund" in c["id"] or "refund" in c.get("tags", [])]


def gatekeeper_run(root: Path, *args: str) -> dict:
    """The same cases through `gatekeeper run`: the reference the pytest items must agree with.

    In a child process: pytester restores sys.modules after each test, and numpy-backed
    modules cannot be imported twice in one process.
    """
    result = Project(root).run_subprocess("run", "suites", "--model", BASELINE, "--out", "ref", "--no-progress",
                                          *args)
    assert result.exit_code in (0, 1), result.output
    return {r["key"].split("::")[1]: r for r in Project(root).read_record("ref/results.json")["cases"]}


def junit_cases(xml_path: Path) -> dict[str, ET.Element]:
    root = ET.parse(xml_path).getroot()
    return {tc.get("name", ""): tc for tc in root.iter("testcase")}


# --------------------------------------------------------------------------- case items


def test_xdist_keyword_and_junit_on_the_bundled_suite(demo: pytest.Pytester) -> None:
    result = demo.runpytest_subprocess("suites/", "-n", "2", "-k", "refund", "--junitxml=x.xml",
                                       "--gatekeeper-model", BASELINE)
    reference = gatekeeper_run(demo.path, "-k", "refund")
    assert sorted(reference) == sorted(refund_ids()) and len(reference) == 7
    failing = sorted(i for i, r in reference.items() if any(s["passed"] is False for s in r["scores"].values()))
    assert failing  # the baseline recording is imperfect: some refund answers fail a threshold
    result.assert_outcomes(passed=len(reference) - len(failing), failed=len(failing))
    assert result.ret == 1
    result.stdout.fnmatch_lines(["created: 2/2 workers*"])

    cases = junit_cases(demo.path / "x.xml")
    assert sorted(cases) == sorted(f"{i}[{BASELINE}]" for i in reference)
    for case_id, row in reference.items():
        tc = cases[f"{case_id}[{BASELINE}]"]
        assert tc.get("classname") == "suites.support_assistant.yaml"
        props = {p.get("name"): p.get("value") for p in tc.iter("property")}
        assert props["gatekeeper.model"] == BASELINE
        for metric, score in row["scores"].items():
            assert float(props[f"gatekeeper.{metric}"]) == pytest.approx(score["value"])
        failure = tc.find("failure")
        assert (failure is not None) == (case_id in failing)
        if failure is not None:
            text = failure.text or ""
            bad = next(m for m, s in row["scores"].items() if s["passed"] is False)
            assert f"support-assistant::{case_id} on {BASELINE}" in text
            line = next(x for x in text.splitlines() if x.strip().startswith(bad + " "))
            assert "FAIL" in line and row["scores"][bad]["reason"][:40] in line and ">=" in line


def test_markers_from_tags_and_stop_at_first_failure(demo: pytest.Pytester) -> None:
    tagged = [c["id"] for c in dataset() if "internal-note" in c.get("tags", [])]
    result = demo.runpytest_subprocess("suites/", "-m", "internal-note", "--strict-markers", "-W",
                                       "error::pytest.PytestUnknownMarkWarning", "--gatekeeper-model", BASELINE,
                                       "--collect-only", "-q")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([f"suites/support_assistant.yaml::{tagged[0]}[[]{BASELINE}]"])
    assert f"{len(tagged)}/80 tests collected (" in result.stdout.str()

    stopped = demo.runpytest_subprocess("suites/", "-x", "--gatekeeper-model", BASELINE)
    stopped.stdout.fnmatch_lines(["*stopping after 1 failures*"])
    assert stopped.parseoutcomes()["failed"] == 1


def test_last_failed_reruns_only_the_failures(demo: pytest.Pytester) -> None:
    first = demo.runpytest_subprocess("suites/", "-k", "refund", "--gatekeeper-model", BASELINE)
    failed = first.parseoutcomes()["failed"]
    again = demo.runpytest_subprocess("suites/", "--lf", "--gatekeeper-model", BASELINE)
    again.assert_outcomes(failed=failed)
    again.stdout.fnmatch_lines([f"*run-last-failure: rerun previous {failed} failures*"])


def test_each_case_runs_once_per_model_in_one_batch(demo: pytest.Pytester) -> None:
    result = demo.runpytest_subprocess("suites/", "-k", "refund", "--gatekeeper-model", BASELINE,
                                       "--gatekeeper-model", "replay:suites/recordings/candidate-better.jsonl")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 14  # 7 cases × 2 models
    result.stdout.fnmatch_lines(["*- gatekeeper -*", "model calls: 14 (cache hits: 0) in 2 batch(es)"])
    cached = demo.runpytest_subprocess("suites/", "-k", "refund", "--gatekeeper-model", BASELINE)
    cached.stdout.fnmatch_lines(["model calls: 0 (cache hits: 7) in 1 batch(es)"])


def test_only_suite_files_are_collected(demo: pytest.Pytester) -> None:
    demo.makefile(".yaml", **{"suites/ci": "jobs: {build: {runs-on: ubuntu}}\n"})
    demo.makefile(".yaml", **{"suites/notes": "- a list\n- not a suite\n"})
    demo.makefile(".yaml", **{"suites/broken": "suite: broken\nprompt: {messages: [{role: user, content: hi}]}\n"
                              "cases:\n  - {input: no id}\n"})
    result = demo.runpytest_subprocess("suites/", "--gatekeeper-model", BASELINE, "--collect-only", "-q")
    text = result.stdout.str()
    assert "ci.yaml" not in text and "notes.yaml" not in text
    assert "suites/broken.yaml:4: cases[0].id: case has no 'id'" in text
    assert "80 tests collected, 1 error" in text


def test_nothing_is_collected_without_a_model_and_config_gives_the_default(demo: pytest.Pytester) -> None:
    untouched = demo.runpytest_subprocess("suites/")
    assert untouched.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    demo.makefile(".yaml", gatekeeper=f"model: {BASELINE}\n")
    configured = demo.runpytest_subprocess("suites/", "-k", "refund-timing", "--collect-only", "-q")
    configured.stdout.fnmatch_lines([f"suites/support_assistant.yaml::refund-timing-01[[]{BASELINE}]",
                                     "1/80 tests collected (79 deselected)*"])


# --------------------------------------------------------------------------- the gate


CHECK = ("suites/", "--gatekeeper-check", "--gatekeeper-baseline", BASELINE, "--gatekeeper-policy", POLICY)


@pytest.mark.parametrize(("candidate", "decision"), [("candidate-better", "PROMOTE"),
                                                     ("candidate-worse", "REJECT")])
def test_check_fails_exactly_when_gatekeeper_check_rejects(demo: pytest.Pytester, candidate: str,
                                                           decision: str) -> None:
    spec = f"replay:suites/recordings/{candidate}.jsonl"
    check = Project(demo.path).run_subprocess("check", "suites", "--candidate", spec, "--baseline", BASELINE,
                                   "--policy", POLICY, "--out", "ref", "--no-progress")
    assert check.exit_code in (0, 1), check.output
    reference = Project(demo.path).read_record("ref/decision.json")
    assert reference["decision"] == decision

    result = demo.runpytest_subprocess(*CHECK, "--gatekeeper-model", spec, "--gatekeeper-out", "out",
                                       "-n", "2", "--junitxml=check.xml", "-rxs")
    assert (result.ret == 0) == (check.exit_code == 0)
    assert result.ret == (1 if decision == "REJECT" else 0)
    record = Project(demo.path).read_record("out/decision.json")
    assert record["decision"] == decision
    assert [(m["name"], m["slice"], m["verdict"]) for m in record["metrics"]] == [
        (m["name"], m["slice"], m["verdict"]) for m in reference["metrics"]]

    cases = junit_cases(demo.path / "check.xml")
    decision_case = cases["decision"]
    props = {p.get("name"): p.get("value") for p in decision_case.iter("property")}
    assert props["gatekeeper.decision"] == decision
    assert (decision_case.find("failure") is not None) == (decision == "REJECT")
    deciding = {r["clause"] for r in record["reasons"]} if decision == "REJECT" else set()
    for m in record["metrics"]:
        name = m["name"] + (f"[{m['slice']['field']}={m['slice']['value']}]" if m["slice"] else "")
        tc = cases[name]
        assert (tc.find("failure") is not None) == (m["clause"] in deciding), name
        if m["verdict"] == "PASS":
            assert tc.find("failure") is None and tc.find("skipped") is None
    result.stdout.fnmatch_lines([f"decision: {decision} (policy support-assistant-pccp v1.0, run *)",
                                 "reports: out/*decision.json*"])
    # One check for the whole session, even with two workers: one audit record.
    audit = (demo.path / ".gatekeeper/audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["data"]["out"] for line in audit] == ["ref", "out"]
    assert not list((demo.path / ".gatekeeper/pytest").glob("*"))


def test_check_failure_message_names_the_clause_and_numbers(demo: pytest.Pytester) -> None:
    result = demo.runpytest_subprocess(*CHECK, "--gatekeeper-model", "replay:suites/recordings/candidate-worse.jsonl",
                                       "-k", "grounding or decision")
    assert result.ret == 1, result.stdout.str() + result.stderr.str()
    outcomes = result.parseoutcomes()
    assert (outcomes["failed"], outcomes.get("passed", 0)) == (2, 0)
    result.stdout.fnmatch_lines([
        "*support-assistant.yaml::grounding*",
        "FAIL: grounding: Δ +0.525 (candidate 0.588 vs baseline 0.062)*guardrail ≤ 0.25*breached*→ FAIL",
        "(decision REJECT; policy clause performance_evaluation.metrics[grounding])",
        "*support-assistant.yaml::decision*",
        "decision: REJECT (policy support-assistant-pccp v1.0, run *)",
        "  - [[]gate.max_failed_noncritical] 1 non-critical metric(s) failed; the policy tolerates 0",
    ])


def test_fail_on_adds_decisions_that_fail_the_session(demo: pytest.Pytester) -> None:
    better = ("--gatekeeper-model", "replay:suites/recordings/candidate-better.jsonl", "-k", "decision")
    assert demo.runpytest_subprocess(*CHECK, *better).ret == 0
    strict = demo.runpytest_subprocess(*CHECK, *better, "--gatekeeper-fail-on", "REJECT,PROMOTE")
    assert strict.ret == 1
    strict.stdout.fnmatch_lines(["decision: PROMOTE (policy support-assistant-pccp v1.0, run *)"])


def test_check_without_a_policy_is_a_usage_error(demo: pytest.Pytester) -> None:
    result = demo.runpytest_subprocess("suites/", "--gatekeeper-check", "--gatekeeper-model", BASELINE,
                                       "--gatekeeper-baseline", BASELINE)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "gatekeeper: --gatekeeper-policy: missing --gatekeeper-policy" in result.stderr.str()


# --------------------------------------------------------------------------- gatekeeper_eval


EVAL_TESTS = '''
def test_suite_case(gatekeeper_eval):
    result = gatekeeper_eval("replay:suites/recordings/baseline.jsonl", "support-assistant::refund-timing-01")
    assert result.passed("facts")
    assert result.passed()
    assert 0.0 <= result.value("rouge_l") <= 1.0

def test_failing_metric_message(gatekeeper_eval):
    result = gatekeeper_eval("replay:suites/recordings/baseline.jsonl", "refund-cancelled-card-05")
    assert result.passed("facts")

def test_inline_cases_batched(gatekeeper_eval):
    results = gatekeeper_eval("replay:inline.jsonl", [
        {"id": "a", "input": "How long?", "expected": "You have 30 days."},
        {"id": "b", "input": "Receipt?", "expected": "Yes, bring the receipt."},
    ], evaluators=[{"name": "rouge_l", "threshold": 0.5}, {"name": "contains", "field": "expected"}])
    assert [r.output for r in results] == ["You have 30 days.", "No idea."]
    assert results[0].passed("rouge_l") and results[0].passed("contains")
    assert not results[1].passed("rouge_l")
    assert results[1].passed("rouge_l", threshold=0.0)

def test_no_threshold(gatekeeper_eval):
    result = gatekeeper_eval("replay:inline.jsonl", {"id": "a", "input": "x", "expected": "y"},
                             evaluators=[{"name": "token_f1", "threshold": None}])
    assert result.passed("token_f1")
'''


def test_gatekeeper_eval_fixture(demo: pytest.Pytester) -> None:
    demo.makefile(".jsonl", inline='{"id": "a", "output": "You have 30 days."}\n{"id": "b", "output": "No idea."}\n')
    demo.makepyfile(test_api=EVAL_TESTS)
    result = demo.runpytest_subprocess("test_api.py", "-vv")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([
        "*def test_failing_metric_message*",
        "E       AssertionError: assert facts FAILED on support-assistant::refund-cancelled-card-05 on "
        "replay:suites/recordings/baseline.jsonl: value 0.000, threshold >= 1; reason: missing 1 of 1 facts: "
        "'Customer Care'; output: 'If your card*",
    ])
    result.stdout.fnmatch_lines([
        "*def test_no_threshold*",
        "E       AssertionError: assert token_f1 has no threshold on inline-1::a on replay:inline.jsonl "
        "(value 0.000): give one, e.g. passed('token_f1', threshold=0.5)",
    ])


@pytest.mark.parametrize(("args", "message"), [
    (("--gatekeeper-model", "nosuch:model"),
     "gatekeeper: --gatekeeper-model: unknown model provider 'nosuch' (known: "),
    (("--gatekeeper-model", "no-colon"), "gatekeeper: model: model spec 'no-colon' is not PROVIDER:NAME"),
    (("--gatekeeper-check", "--gatekeeper-baseline", BASELINE, "--gatekeeper-policy", POLICY),
     "gatekeeper: --gatekeeper-model: give the candidate"),
    (("--gatekeeper-config", "missing.yaml"), "gatekeeper: missing.yaml: configuration file not found"),
    (("--gatekeeper-check", "--gatekeeper-model", BASELINE, "--gatekeeper-fail-on", "REJECT,MAYBE"),
     "gatekeeper: --gatekeeper-fail-on: unknown decision 'MAYBE' (known: ERROR, HOLD, INCONCLUSIVE, PROMOTE, REJECT)"),
])
def test_bad_options_stop_the_session_as_usage_errors(demo: pytest.Pytester, args: tuple[str, ...],
                                                      message: str) -> None:
    result = demo.runpytest_subprocess("suites/", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    assert message in result.stderr.str()
    assert "Traceback" not in result.stderr.str()


COUNTING_MODEL = '''
import os

def answer(messages, params):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(f"calls-{worker}.log", "a") as fh:
        fh.write(messages[-1]["content"][-30:].replace("\\n", " ") + "\\n")
    return "I do not know."
'''


def test_under_xdist_each_worker_runs_its_share_once(demo: pytest.Pytester, monkeypatch) -> None:
    demo.makepyfile(counting_model=COUNTING_MODEL)
    monkeypatch.setenv("PYTHONPATH", str(demo.path))
    result = demo.runpytest_subprocess("suites/", "-n", "2", "-p", "no:cacheprovider",
                                       "--gatekeeper-model", "python:counting_model:answer")
    result.assert_outcomes(failed=80)
    calls = {p.name: p.read_text().splitlines() for p in demo.path.glob("calls-*.log")}
    assert sorted(calls) == ["calls-gw0.log", "calls-gw1.log"]
    assert all(calls.values())  # both workers answered cases
    assert sum(len(lines) for lines in calls.values()) == 80  # one model call per case, none twice


def test_a_broken_gatekeeper_config_does_not_stop_unrelated_tests(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", gatekeeper="model: [unclosed\n")
    pytester.makepyfile(test_plain="def test_ok():\n    assert True\n")
    result = pytester.runpytest_subprocess("test_plain.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*PytestConfigWarning: gatekeeper: *gatekeeper.yaml:1: invalid YAML*"
                                 "gatekeeper suites are not collected*"])
    asked = pytester.runpytest_subprocess("test_plain.py", "--gatekeeper-model", "replay:x.jsonl")
    assert asked.ret == pytest.ExitCode.USAGE_ERROR
    asked.stderr.fnmatch_lines(["ERROR: gatekeeper: *gatekeeper.yaml:1: invalid YAML*"])


def test_gatekeeper_collection_hook_filters_and_orders_the_items(demo: pytest.Pytester) -> None:
    demo.makepyfile(gatekeeper_plugins='''
from gatekeeper import hookimpl

@hookimpl
def gatekeeper_collection_modifyitems(cases, config):
    cases[:] = sorted((c for c in cases if c.id != "refund-timing-01"), key=lambda c: c.id, reverse=True)
''')
    result = demo.runpytest_subprocess("suites/", "-k", "refund-", "--gatekeeper-model", BASELINE,
                                       "--collect-only", "-q")
    ids = [line.split("::")[1].split("[")[0] for line in result.stdout.lines if "::" in line]
    expected = sorted((i for i in refund_ids() if i.startswith("refund-") and i != "refund-timing-01"),
                      reverse=True)
    assert ids == expected and len(ids) == 4
    result.stdout.fnmatch_lines(["4/80 tests collected (76 deselected)*"])


def test_gatekeeper_out_writes_the_run_record_of_the_whole_session(demo: pytest.Pytester) -> None:
    demo.makepyfile(gatekeeper_plugins='''
from gatekeeper import hookimpl

@hookimpl
def gatekeeper_run_finish(run_id, record):
    record.setdefault("plugins", {})["seen"] = len(record["cases"])
''')
    result = demo.runpytest_subprocess("suites/", "-n", "2", "-p", "no:cacheprovider", "--gatekeeper-model", BASELINE,
                                       "--gatekeeper-out", "out")
    result.stdout.fnmatch_lines(["wrote out/*results.json*"])
    record = Project(demo.path).read_record("out/results.json")
    reference = Project(demo.path)
    ran = reference.run_subprocess("run", "suites", "--model", BASELINE, "--out", "ref", "--no-progress")
    assert ran.exit_code == 1, ran.output
    expected = reference.read_record("ref/results.json")
    assert record["kind"] == "run" and record["plugins"] == {"seen": 80}
    assert record["summary"] == expected["summary"]
    # Identical cases; only where they were read from is spelled absolute (pytest's paths).
    strip = lambda index: {k: {f: v for f, v in c.items() if f != "source"} for k, c in index.items()}  # noqa: E731
    assert strip(record["case_index"]) == strip(expected["case_index"])
    scores = lambda rec: {r["key"]: {m: s["value"] for m, s in r["scores"].items()} for r in rec["cases"]}  # noqa: E731
    assert scores(record) == scores(expected)
    assert record["suites"][0]["cases"] == 80 and record["stats"]["requests"] == 80
    assert (demo.path / "out/junit.xml").is_file() and (demo.path / "out/summary.md").is_file()
