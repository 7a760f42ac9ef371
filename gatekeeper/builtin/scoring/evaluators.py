"""Built-in evaluators: string checks, JSON, similarity to a reference, length and cost.

Each evaluator documents its value range and direction, has a default threshold (so an
``ok`` score always carries a pass/fail verdict) and explains its value in ``reason``.
A case that lacks what an evaluator needs (an expected answer, a field, a latency)
gets a NODATA score with the reason, never a silent 0. ``docs/evaluators.md`` describes
every evaluator, its parameters and an example.

rapidfuzz, sacrebleu and jsonschema are imported when first used so that importing this
plugin (which the CLI does at start-up) stays cheap.

Scoring a suite of 10^5 cases calls each evaluator 2 x 10^5 times, so every evaluator a
large suite uses has a ``score_batch`` (see :class:`gatekeeper.kinds.Evaluator`) that gives
exactly the scores ``score`` gives, faster (issue 18: about a microsecond per score):
ROUGE-L and edit similarity compute all pairs in one rapidfuzz call (``process.cpdist``),
BLEU counts n-grams of a whole batch on integer ids with numpy (``bleu_batch``), and the
string checks build their scores directly, with what depends only on the evaluator's
parameters (patterns, verdicts, fixed reasons) or on one reference text (its normalised
form, tokens, quoted form) computed once per batch. Outputs are never deduplicated: each
is normalised, tokenised and compared, repeated or not. The tests compare both paths case
by case on a varied corpus (tests/test_batch_scoring.py).
"""

from __future__ import annotations

import functools
import json
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from gatekeeper import hookimpl
from gatekeeper.kinds import Evaluator, Register, ScoringParams
from gatekeeper.types import Case, Generation, Score, Span

_QUOTE_LIMIT = 60


def _quote(text: str, limit: int = _QUOTE_LIMIT) -> str:
    """``repr`` of ``text`` cut to ``limit`` characters, for reasons a person reads."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return repr(text)


def _quote_list(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(_quote(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _usage_error(message: str) -> PydanticCustomError:
    """A validation error whose message the suite loader shows as is (no 'Value error,')."""
    return PydanticCustomError("gatekeeper_usage", message)


def _verdict(evaluator: Evaluator) -> Callable[[float], bool | None]:
    """``passed`` for a value, as :meth:`Evaluator.result` decides it from the threshold.

    Batch paths build :class:`Score` positionally (fields: metric, value, passed, reason,
    status, spans, details) with this verdict: the same score ``result`` builds, cheaper."""
    threshold = evaluator.params.threshold
    if threshold is None:
        return lambda value: None
    if evaluator.lower_is_better:
        return lambda value: value <= threshold
    return lambda value: value >= threshold


class _Quoted(dict[str, str]):
    """``_quote`` of reference texts, computed once per distinct text in a batch."""

    def __missing__(self, text: str) -> str:
        quoted = self[text] = _quote(text)
        return quoted


# --------------------------------------------------------------------------- case fields


def case_field(case: Case, name: str) -> Any:
    """The value of field ``name`` of a case: its vars first, then ``expected``/``context``
    and finally its metadata. ``None`` when the case has no such field."""
    if name in case.vars:
        return case.vars[name]
    if name in ("expected", "context"):
        return getattr(case, name)
    return case.metadata.get(name)


def _as_texts(value: Any) -> list[str]:
    """A field value as a list of non-empty strings (a list field gives one per item)."""
    if type(value) is str:
        return [value] if value else []
    items = value if isinstance(value, list | tuple) else [value]
    return [str(item) for item in items if item is not None and str(item) != ""]


# --------------------------------------------------------------------------- references


class ReferenceParams(ScoringParams):
    """Where the reference answer comes from: ``value`` inline, a case ``field``, or by
    default the case's ``expected`` answer. A list gives several references; the score is
    the best match among them."""

    value: str | list[str] | None = None
    field: str | None = None

    @model_validator(mode="after")
    def _one_reference_source(self) -> ReferenceParams:
        if self.value is not None and self.field is not None:
            raise _usage_error("give 'value' or 'field', not both")
        return self


class ReferenceEvaluator(Evaluator):
    """Base of evaluators that compare the output with one or more reference answers."""

    Params: ClassVar[type[ScoringParams]] = ReferenceParams
    params: ReferenceParams

    def references(self, case: Case) -> list[str]:
        """The reference answers for ``case`` (empty when it has none)."""
        if self.params.value is not None:
            return _as_texts(self.params.value)
        if self.params.field is not None:
            return _as_texts(case_field(case, self.params.field))
        # The loader stringifies ``expected``; the row's own value keeps a list a list.
        raw = case.vars.get("expected")
        return _as_texts(raw if isinstance(raw, list) else case.expected)

    def references_of(self, cases: Sequence[Case]) -> list[list[str]]:
        """:meth:`references` of each case (one shared list when the references are inline:
        read them, do not change them)."""
        if self.params.value is not None:
            return [_as_texts(self.params.value)] * len(cases)
        if self.params.field is not None:
            name = self.params.field
            return [_as_texts(case_field(case, name)) for case in cases]
        out = []
        for case in cases:
            raw = case.vars.get("expected")
            out.append(_as_texts(raw if isinstance(raw, list) else case.expected))
        return out

    def missing_reason(self) -> str:
        what = f"field {self.params.field!r}" if self.params.field else "expected answer"
        return f"no reference: the case has no {what}"

    def missing_reference(self) -> Score:
        return self.result(None, reason=self.missing_reason())

    def score(self, case: Case, generation: Generation) -> Score:
        references = self.references(case)
        if not references:
            return self.missing_reference()
        return self.compare(generation.text, references)

    def compare(self, output: str, references: list[str]) -> Score:
        raise NotImplementedError


# --------------------------------------------------------------------------- exact match


class ExactMatchParams(ReferenceParams):
    threshold: float | None = 1.0
    strip: bool = True
    case_sensitive: bool = True
    collapse_whitespace: bool = False


class ExactMatch(ReferenceEvaluator):
    """1.0 when the output equals a reference after the chosen normalisation."""

    name = "exact_match"
    description = "1 when the output equals the expected answer (optionally ignoring case and spacing)"
    value_range = "0 or 1, higher is better"
    Params = ExactMatchParams
    params: ExactMatchParams

    def normalise(self, text: str) -> str:
        if self.params.collapse_whitespace:
            text = " ".join(text.split())
        elif self.params.strip:
            text = text.strip()
        return text if self.params.case_sensitive else text.casefold()

    def compare(self, output: str, references: list[str]) -> Score:
        got = self.normalise(output)
        for reference in references:
            if got == self.normalise(reference):
                return self.result(1.0, reason=f"output equals {_quote(reference)}")
        others = f" (or {len(references) - 1} more)" if len(references) > 1 else ""
        expected = _quote(references[0]) + others
        return self.result(0.0, reason=f"expected {expected}, got {_quote(output.strip())}")

    def score_batch(self, cases: Sequence[Case], generations: Sequence[Generation]) -> list[Score]:
        """:meth:`compare` per case, with each distinct reference normalised and quoted once."""
        metric, normalise, quoted = self.metric, self.normalise, _Quoted()
        verdict = _verdict(self)
        hit, miss = verdict(1.0), verdict(0.0)
        missing = self.missing_reason()
        normalised: dict[str, str] = {}
        out: list[Score] = []
        for references, generation in zip(self.references_of(cases), generations, strict=True):
            if not references:
                out.append(Score(metric, None, None, missing, "nodata", [], {}))
                continue
            got = normalise(generation.text)
            for reference in references:
                norm = normalised.get(reference)
                if norm is None:
                    norm = normalised[reference] = normalise(reference)
                if got == norm:
                    out.append(Score(metric, 1.0, hit, f"output equals {quoted[reference]}", "ok", [], {}))
                    break
            else:
                others = f" (or {len(references) - 1} more)" if len(references) > 1 else ""
                reason = f"expected {quoted[references[0]]}{others}, got {_quote(generation.text.strip())}"
                out.append(Score(metric, 0.0, miss, reason, "ok", [], {}))
        return out


# --------------------------------------------------------------------------- contains


@functools.lru_cache(maxsize=8192)
def _phrase_pattern(phrase: str, *, case_sensitive: bool, collapse_whitespace: bool) -> re.Pattern[str]:
    """A regex finding ``phrase`` literally; runs of spaces match any whitespace when asked."""
    body = r"\s+".join(re.escape(part) for part in phrase.split()) if collapse_whitespace else re.escape(phrase)
    return re.compile(body, 0 if case_sensitive else re.IGNORECASE)


class PhraseParams(ScoringParams):
    """Phrases given inline (``values``) or read from a case ``field`` (a list or a string)."""

    threshold: float | None = 1.0
    values: list[str] | None = Field(default=None, min_length=1)
    field: str | None = None
    case_sensitive: bool = False
    collapse_whitespace: bool = True

    @model_validator(mode="after")
    def _one_phrase_source(self) -> PhraseParams:
        if self.values is not None and self.field is not None:
            raise _usage_error("give 'values' or 'field', not both")
        return self


class ContainsParams(PhraseParams):
    mode: Literal["any", "all"] = "all"


class PhraseEvaluator(Evaluator):
    """Shared lookup of phrases in the output for ``contains`` and ``not_contains``."""

    params: PhraseParams

    def phrases(self, case: Case) -> list[str]:
        if self.params.values is not None:
            return list(self.params.values)
        if self.params.field is not None:
            return _as_texts(case_field(case, self.params.field))
        return _as_texts(case.expected)

    def noun(self) -> str:
        """What the phrases are called in reasons: the field's name, or 'values'."""
        return self.params.field or "values"

    def find(self, phrase: str, text: str) -> re.Match[str] | None:
        pattern = _phrase_pattern(
            phrase, case_sensitive=self.params.case_sensitive,
            collapse_whitespace=self.params.collapse_whitespace,
        )
        return pattern.search(text)

    def _phrases_of(self, cases: Sequence[Case]) -> list[list[str]]:
        """:meth:`phrases` of each case (one shared list for inline values: do not change it)."""
        if self.params.values is not None:
            return [list(self.params.values)] * len(cases)
        if self.params.field is not None:
            name = self.params.field
            return [_as_texts(case_field(case, name)) for case in cases]
        return [_as_texts(case.expected) for case in cases]

    def _searches(self) -> dict[str, Callable[[str], re.Match[str] | None]]:
        """phrase → the ``search`` of its pattern, filled on first use (one batch's worth)."""
        params = self.params

        class Searches(dict[str, Callable[[str], "re.Match[str] | None"]]):
            def __missing__(self, phrase: str) -> Callable[[str], re.Match[str] | None]:
                search = self[phrase] = _phrase_pattern(
                    phrase, case_sensitive=params.case_sensitive,
                    collapse_whitespace=params.collapse_whitespace,
                ).search
                return search

        return Searches()


