"""ragas metrics under gatekeeper's gate: ``gatekeeper check`` on replayed candidate and
baseline answers, judged by the fake OpenAI server through the runner; the decision and
exit code a user sees, the run record's judge exchanges, and a re-run from the cache."""

from __future__ import annotations

from typing import Any

from ragas_support import (
    ENV,
    assert_no_secret,
    grounded,
    invented,
    judge_spec,
    make_cases,
    policy,
    scores,
    setup,
    suite,
)
from tests.fakes import FakeOpenAIServer

from gatekeeper.testing import Project

POLICY = policy(
    "    - {name: faithfulness, metric: ragas_faithfulness, direction: higher, hypothesis: non_inferiority, "
    "margin: 0.2, ci_method: t, critical: true}\n"
    "    - {name: hallucination, metric: ragas_hallucination, direction: lower, hypothesis: guardrail_only, "
    "guardrail: {max: 0.2}, critical: true}",
    "faithfulness, hallucination",
)


# Enough cases for the gate's power plan to let the critical claims decide (about 78 at 0.8).
CASES = make_cases(80)
GROUNDED, INVENTED = grounded(CASES), invented(CASES)


def project_for(project: Project, server: FakeOpenAIServer, candidate: dict[str, str]) -> None:
    judge = f"{{judge: '{judge_spec(server)}'}}"
    setup(project, suite(f"  - {{ragas_faithfulness: {judge}}}\n  - {{ragas_rouge: {{}}}}",
                         f"  - {{ragas_hallucination: {judge}}}", CASES),
          {"candidate": candidate, "baseline": GROUNDED})
    project.write("policy.yaml", POLICY)


def check(project: Project) -> tuple[int, dict[str, Any], str]:
    result = project.run("check", "--candidate", "replay:candidate.jsonl", "--baseline", "replay:baseline.jsonl",
                         "--policy", "policy.yaml", "--out", "out", "--no-progress", env=ENV)
    return result.exit_code, project.read_record("out/decision.json"), result.output


def test_invented_facts_are_rejected_and_a_rerun_replays_without_judge_calls(
    project: Project, judge_server: FakeOpenAIServer
) -> None:
    project_for(project, judge_server, INVENTED)

    code, record, output = check(project)

    assert record["decision"] == "REJECT" and code == 1, output
    verdicts = {m["name"]: m["verdict"] for m in record["metrics"]}
    assert verdicts == {"faithfulness": "FAIL", "hallucination": "FAIL"}
    cand, base = scores(record, "ragas_faithfulness", "candidate"), scores(record, "ragas_faithfulness", "baseline")
    assert cand["item1"]["value"] == 0.0 and cand["item0"]["value"] == 1.0
    assert {s["value"] for s in base.values()} == {1.0}
    flagged = scores(record, "ragas_hallucination", "candidate")["item1"]
    assert flagged["value"] == 1.0 and flagged["details"]["support"] == 0.0
    assert flagged["details"]["unsupported_claims"] == [
        {"statement": "Item 1 costs $100 and comes with a free gift.", "reason": "not in the context"}
    ]
    assert flagged["spans"][0]["text"] == "Item 1 costs $100 and comes with a free gift"
    # Every judge exchange is in the record: ragas' statement step, then its NLI step.
    details = cand["item1"]["details"]
    assert details["ragas_version"] and details["judge"]["provider"] == "openai"
    assert [e["schema"] for e in details["judge_exchanges"]] == ["StatementGeneratorOutput", "NLIStatementOutput"]
    assert '"verdict": 0' in details["judge_exchanges"][1]["reply"]
    assert "Item 1 costs $100" in details["judge_exchanges"][0]["prompt"]
    # 2 ragas steps for each of the 120 distinct answers (the 40 answers both models give are
    # judged once); the detector asks the same prompts and finds them in the cache.
    calls = judge_server.counters["requests"]
    assert calls == 120 * 2
    assert all(b["response_format"]["type"] == "json_schema" for b in judge_server.requests)

    code_again, again, _ = check(project)

    assert judge_server.counters["requests"] == calls  # the cache replays every judge call
    assert (again["decision"], code_again) == ("REJECT", 1)
    replayed = scores(again, "ragas_faithfulness", "candidate")["item1"]["details"]
    assert replayed["judge_cache_hits"] == replayed["judge_calls"] == 2
    assert_no_secret(project)


def test_grounded_candidate_is_promoted(project: Project, judge_server: FakeOpenAIServer) -> None:
    project_for(project, judge_server, {k: v.replace(" costs ", " is sold for ") for k, v in GROUNDED.items()})

    code, record, output = check(project)

    assert record["decision"] == "PROMOTE" and code == 0, output
    assert {s["value"] for s in scores(record, "ragas_hallucination", "candidate").values()} == {0.0}
    rouge = scores(record, "ragas_rouge", "candidate")["item3"]
    assert 0.5 < rouge["value"] < 1.0 and rouge["details"]["ragas_metric"] == "RougeScore"
