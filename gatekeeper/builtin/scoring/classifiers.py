"""Semantic classifiers: an LLM judge labels outputs or conversations from closed label sets.

As in Microsoft's Semantic Telemetry pipeline, a ``classifier`` assigns each output (or
the whole conversation) one label per task (topic, user satisfaction, expertise...). The
label sets are declared in the suite; near-misses are normalized to the set ("create" →
"created") with rapidfuzz, and a label outside the set is sent back for a repair, then
rejected (NODATA with the reason). Several tasks can share one prompt (multi-task).

The labels go into ``details["labels"]`` (task → label). A policy metric with
``measure: distribution`` compares the label distribution of candidate and baseline with a
chi-square test (:func:`gatekeeper.gate.stats.label_distribution_test`), so a change that shifts what the model
talks about, or how satisfied its users would be, shows in the gate.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gatekeeper import hookimpl
from gatekeeper.builtin.scoring.evaluators import case_field
from gatekeeper.builtin.scoring.judges import JudgeEvaluator
from gatekeeper.engine.judging import (
    Judge,
    JudgeParams,
    ReplyError,
    ReplyFormat,
    case_variables,
    majority,
    object_schema,
    prompt_hash,
    unusable,
    vote_summary,
)
from gatekeeper.kinds import EvalContext, Evaluator, Register
from gatekeeper.types import Case, Generation, Score


class TaskSpec(BaseModel):
    """One classification task: its closed label set and what it means."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(min_length=2)
    description: str = ""
    """What the task classifies, shown to the judge (e.g. "the user's main topic")."""
    positive: list[str] = Field(default_factory=list)
    """Labels counted as 1 in the score value (e.g. ``[satisfied]``)."""
    expected_field: str | None = None
    """A case field holding the gold label: the score value is then accuracy."""

    @model_validator(mode="after")
    def _labels_are_distinct(self) -> TaskSpec:
        folded = [fold(label) for label in self.labels]
        dupes = sorted({label for label, f in zip(self.labels, folded, strict=True) if folded.count(f) > 1})
        if dupes:
            raise ValueError(f"labels {dupes} are the same after normalization")
        unknown = [p for p in self.positive if p not in self.labels]
        if unknown:
            raise ValueError(f"positive labels {unknown} are not in labels {self.labels}")
        return self


class ClassifierParams(JudgeParams):
    threshold: float | None = None
    labels: list[str] | None = None
    """The label set of a single task (or give ``tasks``)."""
    description: str = ""
    positive: list[str] = Field(default_factory=list)
    expected_field: str | None = None
    tasks: dict[str, TaskSpec] | None = None
    """Several tasks in one prompt: task name → {labels, description, positive, expected_field}."""
    target: Literal["output", "conversation", "input"] = "output"
    """What is classified: the answer, the whole conversation (messages and answer), or the request."""
    normalize: bool = True
    """Map near-miss labels onto the label set ("create" → "created")."""
    min_similarity: float = Field(85.0, ge=50, le=100)
    """rapidfuzz ratio (0..100) a near-miss needs to be mapped onto a label."""

    @model_validator(mode="after")
    def _one_way_to_give_tasks(self) -> ClassifierParams:
        if (self.labels is None) == (self.tasks is None):
            raise ValueError("give 'labels' (one task) or 'tasks' (several), not both")
        if self.tasks is not None:
            if not self.tasks:
                raise ValueError("'tasks' is empty")
            if self.description or self.positive or self.expected_field:
                raise ValueError("with 'tasks', give description/positive/expected_field per task")
        else:
            TaskSpec(labels=self.labels or [], positive=self.positive)  # same checks as a task
        return self

    def task_specs(self, default_name: str) -> dict[str, TaskSpec]:
        if self.tasks is not None:
            return self.tasks
        return {default_name: TaskSpec(labels=self.labels or [], description=self.description,
                                       positive=self.positive, expected_field=self.expected_field)}


_NON_WORD = re.compile(r"[\W_]+")


def fold(label: str) -> str:
    """Case, spacing, punctuation and underscores do not make a different label."""
    return _NON_WORD.sub(" ", label.casefold()).strip()


def normalize_label(raw: str, labels: Sequence[str], *, min_similarity: float, fuzzy: bool = True) -> str | None:
    """The label of ``labels`` that ``raw`` names, or ``None``.

    Exact after folding first; then (``fuzzy``) the closest label by rapidfuzz ratio when it
    reaches ``min_similarity``, is unambiguous, and differs only in its ending (an
    inflection: "create" → "created"), so that "unsatisfied" never becomes "satisfied".
    """
    folded = {fold(label): label for label in labels}
    key = fold(raw)
    if key in folded:
        return folded[key]
    if not fuzzy or not key:
        return None
    from rapidfuzz import fuzz, process

    ranked = process.extract(key, list(folded), scorer=fuzz.ratio, limit=2)
    if not ranked or ranked[0][1] < min_similarity:
        return None
    best, score, _ = ranked[0]
    if len(ranked) > 1 and ranked[1][1] >= score - 5:
        return None  # two labels are about as close: refuse to guess
    if len(os.path.commonprefix([key, best])) < max(3, min(len(key), len(best)) - 3):  # noqa: RUF071 (letters, not paths)
        return None
    return folded[best]


