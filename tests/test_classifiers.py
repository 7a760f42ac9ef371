"""Semantic classifiers against the fake OpenAI server: closed label sets, near-miss
normalization, invalid labels rejected, multi-task prompts, and the chi-square test of
label distributions in ``gatekeeper check``."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest

from gatekeeper.builtin.scoring.classifiers import normalize_label
from gatekeeper.gate.stats import label_distribution_test
from gatekeeper.testing import Project
from tests.fakes import FakeOpenAIServer
from tests.judging_support import ENV, judge_spec, policy, run, scores, setup, user_text

LABELS = ["created", "deleted", "updated"]


@pytest.mark.parametrize(("raw", "label"), [
    ("created", "created"),
    ("Created!", "created"),
    ("  CREATED ", "created"),
    ("create", "created"),      # an inflection: normalized
    ("updates", "updated"),
    ("delete", "deleted"),
    ("removed", None),          # another word: rejected
    ("sports", None),
    ("", None),
])
def test_near_misses_are_normalized_and_other_words_rejected(raw: str, label: str | None) -> None:
    assert normalize_label(raw, LABELS, min_similarity=85) == label


def test_normalization_never_flips_a_negation_or_guesses_between_labels() -> None:
    assert normalize_label("unsatisfied", ["satisfied", "neutral"], min_similarity=85) is None
    assert normalize_label("dissatisfied", ["satisfied", "neutral"], min_similarity=85) is None
    # "creat" is as close to "created" as to "creates": no guess.
    assert normalize_label("creat", ["created", "creates"], min_similarity=80) is None
    assert normalize_label("creat", ["created", "deleted"], min_similarity=80) == "created"
    assert normalize_label("create", LABELS, min_similarity=85, fuzzy=False) is None


def test_label_distribution_test() -> None:
    same = label_distribution_test({"a": 10, "b": 10}, {"a": 11, "b": 9})
    assert same["p_value"] > 0.5 and same["dof"] == 1
    shifted = label_distribution_test({"a": 20, "b": 20, "c": 0}, {"a": 36, "b": 2, "c": 2})
    assert shifted["p_value"] < 0.001 and shifted["dof"] == 2 and shifted["cramers_v"] > 0.4
    assert shifted["candidate"] == {"a": 36, "b": 2, "c": 2}
    g = label_distribution_test({"a": 20, "b": 20}, {"a": 36, "b": 4}, test="g_test")
    assert g["test"] == "g_test" and g["p_value"] < 0.001
    one = label_distribution_test({"a": 5}, {"a": 7})
    assert one["p_value"] == 1.0 and one["cramers_v"] == 0.0


# --------------------------------------------------------------------------- runs

QUESTIONS = {
    "c1": "Please make me a new account.",
    "c2": "Remove my old address.",
    "c3": "Change my email.",
}


def classify_suite(judge: str, params: str, questions: dict[str, str] = QUESTIONS, *,
                   slices: bool = False, extra: dict[str, str] | None = None) -> str:
    """A suite classifying answers to ``questions``; ``extra``: case id → more YAML fields."""
    rows = "\n".join(
        f"  - {{id: {k}, input: {json.dumps(q)}" + (f", channel: {'web' if i % 2 else 'app'}" if slices else "")
        + (f", {extra[k]}" if extra and k in extra else "") + "}"
        for i, (k, q) in enumerate(questions.items())
    )
    return f"""\
suite: judged
prompt:
  messages:
    - role: user
      content: "{{{{ input }}}}"
{"slices: [channel]" if slices else ""}
cases:
{rows}
evaluators:
  - {{classifier: {{judge: '{judge}', {params}}}}}
