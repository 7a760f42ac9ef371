"""`gatekeeper loop` end to end on a tiny random Llama: promote, roll back, stop at the gate.

The bundled telemetry (suites/signals) is the real input; the model is the tiny one the
gatekeeper-hf tests build from a config (no download), so a loop takes seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatekeeper.builtin.local_registry import LocalRegistry
from gatekeeper.gate.audit import AuditLog
from gatekeeper.testing import Project
from gatekeeper.types import Config, ModelSpec

pytest.importorskip("gatekeeper_hf")

REPO = Path(__file__).resolve().parents[1]
SIGNALS = REPO / "suites" / "signals"
LOOP_POLICY = REPO / "policies" / "support-assistant-loop.yaml"

SUITE = """
suite: mini-loop
prompt:
  messages:
    - {role: user, content: "{{ input }}"}
generation: {max_tokens: 8}
evaluators:
  - {name: contains, as: facts, field: facts, mode: all}
  - {name: rouge_l, as: rouge_l}
cases:
""" + "".join(f"""  - {{id: q{i:02d}, input: "How do I get a refund for order {i}?", expected: "Open Settings and choose
      Billing.", facts: ["Billing"]}}
""" for i in range(12))


def hf_conftest() -> Any:
    spec = importlib.util.spec_from_file_location("gatekeeper_hf_test_conftest",
                                                  REPO / "plugins/gatekeeper-hf/tests/conftest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    old = os.environ.get("GATEKEEPER_HF_CACHE")
    os.environ["GATEKEEPER_HF_CACHE"] = str(tmp_path_factory.mktemp("hf-cache"))
    yield hf_conftest().build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    if old is None:
        os.environ.pop("GATEKEEPER_HF_CACHE", None)
    else:
        os.environ["GATEKEEPER_HF_CACHE"] = old


def loop_project(project: Project, base: Path, *, facts_margin: float = 0.3,
                 extra_metric: dict[str, Any] | None = None) -> Project:
    """The bundled loop policy, on the tiny base and a small suite of short prompts.

    The tiny model's random text has no context to be grounded in, so the grounding
    criterion is left out; the facts margin is wide because the sample is small.
    """
    policy = yaml.safe_load(LOOP_POLICY.read_text())
    modification = policy["modifications"][0]
    modification["bounds"]["base_model"] = str(base)
    evaluation = policy["performance_evaluation"]
    evaluation["suites"] = ["mini-loop", "signals-regression"]
    evaluation["metrics"] = [m for m in evaluation["metrics"] if m["name"] != "grounding"]
    for metric in evaluation["metrics"]:
        if metric.get("suite") == "support-assistant":
            metric["suite"] = "mini-loop"
        if metric["name"] == "facts":
            metric["margin"] = facts_margin
        metric.pop("guardrail", None)  # the tiny random model answers nothing right: no absolute floor
    if extra_metric:
        evaluation["metrics"].append(extra_metric)
    for metric in evaluation["metrics"]:
        metric["min_n"] = 1  # 12 cases on purpose: the tiny model's loop runs in seconds
    names = [m["name"] for m in evaluation["metrics"]]
    modification["evaluation"] = names
    policy["traceability"][0]["evaluations"] = names
    policy["data_management"]["sequestered_test_sets"] = []
    for risk in policy["impact_assessment"]["risks"]:
        risk["metrics"] = [m for m in risk["metrics"] if m in names]
    project.write("policy.yaml", yaml.safe_dump(policy, sort_keys=False))
    project.write("suites/mini.yaml", SUITE)
    return project


def run_loop(project: Project, base: Path, window2: str, *extra: str) -> Any:
    return project.run(
        "loop", "--base", f"hf:{base}", "--history", str(SIGNALS / "window1.parquet"),
        "--window2", str(SIGNALS / f"window2-{window2}.parquet"), "--policy", "policy.yaml",
        "--suites", "suites", "--cases", "12", "--steps", "2", "--param", "max_length=4096",
        "--param", "batch_size=2", "--work", "loop", "--no-progress", *extra,
    )


def audit_records(project: Project) -> list[dict[str, Any]]:
    return AuditLog(project.path / ".gatekeeper/audit.jsonl").records()


def test_loop_promotes_a_candidate_that_production_likes(project: Project, tiny_base: Path) -> None:
    loop_project(project, tiny_base)
    result = run_loop(project, tiny_base, "better")
    assert result.exit_code == 0, result.output
    result.fnmatch_lines([
        "gatekeeper loop: support-assistant on hf:*; policy support-assistant-loop-pccp v1.0; work in loop",
        "[[]1/7] registry  registered    support-assistant@production = version 1 (hf:*",
        "[[]2/7] curate    built         * regression cases, * SFT examples; PII removed: *",
        "[[]3/7] tune      trained       lora adapter, 2 steps, loss *",
        "[[]4/7] check     PROMOTE       facts PASS*",
        "[[]5/7] canary    promoted      version 2 -> @candidate at stage canary (10%); skipped shadow*",
        "[[]6/7] monitor   OK            409 vs 3705 signals; acceptance 0.595->0.662 PASS*",
        "      drift vs history, topics: *",
        "[[]7/7] full      promoted      version 2 -> @production at stage full (100%)*",
        "loop: support-assistant@production is the new version (exit 0) in * s; audit trail OK: * records*",
    ])
    registry = LocalRegistry(Config(root=project.path), "loop/registry")
    assert registry.aliases("support-assistant").keys() == {"production"}
    assert registry.get_alias("support-assistant", "production") == "2"
    version = registry.versions("support-assistant")["2"]
    assert ModelSpec.parse(version["spec"]) == ModelSpec("hf", str(tiny_base), {"adapter": "loop/adapter"})
    assert version["provenance"]["change"]["data"]["sources"] == ["production-signals"]

    actions = [r["action"] for r in audit_records(project)]
    assert actions == ["register", "signals.build-suite", "signals.build-dataset", "tune", "check", "promote",
                       "monitor", "promote", "loop"]
    story = project.run("audit", "show")
    assert story.exit_code == 0
    for action in ("register", "tune", "check", "promote", "monitor", "loop"):
        assert f" {action} " in story.stdout
    assert project.run("audit", "verify").exit_code == 0
    summary = json.loads((project.path / "loop/loop.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["registry", "curate", "tune", "check", "canary", "monitor",
                                                     "full"]
    # No regression case (evaluation side of the split) is in the training data.
    cases = [json.loads(line) for line in (project.path / "loop/suites/signals-regression.jsonl").open()]
    trained = {json.loads(line)["prompt_sha256"] for line in (project.path / "loop/data/sft.jsonl").open()}
    assert cases and not {c["id"].removeprefix("sig-") for c in cases} & {t[:12] for t in trained}


def test_loop_rolls_back_a_canary_that_production_dislikes(project: Project, tiny_base: Path) -> None:
    loop_project(project, tiny_base)
    result = run_loop(project, tiny_base, "worse")
    assert result.exit_code == 1, result.output
    result.fnmatch_lines([
        "[[]5/7] canary    promoted      version 2 -> @candidate at stage canary (10%)*",
        "[[]6/7] monitor   ROLLBACK      412 vs 3705 signals; acceptance 0.595->0.423 FAIL*; rolled back: "
        "@candidate removed*",
        "      - rollback criterion tripped — acceptance: new 0.423 vs previous 0.595*",
        "loop: rolled back (exit 1) in * s; audit trail OK*",
    ])
    registry = LocalRegistry(Config(root=project.path), "loop/registry")
    assert registry.aliases("support-assistant").keys() == {"production"}
    assert registry.get_alias("support-assistant", "production") == "1"
    records = audit_records(project)
    assert [r["action"] for r in records][-4:] == ["promote", "monitor", "rollback", "loop"]
    assert records[-2]["data"]["automatic"] is True
    assert records[-1]["data"]["outcome"] == "rolled back" and records[-1]["data"]["exit_code"] == 1


def test_a_check_that_does_not_promote_ends_the_loop_without_promotion(project: Project, tiny_base: Path) -> None:
    impossible = {"name": "overlap_floor", "metric": "rouge_l", "suite": "mini-loop", "direction": "higher",
                  "hypothesis": "guardrail_only", "guardrail": {"min": 0.99}, "critical": True}
    loop_project(project, tiny_base, extra_metric=impossible)
    result = run_loop(project, tiny_base, "better")
    assert result.exit_code == 1, result.output
    result.fnmatch_lines(["[[]4/7] check     REJECT        *", "loop: stopped at the gate: nothing was promoted "
                          "(exit 1)*"])
    registry = LocalRegistry(Config(root=project.path), "loop/registry")
    assert registry.aliases("support-assistant").keys() == {"production"}
    assert "promote" not in [r["action"] for r in audit_records(project)]


def test_loop_usage_errors(project: Project) -> None:
    project.write("policy.yaml", LOOP_POLICY.read_text())
    for bad_value in ("0", "regression=x"):
        bad = project.run("loop", "--cases", bad_value, "--policy", "policy.yaml")
        assert bad.exit_code == 4 and f"--cases {bad_value!r}: give N or SUITE=N with N >= 1" in bad.output
    missing = project.run("loop", "--policy", "nope.yaml")
    assert missing.exit_code == 4 and "nope.yaml: --policy: policy file not found" in missing.output
