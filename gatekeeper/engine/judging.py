"""LLM judges: prompts, strict JSON replies, repair-and-retry, K votes and provenance.

A judge is any model gatekeeper can load (``openai:gpt-4o-mini?base_url=...``,
``hf:smollm2``, ``python:mod:fn``). Judge evaluators (``rubric``, ``pairwise``,
``reference_match``, ``classifier``, ``judge_grounding``) share this module:

- the prompt is a list of chat messages rendered in the suite's jinja2 sandbox, either the
  evaluator's built-in template or the suite's own (inline text, a ``.jinja`` file or a
  Prompty file); the SHA-256 of the template and of the evaluator's settings is the
  *prompt hash* recorded with every score;
- every call goes through the runner (:attr:`EvalContext.generate`), so it is cached by
  content hash, retried and rate-limited like any generation;
- the reply must be one JSON object matching the evaluator's JSON Schema; JSON mode or
  structured outputs are requested (:attr:`GenerationRequest.response_format`) for
  providers that support them. A reply that does not parse or validate is sent back with
  the error for a repair (``repair_attempts`` times); after that the score is NODATA with
  the reason, never a silent 0;
- ``votes: K`` asks K times (seeds ``seed .. seed+K-1``, temperature 0.7 unless given)
  and reports how far the votes agree;
- each score's ``details["judge"]`` names the judge model (provider, name, version and
  content digest) and ``details["prompt_sha256"]`` the prompt.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from gatekeeper.kinds import EvalContext, Model, ScoringParams
from gatekeeper.types import (
    Case,
    Generation,
    GenerationRequest,
    Message,
    ModelSpec,
    Score,
    UsageError,
    stable_hash,
)

if TYPE_CHECKING:
    from gatekeeper.kinds import Evaluator

JsonMode = Literal["json_schema", "json_object", "off"]
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)
_REPLY_QUOTE = 300
_SECRET_PARAM = re.compile(r"(key|token|secret|password)", re.I)


class ReplyError(ValueError):
    """A judge reply that is not what the evaluator asked for; the message says why."""


def refuses_response_format(error: str) -> bool:
    """Whether a failed call's error says the endpoint does not take ``response_format``."""
    text = error.lower()
    return "400" in text and any(word in text for word in ("response_format", "json_schema", "json_object"))


# --------------------------------------------------------------------------- parameters


class JudgeParams(ScoringParams):
    """Parameters every judge evaluator accepts."""

    judge: str | dict[str, Any] | None = None
    """The judge model spec; default: ``judge`` in gatekeeper.yaml."""
    votes: int = Field(1, ge=1, le=25)
    """Ask the judge this many times (different seeds) and aggregate; agreement is reported."""
    temperature: float | None = Field(None, ge=0)
    """Judge sampling temperature; default 0 for one vote, 0.7 for several."""
    seed: int = 0
    max_tokens: int = Field(512, ge=1)
    repair_attempts: int = Field(1, ge=0, le=5)
    """How often an unparsable or invalid reply is sent back with the error for a repair."""
    json_mode: JsonMode = "json_schema"
    """Ask the endpoint for structured output (``json_schema``), any JSON (``json_object``),
    or nothing (``off``). Replies are validated against the schema in every mode."""
    template: str | None = None
    """The judge prompt: jinja2 text (the user message), or a path (relative to the
    project root) to a ``.jinja``/``.j2`` file (the user message) or a ``.prompty`` file
    (its ``system:``/``user:`` sections)."""

    @field_validator("json_mode", mode="before")
    @classmethod
    def _yaml_off_is_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false

    @field_validator("judge")
    @classmethod
    def _judge_is_a_spec(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if value is not None:
            try:
                ModelSpec.parse(value)
            except UsageError as exc:
                raise ValueError(exc.message) from None
        return value


# --------------------------------------------------------------------------- replies


def extract_json(text: str) -> Any:
    """The JSON object in a judge's reply: the whole text, a fenced block, or the outermost
    ``{...}``. Raises :class:`ReplyError` naming the JSON error."""
    stripped = text.strip()
    if not stripped:
        raise ReplyError("the reply is empty")
    candidates = [stripped]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(stripped)]
    start, end = stripped.find("{"), stripped.rfind("}")
    if 0 <= start < end:
        candidates.append(stripped[start : end + 1])
    first_error: json.JSONDecodeError | None = None
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise ReplyError(f"not valid JSON: {first_error.msg} at line {first_error.lineno} column {first_error.colno}")