"""


ANSWERS = {"c1": "Your account was created.", "c2": "The address is deleted.", "c3": "Your email is updated."}
ACTION = "as: action, labels: [created, deleted, updated], description: what the assistant did"


def labelled(body: dict[str, Any], **labels: str) -> str:
    return json.dumps({"reasoning": "from the answer", "labels": labels})


def test_classifier_normalizes_near_misses(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, classify_suite(judge_spec(fake_openai), ACTION), {"candidate": ANSWERS})
    raw = {"created": "Create", "deleted": "deleted", "updated": "UPDATED."}
    fake_openai.script(lambda body: labelled(body, action=next(
        r for word, r in raw.items() if f"is {word}" in user_text(body) or f"was {word}" in user_text(body))))

    result, record = run(project)

    assert result.exit_code == 0, result.output
    got = scores(record, "action")
    assert {k: s["details"]["labels"] for k, s in got.items()} == {
        "c1": {"action": "created"}, "c2": {"action": "deleted"}, "c3": {"action": "updated"}}
    assert got["c1"]["details"]["normalized"] == {"action": {"from": "Create", "to": "created"}}
    assert got["c1"]["reason"] == "action=created ('Create' normalized to 'created')"
    assert "normalized" not in got["c2"]["details"]
    assert {s["value"] for s in got.values()} == {1.0}
    body = fake_openai.requests[0]
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["labels"]["properties"]["action"]["enum"] == ["created", "deleted", "updated"]
    assert '- "action" (what the assistant did): one of created, deleted, updated' in user_text(body)
    assert len(fake_openai.requests) == 3


def test_invalid_label_is_sent_back_then_rejected_as_nodata(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, classify_suite(judge_spec(fake_openai), ACTION, {"c1": QUESTIONS["c1"], "c2": QUESTIONS["c2"]}),
          {"candidate": ANSWERS})
    # c1: "sports", then a valid label on the repair; c2: "sports" every time.
    fake_openai.script(lambda body: labelled(body, action=(
        "created" if "was created" in json.dumps(body["messages"]) and "could not be used" in user_text(body)
        else "sports")))

    result, record = run(project)

    got = scores(record, "action")
    assert got["c1"]["status"] == "ok" and got["c1"]["details"]["labels"] == {"action": "created"}
    assert got["c1"]["details"]["repaired_votes"] == 1
    assert got["c2"]["status"] == "nodata" and got["c2"]["value"] is None
    assert "labels/action: 'sports' is not one of created, deleted, updated" in got["c2"]["reason"]
    assert "labels" not in got["c2"]["details"]
    repairs = [b for b in fake_openai.requests if "could not be used" in user_text(b)]
    assert len(repairs) == 2 and len(fake_openai.requests) == 4
    assert "'sports' is not one of created, deleted, updated" in user_text(repairs[0])
    assert result.exit_code == 0


MULTI = (
    "as: telemetry, target: conversation, tasks: {"
    "topic: {labels: [account, billing, other], description: the user's topic}, "
    "satisfaction: {labels: [satisfied, neutral, unsatisfied], positive: [satisfied]}}"
)


def test_multi_task_classification_in_one_prompt(project: Project, fake_openai: FakeOpenAIServer) -> None:
    setup(project, classify_suite(judge_spec(fake_openai), MULTI), {"candidate": ANSWERS})
    fake_openai.script(lambda body: labelled(
        body, topic="account", satisfaction="satisfied" if "was created" in user_text(body) else "neutral"))

    _, record = run(project)

    got = scores(record, "telemetry")
    assert got["c1"]["details"]["labels"] == {"topic": "account", "satisfaction": "satisfied"}
    assert got["c1"]["value"] == 1.0 and got["c2"]["value"] == 0.0  # share of positive labels
    assert got["c1"]["reason"] == "topic=account, satisfaction=satisfied"
    assert len(fake_openai.requests) == 3  # one call per case for both tasks
    prompts = [user_text(b) for b in fake_openai.requests]
    assert any("Conversation:\nuser: Please make me a new account.\nassistant: Your account was created.\n" in p
               for p in prompts)
    labels = fake_openai.requests[0]["response_format"]["json_schema"]["schema"]["properties"]["labels"]
    assert labels["required"] == ["topic", "satisfaction"]


def test_expected_field_scores_accuracy(project: Project, fake_openai: FakeOpenAIServer) -> None:
    questions = {"c1": QUESTIONS["c1"], "c2": QUESTIONS["c2"]}
    suite = classify_suite(judge_spec(fake_openai), ACTION + ", expected_field: gold", questions,
                           extra={"c1": "gold: created", "c2": "gold: Updated"})
    setup(project, suite, {"candidate": ANSWERS})
    fake_openai.script(lambda body: labelled(body, action="created" if "was created" in user_text(body) else "deleted"))

    _, record = run(project)

    got = scores(record, "action")
    assert got["c1"]["value"] == 1.0 and got["c2"]["value"] == 0.0
    assert got["c2"]["reason"] == "action=deleted; action differs from the expected 'Updated'"


def test_classifier_parameters_are_checked_when_the_suite_loads(project: Project) -> None:
    setup(project, classify_suite("openai:x", "labels: [a, b], tasks: {t: {labels: [x, y]}}"), {"candidate": ANSWERS})
    result = project.run("run", "suites", "--model", "replay:candidate.jsonl")
    assert result.exit_code == 4
    assert "give 'labels' (one task) or 'tasks' (several), not both" in result.output
    setup(project, classify_suite("openai:x", "labels: [a, b], positive: [c]"), {"candidate": ANSWERS})
    result = project.run("run", "suites", "--model", "replay:candidate.jsonl")
    assert result.exit_code == 4 and "positive labels ['c'] are not in labels ['a', 'b']" in result.output


# --------------------------------------------------------------------------- chi-square in the gate

TOPICS = ["account", "billing", "shipping"]
N = 30


def topic_project(project: Project, server: FakeOpenAIServer, candidate_topics: list[str], *,
                  metric_extra: str = "") -> None:
    """30 cases; the baseline's answers are about account/billing/shipping in turn; the
    candidate's about ``candidate_topics[i]``. The judge labels an answer by its topic word."""
    questions = {f"q{i}": f"Help me with request {i}." for i in range(N)}
    baseline = {f"q{i}": f"Here is help with your {TOPICS[i % 3]} (request {i})." for i in range(N)}
    candidate = {f"q{i}": f"About your {candidate_topics[i]}: done, request {i}." for i in range(N)}
    setup(project, classify_suite(judge_spec(server), "as: topic, labels: [account, billing, shipping]", questions,
                                  slices=True),
          {"candidate": candidate, "baseline": baseline})
    project.write("policy.yaml", policy(
        "    - {name: topic_mix, metric: topic, measure: distribution, alpha: 0.05, critical: true"
        f"{metric_extra}}}", "topic_mix"))

    def by_topic_word(body: dict[str, Any]) -> str:
        text = user_text(body).split("Text to classify (the answer):", 1)[1].split("Tasks:", 1)[0]
        return labelled(body, topic=next(t for t in TOPICS if t in text))

    server.script(by_topic_word)


