"""Built-in evaluators: string checks, JSON, similarity to a reference, length and cost.

Each evaluator documents its value range and direction, has a default threshold (so an
``ok`` score always carries a pass/fail verdict) and explains its value in ``reason``.
A case that lacks what an evaluator needs (an expected answer, a field, a latency)
gets a NODATA score with the reason, never a silent 0. ``docs/evaluators.md`` describes
every evaluator, its parameters and an example.

rapidfuzz, sacrebleu and jsonschema are imported when first used so that importing this
plugin (which the CLI does at start-up) stays cheap.

Scoring a suite of 10^5 cases calls each evaluator 2 x 10^5 times, so the costly ones have
a ``score_batch`` (see :class:`gatekeeper.kinds.Evaluator`) that gives exactly the scores
``score`` gives, faster: ROUGE-L computes its longest common subsequences in one rapidfuzz
call (``process.cpdist``), BLEU reuses one sacrebleu metric and counts n-grams with
``Counter`` over ``zip`` (sacrebleu's own formula turns the counts into the score), and the
phrase patterns of ``contains``/``not_contains`` are compiled once per phrase. The tests
compare both paths on a varied sample.
"""

from __future__ import annotations

import functools
import json
import re
import string
from collections import Counter
from collections.abc import Sequence
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

    def missing_reference(self) -> Score:
        what = f"field {self.params.field!r}" if self.params.field else "expected answer"
        return self.result(None, reason=f"no reference: the case has no {what}")

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


_ROUGE_TOKEN = re.compile(r"[^\W_]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenisation: lowercase runs of letters and digits.

    Unlike rouge-score, which keeps only ``[a-z0-9]``, letters outside ASCII are kept
    (``café`` stays ``café``); for ASCII text the two agree token for token.
    """
    return _ROUGE_TOKEN.findall(text.lower())


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
        """All longest common subsequences of the batch in one ``rapidfuzz.process.cpdist`` call."""
        from rapidfuzz import process
        from rapidfuzz.distance import LCSseq

        refs_of = [self.references(case) for case in cases]
        outputs, references, owner = [], [], []
        for i, (refs, generation) in enumerate(zip(refs_of, generations, strict=True)):
            got = rouge_tokens(generation.text)
            for ref in refs:
                outputs.append(got)
                references.append(rouge_tokens(ref))
                owner.append(i)
        lcs_all: Any = process.cpdist(references, outputs, scorer=LCSseq.similarity) if outputs else []
        scored: list[list[tuple[tuple[float, float, float, int], str]]] = [[] for _ in cases]
        for k, i in enumerate(owner):
            out_tokens, ref_tokens = outputs[k], references[k]
            lcs = int(lcs_all[k])
            if not out_tokens or not ref_tokens or lcs == 0:
                stats: tuple[float, float, float, int] = (0.0, 0.0, 0.0, 0)
            else:
                precision, recall = lcs / len(out_tokens), lcs / len(ref_tokens)
                stats = (2 * precision * recall / (precision + recall), precision, recall, lcs)
            scored[i].append((stats, refs_of[i][len(scored[i])]))
        return [
            self._best(scored[i], len(refs)) if refs else self.missing_reference()
            for i, refs in enumerate(refs_of)
        ]

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
        """sacrebleu's sentence BLEU, with one metric object for the batch and n-grams counted
        by ``Counter`` over ``zip``; sacrebleu's tokeniser, closest-reference length and
        ``compute_bleu`` are used as they are, so the scores are sacrebleu's."""
        from sacrebleu.metrics import BLEU

        metric = BLEU(
            lowercase=self.params.lowercase, tokenize=self.params.tokenize, force=False,
            smooth_method=self.params.smooth_method, smooth_value=None, effective_order=True,
        )
        order = metric.max_ngram_order
        out = []
        for case, generation in zip(cases, generations, strict=True):
            references = self.references(case)
            if not references:
                out.append(self.missing_reference())
                continue
            ref_ngrams: Counter[tuple[str, ...]] | None = None
            ref_lens = []
            for ref in references:
                tokens = metric._preprocess_segment(ref).split()
                ref_lens.append(len(tokens))
                counts = _ngrams(tokens, order)
                if ref_ngrams is None:
                    ref_ngrams = counts
                else:
                    for ngram, count in counts.items():
                        ref_ngrams[ngram] = max(ref_ngrams[ngram], count)
            assert ref_ngrams is not None
            tokens = metric._preprocess_segment(generation.text).split()
            correct, total = [0] * order, [0] * order
            for ngram, count in _ngrams(tokens, order).items():
                total[len(ngram) - 1] += count
                if ngram in ref_ngrams:
                    correct[len(ngram) - 1] += min(count, ref_ngrams[ngram])
            ref_len = metric._get_closest_ref_len(len(tokens), ref_lens)
            out.append(self._from_bleu(metric._compute_score_from_stats([len(tokens), ref_len, *correct, *total])))
        return out

    def _from_bleu(self, bleu: Any) -> Score:
        value = min(1.0, max(0.0, bleu.score / 100))
        precisions = "/".join(f"{p:.1f}" for p in bleu.precisions)
        return self.result(
            value,
            reason=f"BLEU {bleu.score:.2f} (n-gram precisions {precisions}, brevity penalty {bleu.bp:.3f})",
            details={"precisions": list(bleu.precisions), "brevity_penalty": bleu.bp},
        )


def _ngrams(tokens: list[str], order: int) -> Counter[tuple[str, ...]]:
    """Counts of the 1..``order``-grams of ``tokens`` (sacrebleu's ``extract_all_word_ngrams``)."""
    counts: Counter[tuple[str, ...]] = Counter()
    for n in range(1, order + 1):
        counts.update(zip(*(tokens[i:] for i in range(n)), strict=False))
    return counts


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)


def squad_normalise(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, drop punctuation and articles, fix spaces."""
    text = text.lower().translate(_DROP_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


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
