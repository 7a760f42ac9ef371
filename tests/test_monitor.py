"""`gatekeeper monitor`: unpaired comparison of production signals, automatic rollback, drift."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatekeeper.builtin.local_registry import LocalRegistry
from gatekeeper.gate.audit import AuditLog
from gatekeeper.testing import Project
from gatekeeper.types import Config

MODEL = "assistant"
# After the stage began (a stage counts only its own signals): tomorrow, on the hour.
START = (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)

POLICY = """
metadata: {id: monitor-pccp, title: Monitor plan, version: "1", effective_date: 2026-01-01, owner: qa}
modifications:
  - {id: M1, type: lora_adapter_retrain, description: retrain, authorization: automatic, evaluation: [facts]}
performance_evaluation:
  suites: [s]
  comparators: {last_authorized: assistant@production}
  metrics:
    - {name: facts, metric: facts, direction: higher, hypothesis: non_inferiority, margin: 0.05, ci_method: tango}
update_procedures:
  stages:
    - {name: canary, traffic: 0.1, min_duration_hours: 48, min_signals: 300}
    - {name: full, traffic: 1.0}
  monitoring:
    metrics:
      - {name: acceptance, signal: acceptance_rate, margin: 0.05, alpha: 0.05}
      - {name: edits, signal: edit_rate, margin: 0.05}
      - {name: safety, signal: flag_rate, margin: 0.02}
  rollback_criteria:
    - {metric: acceptance, condition: fails, description: accepted less often than the previous version}
    - {metric: acceptance, condition: below, threshold: THRESHOLD, description: fewer than this share accepted}
impact_assessment:
  intended_use: tests
traceability:
  - {modification: M1, evaluations: [facts], rationale: r}