def check(project: Project) -> tuple[int, dict[str, Any], str]:
    result = project.run("check", "--candidate", "replay:candidate.jsonl", "--baseline", "replay:baseline.jsonl",
                         "--policy", "policy.yaml", "--out", "out", "--no-progress", env=ENV)
    return result.exit_code, project.read_record("out/decision.json"), result.output


def test_chi_square_passes_when_the_label_distribution_is_unchanged(
    project: Project, fake_openai: FakeOpenAIServer,
) -> None:
    # Different answers, same topics in a different order: the mix is the same.
    topic_project(project, fake_openai, [TOPICS[(i + 1) % 3] for i in range(N)])

    code, record, output = check(project)

    row = next(m for m in record["metrics"] if m["name"] == "topic_mix" and m["slice"] is None)
    assert row["verdict"] == "PASS" and row["hypothesis"] == "homogeneity"
    assert row["distribution"]["baseline"] == {"account": 10, "billing": 10, "shipping": 10}
    assert row["distribution"]["candidate"] == {"account": 10, "billing": 10, "shipping": 10}
    assert row["distribution"]["p_value"] == pytest.approx(1.0)
    assert "no shift shown" in row["reason"]
    assert record["decision"] == "PROMOTE" and code == 0, output


def test_chi_square_rejects_a_shifted_label_distribution(project: Project, fake_openai: FakeOpenAIServer) -> None:
    # The candidate turns 26 of 30 conversations into billing.
    topic_project(project, fake_openai, ["billing"] * 26 + ["account", "account", "shipping", "shipping"])

    code, record, output = check(project)

    row = next(m for m in record["metrics"] if m["name"] == "topic_mix" and m["slice"] is None)
    dist = row["distribution"]
    assert dist["candidate"] == {"account": 2, "billing": 26, "shipping": 2}
    # chi-square on [[10, 10, 10], [2, 26, 2]]: 17.78 with 2 dof.
    assert dist["statistic"] == pytest.approx(160 / 9) and dist["dof"] == 2
    assert dist["p_value"] == pytest.approx(math.exp(-80 / 9))  # the chi-square(2) tail is exp(-x/2)
    assert dist["cramers_v"] == pytest.approx(math.sqrt(160 / 9 / 60))
    assert row["verdict"] == "FAIL"
    assert "the candidate's label distribution shifted" in row["reason"]
    assert "chi-square =" in row["reason"] and "billing: 26 (87%)" in row["reason"]
    assert record["decision"] == "REJECT" and code == 1
    assert any(r["clause"] == "performance_evaluation.metrics[topic_mix]" for r in record["reasons"])
    assert "topic_mix" in output and "FAIL" in output


