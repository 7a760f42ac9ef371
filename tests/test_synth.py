"""gatekeeper synth: from seeds, personas and a coverage plan to a suite and training data,
through the runner, with every dropped row counted and every kept row's provenance."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.testing import PAIRED_POLICY, Project, run_paired_check, write_paired_project
from tests.fakes import FakeOpenAIServer

PERSONAS = """\
personas:
  - id: hurried-parent
    role: customer
    goal: return gear bought for a child
    expertise: novice
    tone: hurried, informal
    locale: en-US
    constraints: [short messages]
  - id: careful-retiree
    role: customer
    goal: understand the exact rules before acting
    expertise: novice
    tone: polite, detailed
    locale: en-GB
    constraints: []
"""

PLAN = """\
oversample: 1.5
cells:
  - {topic: returns, scenario: return after the window, target: 2}
  - {topic: billing, scenario: refund not received, target: 2}
"""

SEEDS = [
    {"id": "s1", "input": "how long do I have to return boots?", "expected": "45 days from delivery.",
     "topic": "returns", "context": "Returns: 45 days from delivery."},
    {"id": "s2", "input": "when will my refund show up?", "expected": "Within 5 business days.",
     "topic": "billing", "context": "Refunds: 5 business days."},
]

RETURNS = "returns-return-after-the-window"
BILLING = "billing-refund-not-received"
QUESTIONS = {
    RETURNS: ["I missed the 45 day window by a week, can I still send the tent back?",
              "Bought a jacket 60 days ago for my son, tags still on. Can it go back?",
              "My kid outgrew the hiking boots after fifty days; is a return possible?"],
    BILLING: ["My refund was approved 10 days ago but nothing is on my card yet.",
              "Where is my money? I returned the camping stove two weeks ago.",
              "my refund was approved 10 days ago but nothing is on my card yet!!"],  # a near-duplicate of 001
}


def answer(question: str) -> str:
    return json.dumps({"input": question, "expected": "Please contact Northwind Customer Care."})


def setup(project: Project, plan: str = PLAN, personas: str = PERSONAS) -> None:
    project.write("personas.yaml", personas)
    project.write("plan.yaml", plan)
    project.write_jsonl("seeds.jsonl", SEEDS)


def synth(project: Project, generator: str, *extra: str, out: str = "out/support-synth") -> Any:
    return project.run("synth", "--seeds", "seeds.jsonl", "--personas", "personas.yaml", "--plan", "plan.yaml",
                       "--generator", generator, "--out", out, "--no-diversity", "--no-embedding-memorization",
                       *extra)


def rows(project: Project, path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (project.path / path).read_text().splitlines()]


def test_replay_generation_is_validated_repaired_deduplicated_and_traced(project: Project) -> None:
    setup(project)
    recording = [{"id": f"syn-{cell}-{k:03d}", "output": answer(q)}
                 for cell, qs in QUESTIONS.items() for k, q in enumerate(qs, 1)]
    recording[4]["output"] = "Sure! Here is one: {\"input\": \"Where is my money?\"}"  # no 'expected': invalid
    recording.append({"id": f"syn-{BILLING}-002~repair", "output": answer(QUESTIONS[BILLING][1])})
    project.write_jsonl("generator.jsonl", recording)

    result = synth(project, "replay:generator.jsonl")

    assert result.exit_code == 0, result.output
    result.fnmatch_lines(["cases: 4 of 4 rows kept; dropped: near_duplicate 1",
                          "  wrote out/support-synth/support-synth.jsonl (4 rows)"])
    cases = rows(project, "out/support-synth/support-synth.jsonl")
    assert [c["id"] for c in cases] == [f"syn-{RETURNS}-001", f"syn-{RETURNS}-002", f"syn-{BILLING}-001",
                                        f"syn-{BILLING}-002"]
    first = cases[0]
    assert first["origin"] == "synthetic" and first["synthetic"] is True and first["topic"] == "returns"
    assert first["context"] == SEEDS[0]["context"]  # inherited from the seed it was shown
    prov = first["provenance"]
    assert prov["generator"]["provider"] == "replay" and len(prov["generator"]["digest"]) == 64
    assert len(prov["template_sha256"]) == 64 and prov["persona"] == "hurried-parent" and prov["seed_ids"] == ["s1"]
    assert prov["filters"]["schema"] == "valid" and prov["filters"]["dedup"] == "unique"
    assert prov["filters"]["memorization"]["closest_seed"] == "s1"
    assert cases[3]["provenance"]["filters"]["schema"] == "repaired"
    report = project.read_json("out/support-synth/synth-report.json")
    coverage = report["kinds"]["cases"]["coverage"]
    assert coverage["dropped"] == {"near_duplicate": 1}
    assert [(c["cell"], c["candidates"], c["kept"], c["surplus"], c["shortfall"]) for c in coverage["cells"]] == [
        (RETURNS, 3, 2, 1, 0), (BILLING, 3, 2, 0, 0)]
    assert report["kinds"]["cases"]["deduplication"]["method"] == "minhash"
    example = report["kinds"]["cases"]["drop_examples"]["near_duplicate"][0]
    assert example["id"] == f"syn-{BILLING}-003" and f"repeats syn-{BILLING}-001" in example["why"]
    markdown = (project.path / "out/support-synth/synth-report.md").read_text()
    assert f"| {BILLING} | billing | 2 | 3 | 3 | 2 | 0 | near_duplicate 1 |" in markdown
    manifest = project.read_json("out/support-synth/synth.manifest.json")
    assert manifest["complete"] is True and manifest["files"]["support-synth.jsonl"]["synthetic"]["share"] == 1.0

    # The generated suite is a suite: gatekeeper runs it, with synthetic and real slices apart.
    suite = (project.path / "out/support-synth/support-synth.yaml").read_text()
    assert "- origin" in suite
    project.write_jsonl("answers.jsonl", [{"id": c["id"], "output": "Please contact Customer Care."}
                                          for c in cases])
    ran = project.run("run", "out/support-synth/support-synth.yaml", "--model", "replay:answers.jsonl",
                      "--out", "runs/synth")
    assert ran.exit_code in (0, 1), ran.output
    record = project.read_json("runs/synth/results.json")
    assert {c.get("slices", {}).get("origin") for c in record.get("cases", [])} <= {"synthetic", None}


def fake_generator(body: dict[str, Any]) -> str:
    """The fake endpoint as a generator: a question for the persona's scenario, valid JSON,
    except for variation 2 of the billing cell, which never answers JSON (not even repaired)."""
    prompt = body["messages"][-1]["content"]
    if ("refund not received" in prompt and "variation 2 of" in prompt) or (
            "That reply cannot be used" in prompt and "refund not received" in body["messages"][1]["content"]
            and "variation 2 of" in body["messages"][1]["content"]):
        return "I am sorry, I cannot help with that."
    topic = "billing" if "refund not received" in prompt else "returns"
    index = prompt.split("This is variation ")[1].split(" ")[0] if "This is variation " in prompt else "0"
    persona = "retiree" if "polite, detailed" in prompt else "parent"
    return json.dumps({"input": f"A {persona} asks about {topic}, case number {index} with details {index * 7}",
                       "expected": f"The {topic} answer number {index}."})


def test_structured_output_against_the_fake_endpoint_counts_invalid_json_and_a_short_cell(project: Project) -> None:
    setup(project, plan=PLAN.replace("oversample: 1.5", "oversample: 1.0"))
    with FakeOpenAIServer(responder=fake_generator) as server:
        spec = f"openai:gpt-fake?base_url={server.base_url}&api_key_env=GK_SYNTH_KEY"
        env = {"GK_SYNTH_KEY": "sk-synth-test"}
        short = project.run("synth", "--seeds", "seeds.jsonl", "--personas", "personas.yaml", "--plan",
                            "plan.yaml", "--generator", spec, "--out", "out/s", "--no-diversity",
                            "--no-embedding-memorization", env=env)
        first_requests = server.counters["requests"]
        body = server.requests[0]
        again = project.run("synth", "--seeds", "seeds.jsonl", "--personas", "personas.yaml", "--plan",
                            "plan.yaml", "--generator", spec, "--out", "out/s", "--no-diversity",
                            "--no-embedding-memorization", "--allow-short", "--json", env=env)
        second_requests = server.counters["requests"] - first_requests

    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["input", "expected"]
    assert first_requests == 5  # 4 rows + 1 repair turn
    assert short.exit_code == 1, short.output
    short.fnmatch_lines(["cases: 3 of 4 rows kept; dropped: invalid_json 1",
                         f"  SHORT {BILLING}: 1 of 2 (short by 1)", "the data set is short of its plan*"])
    manifest = project.read_json("out/s/synth.manifest.json")
    assert manifest["complete"] is False and manifest["shortfall"] == {"cases": {BILLING: 1}}
    # The rerun answers every request from the cache (nothing paid twice) and --allow-short exits 0.
    assert again.exit_code == 0, again.output
    assert second_requests == 0
    report = json.loads(again.stdout)
    assert report["kinds"]["cases"]["usage"]["cache_hits"] == 5
    assert report["kinds"]["cases"]["drop_examples"]["invalid_json"][0]["why"].startswith("not valid JSON")


CRASHING_GENERATOR = '''
import hashlib, json, os, signal
from pathlib import Path

def generate(messages, params):
    log = Path("calls.log")
    calls = len(log.read_text().splitlines()) if log.exists() else 0
    with log.open("a") as fh:
        fh.write(params["case_id"] + "\\n")
    if calls >= 3 and not Path("crashed").exists():
        Path("crashed").write_text("once")
        os.kill(os.getpid(), signal.SIGKILL)  # a crash, not an error: nothing after this runs
    digest = hashlib.sha256(params["case_id"].encode()).hexdigest()
    return json.dumps({"input": " ".join(digest[i:i + 5] for i in range(0, 50, 5)), "expected": "an answer"})
'''


def test_a_crashed_run_resumes_from_the_cache(project: Project) -> None:
    setup(project)
    project.write("crashing.py", CRASHING_GENERATOR)
    args = ("synth", "--seeds", "seeds.jsonl", "--personas", "personas.yaml", "--plan", "plan.yaml",
            "--generator", "python:crashing:generate?concurrency=1", "--out", "out/r", "--no-diversity",
            "--no-embedding-memorization", "--pii", "off", "--json")
    crashed = project.run_subprocess(*args, timeout=120)
    assert crashed.exit_code == -9, crashed.output  # SIGKILL during the 4th generation
    assert not (project.path / "out/r/synth.manifest.json").exists()

    resumed = project.run_subprocess(*args, timeout=120)

    assert resumed.exit_code == 0, resumed.output
    calls = (project.path / "calls.log").read_text().splitlines()
    assert len(calls) == 3 + 1 + 3  # 3 answered before the crash, the one it died in, then the other 3
    usage = json.loads(resumed.stdout)["kinds"]["cases"]["usage"]
    assert usage["cache_hits"] == 3 and usage["model_calls"] == 3


@pytest.mark.parametrize(("files", "expected"), [
    ({"personas.yaml": PERSONAS.replace("    goal: understand the exact rules before acting\n", "")},
     "personas.yaml:9: personas[1].goal: field required"),
    ({"plan.yaml": PLAN.replace("target: 2}\n  - {topic: billing", "target: 2, personas: [nobody]}\n"
                                "  - {topic: billing")},
     "persona 'nobody', which the persona file does not define"),
    ({"plan.yaml": PLAN + "  - {topic: loyalty, scenario: points, target: 1, seeds: {topic: loyalty}}\n"},
     "cell 'loyalty-points': no seed row has {\"topic\": \"loyalty\"}"),
    ({"empty.jinja": "{% if false %}never{% endif %}\n"}, "the template renders nothing"),
])
def test_bad_input_is_a_usage_error_naming_file_line_and_field(project: Project, files: dict[str, str],
                                                               expected: str) -> None:
    setup(project)
    project.write_jsonl("generator.jsonl", [{"id": "unused", "output": "{}"}])
    for name, text in files.items():
        project.write(name, text)
    extra = ("--template", "empty.jinja") if "empty.jinja" in files else ()

    result = synth(project, "replay:generator.jsonl", *extra)

    assert result.exit_code == 4, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert not (project.path / "out").exists()


PROMPTY = """\
---
name: northwind-case-writer
description: writes one evaluation case per call
---
system:
You write test questions for a support assistant.
user:
As {{ persona.role }} ({{ persona.tone }}), ask about {{ cell.topic }}: {{ cell.scenario }}.
{{ format_instructions }}
"""


def test_a_prompty_template_is_rendered_in_the_sandbox_and_hashed(project: Project) -> None:
    setup(project, plan=PLAN.replace("oversample: 1.5", "oversample: 1.0"))
    project.write("writer.prompty", PROMPTY)
    project.write_jsonl("generator.jsonl", [{"id": f"syn-{c}-{k:03d}", "output": answer(q)}
                                            for c, qs in QUESTIONS.items() for k, q in enumerate(qs, 1)])
    result = synth(project, "replay:generator.jsonl", "--template", "writer.prompty", "--pii", "off")
    assert result.exit_code == 0, result.output
    prov = rows(project, "out/support-synth/support-synth.jsonl")[0]["provenance"]
    assert prov["template"] == "writer.prompty" and len(prov["template_sha256"]) == 64
    builtin = project.read_json("out/support-synth/synth.manifest.json")["inputs"]["templates"]["cases"]
    assert builtin["sha256"] == prov["template_sha256"]

    project.write("escape.prompty", PROMPTY.replace("{{ cell.topic }}", "{{ cell.__class__.__mro__ }}"))
    refused = synth(project, "replay:generator.jsonl", "--template", "escape.prompty", "--pii", "off")
    assert refused.exit_code == 4, refused.output
    assert "escape.prompty" in refused.output and "Traceback" not in refused.output


def test_every_generation_failing_is_a_harness_error_not_a_short_dataset(project: Project) -> None:
    setup(project)
    project.write_jsonl("generator.jsonl", [{"id": "nothing-matches", "output": "{}"}])
    result = synth(project, "replay:generator.jsonl")
    assert result.exit_code == 5, result.output
    assert "every generation failed (6 of 6)" in result.output and "no recorded output" in result.output


def test_memorized_and_personal_rows(project: Project) -> None:
    setup(project)
    outputs = {
        f"syn-{RETURNS}-001": answer("how long do I have to return boots??"),  # the seed, copied
        f"syn-{RETURNS}-002": answer("Write to me at jane.doe@example.org about the tent I returned late"),
        f"syn-{RETURNS}-003": answer("Can a stove bought eight weeks ago still be returned unused?"),
        **{f"syn-{BILLING}-{k:03d}": answer(q) for k, q in enumerate(QUESTIONS[BILLING], 1)},
    }
    project.write_jsonl("generator.jsonl", [{"id": k, "output": v} for k, v in outputs.items()])

    result = synth(project, "replay:generator.jsonl", "--pii", "scrub", "--pii-detector", "patterns")

    assert result.exit_code == 0, result.output
    report = project.read_json("out/support-synth/synth-report.json")["kinds"]["cases"]
    assert report["coverage"]["dropped"] == {"memorized": 1, "near_duplicate": 1}
    assert report["privacy"]["pii"]["found"]["by_type"] == {"email": 1}
    assert report["privacy"]["pii"]["rows_with_pii"] == 0  # anonymized
    cases = {c["id"]: c for c in rows(project, "out/support-synth/support-synth.jsonl")}
    scrubbed = cases[f"syn-{RETURNS}-002"]
    assert "[EMAIL]" in scrubbed["input"] and "jane.doe" not in scrubbed["input"]
    assert scrubbed["provenance"]["filters"]["pii"] == {"found": {"email": 1}, "anonymized": True}
    markdown = (project.path / "out/support-synth/synth-report.md").read_text()
    assert f"| syn-{RETURNS}-001 | s1 |" in markdown  # the closest pair is shown to the auditor


def rubric_judge(body: dict[str, Any]) -> str:
    """Scores 5, except a question about stoves: 1 (off-topic for returns of clothing)."""
    text = body["messages"][-1]["content"]
    score = 1 if "stove" in text else 5
    return json.dumps({"reasoning": "mentions a stove" if score == 1 else "fine", "score": score})


def test_the_judge_filter_drops_rejected_rows_with_their_reasons(project: Project) -> None:
    setup(project)
    project.write_jsonl("generator.jsonl", [{"id": f"syn-{c}-{k:03d}", "output": answer(q)}
                                            for c, qs in QUESTIONS.items() for k, q in enumerate(qs, 1)])
    with FakeOpenAIServer(responder=rubric_judge) as server:
        judge = f"openai:gpt-fake?base_url={server.base_url}&api_key_env=GK_SYNTH_KEY"
        result = project.run(
            "synth", "--seeds", "seeds.jsonl", "--personas", "personas.yaml", "--plan", "plan.yaml",
            "--generator", "replay:generator.jsonl", "--out", "out/j", "--no-diversity",
            "--no-embedding-memorization", "--judge-filter", "The request is realistic.", "--judge", judge,
            "--allow-short", env={"GK_SYNTH_KEY": "sk-synth-test"})
        judged = server.counters["requests"]

    assert result.exit_code == 0, result.output
    judge_report = project.read_json("out/j/synth-report.json")["kinds"]["cases"]["judge"]
    assert judged == 5  # the near-duplicate never reached the judge
    assert judge_report["rejected"] == 1 and judge_report["passed"] == 4
    assert judge_report["rejection_reasons"] == {"mentions a stove": 1}
    cases = rows(project, "out/j/j.jsonl")
    assert all("stove" not in c["input"] for c in cases)
    assert cases[0]["provenance"]["filters"]["judge"]["passed"] is True


def conversation_fake(body: dict[str, Any]) -> str:
    """The simulator (JSON turns) and the candidate (plain answers) on one fake endpoint."""
    text = body["messages"][-1]["content"]
    if body.get("response_format"):
        turn = text.split("(turn ")[1].split(" ")[0] if "(turn " in text else "1"
        who = "parent" if "hurried" in text else "retiree"
        topic = "refund" if "refund not received" in text else "return"
        return json.dumps({"message": f"{who} turn {turn} about my {topic} number {len(text) % 97}"})
    return f"Candidate answer to: {text[-40:]}"


def test_multi_turn_conversations_become_cases_and_sft_conversations(project: Project) -> None:
    setup(project, plan=PLAN.replace("oversample: 1.5", "oversample: 1.0").replace("target: 2", "target: 1"))
    with FakeOpenAIServer(responder=conversation_fake) as server:
        spec = f"openai:gpt-fake?base_url={server.base_url}&api_key_env=GK_SYNTH_KEY"
        result = project.run("synth", "--seeds", "seeds.jsonl", "--personas", "personas.yaml", "--plan",
                             "plan.yaml", "--generator", spec, "--candidate", spec, "--turns", "2",
                             "--kind", "cases", "--kind", "sft", "--out", "out/m", "--no-diversity",
                             "--no-embedding-memorization", "--dedup", "exact", env={"GK_SYNTH_KEY": "sk-x"})

    assert result.exit_code == 0, result.output
    case = rows(project, "out/m/m.jsonl")[0]
    assert case["input"].startswith("user: parent turn 1 about my return")
    assert "\nassistant: Candidate answer to:" in case["input"] and case["input"].count("user:") == 2
    assert case["provenance"]["turns"] == 2
    sft = rows(project, "out/m/sft.jsonl")[0]
    assert [m["role"] for m in sft["messages"]] == ["user", "assistant", "user", "assistant"]
    assert sft["origin"] == "synthetic" and sft["source"] == "synthetic"


POLICY_SYNTHETIC = PAIRED_POLICY + """
data_management:
  synthetic:
    evaluation: {max_share: 0.5, slices: [topic], slice_max_share: 0.7}