"""


def signals(version: str, *, accepted: int, edited: int, rejected: int, none: int = 0,
            topics: tuple[str, ...] = ("returns", "shipping", "warranty"), words: int = 12,
            hours: float = 60.0, flagged: int = 0) -> list[dict]:
    verdicts = ["accepted"] * accepted + ["edited"] * edited + ["rejected"] * rejected + ["none"] * none
    n = len(verdicts)
    rows = []
    for i, verdict in enumerate(verdicts):
        rows.append({
            "id": f"v{version}-{i:05d}", "conversation_id": f"c{version}-{i}", "model": MODEL,
            "model_version": version, "time": (START + timedelta(hours=hours * i / max(1, n - 1))).isoformat(),
            "messages": [{"role": "user", "content": f"question {i}"}],
            "answer": " ".join(["word"] * (words + i % 3)),
            "feedback": {"verdict": verdict, **({"edited_text": "better answer"} if verdict == "edited" else {})},
            "flags": ["safety"] if i < flagged else [],
            "attributes": {"topic": topics[i % len(topics)]},
        })
    return rows


def monitor_project(project: Project, *, threshold: float = 0.3, stage: str = "canary") -> Project:
    project.write("policy.yaml", POLICY.replace("THRESHOLD", str(threshold)))
    registry = LocalRegistry(Config(root=project.path))
    registry.register_version(MODEL, "replay:v1.jsonl", {})
    registry.register_version(MODEL, "replay:v2.jsonl", {})
    registry.set_alias(MODEL, "production", "1", stage="full")
    if stage == "canary":
        registry.set_alias(MODEL, "candidate", "2", traffic=0.1, stage="canary")
    else:
        registry.set_alias(MODEL, "production", "2", stage="full")
    return project


def monitor(project: Project, *extra: str) -> tuple[int, str, dict]:
    result = project.run("monitor", "--signals", "signals.jsonl", "--policy", "policy.yaml", "--out", "mon", *extra)
    record = project.read_json("mon/monitor.json") if (project.path / "mon/monitor.json").exists() else {}
    return result.exit_code, result.output, record


def registry(project: Project) -> LocalRegistry:
    return LocalRegistry(Config(root=project.path))


def audit(project: Project) -> list[dict]:
    return AuditLog(project.path / ".gatekeeper/audit.jsonl").records()


def test_a_worse_acceptance_rate_rolls_the_canary_back(project: Project) -> None:
    monitor_project(project)
    project.write_jsonl("signals.jsonl", signals("1", accepted=1800, edited=700, rejected=500, none=300)
                        + signals("2", accepted=150, edited=120, rejected=80, none=30))
    code, output, record = monitor(project)
    assert code == 1, output
    assert record["decision"] == "ROLLBACK" and record["exit_code"] == 1
    acceptance = next(m for m in record["metrics"] if m["name"] == "acceptance")
    assert (acceptance["n_previous"], acceptance["n_new"]) == (3000, 350)
    assert acceptance["previous"] == pytest.approx(0.6) and acceptance["new"] == pytest.approx(150 / 350)
    assert acceptance["method"] == "newcombe" and acceptance["verdict"] == "FAIL"
    assert acceptance["ci_high"] < -0.05
    assert record["reasons"][0].startswith("rollback criterion tripped — acceptance: new 0.429 vs previous 0.600")
    assert "rolled back assistant@candidate: version 2 -> removed" in output
    assert "candidate" not in registry(project).aliases(MODEL)
    assert registry(project).get_alias(MODEL, "production") == "1"
    events = [e["action"] for e in registry(project).history(MODEL)]
    assert events[-2:] == ["monitor", "rollback"]
    records = audit(project)
    assert [r["action"] for r in records] == ["monitor", "rollback"]
    assert records[0]["data"]["verdict"] == "ROLLBACK" and records[0]["data"]["signals_new"] == 380
    assert records[1]["data"]["automatic"] is True and records[1]["data"]["from"] == "2"
    assert records[1]["data"]["reason"].startswith("automatic: rollback criterion tripped — acceptance")
    assert records[1]["refs"]["monitor"] == records[0]["refs"]["monitor"]
    assert project.run("audit", "verify").exit_code == 0


def test_equal_rates_do_not_roll_back(project: Project) -> None:
    monitor_project(project)
    project.write_jsonl("signals.jsonl", signals("1", accepted=1800, edited=600, rejected=600)
                        + signals("2", accepted=1800, edited=600, rejected=600))
    code, output, record = monitor(project)
    assert code == 0, output
    assert record["decision"] == "OK"
    assert {m["name"]: m["verdict"] for m in record["metrics"]} == {
        "acceptance": "PASS", "edits": "PASS", "safety": "PASS"}
    assert [c["tripped"] for c in record["criteria"]] == [False, False]
    assert registry(project).get_alias(MODEL, "candidate") == "2"
    assert [r["action"] for r in audit(project)] == ["monitor"]
    monitored = registry(project).history(MODEL)[-1]
    assert monitored["action"] == "monitor" and monitored["verdict"] == "OK"
    assert monitored["signals_new"] == 3000 and monitored["window_hours"] == pytest.approx(60.0)
    output_lines = output.splitlines()
    assert output_lines[0] == ("monitor: OK  (assistant version 2 @candidate stage canary vs version 1; "
                               "3000 vs 3000 signals over 60.0 h)")


def test_equal_rates_on_little_traffic_are_inconclusive_not_a_rollback(project: Project) -> None:
    monitor_project(project)
    project.write_jsonl("signals.jsonl", signals("1", accepted=60, edited=20, rejected=20)
                        + signals("2", accepted=30, edited=10, rejected=10))
    code, output, record = monitor(project)
    assert code == 3, output
    assert record["decision"] == "INCONCLUSIVE"
    assert any(r.startswith("not enough evidence — acceptance:") for r in record["reasons"])
    assert "50 signals of the new version; stage 'canary' needs 300" in record["reasons"]
    assert registry(project).get_alias(MODEL, "candidate") == "2"


def test_dry_run_reports_a_rollback_but_changes_nothing(project: Project) -> None:
    monitor_project(project)
    project.write_jsonl("signals.jsonl", signals("1", accepted=1800, edited=700, rejected=500)
                        + signals("2", accepted=150, edited=120, rejected=80))
    before = registry(project).load()
    code, output, record = monitor(project, "--dry-run")
    assert code == 1
    assert record["decision"] == "ROLLBACK" and record["dry_run"] is True
    assert "dry run: not rolled back" in output
    assert registry(project).load() == before
    assert not (project.path / ".gatekeeper/audit.jsonl").exists()


def test_an_absolute_threshold_trips_even_when_the_old_version_was_as_bad(project: Project) -> None:
    monitor_project(project, threshold=0.5)
    project.write_jsonl("signals.jsonl", signals("1", accepted=400, edited=300, rejected=300)
                        + signals("2", accepted=400, edited=300, rejected=300))
    code, _, record = monitor(project)
    assert code == 1
    below = next(c for c in record["criteria"] if c["condition"] == "below")
    assert below["tripped"] is True and below["guardrail"]["ci_high"] < 0.5
    fails = next(c for c in record["criteria"] if c["condition"] == "fails")
    assert fails["tripped"] is False


def test_after_full_promotion_production_is_compared_with_its_predecessor(project: Project) -> None:
    monitor_project(project, stage="full")
    project.write_jsonl("signals.jsonl", signals("1", accepted=1800, edited=700, rejected=500)
                        + signals("2", accepted=1200, edited=1000, rejected=800))
    code, output, record = monitor(project)
    assert code == 1, output
    assert (record["alias"], record["new_version"], record["previous_version"]) == ("production", "2", "1")
    assert registry(project).get_alias(MODEL, "production") == "1"
    assert "rolled back assistant@production: version 2 -> version 1" in output


def test_time_window_and_explicit_versions(project: Project) -> None:
    monitor_project(project)
    rows = signals("1", accepted=1800, edited=600, rejected=600) + signals("2", accepted=1800, edited=600,
                                                                           rejected=600)
    project.write_jsonl("signals.jsonl", rows)
    until = (START + timedelta(hours=12)).isoformat()
    code, _, record = monitor(project, "--since", START.isoformat(), "--until", until,
                              "--new", "2", "--previous", "1", "--dry-run")
    assert record["signals"]["window"] == sum(
        1 for r in rows if datetime.fromisoformat(r["time"]) <= START + timedelta(hours=12))
    assert record["signals"]["window_hours"] <= 12.0
    assert code in (0, 3)


def test_drift_of_topics_and_answer_lengths_is_reported(project: Project) -> None:
    monitor_project(project)
    project.write_jsonl("signals.jsonl", signals("1", accepted=1800, edited=600, rejected=600)
                        + signals("2", accepted=1800, edited=600, rejected=600, topics=("returns", "returns",
                                  "billing"), words=30))
    project.write_jsonl("reference.jsonl", signals("1", accepted=900, edited=300, rejected=300))
    code, output, record = monitor(project, "--reference", "reference.jsonl", "--dry-run")
    assert code == 0, output
    between = record["drift"]["versions"]
    assert between["topics"]["drift"] is True and between["topics"]["p_value"] < 1e-6
    shifts = {s["topic"]: (s["reference"], s["current"]) for s in between["topics"]["largest_shifts"]}
    assert shifts["returns"] == (pytest.approx(1 / 3, abs=1e-3), pytest.approx(2 / 3, abs=1e-3))
    assert shifts["billing"] == (0.0, pytest.approx(1 / 3, abs=1e-3))
    assert between["answer_length"]["drift"] is True and between["answer_length"]["mean_words"][1] > 29
    window = record["drift"]["window"]
    assert window["reference"] == "reference.jsonl" and window["topics"]["drift"] is True
    assert "  drift between versions, topics: DRIFT (chi2 p=" in output
    assert "  drift between versions, answer_length: DRIFT (ks p=" in output

    project.write_jsonl("signals.jsonl", signals("1", accepted=1800, edited=600, rejected=600)
                        + signals("2", accepted=1800, edited=600, rejected=600))
    _, output, record = monitor(project, "--dry-run")
    assert record["drift"]["versions"]["topics"]["drift"] is False
    assert "  drift between versions, topics: no drift (chi2 p=1)" in output


def test_bad_input_is_a_usage_error(project: Project) -> None:
    monitor_project(project)
    project.write("signals.jsonl", '{"id": "x", "model": "assistant"}\n')
    code, output, _ = monitor(project)
    assert code == 4
    assert "signals.jsonl:1" in output
    no_policy = project.run("monitor", "--signals", "signals.jsonl")
    assert no_policy.exit_code == 4 and "no policy" in no_policy.output
    half = project.run("monitor", "--signals", "signals.jsonl", "--policy", "policy.yaml", "--new", "2")
    assert half.exit_code == 4 and "give both --new and --previous" in half.output


def test_nothing_staged_is_a_usage_error(project: Project) -> None:
    project.write("policy.yaml", POLICY.replace("THRESHOLD", "0.3"))
    registry(project).register_version(MODEL, "replay:v1.jsonl", {})
    registry(project).set_alias(MODEL, "production", "1")
    project.write_jsonl("signals.jsonl", signals("1", accepted=10, edited=1, rejected=1))
    code, output, _ = monitor(project)
    assert code == 4
    assert "has no previous version to compare with; give --new and --previous" in output


def test_json_output(project: Project) -> None:
    monitor_project(project)
    project.write_jsonl("signals.jsonl", signals("1", accepted=1800, edited=600, rejected=600)
                        + signals("2", accepted=1800, edited=600, rejected=600))
    result = project.run("monitor", "--signals", "signals.jsonl", "--policy", "policy.yaml", "--json", "--dry-run")
    record = json.loads(result.stdout)
    assert record["schema"] == "gatekeeper.monitor/1" and record["policy"]["id"] == "monitor-pccp"
    assert Path(record["policy"]["path"]).name == "policy.yaml"