class Classifier(JudgeEvaluator):
    """Labels the output (or conversation) per task from closed label sets, with an LLM judge."""

    name = "classifier"
    description = "LLM judge labels the output from closed label sets (one or several tasks)"
    value_range = ("0..1: share of positive labels (or correct labels with expected_field); "
                   "1.0 when neither is declared")
    Params = ClassifierParams
    params: ClassifierParams
    system_prompt = (
        "You are a precise annotator. You classify text into the given categories, choosing "
        "exactly one label per task from its list, spelled exactly as listed."
    )
    user_template = """\
{% if target == "conversation" %}Conversation:
{% for m in messages %}{{ m.role }}: {{ m.content }}
{% endfor %}assistant: {{ output }}
{% elif target == "input" %}Text to classify:
{{ input }}
{% else %}{% if input %}Request:
{{ input }}

{% endif %}Text to classify (the answer):
{{ output }}
{% endif %}
Tasks:
{% for name, task in tasks.items() %}- "{{ name }}"{% if task.description %} ({{ task.description }}){% endif %}: \
one of {{ task.labels|join(", ") }}
{% endfor %}
Put your brief reasoning in "reasoning", then in "labels" one label per task."""

    def tasks(self) -> dict[str, TaskSpec]:
        return self.params.task_specs(self.metric)

    def reply_format(self) -> ReplyFormat:
        tasks = self.tasks()
        # The schema sent asks for the exact labels; validation accepts any string so that
        # near-misses can be normalized, and the check rejects what is still not a label.
        sent = object_schema({
            "reasoning": {"type": "string"},
            "labels": object_schema({name: {"type": "string", "enum": t.labels} for name, t in tasks.items()}),
        })
        p = self.params

        def check(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
            out: dict[str, tuple[str, str]] = {}
            bad: list[str] = []
            for name, task in tasks.items():
                raw = str(obj["labels"][name])
                label = normalize_label(raw, task.labels, min_similarity=p.min_similarity, fuzzy=p.normalize)
                if label is None:
                    bad.append(f"labels/{name}: {raw!r} is not one of {', '.join(task.labels)}")
                else:
                    out[name] = (label, raw)
            if bad:
                raise ReplyError("; ".join(bad))
            return out

        return ReplyFormat("classification", sent, check, accept=_loosen(sent))

    async def ascore(self, case: Case, generation: Generation, ctx: EvalContext) -> Score:
        tasks = self.tasks()
        fmt = self.reply_format()
        template = self.prompt(ctx)
        judge = Judge.load(self.params, ctx)
        messages = template.render({
            **case_variables(case, generation), "tasks": {n: t.model_dump() for n, t in tasks.items()},
            "target": self.params.target,
        }, fmt)
        verdicts = await judge.poll(case, messages, fmt)
        settings = {"tasks": {n: t.model_dump() for n, t in tasks.items()}, "target": self.params.target}
        provenance = judge.provenance(prompt_hash(template, fmt, settings))
        bad = unusable(self, verdicts, provenance)
        if bad is not None:
            if bad.status == "nodata":
                bad.details["rejected"] = bad.details.get("parse_error")
            return bad
        usable = [v.value for v in verdicts if v.ok]
        labels: dict[str, str] = {}
        agreement: dict[str, float] = {}
        normalized: dict[str, str] = {}
        for name in tasks:
            labels[name], agreement[name] = majority([vote[name][0] for vote in usable])
            raws = [vote[name][1] for vote in usable if vote[name][0] == labels[name]]
            if raws and raws[0] != labels[name]:
                normalized[name] = raws[0]
        value, counted = self.value(case, tasks, labels)
        details: dict[str, Any] = {**provenance, **vote_summary(verdicts), "labels": labels}
        if normalized:
            details["normalized"] = {n: {"from": raw, "to": labels[n]} for n, raw in normalized.items()}
        if len(usable) > 1:
            details["agreement"] = agreement
        shown = ", ".join(f"{n}={lab}" for n, lab in labels.items())
        also = "".join(f" ({raw!r} normalized to {labels[n]!r})" for n, raw in normalized.items())
        return self.result(value, details=details, reason=f"{shown}{also}{counted}")

    def value(self, case: Case, tasks: Mapping[str, TaskSpec], labels: Mapping[str, str]) -> tuple[float, str]:
        """The score value and a note on what it counts."""
        hits: list[float] = []
        notes: list[str] = []
        for name, task in tasks.items():
            if task.expected_field is not None:
                gold = case_field(case, task.expected_field)
                if gold in (None, ""):
                    continue
                gold_label = normalize_label(str(gold), task.labels, min_similarity=100, fuzzy=False)
                hits.append(float(gold_label == labels[name]))
                notes.append(f"{name} {'matches' if hits[-1] else 'differs from'} the expected {gold!r}")
            elif task.positive:
                hits.append(float(labels[name] in task.positive))
        if not hits:
            return 1.0, ""
        note = f"; {'; '.join(notes)}" if notes else ""
        return sum(hits) / len(hits), note


def _loosen(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every string enum relaxed to any string."""
    if schema.get("type") == "string":
        return {"type": "string"}
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {k: _loosen(v) for k, v in schema["properties"].items()}
    return out


@hookimpl
def gatekeeper_register_evaluators(register: Register[Evaluator]) -> None:
    """Register the ``classifier`` evaluator."""
    register(Classifier)
