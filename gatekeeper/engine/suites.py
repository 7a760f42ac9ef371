"""Suites: the YAML schema, datasets, prompt templates, discovery and selection.

A suite file declares how to prompt (chat messages rendered in a jinja2 sandbox, or a
Prompty file), its cases (inline or from JSONL/CSV/Parquet), the slices and cluster key
the statistics use, and the evaluators and detectors that score each output.
See ``docs/suites.md`` for the schema, field by field.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from jinja2 import Template, TemplateError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gatekeeper.engine.paths import contained
from gatekeeper.engine.templates import StaticText, compile_template, render_bounded
from gatekeeper.files import parse_jsonl_line, read_jsonl, read_jsonl_at
from gatekeeper.files import read_csv as read_csv_rows
from gatekeeper.files import sha256_file as _sha256
from gatekeeper.host import yamlfile
from gatekeeper.types import Case, Message, UsageError

if TYPE_CHECKING:
    from gatekeeper.kinds import Evaluator, Registry
    from gatekeeper.types import Config

CASE_FIELDS = ("id", "expected", "context", "tags", "metadata", "cluster")
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".gatekeeper"}


# --------------------------------------------------------------------------- schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageSchema(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class PromptSchema(_Strict):
    messages: list[MessageSchema] | None = None
    prompty: str | None = None

    def model_post_init(self, _: Any) -> None:
        if (self.messages is None) == (self.prompty is None):
            raise ValueError("give exactly one of 'messages' or 'prompty'")


class GenerationSchema(_Strict):
    max_tokens: int = Field(256, ge=1)
    temperature: float | None = Field(None, ge=0)
    seed: int = 0
    stop: list[str] = Field(default_factory=list)


class SuiteSchema(_Strict):
    suite: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    prompt: PromptSchema
    variables: dict[str, Any] = Field(default_factory=dict)
    dataset: str | None = None
    cases: list[dict[str, Any]] = Field(default_factory=list)
    slices: list[str] = Field(default_factory=list)
    cluster: str | None = None
    epochs: int = Field(1, ge=1)
    generation: GenerationSchema = Field(default_factory=GenerationSchema)
    evaluators: list[str | dict[str, Any]] = Field(default_factory=list)
    detectors: list[str | dict[str, Any]] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ScorerSpec:
    """One evaluator or detector as a suite declares it."""

    name: str
    metric: str
    params: dict[str, Any]
    kind: Literal["evaluator", "detector"]
    source: str  # file:line


@dataclass
class Suite:
    """A loaded suite. ``hash`` covers the suite file, its prompt and its datasets."""

    name: str
    path: Path
    cases: list[Case] | DatasetCases
    """The cases; a large JSONL dataset's as :class:`DatasetCases` (made from the file when used)."""
    scorers: list[ScorerSpec]
    epochs: int = 1
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    slices: tuple[str, ...] = ()
    description: str = ""
    hash: str = ""
    datasets: dict[str, str] = field(default_factory=dict)
    """dataset path → SHA-256 of its content"""

    def build_scorers(
        self, evaluators: Registry[Any], detectors: Registry[Any]
    ) -> list[Evaluator]:
        """Instantiate the declared scorers, validating their parameters."""
        from gatekeeper.kinds import Params

        built: list[Evaluator] = []
        for spec in self.scorers:
            registry = evaluators if spec.kind == "evaluator" else detectors
            file, _, line = spec.source.rpartition(":")
            try:
                cls = registry.get(spec.name)
            except UsageError as exc:
                raise UsageError(exc.message, file=file, line=int(line), field=f"{spec.kind}s") from None
            params_model: type[Params] = cls.Params
            try:
                params = params_model.model_validate(spec.params)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                msg = "unknown parameter" if err["type"] == "extra_forbidden" else str(err["msg"])
                msg = msg.removeprefix("Value error, ")
                raise UsageError(
                    msg, file=file, line=int(line), field=f"{spec.kind}s.{spec.name}.{where}".rstrip(".")
                ) from None
            built.append(cls(params, metric=spec.metric))
        metrics = [s.metric for s in built]
        dupes = sorted({m for m in metrics if metrics.count(m) > 1})
        if dupes:
            raise UsageError(
                f"metric {dupes[0]!r} is declared twice; name one with 'as:'",
                file=str(self.path), field="evaluators",
            )
        return built