class Contains(PhraseEvaluator):
    """Which of the given phrases occur in the output."""

    name = "contains"
    description = "fraction of the given phrases (e.g. the case's facts) found in the output"
    value_range = "0..1 (mode all: fraction found; mode any: 0 or 1), higher is better"
    Params = ContainsParams
    params: ContainsParams

    def score(self, case: Case, generation: Generation) -> Score:
        phrases = self.phrases(case)
        if not phrases:
            what = f"field {self.params.field!r}" if self.params.field else "expected answer"
            return self.result(None, reason=f"nothing to look for: the case has no {what}")
        found = [p for p in phrases if self.find(p, generation.text)]
        missing = [p for p in phrases if p not in found]
        details = {"found": found, "missing": missing}
        noun = self.noun()
        if self.params.mode == "any":
            if found:
                return self.result(1.0, reason=f"found {_quote(found[0])}", details=details)
            return self.result(
                0.0, reason=f"none of {len(phrases)} {noun} found: {_quote_list(missing)}", details=details
            )
        if not missing:
            return self.result(1.0, reason=f"found all {len(phrases)} {noun}", details=details)
        return self.result(
            len(found) / len(phrases),
            reason=f"missing {len(missing)} of {len(phrases)} {noun}: {_quote_list(missing)}",
            details=details,
        )

    def score_batch(self, cases: Sequence[Case], generations: Sequence[Generation]) -> list[Score]:
        """:meth:`score` per case, with each phrase's pattern looked up once per batch."""
        metric, noun, any_mode = self.metric, self.noun(), self.params.mode == "any"
        verdict = _verdict(self)
        hit, miss = verdict(1.0), verdict(0.0)
        what = f"field {self.params.field!r}" if self.params.field else "expected answer"
        nothing = f"nothing to look for: the case has no {what}"
        search = self._searches()
        out: list[Score] = []
        for phrases, generation in zip(self._phrases_of(cases), generations, strict=True):
            if not phrases:
                out.append(Score(metric, None, None, nothing, "nodata", [], {}))
                continue
            text = generation.text
            found = [p for p in phrases if search[p](text)]
            missing = [p for p in phrases if p not in found]
            details = {"found": found, "missing": missing}
            if any_mode:
                if found:
                    out.append(Score(metric, 1.0, hit, f"found {_quote(found[0])}", "ok", [], details))
                else:
                    reason = f"none of {len(phrases)} {noun} found: {_quote_list(missing)}"
                    out.append(Score(metric, 0.0, miss, reason, "ok", [], details))
            elif not missing:
                out.append(Score(metric, 1.0, hit, f"found all {len(phrases)} {noun}", "ok", [], details))
            else:
                value = len(found) / len(phrases)
                reason = f"missing {len(missing)} of {len(phrases)} {noun}: {_quote_list(missing)}"
                out.append(Score(metric, value, verdict(value), reason, "ok", [], details))
        return out


