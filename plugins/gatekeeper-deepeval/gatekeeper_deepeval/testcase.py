"""Building deepeval's ``LLMTestCase`` from a gatekeeper case and the output being scored.

Field mapping (docs/ecosystem.md): ``input`` is the case's ``input`` variable (else its
last user message), ``actual_output`` the scored output, ``expected_output`` the case's
``expected``, ``context`` and ``retrieval_context`` the case's ``retrieval_context``
variable (a list) or else its ``context`` as a one-item list.
"""

from __future__ import annotations

from typing import Any

from gatekeeper import Case, Generation
from gatekeeper_deepeval._library import submodule

FIELDS = ("input", "actual_output", "expected_output", "context", "retrieval_context")


def case_input(case: Case) -> str:
    value = case.vars.get("input")
    if value:
        return str(value)
    for message in reversed(case.messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def contexts(case: Case) -> list[str] | None:
    listed = case.vars.get("retrieval_context")
    if isinstance(listed, list) and listed:
        return [str(item) for item in listed]
    if isinstance(listed, str) and listed:
        return [listed]
    return [case.context] if case.context else None


def fields(case: Case, generation: Generation) -> dict[str, Any]:
    ctx = contexts(case)
    return {
        "input": case_input(case),
        "actual_output": generation.text,
        "expected_output": case.expected,
        "context": ctx,
        "retrieval_context": ctx,
    }


def missing(values: dict[str, Any], required: tuple[str, ...]) -> list[str]:
    return [name for name in required if values.get(name) in (None, "", [])]


def test_case(values: dict[str, Any]) -> Any:
    """The ``LLMTestCase`` (deepeval imported here, with telemetry off)."""
    return submodule("test_case").LLMTestCase(**{k: v for k, v in values.items() if v is not None})
