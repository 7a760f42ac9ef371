"""What the classify tests (tests/test_classify.py, the Spark plugin's) share: synthetic
support conversations whose topic shows in the user's words, a classify specification,
and an LLM judge (the fake OpenAI server) that labels them by keyword, with some noise."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes import FakeOpenAIServer

KEY_ENV = "GK_TEST_CLASSIFY_KEY"
ENV = {KEY_ENV: "sk-classify-test-0d9c"}
LABELS = ["billing", "shipping", "returns", "account"]
PHRASES = {
    "billing": ["I was charged twice for my {item}", "my invoice for the {item} is wrong",
                "refund the extra fee for the {item}", "the payment for my {item} failed"],
    "shipping": ["where is my {item}, tracking has not moved", "the courier lost my {item}",
                 "delivery of my {item} is late", "can the {item} be shipped faster"],
    "returns": ["I want to return the {item}", "how do I send back a broken {item}",
                "the {item} does not fit, can I exchange it", "I need a return label for the {item}"],
    "account": ["I cannot log in to my account", "reset my password please",
                "change the email on my profile", "close my account"],
}
KEYWORDS = {"billing": ("charged", "invoice", "fee", "payment"),
            "shipping": ("tracking", "courier", "delivery", "shipped"),
            "returns": ("return", "send back", "exchange"), "account": ("log in", "password", "email", "account")}
ITEMS = ["laptop", "phone", "jacket", "blender", "sofa", "camera", "shoes", "kettle"]
MIX = {"1": [0.45, 0.3, 0.15, 0.1], "2": [0.2, 0.3, 0.35, 0.15]}


def conversations(n: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Flat-layout signals; versions 1 and 2 alternate and talk about topics in different shares."""
    rng = random.Random(seed)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for i in range(n):
        version = "1" if i % 2 == 0 else "2"
        topic = rng.choices(LABELS, MIX[version])[0]
        question = rng.choice(PHRASES[topic]).format(item=rng.choice(ITEMS)) + f" (order {rng.randint(1000, 9999)})"
        yield {
            "id": f"s{i:06d}", "conversation_id": f"c{i:06d}", "time": start + timedelta(minutes=i),
            "model": "support", "model_version": version,
            "messages": json.dumps([{"role": "user", "content": question}]),
            "answer": "Thanks for reaching out, I will look into it.", "feedback_verdict": "none",
        }


def keyword_topic(text: str) -> str:
    for label, words in KEYWORDS.items():
        if any(w in text for w in words):
            return label
    return "account"


def judge(noise: float = 0.0) -> Any:
    """The LLM: the topic the conversation's keywords name, as the classifier's JSON reply;
    with ``noise``, that share of texts (chosen by a hash of the text) gets a random topic."""
    import hashlib

    def reply(body: dict[str, Any]) -> str:
        text = str(body["messages"][-1]["content"]).split("Tasks:")[0]
        label = keyword_topic(text)
        digest = int(hashlib.sha256(text.encode()).hexdigest(), 16)
        if (digest % 1000) / 1000 < noise:
            label = LABELS[(digest // 1000) % len(LABELS)]
        return json.dumps({"reasoning": "keywords", "labels": {"topic": label}})

    return reply


def spec(server: FakeOpenAIServer, *, sample: int = 120, kappa: float = 0.6, extra: str = "") -> str:
    return f"""\
classifier:
  judge: openai:gpt-fake?base_url={server.base_url}&api_key_env={KEY_ENV}
  target: input
  tasks:
    topic: {{labels: [{", ".join(LABELS)}], description: what the customer needs}}
sample: {sample}
holdout: 0.3
min_agreement: {{kappa: {kappa}}}
batch_size: 64
{extra}"""


POLICY = """\
metadata: {id: topics, title: Topic shift, version: "1", effective_date: 2026-01-01, owner: qa}
modifications:
  - {id: M1, type: prompt_template_change, description: new prompt, authorization: automatic, evaluation: [topic_mix]}
performance_evaluation:
  suites: [classify-sample]
  metrics:
    - {name: topic_mix, metric: label, measure: distribution, task: topic, margin: 0.1}
impact_assessment:
  intended_use: tests
  risks: [{id: R1, description: users ask about other things, mitigation: gate, metrics: [topic_mix]}]
traceability:
  - {modification: M1, evaluations: [topic_mix], rationale: topics}
"""