class NotContainsParams(PhraseParams):
    @model_validator(mode="after")
    def _needs_phrases(self) -> NotContainsParams:
        if self.values is None and self.field is None:
            raise _usage_error("give the forbidden phrases as 'values' or a case 'field'")
        return self


class NotContains(PhraseEvaluator):
    """1.0 when none of the forbidden phrases occurs in the output."""

    name = "not_contains"
    description = "1 when none of the forbidden phrases (e.g. internal notes) occurs in the output"
    value_range = "0 or 1, higher is better"
    Params = NotContainsParams
    params: NotContainsParams

    def score(self, case: Case, generation: Generation) -> Score:
        phrases = self.phrases(case)
        if not phrases:
            return self.result(
                None, reason=f"nothing to look for: the case has no field {self.params.field!r}"
            )
        spans: list[Span] = []
        for phrase in phrases:
            match = self.find(phrase, generation.text)
            if match:
                spans.append(Span(match.group(0), match.start(), match.end(), "forbidden",
                                  f"forbidden phrase {_quote(phrase)}"))
        if not spans:
            return self.result(1.0, reason=f"none of {len(phrases)} forbidden {self.noun()} found")
        spans.sort(key=lambda s: s.start)
        return self.result(
            0.0, reason=f"contains forbidden {_quote_list([s.text for s in spans])}", spans=spans,
            details={"found": [s.text for s in spans]},
        )

    def score_batch(self, cases: Sequence[Case], generations: Sequence[Generation]) -> list[Score]:
        """:meth:`score` per case. With inline phrases, one alternation of their patterns
        first tells whether any occurs (a search finds the alternation iff it finds one of
        them); only outputs where one does are searched phrase by phrase."""
        metric, noun = self.metric, self.noun()
        verdict = _verdict(self)
        clean, dirty = verdict(1.0), verdict(0.0)
        nothing = f"nothing to look for: the case has no field {self.params.field!r}"
        search = self._searches()
        any_of: Callable[[str], re.Match[str] | None] | None = None
        if self.params.values:
            patterns = [_phrase_pattern(p, case_sensitive=self.params.case_sensitive,
                                        collapse_whitespace=self.params.collapse_whitespace)
                        for p in self.params.values]
            any_of = re.compile("|".join(f"(?:{p.pattern})" for p in patterns), patterns[0].flags).search
        out: list[Score] = []
        for phrases, generation in zip(self._phrases_of(cases), generations, strict=True):
            if not phrases:
                out.append(Score(metric, None, None, nothing, "nodata", [], {}))
                continue
            text = generation.text
            spans: list[Span] = []
            if any_of is None or any_of(text):
                for phrase in phrases:
                    match = search[phrase](text)
                    if match:
                        spans.append(Span(match.group(0), match.start(), match.end(), "forbidden",
                                          f"forbidden phrase {_quote(phrase)}"))
            if not spans:
                reason = f"none of {len(phrases)} forbidden {noun} found"
                out.append(Score(metric, 1.0, clean, reason, "ok", [], {}))
                continue
            spans.sort(key=lambda s: s.start)
            texts = [s.text for s in spans]
            out.append(Score(metric, 0.0, dirty, f"contains forbidden {_quote_list(texts)}", "ok", spans,
                             {"found": [s.text for s in spans]}))
        return out


# --------------------------------------------------------------------------- regex

_REGEX_FLAGS: dict[str, re.RegexFlag] = {
    "ignorecase": re.IGNORECASE,
    "multiline": re.MULTILINE,
    "dotall": re.DOTALL,
    "verbose": re.VERBOSE,
    "ascii": re.ASCII,
}


class RegexParams(ScoringParams):
    threshold: float | None = 1.0
    pattern: str
    match: Literal["search", "fullmatch"] = "search"
    flags: list[Literal["ignorecase", "multiline", "dotall", "verbose", "ascii"]] = Field(
        default_factory=list
    )
    _compiled: re.Pattern[str] = PrivateAttr()

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _usage_error(f"invalid regular expression {pattern!r}: {exc}") from None
        return pattern

    @model_validator(mode="after")
    def _compile(self) -> RegexParams:
        flags = re.NOFLAG
        for name in self.flags:
            flags |= _REGEX_FLAGS[name]
        try:
            self._compiled = re.compile(self.pattern, flags)
        except re.error as exc:  # only reachable through flags, e.g. 'verbose'
            raise _usage_error(f"invalid regular expression with flags {self.flags}: {exc}") from None
        return self

    @property
    def compiled(self) -> re.Pattern[str]:
        return self._compiled


class Regex(Evaluator):
    """1.0 when the pattern is found in (``search``) or matches all of (``fullmatch``) the output."""

    name = "regex"
    description = "1 when a regular expression matches the output"
    value_range = "0 or 1, higher is better"
    Params = RegexParams
    params: RegexParams

    def score(self, case: Case, generation: Generation) -> Score:
        pattern = self.params.compiled
        text = generation.text
        found = pattern.search(text) if self.params.match == "search" else pattern.fullmatch(text)
        if found is None:
            how = "found in" if self.params.match == "search" else "matching all of"
            return self.result(0.0, reason=f"pattern {_quote(pattern.pattern)} not {how} the output")
        span = Span(found.group(0), found.start(), found.end(), "match", f"matches {_quote(pattern.pattern)}")
        return self.result(1.0, reason=f"matched {_quote(found.group(0))} at {found.start()}", spans=[span])

    def score_batch(self, cases: Sequence[Case], generations: Sequence[Generation]) -> list[Score]:
        """:meth:`score` per output, with the fixed reasons formatted once per batch."""
        pattern = self.params.compiled
        find = pattern.search if self.params.match == "search" else pattern.fullmatch
        how = "found in" if self.params.match == "search" else "matching all of"
        no_match = f"pattern {_quote(pattern.pattern)} not {how} the output"
        span_reason = f"matches {_quote(pattern.pattern)}"
        metric, verdict = self.metric, _verdict(self)
        hit, miss = verdict(1.0), verdict(0.0)
        out: list[Score] = []
        for _, generation in zip(cases, generations, strict=True):
            found = find(generation.text)
            if found is None:
                out.append(Score(metric, 0.0, miss, no_match, "ok", [], {}))
                continue
            text, start = found.group(0), found.start()
            span = Span(text, start, found.end(), "match", span_reason)
            out.append(Score(metric, 1.0, hit, f"matched {_quote(text)} at {start}", "ok", [span], {}))
        return out


