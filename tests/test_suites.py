"""Suites: schema, datasets, templates, discovery, selection, and located errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gatekeeper.engine.suites import Expression, discover, load_yaml_suite, select
from gatekeeper.testing import Project
from gatekeeper.types import Config, UsageError

HEADER = """
suite: ds
prompt:
  messages:
    - role: user
      content: "{{ company }}: {{ input }}"
variables: {company: Northwind}
"""


def _run(project: Project, *paths: str) -> tuple[int, str]:
    result = project.run("run", *paths, "--model", "replay:good.jsonl", "--out", "out")
    return result.exit_code, result.stderr.strip()


# --------------------------------------------------------------------------- datasets


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_cases_load_from_each_dataset_format(project: Project, fmt: str) -> None:
    rows = [
        {"id": "a", "input": "hours?", "topic": "store", "tags": "x,y"},
        {"id": "b", "input": "returns?", "topic": "returns", "tags": "y"},
    ]
    path = project.path / f"suites/data.{fmt}"
    path.parent.mkdir(parents=True)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        lines = [f"{r['id']},{r['input']},{r['topic']},\"{r['tags']}\"\n" for r in rows]
        path.write_text("id,input,topic,tags\n" + "".join(lines))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    suite_file = project.write("suites/ds.yaml", HEADER + f"dataset: data.{fmt}\nslices: [topic]\n")
    suite = load_yaml_suite(suite_file)
    assert suite is not None
    assert [c.id for c in suite.cases] == ["a", "b"]
    assert suite.cases[0].messages == ({"role": "user", "content": "Northwind: hours?"},)
    assert suite.cases[0].tags == ("x", "y")
    assert suite.cases[1].slices == {"topic": "returns"}
    assert suite.datasets and len(next(iter(suite.datasets.values()))) == 64


def test_prompty_file_is_rendered(project: Project) -> None:
    project.write("suites/support.prompty", """
        ---
        name: support
        sample:
          company: Contoso
        ---
        system:
        You work for {{ company }}.

        user:
        {{ input }}
    """)
    suite_file = project.write("suites/p.yaml", """
        suite: p
        prompt: {prompty: support.prompty}
        cases: [{id: a, input: "Where is my order?"}]
    """)
    suite = load_yaml_suite(suite_file)
    assert suite is not None
    assert suite.cases[0].messages == (
        {"role": "system", "content": "You work for Contoso."},
        {"role": "user", "content": "Where is my order?"},
    )


def test_templates_run_in_a_sandbox(project: Project) -> None:
    suite_file = project.write("suites/evil.yaml", """
        suite: evil
        prompt:
          messages:
            - role: user
              content: "{{ input.__class__.__mro__[1].__subclasses__() }}"
        cases: [{id: a, input: x}]
    """)
    with pytest.raises(UsageError, match=r"unsafe|template error"):
        load_yaml_suite(suite_file)


def test_epochs_sample_with_temperature(project: Project) -> None:
    suite_file = project.write("suites/e.yaml", HEADER + "epochs: 3\ncases: [{id: a, input: x}]\n")
    suite = load_yaml_suite(suite_file)
    assert suite is not None and suite.epochs == 3 and suite.temperature > 0


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("suite: bad\nprompt: {messages: [{role: user, content: x}]\ncases: [\n", "bad.yaml:3: invalid YAML"),
        ("suite: bad\nprompt: {messages: [{role: user, content: x}]}\nevaluators: [no_such_thing]\n"
         "cases: [{id: a}]\n", "bad.yaml:3: evaluators: unknown evaluator 'no_such_thing'"),
        ("suite: bad\ncases: [{id: a}]\n", "bad.yaml:1: prompt: field required"),
        ("suite: bad\nprompt: {messages: [{role: user, content: x}]}\ncases:\n  - id: a\n  - id: a\n",
         "bad.yaml:5: cases[1].id: duplicate case id 'a'"),
        ("suite: bad\nprompt: {messages: [{role: user, content: x}]}\ncases:\n  - id: a\n  - input: no id\n",
         "bad.yaml:5: cases[1].id: case has no 'id'"),
        ("suite: bad\nprompt: {messages: [{role: robot, content: x}]}\ncases: [{id: a}]\n",
         "bad.yaml:2: prompt.messages[0].role:"),
        ("suite: bad\nprompt: {messages: [{role: user, content: x}]}\nepochs: 0\ncases: [{id: a}]\n",
         "bad.yaml:3: epochs: Input should be greater than or equal to 1"),
        ("suite: bad\nprompt: {messages: [{role: user, content: x}]}\nevaluatorz: []\ncases: [{id: a}]\n",
         "bad.yaml:3: evaluatorz: unknown field"),
        ("suite: bad\nprompt: {messages: [{role: user, content: x}]}\n"
         "evaluators: [{rouge_l: {treshold: 0.3}}]\ncases: [{id: a}]\n",
         "bad.yaml:3: evaluators.rouge_l.treshold: unknown parameter"),
        ("suite: bad\nprompt: {messages: [{role: user, content: '{{ nope }}'}]}\ncases:\n  - id: a\n",
         "bad.yaml:4: cases[0]: prompt template error for case 'a': 'nope' is undefined"),
        ("suite: bad\nprompt: {messages: [{role: user, content: x}]}\nslices: [topic]\ncases:\n  - id: a\n",
         "bad.yaml:5: cases[0].topic: case 'a' has no value for slice 'topic'"),
        ("suite: bad\nprompt: {messages: [{role: user, content: x}]}\ndataset: missing.jsonl\n",
         "bad.yaml:3: dataset: dataset 'missing.jsonl' not found"),
    ],
)
def test_malformed_suite_exits_4_with_file_line_and_field(mini: Project, body: str, expected: str) -> None:
    mini.write("suites/bad.yaml", body)
    code, err = _run(mini, "suites/bad.yaml")
    assert code == 4
    assert err.count("\n") == 0, "the error is one line"
    assert err.startswith("error: suites/bad.yaml") or "bad.yaml" in err
    assert expected in err, err


def test_dataset_row_without_id_names_the_dataset_line(mini: Project) -> None:
    mini.write("suites/d.jsonl", '{"id": "a", "input": "x"}\n{"input": "no id"}\n')
    mini.write("suites/bad.yaml", HEADER + "dataset: d.jsonl\n")
    code, err = _run(mini, "suites/bad.yaml")
    assert code == 4
    assert "suites/d.jsonl:2: row 2.id: case has no 'id'" in err


def test_duplicate_suite_names_are_refused(mini: Project) -> None:
    mini.write("suites/again.yaml", (mini.path / "suites/mini.yaml").read_text())
    code, err = _run(mini, "suites")
    assert code == 4 and "suite name 'mini' is also used by" in err


# --------------------------------------------------------------------------- discovery, selection


def test_discovery_walks_directories_like_pytest(project: Project) -> None:
    project.write("suites/a.yaml", HEADER + "cases: [{id: a, input: x}]\n")
    project.write("suites/sub/b.yml", HEADER.replace("suite: ds", "suite: ds2") + "cases: [{id: b, input: y}]\n")
    project.write("suites/_private/c.yaml", "suite: hidden\n")
    project.write("suites/.hidden/d.yaml", "suite: hidden\n")
    project.write("suites/data.jsonl", "{}\n")
    found = discover([project.path / "suites"], Config(root=project.path))
    assert [p.relative_to(project.path / "suites").as_posix() for p in found] == ["a.yaml", "sub/b.yml"]


def test_non_suite_yaml_is_skipped(mini: Project) -> None:
    mini.write("suites/notes.yaml", "title: not a suite\n")
    code, err = _run(mini, "suites")
    assert code == 0, err


def test_keyword_and_marker_selection(mini: Project) -> None:
    suite = load_yaml_suite(mini.path / "suites/mini.yaml")
    assert suite is not None
    ids = lambda cases: [c.id for c in cases]  # noqa: E731
    assert ids(select(suite.cases, keyword="refund")) == ["refund-1", "refund-2"]
    assert ids(select(suite.cases, keyword="refund and not receipt")) == ["refund-1"]
    assert ids(select(suite.cases, keyword="(ship or receipt)")) == ["refund-2", "ship-1"]
    assert ids(select(suite.cases, marker="shipping")) == ["ship-1"]
    assert ids(select(suite.cases, marker="refun")) == []  # -m matches whole tags only
    with pytest.raises(UsageError):
        Expression("refund and")


def test_run_with_k_selects_cases(mini: Project) -> None:
    result = mini.run("run", "--model", "replay:good.jsonl", "--out", "out", "-k", "refund")
    assert result.exit_code == 0, result.output
    assert [r["key"] for r in mini.read_record("out/results.json")["cases"]] == [
        "mini::refund-1", "mini::refund-2"]