def validate_reply(value: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """Check a parsed reply against ``schema``; :class:`ReplyError` says what is wrong where."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    if not isinstance(value, dict):
        raise ReplyError(f"expected a JSON object, got {type(value).__name__}")
    error = best_match(Draft202012Validator(schema).iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the object"
        raise ReplyError(f"{where}: {error.message}")
    return value


def object_schema(properties: dict[str, Any]) -> dict[str, Any]:
    """A strict JSON Schema object: every property required, nothing else allowed (what
    OpenAI's ``strict`` structured outputs demand)."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


@dataclass(frozen=True)
class ReplyFormat:
    """What a judge must answer: a JSON Schema, and a check that turns the validated object
    into the evaluator's verdict (raising :class:`ReplyError` when it is not acceptable,
    e.g. a score outside the scale or a label outside the label set)."""

    name: str
    schema: dict[str, Any]
    check: Callable[[dict[str, Any]], Any] = lambda obj: obj
    accept: dict[str, Any] | None = None
    """A looser schema replies are validated against, when the check itself decides more
    (a classifier sends the exact labels but normalizes near-misses before rejecting)."""

    @classmethod
    def choice(cls, name: str, field: str, values: Sequence[Any], *, json_type: str = "string",
               convert: Callable[[Any], Any] = str) -> ReplyFormat:
        """A ``reasoning`` and one of ``values`` in ``field``: the shape of the rubric (a score on
        the scale), pairwise (a winner) and reference-match (a verdict) judges' replies."""
        schema = object_schema({"reasoning": {"type": "string"}, field: {"type": json_type, "enum": list(values)}})
        return cls(name, schema, lambda obj: convert(obj[field]))

    def parse(self, text: str) -> tuple[dict[str, Any], Any]:
        """The validated reply object and the checked verdict; :class:`ReplyError` if bad."""
        obj = validate_reply(extract_json(text), self.accept or self.schema)
        return obj, self.check(obj)

    def response_format(self, mode: JsonMode) -> dict[str, Any] | None:
        if mode == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": self.name, "schema": self.schema, "strict": True}}
        if mode == "json_object":
            return {"type": "json_object"}
        return None

    def instructions(self) -> str:
        return (
            "Reply with one JSON object only, no other text, matching this JSON Schema:\n"
            + json.dumps(self.schema, ensure_ascii=False)
        )


# --------------------------------------------------------------------------- prompts


def case_variables(case: Case, generation: Generation) -> dict[str, Any]:
    """What every judge template may use: the case's own fields (top level and ``vars``),
    and ``input``, ``output``, ``context``, ``expected``, ``messages``, ``case_id``."""
    return {
        **case.vars,
        "vars": case.vars,
        "case_id": case.id,
        "input": case.question,
        "output": generation.text,
        "context": case.context or "",
        "expected": case.expected or "",
        "messages": list(case.messages),
    }


@dataclass(frozen=True)
class PromptTemplate:
    """Chat message templates (role, jinja2 text) and where they came from."""

    messages: tuple[tuple[str, str], ...]
    origin: str

    def render(self, variables: dict[str, Any], fmt: ReplyFormat) -> tuple[Message, ...]:
        """Render in the sandbox; the reply instructions are appended to the last message
        unless the template places ``{{ format_instructions }}`` itself."""
        from gatekeeper.engine.suites import render

        instructions = fmt.instructions()
        scope = {**variables, "format_instructions": instructions}
        rendered = [
            {"role": role, "content": render(text, scope, where=self.origin)} for role, text in self.messages
        ]
        if not any("format_instructions" in text for _, text in self.messages):
            rendered[-1]["content"] = rendered[-1]["content"].rstrip() + "\n\n" + instructions
        return tuple(rendered)


def load_template(
    template: str | None, default: Sequence[tuple[str, str]], config: Any, *, system: str
) -> PromptTemplate:
    """The suite's template (inline, ``.jinja``/``.j2`` or ``.prompty``) or the default."""
    from gatekeeper.engine.suites import parse_prompty

    if template is None:
        return PromptTemplate(tuple(default), "built-in judge template")
    if "\n" not in template and template.rstrip().endswith((".prompty", ".jinja", ".j2")):
        path = config.path(template)
        if not path.is_file():
            raise UsageError("judge template not found", file=str(path), field="template")
        if path.suffix == ".prompty":
            _, sections = parse_prompty(path)
            return PromptTemplate(tuple(sections), str(path))
        return PromptTemplate((("system", system), ("user", path.read_text(encoding="utf-8"))), str(path))
    return PromptTemplate((("system", system), ("user", template)), "the evaluator's 'template'")


# --------------------------------------------------------------------------- calling


@dataclass
class Verdict:
    """One vote: the checked reply, or why there is none."""

    value: Any = None
    reply: dict[str, Any] = field(default_factory=dict)
    """The validated JSON object (``reasoning`` and the rest)."""
    text: str = ""
    generation: Generation | None = None
    attempts: int = 0
    parse_error: str | None = None
    """Set when the reply stayed unparsable after every repair: the vote is NODATA."""
    failure: str | None = None
    """Set when the judge model produced no reply at all (endpoint down): an ERROR."""

    @property
    def ok(self) -> bool:
        return self.parse_error is None and self.failure is None


def redacted_spec(spec: ModelSpec) -> str:
    """The spec as text with any parameter that could hold a secret blanked out
    (``api_key_env`` names a variable and is kept)."""
    params = {
        k: ("***" if _SECRET_PARAM.search(k) and not k.endswith("_env") else v) for k, v in spec.params.items()
    }
    return str(ModelSpec(spec.provider, spec.name, params))


@dataclass
class Judge:
    """A judge model bound to one evaluator's parameters and one scoring context."""

    model: Model
    spec: ModelSpec
    params: JudgeParams
    ctx: EvalContext
    calls: int = 0
    cached: int = 0

    @classmethod
    def load(cls, params: JudgeParams, ctx: EvalContext) -> Judge:
        raw = params.judge if params.judge is not None else getattr(ctx.config, "judge", None)
        if raw is None:
            raise UsageError("no judge model: set 'judge:' on the evaluator or in gatekeeper.yaml", field="judge")
        if ctx.load_model is None or ctx.generate is None:
            raise RuntimeError("a judge needs the runner (EvalContext.load_model and generate)")
        spec = ModelSpec.parse(raw)
        return cls(ctx.load_model(spec), spec, params, ctx)

    @property
    def temperature(self) -> float:
        if self.params.temperature is not None:
            return self.params.temperature
        return 0.7 if self.params.votes > 1 else 0.0

    def provenance(self, prompt_sha256: str) -> dict[str, Any]:
        ident = self.model.identity
        return {
            "judge": {
                "spec": redacted_spec(self.spec), "provider": ident.provider, "name": ident.name,
                "version": ident.version, "digest": ident.digest,
            },
            "prompt_sha256": prompt_sha256,
            "judge_calls": self.calls,
            "judge_cache_hits": self.cached,
        }

    def request(self, case: Case, messages: tuple[Message, ...], fmt: ReplyFormat, vote: int,
                top_logprobs: int | None = None) -> GenerationRequest:
        return GenerationRequest(
            case=case, messages=messages, max_tokens=self.params.max_tokens, temperature=self.temperature,
            seed=self.params.seed + vote, epoch=vote, response_format=fmt.response_format(self.params.json_mode),
            top_logprobs=top_logprobs,
        )

    async def ask(self, case: Case, messages: tuple[Message, ...], fmt: ReplyFormat, *, vote: int = 0,
                  top_logprobs: int | None = None) -> Verdict:
        """One vote: ask, and on a bad reply send it back with the error (repair)."""
        assert self.ctx.generate is not None
        conversation = messages
        error = ""
        for attempt in range(self.params.repair_attempts + 1):
            request = self.request(case, conversation, fmt, vote, top_logprobs)
            generation = await self.ctx.generate(self.model, request)
            self.calls += 1
            self.cached += bool(generation.cached)
            if generation.error is not None:
                hint = ""
                if request.response_format is not None and refuses_response_format(generation.error):
                    hint = " (the endpoint takes no response_format: set json_mode: off or json_object)"
                return Verdict(
                    failure=f"judge {self.spec.provider}:{self.spec.name} failed: {generation.error}{hint}",
                    attempts=attempt + 1,
                )
            try:
                reply, value = fmt.parse(generation.text)
            except ReplyError as exc:
                error = str(exc)
                conversation = (*messages, {"role": "assistant", "content": generation.text}, {
                    "role": "user",
                    "content": f"Your reply could not be used: {error}. {fmt.instructions()}",
                })
                continue
            return Verdict(value=value, reply=reply, text=generation.text, generation=generation,
                           attempts=attempt + 1)
        return Verdict(parse_error=error, text=generation.text, generation=generation,
                       attempts=self.params.repair_attempts + 1)

    async def poll(self, case: Case, messages: tuple[Message, ...], fmt: ReplyFormat, *,
                   top_logprobs: int | None = None) -> list[Verdict]:
        """``votes`` independent votes on the same prompt."""
        import asyncio  # here: asyncio is not needed to register the judges (gatekeeper --help)

        return list(await asyncio.gather(*(
            self.ask(case, messages, fmt, vote=v, top_logprobs=top_logprobs) for v in range(self.params.votes)
        )))


# --------------------------------------------------------------------------- aggregation


def majority(values: Sequence[Hashable]) -> tuple[Any, float]:
    """The most common value (first seen wins a tie) and the share of votes agreeing with it."""
    counts = Counter(values)
    top = max(counts.values())
    winner = next(v for v in values if counts[v] == top)
    return winner, top / len(values)


def fleiss_kappa(ratings: Sequence[Sequence[Hashable]]) -> float | None:
    """Fleiss' kappa over items each rated by the same number of votes (``None`` when it is
    undefined: fewer than two votes per item, or every vote the same category)."""
    items = [list(r) for r in ratings if len(r) >= 2]
    if not items or len({len(r) for r in items}) != 1:
        return None
    n = len(items[0])
    categories = sorted({v for r in items for v in r}, key=str)
    counts = [[r.count(c) for c in categories] for r in items]
    p_items = [(sum(x * x for x in row) - n) / (n * (n - 1)) for row in counts]
    p_bar = sum(p_items) / len(items)
    totals = [sum(row[j] for row in counts) for j in range(len(categories))]
    p_e = sum((t / (len(items) * n)) ** 2 for t in totals)
    if p_e >= 1:
        return None
    return (p_bar - p_e) / (1 - p_e)


def quote_reply(text: str) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= _REPLY_QUOTE else text[: _REPLY_QUOTE - 1] + "…")


def unusable(evaluator: Evaluator, verdicts: Sequence[Verdict], provenance: dict[str, Any]) -> Score | None:
    """The score when no vote is usable: ERROR when the judge failed, NODATA when its
    replies could not be parsed; ``None`` when at least one vote is usable."""
    if any(v.ok for v in verdicts):
        return None
    details = {**provenance, "replies": [v.text[:_REPLY_QUOTE] for v in verdicts]}
    failed = [v for v in verdicts if v.failure]
    if failed:
        return Score(evaluator.metric, None, status="error", reason=failed[0].failure or "", details=details)
    v = verdicts[0]
    return evaluator.result(
        None, details={**details, "parse_error": v.parse_error},
        reason=f"judge reply unusable after {v.attempts} attempt(s): {v.parse_error}; last reply {quote_reply(v.text)}",
    )


def vote_summary(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """``votes``, ``usable_votes``, the repairs that were needed and the judge's reasoning
    (of the first usable vote), for score details."""
    usable = [v for v in verdicts if v.ok]
    summary: dict[str, Any] = {
        "votes": len(verdicts),
        "usable_votes": len(usable),
        "repaired_votes": sum(1 for v in usable if v.attempts > 1),
    }
    if usable and usable[0].reply.get("reasoning"):
        summary["reasoning"] = str(usable[0].reply["reasoning"])
    return summary


def prompt_hash(template: PromptTemplate, fmt: ReplyFormat, settings: dict[str, Any]) -> str:
    """SHA-256 of what defines the judge prompt: the templates, the reply schema and the
    evaluator settings rendered into it."""
    return stable_hash({"messages": template.messages, "schema": fmt.schema, "settings": settings})