# --------------------------------------------------------------------------- JSON

_CODE_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```$", re.DOTALL)


class JsonParams(ScoringParams):
    threshold: float | None = 1.0
    code_fence: bool = False
    """Accept an output that is one fenced code block (```json ... ```) around the JSON."""


def _parse_json(text: str, *, code_fence: bool) -> tuple[Any, str | None]:
    """``(value, None)`` for valid JSON, ``(None, what is wrong)`` otherwise."""
    text = text.strip()
    if code_fence:
        fenced = _CODE_FENCE.match(text)
        if fenced:
            text = fenced.group(1)
    if not text:
        return None, "the output is empty"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


class JsonValid(Evaluator):
    """1.0 when the output parses as JSON."""

    name = "json_valid"
    description = "1 when the output is valid JSON"
    value_range = "0 or 1, higher is better"
    Params = JsonParams
    params: JsonParams

    def score(self, case: Case, generation: Generation) -> Score:
        value, error = _parse_json(generation.text, code_fence=self.params.code_fence)
        if error:
            return self.result(0.0, reason=error)
        return self.result(1.0, reason=f"valid JSON ({type(value).__name__})")


def _load_schema_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _usage_error(f"cannot read schema file {str(path)!r}: {exc.strerror or exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise _usage_error(f"schema file {str(path)!r} is not valid YAML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _usage_error(
            f"schema file {str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno}"
        ) from None


class JsonSchemaParams(JsonParams):
    schema_: dict[str, Any] | str = Field(alias="schema")
    """The JSON Schema inline, or the path of a .json/.yaml file holding it."""
    check_formats: bool = True
    _validator: Any = PrivateAttr()

    @model_validator(mode="after")
    def _build_validator(self) -> JsonSchemaParams:
        import jsonschema
        from jsonschema.validators import validator_for

        schema = self.schema_
        if isinstance(schema, str):
            schema = _load_schema_file(Path(schema))
        if not isinstance(schema, dict | bool):
            raise _usage_error("a JSON Schema is a mapping")
        cls = validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise _usage_error(f"invalid JSON Schema at {exc.json_path}: {exc.message}") from None
        format_checker = cls.FORMAT_CHECKER if self.check_formats else None
        self._validator = cls(schema, format_checker=format_checker)
        return self

    @property
    def validator(self) -> Any:
        return self._validator


class JsonSchema(Evaluator):
    """1.0 when the output is JSON that validates against the schema."""

    name = "json_schema"
    description = "1 when the output is JSON valid against a JSON Schema"
    value_range = "0 or 1, higher is better"
    Params = JsonSchemaParams
    params: JsonSchemaParams

    def score(self, case: Case, generation: Generation) -> Score:
        from jsonschema.exceptions import best_match

        value, error = _parse_json(generation.text, code_fence=self.params.code_fence)
        if error:
            return self.result(0.0, reason=error)
        errors = sorted(self.params.validator.iter_errors(value), key=lambda e: e.json_path)
        if not errors:
            return self.result(1.0, reason="valid against the schema")
        first = best_match(errors)
        listed = [f"{e.json_path}: {e.message}" for e in errors[:10]]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return self.result(
            0.0, reason=f"{first.json_path}: {_quote_message(first.message)}{more}",
            details={"errors": listed, "error_count": len(errors)},
        )


def _quote_message(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


# --------------------------------------------------------------------------- similarity


class EditSimilarityParams(ReferenceParams):
    threshold: float | None = 0.8
    method: Literal["levenshtein", "indel"] = "levenshtein"
    case_sensitive: bool = True


class EditSimilarity(ReferenceEvaluator):
    """Normalised edit similarity (rapidfuzz) between the output and the best reference."""

    name = "edit_similarity"
    description = "normalised Levenshtein (or Indel) similarity to the expected answer"
    value_range = "0..1, higher is better (1 = identical)"
    Params = EditSimilarityParams
    params: EditSimilarityParams

    def compare(self, output: str, references: list[str]) -> Score:
        from rapidfuzz.distance import Indel, Levenshtein

        metric = Levenshtein if self.params.method == "levenshtein" else Indel

        def prepare(text: str) -> str:
            text = text.strip()
            return text if self.params.case_sensitive else text.casefold()

        got = prepare(output)
        best = max(references, key=lambda ref: metric.normalized_similarity(got, prepare(ref)))
        similarity = metric.normalized_similarity(got, prepare(best))
        edits = metric.distance(got, prepare(best))
        plural = "" if edits == 1 else "s"
        return self.result(
            similarity,
            reason=f"{self.params.method} similarity {similarity:.3f} to {_quote(best)} "
            f"({edits} edit{plural})",
            details={"distance": edits},
        )

    def score_batch(self, cases: Sequence[Case], generations: Sequence[Generation]) -> list[Score]:
        """Every (output, reference) similarity of the batch in one ``process.cpdist`` call
        (float64, the value ``normalized_similarity`` returns), then the distance to each
        case's best reference (the first of the highest, as ``max`` picks) in another."""
        import numpy as np
        from rapidfuzz import process
        from rapidfuzz.distance import Indel, Levenshtein

        measure = Levenshtein if self.params.method == "levenshtein" else Indel
        casefold = not self.params.case_sensitive
        refs_of = self.references_of(cases)
        prepared: dict[str, str] = {}
        outputs, references, owner, position = [], [], [], []
        for i, (refs, generation) in enumerate(zip(refs_of, generations, strict=True)):
            if not refs:
                continue
            got = generation.text.strip()
            if casefold:
                got = got.casefold()
            for j, ref in enumerate(refs):
                ready = prepared.get(ref)
                if ready is None:
                    ready = ref.strip()
                    ready = prepared[ref] = ready.casefold() if casefold else ready
                outputs.append(got)
                references.append(ready)
                owner.append(i)
                position.append(j)
        similarities: list[float] = []
        best_of: dict[int, int] = {}
        if outputs:
            similarities = process.cpdist(outputs, references, scorer=measure.normalized_similarity,
                                          dtype=np.float64).tolist()
            for k, i in enumerate(owner):
                leader = best_of.get(i)
                if leader is None or similarities[k] > similarities[leader]:
                    best_of[i] = k
        chosen = list(best_of.values())
        distances: list[int] = []
        if chosen:
            distances = process.cpdist([outputs[k] for k in chosen], [references[k] for k in chosen],
                                       scorer=measure.distance, dtype=np.int64).tolist()
        edits_of = dict(zip(chosen, distances, strict=True))
        metric, method, verdict, quoted = self.metric, self.params.method, _verdict(self), _Quoted()
        missing = self.missing_reason()
        out: list[Score] = []
        for i, refs in enumerate(refs_of):
            chosen_k = best_of.get(i)
            if chosen_k is None:
                out.append(Score(metric, None, None, missing, "nodata", [], {}))
                continue
            similarity, edits = similarities[chosen_k], edits_of[chosen_k]
            best = refs[position[chosen_k]]
            reason = (f"{method} similarity {similarity:.3f} to {quoted[best]} "
                      f"({edits} edit{'' if edits == 1 else 's'})")
            out.append(Score(metric, similarity, verdict(similarity), reason, "ok", [], {"distance": edits}))
        return out


_ROUGE_TOKEN = re.compile(r"[^\W_]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenisation: lowercase runs of letters and digits.

    Unlike rouge-score, which keeps only ``[a-z0-9]``, letters outside ASCII are kept
    (``café`` stays ``café``); for ASCII text the two agree token for token.
    """
    return _ROUGE_TOKEN.findall(text.lower())


# Batch tokenisation on bytes: for ASCII text, ``[^\W_]+`` is ``[a-z0-9]+`` after ``lower``,
# so mapping every other ASCII byte to a space and splitting gives the same words, ~5x
# faster than the regex. Words are compared, never shown, so bytes serve (UTF-8 keeps
# distinct words distinct when a text is not ASCII and takes the regex).
_ALNUM = b"abcdefghijklmnopqrstuvwxyz0123456789"
_ROUGE_SPACES = bytes(byte if byte in _ALNUM or byte >= 128 else 32 for byte in range(256))


def _rouge_words(text: str) -> list[bytes]:
    """:func:`rouge_tokens` as UTF-8 bytes (the batch's form)."""
    lowered = text.lower()
    if lowered.isascii():
        return lowered.encode("ascii").translate(_ROUGE_SPACES).split()
    return [word.encode() for word in _ROUGE_TOKEN.findall(lowered)]


_ROUGE_REASON = "ROUGE-L F %.3f (precision %.3f, recall %.3f, LCS %d tokens)"
"""The reason of a ROUGE-L score as ``_best`` words it (``%`` formats as its f-string does)."""


class RougeLParams(ReferenceParams):
    threshold: float | None = 0.5


class RougeL(ReferenceEvaluator):
    """ROUGE-L F-measure: longest common token subsequence, as rouge-score computes it."""

    name = "rouge_l"
    description = "ROUGE-L F-measure (longest common subsequence of tokens) against the expected answer"
    value_range = "0..1, higher is better"
    Params = RougeLParams
    params: RougeLParams

    @staticmethod
    def rouge_l(output: str, reference: str) -> tuple[float, float, float, int]:
        """``(f_measure, precision, recall, lcs_length)`` of ``output`` against ``reference``."""
        from rapidfuzz.distance import LCSseq

        got, ref = rouge_tokens(output), rouge_tokens(reference)
        if not got or not ref:
            return 0.0, 0.0, 0.0, 0
        lcs = int(LCSseq.similarity(ref, got))
        if lcs == 0:
            return 0.0, 0.0, 0.0, 0
        precision, recall = lcs / len(got), lcs / len(ref)
        return 2 * precision * recall / (precision + recall), precision, recall, lcs

    def compare(self, output: str, references: list[str]) -> Score:
        scored = [(self.rouge_l(output, ref), ref) for ref in references]
        return self._best(scored, len(references))

    def score_batch(self, cases: Sequence[Case], generations: Sequence[Generation]) -> list[Score]:
        """All longest common subsequences of the batch in one ``rapidfuzz.process.cpdist``
        call; each distinct reference is tokenised once per batch, each output once."""
        from rapidfuzz import process
        from rapidfuzz.distance import LCSseq

        refs_of = self.references_of(cases)
        ref_tokens: dict[str, list[bytes]] = {}
        outputs, references, owner = [], [], []
        for i, (refs, generation) in enumerate(zip(refs_of, generations, strict=True)):
            if not refs:
                continue
            got = _rouge_words(generation.text)
            for ref in refs:
                tokens = ref_tokens.get(ref)
                if tokens is None:
                    tokens = ref_tokens[ref] = _rouge_words(ref)
                outputs.append(got)
                references.append(tokens)
                owner.append(i)
        lcs_all: list[int] = (process.cpdist(references, outputs, scorer=LCSseq.similarity).tolist()
                              if outputs else [])
        metric, verdict, quoted = self.metric, _verdict(self), _Quoted()
        missing = self.missing_reason()
        out: list[Score | None] = [None] * len(refs_of)
        k = 0
        for i, refs in enumerate(refs_of):
            if not refs:
                out[i] = Score(metric, None, None, missing, "nodata", [], {})
                continue
            best: tuple[float, float, float, int] | None = None
            best_ref = refs[0]
            for ref in refs:
                out_tokens, lcs = outputs[k], lcs_all[k]
                k += 1
                if not out_tokens or lcs == 0:
                    stats: tuple[float, float, float, int] = (0.0, 0.0, 0.0, 0)
                else:
                    precision, recall = lcs / len(out_tokens), lcs / len(references[k - 1])
                    stats = (2 * precision * recall / (precision + recall), precision, recall, lcs)
                if best is None or stats[0] > best[0]:
                    best, best_ref = stats, ref
            assert best is not None
            f_measure, precision, recall, lcs = best
            reason = _ROUGE_REASON % best
            if len(refs) > 1:
                reason += f" against {quoted[best_ref]}"
            out[i] = Score(metric, f_measure, verdict(f_measure), reason, "ok", [],
                           {"precision": precision, "recall": recall, "lcs": lcs})
        return out  # type: ignore[return-value]

    def _best(self, scored: list[tuple[tuple[float, float, float, int], str]], n_refs: int) -> Score:
        (f_measure, precision, recall, lcs), best = max(scored, key=lambda item: item[0][0])
        against = f" against {_quote(best)}" if n_refs > 1 else ""
        return self.result(
            f_measure,
            reason=f"ROUGE-L F {f_measure:.3f} (precision {precision:.3f}, recall {recall:.3f}, "
            f"LCS {lcs} tokens){against}",
            details={"precision": precision, "recall": recall, "lcs": lcs},
        )


class BleuParams(ReferenceParams):
    threshold: float | None = 0.3
    tokenize: Literal["13a", "intl", "char", "zh", "none"] = "13a"
    lowercase: bool = False
    smooth_method: Literal["exp", "floor", "add-k", "none"] = "exp"


class Bleu(ReferenceEvaluator):
    """Sentence BLEU (sacrebleu) against all references, scaled from 0..100 to 0..1."""

    name = "bleu"
    description = "sentence BLEU (sacrebleu) against the expected answer(s), 0..1"
    value_range = "0..1, higher is better"
    Params = BleuParams
    params: BleuParams

    def compare(self, output: str, references: list[str]) -> Score:
        import sacrebleu

        bleu = sacrebleu.sentence_bleu(
            output, references, smooth_method=self.params.smooth_method,
            lowercase=self.params.lowercase, tokenize=self.params.tokenize,
        )
        return self._from_bleu(bleu)

    def score_batch(self, cases: Sequence[Case], generations: Sequence[Generation]) -> list[Score]:
        """sacrebleu's sentence BLEU for the whole batch, its statistics counted with numpy on
        integer token ids (:mod:`gatekeeper.builtin.scoring.bleu_batch`); each distinct
        reference text of the batch is tokenised and counted once."""
        import numpy as np

        from gatekeeper.builtin.scoring import bleu_batch

        tokens = self._tokens
        if tokens is None:
            tokens = self._tokens = bleu_batch.Tokens(self.params.tokenize, self.params.lowercase)
        tokens.start_batch()
        refs_of = self.references_of(cases)
        unit_of: dict[str, int] = {}
        scored: list[int] = []
        units_of: list[list[int]] = []
        for i, refs in enumerate(refs_of):
            if refs:
                scored.append(i)
                units_of.append([unit_of.setdefault(ref, len(unit_of)) for ref in refs])
        hyp_ids, hyp_lens = tokens.ids([generations[i].text for i in scored])
        ref_ids, ref_lens = tokens.ids(list(unit_of))
        stats = bleu_batch.ngram_statistics(hyp_ids, hyp_lens, ref_ids, ref_lens, units_of)
        if stats is None:
            stats = bleu_batch.counter_statistics(
                _split(hyp_ids.tolist(), hyp_lens.tolist()), _split(ref_ids.tolist(), ref_lens.tolist()),
                units_of,
            )
        ref_len_of = ref_lens.tolist()
        closest = [ref_len_of[units[0]] if len(units) == 1
                   else bleu_batch.closest_ref_len(sys_len, [ref_len_of[u] for u in units])
                   for units, sys_len in zip(units_of, hyp_lens.tolist(), strict=True)]
        values, precisions, bps = bleu_batch.sentence_bleu(
            stats[0], stats[1], hyp_lens, np.asarray(closest, dtype=np.int64), self.params.smooth_method,
        )
        metric, verdict = self.metric, _verdict(self)
        out: list[Score | None] = [None] * len(refs_of)
        for i, score, shown, bp in zip(scored, values, precisions, bps, strict=True):
            value = min(1.0, max(0.0, score / 100))
            reason = _BLEU_REASON % (score, *shown, bp)
            out[i] = Score(metric, value, verdict(value), reason, "ok", [],
                           {"precisions": shown, "brevity_penalty": bp})
        if len(scored) < len(refs_of):
            missing = self.missing_reason()
            for i, existing in enumerate(out):
                if existing is None:
                    out[i] = Score(metric, None, None, missing, "nodata", [], {})
        return out  # type: ignore[return-value]

    _tokens: Any = None
    """The batch tokeniser (``bleu_batch.Tokens``), made on first use."""

    def _from_bleu(self, bleu: Any) -> Score:
        return self._bleu_score(bleu.score, bleu.precisions, bleu.bp)

    def _bleu_score(self, score: float, precisions: list[float], bp: float) -> Score:
        value = min(1.0, max(0.0, score / 100))
        shown = "/".join([f"{p:.1f}" for p in precisions])
        return Score(
            self.metric, value, None if self.params.threshold is None else value >= self.params.threshold,
            f"BLEU {score:.2f} (n-gram precisions {shown}, brevity penalty {bp:.3f})", "ok", [],
            {"precisions": list(precisions), "brevity_penalty": bp},
        )


_BLEU_REASON = "BLEU %.2f (n-gram precisions %.1f/%.1f/%.1f/%.1f, brevity penalty %.3f)"
"""The reason of a BLEU score (``%`` formats a float as the f-strings of ``_bleu_score`` do)."""


def _split(flat: list[int], lengths: list[int]) -> list[list[int]]:
    """``flat`` cut into consecutive runs of ``lengths``."""
    out, start = [], 0
    for length in lengths:
        out.append(flat[start : start + length])
        start += length
    return out


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)


def squad_normalise(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, drop punctuation and articles, fix spaces."""
    text = text.lower().translate(_DROP_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


_PUNCTUATION_RUN = re.compile(f"[{re.escape(string.punctuation)}]+")
_NEITHER_WORD_NOR_SPACE = re.compile(r"[^\w\s]")
_ARTICLE_WORDS = frozenset({"a", "an", "the"})


def _squad_tokens(text: str) -> list[str]:
    """``squad_normalise(text).split()``, faster: when every character left is a word
    character or whitespace, ``\\b(a|an|the)\\b`` can only match a whole word, so the
    articles are dropped word by word instead of by the regex."""
    text = _PUNCTUATION_RUN.sub("", text.lower())
    if _NEITHER_WORD_NOR_SPACE.search(text) is None:
        return [word for word in text.split() if word not in _ARTICLE_WORDS]
    return _ARTICLES.sub(" ", text).split()


_SQUAD_DELETE = string.punctuation.encode("ascii")
_SQUAD_SPACES = bytes(32 if byte in b"\x1c\x1d\x1e\x1f" else byte for byte in range(256))
"""``str.split`` also splits at these ASCII bytes, ``bytes.split`` does not: make them spaces."""
_SQUAD_PLAIN = _ALNUM + b" \t\n\r\x0b\x0c"
_ARTICLE_BYTES = frozenset({b"a", b"an", b"the"})


def _squad_words(text: str) -> list[bytes]:
    """:func:`_squad_tokens` as UTF-8 bytes (the batch's form): for ASCII text, punctuation
    is deleted and words split on bytes, several times faster than the regexes; a text with
    other characters left takes :func:`_squad_tokens`."""
    lowered = text.lower()
    if lowered.isascii():
        data = lowered.encode("ascii").translate(_SQUAD_SPACES, _SQUAD_DELETE)
        if not data.translate(None, _SQUAD_PLAIN):  # only letters, digits and whitespace left
            return [word for word in data.split() if word not in _ARTICLE_BYTES]
    return [word.encode() for word in _squad_tokens(text)]


def squad_f1(prediction: str, reference: str) -> float:
    """Token F1 as the official SQuAD script computes it (both empty: 1.0)."""
    got, ref = squad_normalise(prediction).split(), squad_normalise(reference).split()
    if not got or not ref:
        return float(got == ref)
    same = sum((Counter(got) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(got), same / len(ref)
    return 2 * precision * recall / (precision + recall)


class TokenF1Params(ReferenceParams):
    threshold: float | None = 0.5


class TokenF1(ReferenceEvaluator):
    """SQuAD-style token F1, the best over the references."""

    name = "token_f1"
    description = "SQuAD token F1 (bag of normalised words) against the best expected answer"
    value_range = "0..1, higher is better"
    Params = TokenF1Params
    params: TokenF1Params

    def compare(self, output: str, references: list[str]) -> Score:
        value, best = max(((squad_f1(output, ref), ref) for ref in references), key=lambda item: item[0])
        against = f" against {_quote(best)}" if len(references) > 1 else ""
        return self.result(value, reason=f"token F1 {value:.3f}{against}")

    def score_batch(self, cases: Sequence[Case], generations: Sequence[Generation]) -> list[Score]:
        """:func:`squad_f1` per pair, each distinct reference normalised and counted once per
        batch; the overlap (what ``Counter.__and__`` totals) is counted by taking each output
        token from a copy of the reference's counts."""
        metric, verdict, quoted = self.metric, _verdict(self), _Quoted()
        missing = self.missing_reason()
        counted: dict[str, tuple[list[bytes], dict[bytes, int]]] = {}
        out: list[Score] = []
        for refs, generation in zip(self.references_of(cases), generations, strict=True):
            if not refs:
                out.append(Score(metric, None, None, missing, "nodata", [], {}))
                continue
            got = _squad_words(generation.text)
            distinct = set(got)
            value, best = -1.0, refs[0]
            for ref in refs:
                entry = counted.get(ref)
                if entry is None:
                    tokens = _squad_words(ref)
                    counts: dict[bytes, int] = {}
                    for token in tokens:
                        counts[token] = counts.get(token, 0) + 1
                    entry = counted[ref] = (tokens, counts)
                ref_tokens, ref_counts = entry
                if not got or not ref_tokens:
                    f1 = float(got == ref_tokens)
                else:
                    if len(distinct) == len(got):  # no word twice: each shared word counts once
                        same = len(distinct.intersection(ref_counts))
                    else:
                        left = ref_counts.copy()
                        same = 0
                        for token in got:
                            available = left.get(token)
                            if available:
                                left[token] = available - 1
                                same += 1
                    if same == 0:
                        f1 = 0.0
                    else:
                        precision, recall = same / len(got), same / len(ref_tokens)
                        f1 = 2 * precision * recall / (precision + recall)
                if f1 > value:
                    value, best = f1, ref
            against = f" against {quoted[best]}" if len(refs) > 1 else ""
            out.append(Score(metric, value, verdict(value), f"token F1 {value:.3f}{against}", "ok", [], {}))
        return out


# --------------------------------------------------------------------------- length


class LengthParams(ScoringParams):
    threshold: float | None = 1.0
    min_chars: int | None = Field(default=None, ge=0)
    max_chars: int | None = Field(default=None, ge=0)
    min_words: int | None = Field(default=None, ge=0)
    max_words: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _needs_a_bound(self) -> LengthParams:
        bounds = (self.min_chars, self.max_chars, self.min_words, self.max_words)
        if all(bound is None for bound in bounds):
            raise _usage_error("give at least one of min_chars, max_chars, min_words, max_words")
        pairs = ((self.min_chars, self.max_chars, "chars"), (self.min_words, self.max_words, "words"))
        for low, high, unit in pairs:
            if low is not None and high is not None and low > high:
                raise _usage_error(f"min_{unit} ({low}) is greater than max_{unit} ({high})")
        return self


class Length(Evaluator):
    """1.0 when the output's length in characters and words is within the bounds."""

    name = "length"
    description = "1 when the output's length (characters, words) is within the given bounds"
    value_range = "0 or 1, higher is better"
    Params = LengthParams
    params: LengthParams

    def score(self, case: Case, generation: Generation) -> Score:
        text = generation.text.strip()
        counts = {"chars": len(text), "words": len(text.split())}
        p = self.params
        violations = []
        for unit, low, high in (("chars", p.min_chars, p.max_chars), ("words", p.min_words, p.max_words)):
            if low is not None and counts[unit] < low:
                violations.append(f"{counts[unit]} {unit} < min_{unit} {low}")
            if high is not None and counts[unit] > high:
                violations.append(f"{counts[unit]} {unit} > max_{unit} {high}")
        if violations:
            return self.result(0.0, reason="; ".join(violations), details=counts)
        return self.result(1.0, reason=f"{counts['chars']} chars, {counts['words']} words: within bounds",
                           details=counts)

    def score_batch(self, cases: Sequence[Case], generations: Sequence[Generation]) -> list[Score]:
        """:meth:`score` per output, the bounds read once per batch."""
        p = self.params
        bounds = [(unit, low, high) for unit, low, high in
                  (("chars", p.min_chars, p.max_chars), ("words", p.min_words, p.max_words))
                  if low is not None or high is not None]
        metric, verdict = self.metric, _verdict(self)
        within, outside = verdict(1.0), verdict(0.0)
        out: list[Score] = []
        for _, generation in zip(cases, generations, strict=True):
            text = generation.text.strip()
            counts = {"chars": len(text), "words": len(text.split())}
            violations = []
            for unit, low, high in bounds:
                if low is not None and counts[unit] < low:
                    violations.append(f"{counts[unit]} {unit} < min_{unit} {low}")
                if high is not None and counts[unit] > high:
                    violations.append(f"{counts[unit]} {unit} > max_{unit} {high}")
            if violations:
                out.append(Score(metric, 0.0, outside, "; ".join(violations), "ok", [], counts))
            else:
                reason = f"{counts['chars']} chars, {counts['words']} words: within bounds"
                out.append(Score(metric, 1.0, within, reason, "ok", [], counts))
        return out


# --------------------------------------------------------------------------- latency, tokens, cost


class LimitParams(ScoringParams):
    """A friendly upper limit (``max_ms``, ``max_tokens``, ``max_usd``) that is the threshold:
    either may be given, not both, and each ends up equal to the other."""

    limit_field: ClassVar[str]

    @model_validator(mode="after")
    def _limit_is_threshold(self) -> Self:
        fields_set = self.model_fields_set
        if self.limit_field in fields_set and "threshold" in fields_set:
            raise _usage_error(f"give '{self.limit_field}' or 'threshold', not both")
        if "threshold" in fields_set:
            setattr(self, self.limit_field, self.threshold)
        else:
            self.threshold = getattr(self, self.limit_field)
        return self


class LimitEvaluator(Evaluator):
    """A resource a generation used (time, tokens, money), lower is better, passing at or
    below the limit. Subclasses say how to measure it and how to show the limit."""

    lower_is_better = True
    Params: ClassVar[type[ScoringParams]] = LimitParams
    params: LimitParams
    limit_format: ClassVar[str]
    """How the limit reads in a reason, e.g. ``"{:g} ms"``."""

    def measure(self, generation: Generation) -> tuple[float | None, str]:
        """The value and the reason text; ``None`` and why when it cannot be measured."""
        raise NotImplementedError

    def score(self, case: Case, generation: Generation) -> Score:
        value, reason = self.measure(generation)
        if value is None:
            return self.result(None, reason=reason)
        limit = getattr(self.params, self.params.limit_field)
        suffix = f" (limit {self.limit_format.format(limit)})" if limit is not None else ""
        return self.result(value, reason=reason + suffix)

    def score_batch(self, cases: Sequence[Case], generations: Sequence[Generation]) -> list[Score]:
        """:meth:`score` per output, the limit's text formatted once per batch."""
        limit = getattr(self.params, self.params.limit_field)
        suffix = f" (limit {self.limit_format.format(limit)})" if limit is not None else ""
        metric, verdict, measure = self.metric, _verdict(self), self.measure
        out: list[Score] = []
        for _, generation in zip(cases, generations, strict=True):
            value, reason = measure(generation)
            if value is None:
                out.append(Score(metric, None, None, reason, "nodata", [], {}))
            else:
                out.append(Score(metric, value, verdict(value), reason + suffix, "ok", [], {}))
        return out


class LatencyParams(LimitParams):
    limit_field = "max_ms"
    max_ms: float | None = Field(default=10_000.0, gt=0)


class Latency(LimitEvaluator):
    """The generation's latency in milliseconds; passes at or below ``max_ms``."""

    name = "latency"
    description = "time the model took to answer, in milliseconds"
    value_range = "milliseconds ≥ 0, lower is better"
    Params = LatencyParams
    limit_format = "{:g} ms"

    def measure(self, generation: Generation) -> tuple[float | None, str]:
        if generation.latency_ms is None:
            return None, "the generation carries no latency (e.g. a replay recorded without latency_ms)"
        return float(generation.latency_ms), f"{generation.latency_ms:.0f} ms"


_USAGE_KEYS = {"prompt": "prompt_tokens", "completion": "completion_tokens", "total": "total_tokens"}


def _token_count(usage: dict[str, int], count: str) -> int | None:
    """``usage[count_tokens]``; ``total`` falls back to prompt + completion."""
    key = _USAGE_KEYS[count]
    if usage.get(key) is not None:
        return int(usage[key])
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if count == "total" and prompt is not None and completion is not None:
        return int(prompt) + int(completion)
    return None


class TokensParams(LimitParams):
    limit_field = "max_tokens"
    count: Literal["completion", "prompt", "total"] = "completion"
    max_tokens: float | None = Field(default=1024, gt=0)


class Tokens(LimitEvaluator):
    """Tokens used, from the provider's ``usage`` (completion tokens by default)."""

    name = "tokens"
    description = "tokens used by the generation (completion, prompt or total), from the provider's usage"
    value_range = "tokens ≥ 0, lower is better"
    Params = TokensParams
    params: TokensParams
    limit_format = "{:g}"

    def measure(self, generation: Generation) -> tuple[float | None, str]:
        tokens = _token_count(generation.usage, self.params.count)
        if tokens is None:
            return None, (f"the generation has no usage[{_USAGE_KEYS[self.params.count]!r}] "
                          "(the provider reported no token counts)")
        return float(tokens), f"{tokens} {self.params.count} tokens"


class CostParams(LimitParams):
    limit_field = "max_usd"
    max_usd: float | None = Field(default=0.01, ge=0)
    prompt_usd_per_1m: float | None = Field(default=None, ge=0)
    """Price of a million prompt tokens, used when the provider reports no cost."""
    completion_usd_per_1m: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _both_prices(self) -> CostParams:
        if (self.prompt_usd_per_1m is None) != (self.completion_usd_per_1m is None):
            raise _usage_error("give both prompt_usd_per_1m and completion_usd_per_1m, or neither")
        return self


class Cost(LimitEvaluator):
    """Cost of the generation in USD: the provider's figure, or usage times the given prices."""

    name = "cost"
    description = "cost of the generation in USD (reported by the provider, or from usage and prices)"
    value_range = "USD ≥ 0, lower is better"
    Params = CostParams
    params: CostParams
    limit_format = "${:g}"

    def measure(self, generation: Generation) -> tuple[float | None, str]:
        if generation.cost is not None:
            return float(generation.cost), f"${generation.cost:.6f} reported"
        p = self.params
        prompt = _token_count(generation.usage, "prompt")
        completion = _token_count(generation.usage, "completion")
        if p.prompt_usd_per_1m is None or p.completion_usd_per_1m is None:
            return None, "the generation carries no cost and no prices are configured"
        if prompt is None or completion is None:
            return None, "the generation carries no cost and no prompt/completion token counts"
        cost = (prompt * p.prompt_usd_per_1m + completion * p.completion_usd_per_1m) / 1_000_000
        return cost, f"${cost:.6f} for {prompt} prompt + {completion} completion tokens"


# --------------------------------------------------------------------------- registration

BUILTIN_EVALUATORS: tuple[type[Evaluator], ...] = (
    ExactMatch,
    Contains,
    NotContains,
    Regex,
    JsonValid,
    JsonSchema,
    EditSimilarity,
    RougeL,
    Bleu,
    TokenF1,
    Length,
    Latency,
    Tokens,
    Cost,
)


@hookimpl
def gatekeeper_register_evaluators(register: Register[Evaluator]) -> None:
    """Register the built-in evaluators."""
    for evaluator in BUILTIN_EVALUATORS:
        register(evaluator)
