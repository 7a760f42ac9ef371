"""The generator's prompts: built-in templates per kind, or the user's (inline jinja2 file,
``.jinja``/``.j2``, or a ``.prompty`` file), rendered in the engine's bounded sandbox.

A template that renders to nothing is a usage error naming the template, found on the
first row it is rendered for — before any model is called.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatekeeper.engine.suites import parse_prompty, render
from gatekeeper.types import Message, UsageError

SYSTEM = ("You write realistic, varied test data for evaluating and training an AI assistant. "
          "You never copy the examples you are shown and never include real personal data "
          "(names, emails, phone numbers, addresses, account or card numbers) of anyone.")

_PERSONA = """\
Persona (write as this person):
- role: {{ persona.role }}
- goal: {{ persona.goal }}
- expertise: {{ persona.expertise }}
- tone: {{ persona.tone }}
- locale: {{ persona.locale }}
{% for c in persona.constraints %}- constraint: {{ c }}
{% endfor %}"""

_SCENARIO = """\
Topic: {{ cell.topic }}
Scenario: {{ cell.scenario }}
"""

_EXAMPLES = """\
{% if seeds %}Examples from the real data, to show the style and the domain (do not copy or paraphrase them):
{% for s in seeds %}- request: {{ s.input }}{% if s.expected %}
  answer: {{ s.expected }}{% endif %}
{% endfor %}{% endif %}
{% if seed.context %}The assistant answers only from these passages (the answer must rely on them):
{{ seed.context }}
{% endif %}"""

USER_TEMPLATES: dict[str, str] = {
    "cases": "Write one new evaluation case: a request this persona would send in this scenario (`input`) "
             "and the ideal answer the assistant should give (`expected`).\n\n"
             + _SCENARIO + "\n" + _PERSONA + "\n" + _EXAMPLES
             + "\nThis is variation {{ index }} of {{ count }} for this scenario: make it differ from the others.",
    "sft": "Write one new training example: a request this persona would send in this scenario (`input`) "
           "and an excellent assistant answer (`answer`).\n\n"
           + _SCENARIO + "\n" + _PERSONA + "\n" + _EXAMPLES
           + "\nThis is variation {{ index }} of {{ count }} for this scenario: make it differ from the others.",
    "preference": "Write one new preference pair: a request this persona would send in this scenario (`input`), "
                  "a good assistant answer (`chosen`) and a worse one with a realistic flaw such as a wrong "
                  "number, a missing condition or an invented policy (`rejected`).\n\n"
                  + _SCENARIO + "\n" + _PERSONA + "\n" + _EXAMPLES
                  + "\nThis is variation {{ index }} of {{ count }} for this scenario: make it differ from the others.",
}

SIMULATOR_TEMPLATE = (
    "You play a user talking to an assistant. Write the user's next message only.\n\n"
    + _SCENARIO + "\n" + _PERSONA + "\n"
    "{% if history %}The conversation so far:\n{% for m in history %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    "\nWrite the user's next message (turn {{ turn }} of {{ turns }}): react to the assistant's last answer."
    "{% else %}{% if seeds %}Real users write like this (do not copy them):\n{% for s in seeds %}- {{ s.input }}\n"
    "{% endfor %}{% endif %}\nWrite the user's opening message (turn 1 of {{ turns }}).{% endif %}"
)


@dataclass(frozen=True)
class Template:
    """Chat message templates (role, text) and where they came from; ``sha256`` is recorded
    in every generated row's provenance."""

    messages: tuple[tuple[str, str], ...]
    origin: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.messages, ensure_ascii=False).encode("utf-8")).hexdigest()

    def render(self, variables: dict[str, Any], instructions: str) -> tuple[Message, ...]:
        """Render in the sandbox; the reply instructions go at the end of the last message
        unless the template places ``{{ format_instructions }}`` itself."""
        scope = {**variables, "format_instructions": instructions}
        rendered = [{"role": role, "content": render(text, scope, where=self.origin)} for role, text in self.messages]
        if not any(m["content"].strip() for m in rendered if m["role"] != "system"):
            raise UsageError("the template renders nothing (every user message is empty) for row "
                             f"{variables.get('row_id', '?')}: a prompt must ask for something", file=self.origin,
                             field="--template")
        if instructions and not any("format_instructions" in text for _, text in self.messages):
            rendered[-1]["content"] = rendered[-1]["content"].rstrip() + "\n\n" + instructions
        return tuple(rendered)


def builtin_template(kind: str) -> Template:
    return Template((("system", SYSTEM), ("user", USER_TEMPLATES[kind])), f"built-in {kind} template")


def simulator_template() -> Template:
    return Template((("system", SYSTEM), ("user", SIMULATOR_TEMPLATE)), "built-in persona simulator template")


def load_template(path: Path) -> Template:
    """A user's template: ``.prompty`` (its ``system:``/``user:`` sections) or jinja2 text
    (the user message, after the built-in system message)."""
    if not path.is_file():
        raise UsageError("template not found", file=str(path), field="--template")
    if path.suffix == ".prompty":
        _, sections = parse_prompty(path)
        return Template(tuple(sections), str(path))
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise UsageError("the template is empty", file=str(path), field="--template")
    return Template((("system", SYSTEM), ("user", text)), str(path))


def format_instructions(schema: dict[str, Any]) -> str:
    return ("Reply with one JSON object only, no other text, matching this JSON Schema:\n"
            + json.dumps(schema, ensure_ascii=False))