def test_a_significant_but_small_shift_passes_under_a_cramers_v_margin(
    project: Project, fake_openai: FakeOpenAIServer,
) -> None:
    topic_project(project, fake_openai, ["billing"] * 26 + ["account", "account", "shipping", "shipping"],
                  metric_extra=", margin: 0.9, test: g_test, slices: [channel], min_slice_n: 5")

    code, record, _ = check(project)

    rows = [m for m in record["metrics"] if m["name"] == "topic_mix"]
    overall = rows[0]
    assert overall["ci_method"] == "g_test" and overall["distribution"]["test"] == "g_test"
    assert overall["verdict"] == "PASS" and "negligible shift" in overall["reason"]
    assert sorted(r["slice"]["value"] for r in rows[1:]) == ["app", "web"]
    assert all(r["distribution"]["n_candidate"] == 15 for r in rows[1:])
    assert code == 0


def test_policy_checks_distribution_metrics(project: Project) -> None:
    from gatekeeper.gate.policy import load_policy
    from gatekeeper.types import UsageError

    cases = {
        "{name: m, metric: topic, measure: distribution, guardrail: {max: 1}}":
            "a label distribution has no mean to guard",
        "{name: m, metric: topic, measure: distribution, margin: 1.5}": "smallest Cramér's V",
        "{name: m, metric: facts, hypothesis: homogeneity}": "hypothesis homogeneity needs measure: distribution",
        "{name: m, metric: facts, hypothesis: superiority}": "direction is required",
        "{name: m, metric: facts, direction: higher, hypothesis: superiority, task: topic}":
            "task is only for measure: distribution",
    }
    for metric, message in cases.items():
        path = project.write("p.yaml", policy(f"    - {metric}", "m"))
        with pytest.raises(UsageError, match=re.escape(message)) as info:
            load_policy(path)
        assert str(info.value).startswith(f"{path}:")
    ok = load_policy(project.write("p.yaml", policy("    - {name: m, metric: topic, measure: distribution}", "m")))
    spec = ok.performance_evaluation.metrics[0]
    assert spec.hypothesis == "homogeneity" and spec.direction is None and spec.test == "chi_square"
