"""A scripted judge that answers ragas' prompts, for the fake OpenAI server's ``responder``.

ragas' metric collections write one prompt per step: the instruction, the JSON schema of
the reply it wants (whose ``title`` names the response model), few-shot examples, then
``input: {...}`` and ``Output:``. This judge reads which model is asked for (the
``response_format`` schema name when the client sends one, as gatekeeper-ragas does, else
the schema's title in the prompt, as ragas' own instructor client in JSON mode does),
reads the input JSON and answers it with simple, deterministic lexical rules: a statement
is supported when its numbers and most of its content words occur in the context. So
answers that say what the context says score high, and answers that invent facts score
low, through ragas' real code, without a paid model.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.fakes.openai_server import last_user_message

STOP = frozenset(re.findall(r"\S+", (
    "a an the is are was were be been to of in on at for and or but with by from it its this that these those "
    "you your we our they them their he she his her i me my do does did can could will would should may might "
    "must as if then than so not no yes have has had about into over under up down out only also just please "
    "what which who whom how when where why"
)))
NONCOMMITTAL = re.compile(r"\b(i don't know|i do not know|not sure|cannot answer|no idea)\b", re.I)


def words(text: str) -> list[str]:
    """Lower-case words, a plural ``s`` dropped (``returns`` matches ``return``)."""
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
            for w in re.findall(r"[a-z0-9$]+", text.lower())]


def content(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOP}


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return [p.strip() for p in parts if p.strip()]


def supported(statement: str, context: str) -> bool:
    """Every number of the statement, and at least 60% of its content words, are in the context."""
    claim, ctx = content(statement), set(words(context))
    if not claim:
        return True
    numbers = {w for w in claim if any(ch.isdigit() for ch in w)}
    if not numbers <= ctx:
        return False
    return len(claim & ctx) / len(claim) >= 0.6


def asked_model(body: dict[str, Any], prompt: str) -> str:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return str(fmt["json_schema"]["name"])
    start = prompt.find("JSON Schema:\n")
    end = prompt.find("Do not use single quotes", start)
    if start >= 0 and end > start:
        return str(json.loads(prompt[start + len("JSON Schema:\n") : end])["title"])
    raise ValueError("not a ragas prompt")


def prompt_input(prompt: str) -> dict[str, Any]:
    marker = "Now perform the same with the following input\ninput: "
    start = prompt.rfind(marker)
    end = prompt.rfind("\nOutput:")
    return json.loads(prompt[start + len(marker) : end]) if start >= 0 and end > start else {}


def verdicts(statements: list[str], context: str, key: str = "verdict") -> list[dict[str, Any]]:
    out = []
    for s in statements:
        ok = supported(s, context)
        out.append({"statement": s, "reason": "stated in the context" if ok else "not in the context",
                    key: int(ok)})
    return out


def answer(model: str, data: dict[str, Any]) -> dict[str, Any]:
    """The reply ragas expects for ``model`` given the prompt's input ``data``."""
    if model == "StatementGeneratorOutput":  # faithfulness (answer) and noise sensitivity (text)
        return {"statements": sentences(str(data.get("answer", data.get("text", ""))))}
    if model in ("NLIStatementOutput", "StatementFaithfulnessOutput"):
        return {"statements": verdicts(list(data.get("statements", [])), str(data.get("context", "")))}
    if model == "ClaimDecompositionOutput":
        return {"claims": sentences(str(data.get("response", "")))}
    if model == "AnswerRelevanceOutput":
        response = str(data.get("response", ""))
        return {"question": response.rstrip(".!") + "?", "noncommittal": int(bool(NONCOMMITTAL.search(response)))}
    if model == "ContextPrecisionOutput":
        answer_words, ctx = content(str(data.get("answer", ""))), content(str(data.get("context", "")))
        useful = bool(answer_words) and len(answer_words & ctx) / len(answer_words) >= 0.3
        return {"reason": "the context gives the answer" if useful else "unrelated", "verdict": int(useful)}
    if model == "ContextRecallOutput":
        return {"classifications": verdicts(sentences(str(data.get("answer", ""))), str(data.get("context", "")),
                                            key="attributed")}
    raise ValueError(f"the scripted ragas judge does not know {model}")


def ragas_judge(body: dict[str, Any]) -> str:
    """A ``FakeOpenAIServer`` responder: the JSON reply to a ragas prompt."""
    prompt = last_user_message(body)
    return json.dumps(answer(asked_model(body, prompt), prompt_input(prompt)))


def garbage_judge(body: dict[str, Any]) -> str:
    """A judge that never answers in JSON."""
    return "I think the answer is quite good, honestly."