# --------------------------------------------------------------------------- templates

def render(template: str, variables: dict[str, Any], *, where: str) -> str:
    """Render ``template`` in the bounded jinja2 sandbox (:mod:`gatekeeper.engine.templates`);
    undefined variables are errors."""
    try:
        return render_bounded(compile_template(template), variables)
    except TemplateError as exc:
        raise UsageError(f"template error: {exc.message or exc}", file=where) from None


def parse_prompty(path: Path) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Read a Prompty file: YAML front matter, then ``system:``/``user:`` sections."""
    try:
        text = yamlfile.decode(path.read_bytes(), path)
    except OSError as exc:
        raise UsageError(f"cannot read Prompty file: {exc.strerror}", file=str(path)) from None
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n(.*)$", text, re.S)
    if not match:
        raise UsageError("a Prompty file starts with '---' front matter", file=str(path), line=1)
    # The project's loader: duplicate keys and alias bombs are refused here too.
    front, _ = yamlfile.load_text(match.group(1), path, first_line=2)
    front = front or {}
    if not isinstance(front, dict):
        raise UsageError("the front matter must be a mapping", file=str(path), line=2)
    sections: list[tuple[str, str]] = []
    role: str | None = None
    lines: list[str] = []
    for line in match.group(2).splitlines():
        m = re.match(r"^\s*(system|user|assistant)\s*:\s*$", line, re.I)
        if m:
            if role:
                sections.append((role, "\n".join(lines).strip()))
            role, lines = m.group(1).lower(), []
        elif role:
            lines.append(line)
    if role:
        sections.append((role, "\n".join(lines).strip()))
    if not sections:
        raise UsageError("no 'system:' or 'user:' section", file=str(path))
    return front, sections


# --------------------------------------------------------------------------- datasets






def read_dataset(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line, row)`` from a JSONL, CSV or Parquet file."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise UsageError("dataset not found", file=str(path))
    if suffix == ".jsonl":
        yield from read_jsonl(path)
    elif suffix == ".csv":
        yield from read_csv(path)
    elif suffix == ".parquet":
        yield from read_parquet(path)
    else:
        raise UsageError("datasets are .jsonl, .csv or .parquet", file=str(path))


def _dataset_rows(path: Path) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """``(byte offset, line, row)`` of a dataset (the offset is only meaningful for JSONL)."""
    if path.suffix.lower() == ".jsonl":
        yield from read_jsonl_at(path)
    else:
        for lineno, row in read_dataset(path):
            yield -1, lineno, row


STREAM_CASES_ABOVE = 100_000
"""A JSONL dataset with more cases than this is not held as :class:`Case` objects (about
3.5 KB each with their rendered prompts: 3.5 GB for a million) but as where each row is
(12 bytes): :class:`DatasetCases` makes the cases again from the file when a run uses them."""


class DatasetCases(Sequence[Case]):
    """The cases of a large JSONL dataset, kept as the byte offset and line of each row and
    made again, from the file, each time they are iterated (a run streams them to the models
    and the record). The file may not change while it is in use: its size and modification
    time are those it had when the suite was loaded, or reading stops (exit 4)."""

    def __init__(self, path: Path, make: Callable[[dict[str, Any], int], Case]) -> None:
        self.path = path
        self._make = make
        self._offsets = array("q")
        self._lines = array("i")
        self._stamp: tuple[int, int] | None = None

    def append(self, offset: int, lineno: int) -> None:
        self._offsets.append(offset)
        self._lines.append(lineno)

    def seal(self) -> DatasetCases:
        """Record the file's size and modification time (what every later read checks)."""
        stat = self.path.stat()
        self._stamp = (stat.st_size, stat.st_mtime_ns)
        return self

    def take(self, positions: Iterable[int]) -> DatasetCases:
        """The cases at ``positions`` (ascending), e.g. those ``-k``/``-m`` select."""
        out = DatasetCases(self.path, self._make)
        for i in positions:
            out.append(self._offsets[i], self._lines[i])
        out._stamp = self._stamp
        return out

    def _check(self) -> None:
        stat = self.path.stat()
        if self._stamp is not None and (stat.st_size, stat.st_mtime_ns) != self._stamp:
            raise UsageError("the dataset changed after the suite was loaded; run again", file=str(self.path))

    def __len__(self) -> int:
        return len(self._offsets)

    def __iter__(self) -> Iterator[Case]:
        """The cases in order, reading the file once from the first row to the last."""
        self._check()
        if not len(self._offsets):
            return
        wanted = iter(zip(self._offsets, self._lines, strict=True))
        offset, lineno = next(wanted)
        with self.path.open("rb") as fh:
            fh.seek(offset)
            position = offset
            for raw in fh:
                if position == offset:
                    row = parse_jsonl_line(raw, self.path, lineno)
                    assert row is not None
                    yield self._make(row, lineno)
                    following = next(wanted, None)
                    if following is None:
                        return
                    offset, lineno = following
                position += len(raw)

    @overload
    def __getitem__(self, index: int) -> Case: ...

    @overload
    def __getitem__(self, index: slice) -> list[Case]: ...

    def __getitem__(self, index: int | slice) -> Case | list[Case]:
        if isinstance(index, slice):
            return list(self.take(range(len(self))[index]))
        i = range(len(self))[index]
        self._check()
        with self.path.open("rb") as fh:
            fh.seek(self._offsets[i])
            row = parse_jsonl_line(fh.readline(), self.path, self._lines[i])
        assert row is not None
        return self._make(row, self._lines[i])

    def __repr__(self) -> str:
        return f"DatasetCases({self.path}, {len(self)} cases)"


