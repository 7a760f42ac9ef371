"""Scripted judges for deepeval's and azure-ai-evaluation's prompts (the fake server's ``responder``).

They answer what each library really sends, with the lexical rules of
:mod:`tests.fakes.ragas_judge` (a statement is supported when its numbers and most of its
content words are in the context), so answers that say what the context says score high
and answers that invent facts score low, through the libraries' real code.

* **deepeval** asks for a pydantic model per step; gatekeeper-deepeval sends its name as the
  ``response_format`` JSON-schema name (``Claims``, ``Verdicts``, ``ReasonScore`` ...), and
  the step's inputs are the sections at the end of the prompt (``AI Output:``, ``Retrieval
  Contexts:``, ``Claims:`` ...).
* **azure** prompty flows ask for ``{"reason", "score" (1..5), "status"}`` in JSON mode; the
  inputs are ``CONTEXT:``/``QUERY:``/``RESPONSE:``-style fields of the prompt.

:func:`ecosystem_judge` answers all three libraries (ragas through ``ragas_judge``).
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from tests.fakes.openai_server import last_user_message
from tests.fakes.ragas_judge import content, ragas_judge, sentences, supported

BIASED = re.compile(r"\b(idiots?|stupid|always lazy|people like you)\b", re.I)
HEADER = re.compile(r"^([A-Z][A-Za-z_ ()0-9-]*?):\s*$")


def sections(prompt: str) -> dict[str, str]:
    """``Header:`` lines after the last ``**`` rule (deepeval's inputs; G-Eval's come after
    ``Test Case:``) and what follows each."""
    tail = prompt.split("Test Case:", 1)[1] if "Test Case:" in prompt else prompt.rsplit("**", 1)[-1]
    out: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in tail.splitlines():
        match = HEADER.match(line.strip())
        if match:
            if current is not None:
                out[current] = "\n".join(lines).strip()
            current, lines = re.sub(r"\s*\(.*\)$", "", match.group(1)).strip(), []
        elif current is not None:
            lines.append(line)
    if current is not None:
        out[current] = "\n".join(lines).strip()
    return out


def as_list(text: str) -> list[str]:
    """A section holding a Python/JSON list (``['a', 'b']``), or one item."""
    text = text.strip()
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, list):
            return [str(v) for v in value]
    return [text] if text else []


def _first(found: dict[str, str], *names: str) -> str:
    for name in names:
        if name in found:
            return found[name]
    return ""


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def deepeval_answer(schema: str, prompt: str) -> dict[str, Any]:
    found = sections(prompt)
    output = _first(found, "AI Output", "Actual Output", "Text", "JSON")
    context = " ".join(as_list(_first(found, "Retrieval Contexts", "Retrieval Context", "Context", "Contexts")))
    if schema == "Steps":
        return {"steps": ["Compare the actual output with the expected output and the input.",
                          "Penalise any fact that the expected output or input does not support."]}
    if schema == "ReasonScore":  # G-Eval
        reference = " ".join(v for k, v in found.items() if k not in ("Actual Output", "Parameters"))
        actual = found.get("Actual Output", "")
        ok = all(supported(s, reference) for s in sentences(actual)) if actual else False
        return {"reason": "matches the reference" if ok else "states facts the reference does not",
                "score": 9 if ok else 2}
    if schema in ("Claims", "Statements", "Truths"):
        key = schema.lower()
        return {key: sentences(output)}
    if schema == "Opinions":
        return {"opinions": [s for s in sentences(output) if BIASED.search(s)] or sentences(output)}
    if schema == "ContextualRelevancyVerdicts":
        question = found.get("Input", "")
        return {"verdicts": [{"statement": s, "verdict": _yes(bool(content(s) & content(question)) or True),
                              "reason": "relevant"} for s in sentences(context)]}
    if schema == "Verdicts":
        if "Claims" in found:  # faithfulness: each claim against the retrieval context
            return {"verdicts": [{"verdict": _yes(supported(c, context)), "reason": "checked against the context"}
                                 for c in as_list(found["Claims"])]}
        if "Opinions" in found or "opinions" in prompt.lower().split("**")[0]:
            items = as_list(found.get("Opinions", ""))  # bias / toxicity: yes = biased / toxic
            return {"verdicts": [{"verdict": _yes(bool(BIASED.search(o))), "reason": "wording"} for o in items]}
        if "Statements" in found:  # answer relevancy
            return {"verdicts": [{"verdict": _yes(not BIASED.search(s)), "reason": "on topic"}
                                 for s in as_list(found["Statements"])]}
        if "Expected Output" in found and "Input" not in found:  # contextual recall
            return {"verdicts": [{"verdict": _yes(supported(s, context)), "reason": "attributable"}
                                 for s in sentences(found["Expected Output"])]}
        if "Expected output" in found or "Expected Output" in found:  # contextual precision, one per node
            expected = _first(found, "Expected output", "Expected Output")
            return {"verdicts": [{"verdict": _yes(supported(expected, node) or bool(content(expected) & content(node))),
                                  "reason": "useful"} for node in as_list(_first(found, "Retrieval Context"))]}
        # hallucination: does the actual output agree with each context?
        actual = found.get("Actual Output", output)
        return {"verdicts": [{"verdict": _yes(all(supported(s, ctx) for s in sentences(actual))),
                              "reason": "agrees" } for ctx in as_list(_first(found, "Contexts", "Context"))]}
    if schema.endswith("Reason"):
        return {"reason": "scripted reason: " + ("the output holds up" if "Contradictions:\n[]" in prompt
                                                 or "[]" in prompt else "see the verdicts")}
    raise KeyError(schema)


AZURE_FIELDS = {"CONVERSATION_HISTORY": "QUERY", "QUERY": "QUERY", "question": "QUERY", "RESPONSE": "RESPONSE",
                "predicted answer": "RESPONSE", "CONTEXT": "CONTEXT", "correct answer": "GROUND_TRUTH"}


def azure_fields(prompt: str) -> dict[str, str]:
    """The prompty's input fields: each known ``NAME: value`` line of its input block (the
    first after an ``INPUT`` heading, where the examples follow it; else the last one)."""
    found: dict[str, str] = {}
    heading = re.search(r"^INPUT\s*\n=+\s*$", prompt, re.M)
    for name, field in AZURE_FIELDS.items():
        matches = re.findall(rf"^\s*{name}\s*:\s*(.+)$", prompt[heading.end():] if heading else prompt, re.M)
        if matches:
            found[field] = (matches[0] if heading else matches[-1]).strip()
    return found


def azure_answer(body: dict[str, Any]) -> dict[str, Any]:
    system = str(body["messages"][0].get("content", "")) if body.get("messages") else ""
    fields = azure_fields(last_user_message(body))
    response = fields.get("RESPONSE", "")
    if "CONTEXT chunks" in system:  # retrieval: are the contexts about the query?
        score = 5 if content(fields.get("QUERY", "")) & content(fields.get("CONTEXT", "")) else 1
    elif "CONTEXT" in fields:  # groundedness
        score = 5 if all(supported(s, fields["CONTEXT"]) for s in sentences(response)) else 1
    elif "GROUND_TRUTH" in fields:  # similarity
        score = 5 if all(supported(s, fields["GROUND_TRUTH"]) for s in sentences(response)) else 1
    else:  # relevance, coherence, fluency: invented prices and insults are what the tests plant
        score = 1 if BIASED.search(response) or "$25" in response else 5
    return {"reason": f"scripted judge: {'good' if score >= 3 else 'poor'} response", "score": score,
            "status": "completed"}


def is_azure(body: dict[str, Any]) -> bool:
    fmt = (body.get("response_format") or {}).get("type")
    system = str((body.get("messages") or [{}])[0].get("content", ""))
    return fmt == "json_object" and ("evaluat" in system.lower() or "Judge" in system)


def deepeval_schema(body: dict[str, Any]) -> str | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return str(fmt["json_schema"]["name"])
    return None


DEEPEVAL_SCHEMAS = frozenset({"Steps", "ReasonScore", "Claims", "Statements", "Truths", "Opinions", "Verdicts",
                              "ContextualRelevancyVerdicts"})


def deepeval_judge(body: dict[str, Any]) -> str:
    schema = deepeval_schema(body) or ""
    return json.dumps(deepeval_answer(schema, last_user_message(body)))


def azure_judge(body: dict[str, Any]) -> str:
    return json.dumps(azure_answer(body))


def ecosystem_judge(body: dict[str, Any]) -> str:
    """Answers deepeval's, azure's and ragas' prompts (one judge for a mixed suite)."""
    schema = deepeval_schema(body)
    if schema is not None and (schema in DEEPEVAL_SCHEMAS or schema.endswith("ScoreReason")):
        return deepeval_judge(body)
    prompt = last_user_message(body)
    if schema is None and "Evaluation Steps:" in prompt and "Test Case:" in prompt:
        # deepeval's own GPTModel asks G-Eval's score without a schema (it reads logprobs).
        return json.dumps(deepeval_answer("ReasonScore", prompt))
    if is_azure(body):
        return azure_judge(body)
    return ragas_judge(body)