"""


def test_check_rejects_a_suite_whose_synthetic_share_is_over_the_cap(project: Project) -> None:
    write_paired_project(project, baseline=[True] * 12, candidates={"candidate": [True] * 12},
                         policy=POLICY_SYNTHETIC)
    cases = rows(project, "suites/cases.jsonl")
    for i, case in enumerate(cases):
        if i < 8:
            case["origin"] = "synthetic"
    project.write_jsonl("suites/cases.jsonl", cases)

    result = run_paired_check(project)

    record = result.record
    assert result.decision == "REJECT", result.output
    texts = [r["text"] for r in record["reasons"]]
    assert any("data_management.synthetic.evaluation: the evaluated suites (8 of 12 rows) is 66.7% synthetic, "
               "above the maximum 50.0%" in t for t in texts), texts
    assert any("data_management.synthetic.evaluation.slices[topic]: topic=a" in t for t in texts), texts
    origin = record["data_origin"]
    assert (origin["rows"], origin["synthetic"], origin["real"]) == (12, 8, 4)
    assert origin["by_slice"]["topic"]["c"] == {"rows": 4, "synthetic": 2, "real": 2, "share": 0.5}


def test_training_data_over_the_synthetic_cap_is_refused_by_tune_and_the_gate(project: Project) -> None:
    from gatekeeper.gate.policy import SyntheticRules, SyntheticShare, check_scope, load_policy

    project.write_jsonl("train.jsonl", [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}],
         "topic": "returns", **({"origin": "synthetic", "synthetic": True} if i < 3 else {})} for i in range(4)])
    write_paired_project(project, baseline=[True], candidates={"candidate": [True]},
                         policy=PAIRED_POLICY.replace("lora_adapter_retrain", "hosted_finetune")
                         + "data_management:\n  synthetic:\n    training: {max_share: 0.5}\n")
    tuned = project.run("tune", "--tuner", "openai-ft", "--base", "openai:gpt-4o-mini", "--data", "train.jsonl",
                        "--out", "runs/t", "--policy", "policy.yaml")
    assert tuned.exit_code == 4, tuned.output
    assert "training data train.jsonl (3 of 4 rows) is 75.0% synthetic, above the maximum 50.0%" in tuned.output
    assert not (project.path / "runs/t").exists()

    policy = load_policy(project.path / "policy.yaml")
    assert policy.data_management.synthetic == SyntheticRules(training=SyntheticShare(max_share=0.5))
    provenance = {"modification": "M1", "data": {"synthetic": {"rows": 4, "synthetic": 1, "share": 0.25}}}
    assert not [d for d in check_scope(policy, provenance).deviations if "synthetic" in d]
    missing = check_scope(policy, {"modification": "M1", "data": {}}).deviations
    assert any("data_management.synthetic.training: the synthetic share of the training data is not recorded"
               in d for d in missing), missing


def test_a_policy_with_a_bad_synthetic_rule_names_the_field(project: Project) -> None:
    project.write("policy.yaml", PAIRED_POLICY.replace("{margin}", "0.05")
                  + "data_management:\n  synthetic:\n    evaluation: {min_share: 0.6, max_share: 0.4}\n")
    setup(project)
    project.write_jsonl("generator.jsonl", [{"id": "x", "output": "{}"}])
    result = synth(project, "replay:generator.jsonl", "--policy", "policy.yaml")
    assert result.exit_code == 4, result.output
    assert "data_management.synthetic.evaluation" in result.output and "min_share 0.6 is above" in result.output


REPO = Path(__file__).resolve().parents[1]


def test_the_demo_domain_gives_a_suite_and_training_file_that_check_gates(project: Project) -> None:
    """The walkthrough of docs/synthetic.md on the bundled Northwind demo: real seeds, personas,
    a plan, a simulated generator; the suite mixes real and synthetic cases and the gate
    shows them apart and checks the synthetic share."""
    for name in ("support_assistant.yaml", "data/support_cases.jsonl", "synth/personas.yaml", "synth/plan.yaml",
                 "synth/case-schema.json", "synth/policy.yaml", "synth/recordings/generator.jsonl"):
        target = project.path / "suites" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "suites" / name, target)

    made = project.run("synth", "--seeds", "suites/support_assistant.yaml", "--personas", "suites/synth/personas.yaml",
                       "--plan", "suites/synth/plan.yaml", "--generator",
                       "replay:suites/synth/recordings/generator.jsonl", "--kind", "cases", "--kind", "sft",
                       "--schema", "cases=suites/synth/case-schema.json", "--include-seeds",
                       "--out", "synth-out/northwind-synth", "--policy", "suites/synth/policy.yaml")

    assert made.exit_code == 0, made.output
    made.fnmatch_lines(["cases: 8 of 8 rows kept; dropped: near_duplicate 1", "sft: 8 of 8 rows kept; dropped: none"])
    report = project.read_json("synth-out/northwind-synth/synth-report.json")
    cases_report = report["kinds"]["cases"]
    assert cases_report["schema_repairs"]["repaired"] == 1
    assert cases_report["privacy"]["pii"]["found"]["by_type"] == {"email": 1}
    assert cases_report["privacy"]["memorization"]["flagged"] == 0
    diversity = cases_report["diversity"]  # MiniLM: the generated rows spread about as widely as the seeds
    assert 0.5 < diversity["spread_ratio"] < 1.5 and diversity["nearest_seed_similarity_max"] < 0.95
    sft = rows(project, "synth-out/northwind-synth/sft.jsonl")
    synthetic_sft = [r for r in sft if r["origin"] == "synthetic"]
    assert len(sft) == 88 and len(synthetic_sft) == 8
    assert [m["role"] for m in synthetic_sft[0]["messages"]] == ["system", "user", "assistant"]
    assert "Policy passages:" in synthetic_sft[0]["messages"][1]["content"]  # the seed suite's prompt

    cases = rows(project, "synth-out/northwind-synth/northwind-synth.jsonl")
    synthetic = {c["id"]: c for c in cases if c["origin"] == "synthetic"}
    for name, source in (("baseline", "baseline"), ("candidate", "candidate-better")):
        recording = REPO / "suites/recordings" / f"{source}.jsonl"
        recorded = [json.loads(line) for line in recording.read_text().splitlines()]
        answers = [{"id": i, "output": c["expected"] if name == "candidate" else "Please contact Customer Care."}
                   for i, c in synthetic.items()]
        project.write_jsonl(f"{name}.jsonl", [{"id": r["id"], "output": r["output"]} for r in recorded] + answers)
    checked = run_paired_check(project, "candidate", "synth-out/northwind-synth", policy="suites/synth/policy.yaml")

    assert checked.decision == "PROMOTE", checked.output  # better candidate, right synthetic answers
    origin = checked.record["data_origin"]
    assert (origin["rows"], origin["synthetic"], origin["real"]) == (88, 8, 80)
    assert origin["by_slice"]["topic"]["loyalty"] == {"rows": 8, "synthetic": 2, "real": 6, "share": 0.25}
    assert not [r for r in checked.record["reasons"] if r["clause"].startswith("data_management.synthetic")]
    def named(cut: Any) -> str:
        if isinstance(cut, dict) and set(cut) >= {"field", "value"}:
            return f"{cut['field']}={cut['value']}"
        return ",".join(f"{k}={v}" for k, v in cut.items()) if isinstance(cut, dict) else str(cut)

    facts_by_origin = {named(m["slice"]): m["verdict"] for m in checked.record["metrics"]
                       if m["name"] == "facts" and m.get("slice")}
    assert facts_by_origin.get("origin=synthetic") == "NODATA", facts_by_origin  # 8 cases: apart, not deciding
    assert "origin=real" in facts_by_origin
    summary = (project.path / "out" / "summary.md").read_text() if (project.path / "out/summary.md").exists() else ""
    html = (project.path / "out" / "report.html").read_text()
    assert "Synthetic and real cases" in html and "topic=loyalty" in html
    assert not summary or "Synthetic and real cases" in summary


@pytest.mark.slow
def test_the_embedded_smollm2_generates_through_the_runner(project: Project) -> None:
    """One real generation by SmolLM2 (gatekeeper-hf), short prompt, 60 tokens: whatever the
    small model writes is either a validated row with its provenance or a counted drop."""
    if os.environ.get("GATEKEEPER_ALL_EXTRAS") != "1":
        pytest.importorskip("gatekeeper_hf")
    setup(project, plan="oversample: 1.0\ncells:\n  - {topic: returns, scenario: return after the window, target: 1}\n")
    project.write("short.jinja", "A {{ persona.tone }} customer asks about {{ cell.topic }} ({{ cell.scenario }}). "
                  'Reply with JSON only: {"input": "<the question>", "expected": "<a one-sentence answer>"}'
                  "{# format_instructions: given inline above, to keep the prompt short #}\n")

    result = synth(project, "hf:smollm2", "--template", "short.jinja", "--max-tokens", "60", "--temperature", "0",
                   "--repair", "extract", "--allow-short", "--pii", "off", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["kinds"]["cases"]
    (cell,) = report["coverage"]["cells"]
    assert cell["candidates"] == 1 and cell["kept"] + sum(cell["dropped"].values()) == 1
    assert report["usage"]["model_calls"] == 1
    if cell["kept"]:
        (row,) = rows(project, "out/support-synth/support-synth.jsonl")
        assert row["provenance"]["generator"]["provider"] == "hf" and row["origin"] == "synthetic"
    else:
        assert set(cell["dropped"]) <= {"invalid_json", "schema_mismatch", "empty_output"}
        assert report["drop_examples"]