def read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a CSV dataset through the strict reader (:func:`gatekeeper.files.read_csv`);
    empty cells are absent values."""
    for line, row in read_csv_rows(path):
        yield line, {k: v for k, v in row.items() if v != ""}


def read_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row number, row)`` of a Parquet file; a corrupt file is the user's error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UsageError(f"cannot read Parquet: {exc}", file=str(path)) from None
    for index, row in enumerate(rows):
        yield index + 1, {k: v for k, v in row.items() if v is not None}


# --------------------------------------------------------------------------- loading


def _scorer_specs(
    items: list[str | dict[str, Any]], kind: Literal["evaluator", "detector"], path: Path,
    locator: yamlfile.Locator,
) -> list[ScorerSpec]:
    specs = []
    for i, item in enumerate(items):
        where = f"{path}:{locator.line((kind + 's', i))}"
        if isinstance(item, str):
            name, params = item, {}
        elif "name" in item:
            params = dict(item)
            name = str(params.pop("name"))
        elif len(item) == 1:
            name, value = next(iter(item.items()))
            params = dict(value or {})
        else:
            raise UsageError(
                "give an evaluator as NAME, {NAME: {params}} or {name: NAME, params...}",
                file=str(path), line=locator.line((kind + "s", i)), field=f"{kind}s[{i}]",
            )
        metric = str(params.pop("as", name))
        specs.append(ScorerSpec(name, metric, params, kind, where))
    return specs


def _case_from_row(
    row: dict[str, Any], *, schema: SuiteSchema, messages: list[tuple[str, Template | StaticText]], where: str,
    field_prefix: str,
) -> Case:
    file, _, line = where.rpartition(":")
    lineno = int(line) if line.isdigit() else None
    if "id" not in row or row["id"] in (None, ""):
        raise UsageError("case has no 'id'", file=file, line=lineno, field=f"{field_prefix}.id")
    case_id = str(row["id"])
    tags = row.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    context = row.get("context")
    if isinstance(context, list):
        context = "\n\n".join(str(c) for c in context)
    metadata = dict(row.get("metadata") or {})
    variables = {k: v for k, v in row.items() if k not in ("tags", "metadata")}
    scope = {**schema.variables, **metadata, **variables}
    slices: dict[str, str] = {}
    for name in schema.slices:
        if scope.get(name) in (None, ""):
            raise UsageError(
                f"case {case_id!r} has no value for slice {name!r}",
                file=file, line=lineno, field=f"{field_prefix}.{name}",
            )
        slices[name] = str(scope[name])
    cluster = row.get("cluster") or (scope.get(schema.cluster) if schema.cluster else None)
    rendered: list[Message] = []
    for role, template in messages:
        try:
            rendered.append({"role": role, "content": render_bounded(template, scope)})
        except TemplateError as exc:
            raise UsageError(
                f"prompt template error for case {case_id!r}: {exc.message or exc}",
                file=file, line=lineno, field=f"{field_prefix}",
            ) from None
    expected = row.get("expected")
    return Case(
        id=case_id,
        suite=schema.suite,
        messages=tuple(rendered),
        vars=scope,
        expected=None if expected is None else str(expected),
        context=None if context is None else str(context),
        tags=tuple(dict.fromkeys([*schema.tags, *map(str, tags)])),
        slices=slices,
        cluster=None if cluster is None else str(cluster),
        metadata=metadata,
        source=where,
    )


def load_yaml_suite(path: Path, roots: Sequence[Path] | None = None) -> Suite | None:
    """Load a YAML suite file; ``None`` when the file is not a suite (no ``suite:`` key).

    ``roots``: the directories ``dataset:`` and ``prompty:`` may read from (the project root
    and what the user allowed); a path that resolves outside them — ``..``, an absolute path,
    a symlink out — is refused. ``None`` (a direct library call) checks nothing.
    """
    data, locator = yamlfile.load(path)
    if not isinstance(data, dict) or "suite" not in data:
        return None
    schema = yamlfile.validate(SuiteSchema, data, path, locator)
    base = path.parent
    hasher = hashlib.sha256(path.read_bytes())

    if schema.prompt.prompty:
        prompty_path = contained(schema.prompt.prompty, base=base, roots=roots, file=path,
                                 line=locator.line(("prompt", "prompty")), field="prompt.prompty")
        front, messages = parse_prompty(prompty_path)
        hasher.update(prompty_path.read_bytes())
        schema.variables = {**(front.get("sample") or {}), **schema.variables}
    else:
        messages = [(m.role, m.content) for m in schema.prompt.messages or []]

    try:  # compiled once: rendering is per case, parsing need not be
        templates = [(role, compile_template(text)) for role, text in messages]
    except TemplateError as exc:
        raise UsageError(f"template error: {exc.message or exc}", file=str(path), field="prompt") from None
    kept: list[Case] = []
    seen: dict[str, str | int] = {}  # case id -> where it was first (a dataset line as its number)
    datasets: dict[str, str] = {}

    def add(case: Case, where: str, prefix: str, lineno: int | None = None) -> None:
        if case.id in seen:
            file, _, line = where.rpartition(":")
            first = seen[case.id]
            raise UsageError(
                f"duplicate case id {case.id!r} (first at {f'{ds_path}:{first}' if isinstance(first, int) else first})",
                file=file, line=int(line), field=f"{prefix}.id",
            )
        seen[case.id] = where if lineno is None else lineno

    # A malformed dataset line is reported before any case's own error (a template variable
    # missing, a duplicate id): the file is read to its end first, the first case error kept.
    first_error: UsageError | None = None
    for i, row in enumerate(schema.cases):
        where = f"{path}:{locator.line(('cases', i))}"
        try:
            case = _case_from_row(row, schema=schema, messages=templates, where=where, field_prefix=f"cases[{i}]")
            add(case, where, f"cases[{i}]")
        except UsageError as exc:
            first_error = first_error or exc
            continue
        kept.append(case)
    if schema.dataset:
        ds_path = contained(schema.dataset, base=base, roots=roots, file=path,
                            line=locator.line(("dataset",)), field="dataset")
        if not ds_path.is_file():
            raise UsageError(
                f"dataset {schema.dataset!r} not found", file=str(path),
                line=locator.line(("dataset",)), field="dataset",
            )
        datasets[str(ds_path)] = _sha256(ds_path)
        hasher.update(datasets[str(ds_path)].encode())

        def make(row: dict[str, Any], lineno: int, ds_path: Path = ds_path) -> Case:
            return _case_from_row(row, schema=schema, messages=templates, where=f"{ds_path}:{lineno}",
                                  field_prefix=f"row {lineno}")

        streamed = DatasetCases(ds_path, make) if ds_path.suffix.lower() == ".jsonl" and not schema.cases else None
        for offset, lineno, row in _dataset_rows(ds_path):
            if first_error is not None:
                continue
            try:
                case = make(row, lineno)  # made (validated) even when not kept: errors name their line
                add(case, f"{ds_path}:{lineno}", f"row {lineno}", lineno)
            except UsageError as exc:
                first_error = exc
                continue
            if streamed is not None:
                streamed.append(offset, lineno)
                if len(streamed) > STREAM_CASES_ABOVE:
                    kept.clear()  # from here on, only where each case is
                    continue
            kept.append(case)
    if first_error is not None:
        raise first_error
    cases: list[Case] | DatasetCases = kept
    if schema.dataset and streamed is not None and len(streamed) > STREAM_CASES_ABOVE:
        cases = streamed.seal()
    if not cases:
        # A suite that checks nothing must not pass: it would let any model through.
        raise UsageError(
            "the suite has no cases" + (f" (dataset {schema.dataset!r} is empty)" if schema.dataset else ""),
            file=str(path), line=locator.line(("dataset" if schema.dataset else "cases",)),
            field="dataset" if schema.dataset else "cases",
        )

    gen = schema.generation
    temperature = gen.temperature if gen.temperature is not None else (0.7 if schema.epochs > 1 else 0.0)
    return Suite(
        name=schema.suite,
        path=path,
        cases=cases,
        scorers=_scorer_specs(schema.evaluators, "evaluator", path, locator)
        + _scorer_specs(schema.detectors, "detector", path, locator),
        epochs=schema.epochs,
        max_tokens=gen.max_tokens,
        temperature=temperature,
        seed=gen.seed,
        stop=tuple(gen.stop),
        slices=tuple(schema.slices),
        description=schema.description,
        hash=hasher.hexdigest(),
        datasets=datasets,
    )


# --------------------------------------------------------------------------- discovery


def discover(paths: Iterable[str | Path], config: Config) -> list[Path]:
    """Files under ``paths`` that match ``config.suite_patterns``, like pytest's discovery.

    Relative paths are taken as given (relative to the working directory); the caller
    resolves configured paths against the project root first.
    """
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            for candidate in sorted(p.rglob("*")):
                rel_parts = candidate.relative_to(p).parts
                if any(part in SKIP_DIRS or part.startswith((".", "_")) for part in rel_parts):
                    continue
                if candidate.is_file() and any(
                    fnmatch.fnmatch(candidate.name, pat) for pat in config.suite_patterns
                ):
                    found.append(candidate)
        else:
            raise UsageError("no such file or directory", file=str(raw))
    return list(dict.fromkeys(found))


# --------------------------------------------------------------------------- selection

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


class Expression:
    """A pytest-style ``-k``/``-m`` expression: words with ``and``, ``or``, ``not``, ()."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _TOKEN.findall(text)
        self.pos = 0
        if not self.tokens:
            raise UsageError(f"empty selection expression {text!r}", field="-k/-m")
        self._tree = self._or()
        if self.pos != len(self.tokens):
            raise UsageError(f"unexpected {self.tokens[self.pos]!r} in {text!r}", field="-k/-m")

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _or(self) -> Any:
        left = self._and()
        while self._peek() == "or":
            self.pos += 1
            left = ("or", left, self._and())
        return left

    def _and(self) -> Any:
        left = self._not()
        while self._peek() == "and":
            self.pos += 1
            left = ("and", left, self._not())
        return left

    def _not(self) -> Any:
        token = self._peek()
        if token == "not":
            self.pos += 1
            return ("not", self._not())
        if token == "(":
            self.pos += 1
            inner = self._or()
            if self._peek() != ")":
                raise UsageError(f"missing ')' in {self.text!r}", field="-k/-m")
            self.pos += 1
            return inner
        if token is None or token in ("and", "or", ")"):
            raise UsageError(f"expected a word in {self.text!r}", field="-k/-m")
        self.pos += 1
        return ("word", token)

    def evaluate(self, matches: Any) -> bool:
        def ev(node: Any) -> bool:
            op = node[0]
            if op == "word":
                return bool(matches(node[1]))
            if op == "not":
                return not ev(node[1])
            if op == "and":
                return ev(node[1]) and ev(node[2])
            return ev(node[1]) or ev(node[2])

        return ev(self._tree)


def select(cases: list[Case], keyword: str | None = None, marker: str | None = None) -> list[Case]:
    """Keep cases matching ``-k`` (substring of id, suite or tag) and ``-m`` (exact tag)."""
    out = cases
    if keyword:
        expr = Expression(keyword)
        out = [
            c for c in out
            if expr.evaluate(lambda w, c=c: any(w.lower() in s.lower() for s in (c.id, c.suite, *c.tags)))
        ]
    if marker:
        mexpr = Expression(marker)
        out = [c for c in out if mexpr.evaluate(lambda w, c=c: w in c.tags)]
    return out
