"""Delta tables on one machine (delta-rs + Polars, no JVM): signals read from a Delta table
give the figures the same rows give from Parquet, and classify writes its labelled table
as a Delta commit."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.classify_support import ENV, conversations, judge, spec
from tests.fakes import FakeOpenAIServer
from tests.signal_support import flat_row, make_signal

from gatekeeper.testing import Project

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def test_delta_signals_summarize_like_parquet(tmp_path: Path) -> None:
    import polars as pl
    from deltalake import write_deltalake

    rows = [flat_row(make_signal(i, verdict=["accepted", "rejected", "none"][i % 3], version=str(1 + i % 2)))
            for i in range(30)]
    frame = pl.DataFrame(rows)
    frame.write_parquet(tmp_path / "signals.parquet")
    write_deltalake(str(tmp_path / "signals_delta"), frame.to_arrow())
    project = Project(tmp_path)

    delta = project.run("signals", "summarize", "delta:signals_delta", "--json")
    parquet = project.run("signals", "summarize", "signals.parquet", "--json")

    assert delta.exit_code == 0, delta.output
    on_delta, on_parquet = json.loads(delta.stdout), json.loads(parquet.stdout)
    assert on_delta["groups"] == on_parquet["groups"]
    assert [g["signals"] for g in on_delta["groups"]] == [15, 15]
    missing = project.run("signals", "summarize", "delta:nowhere")
    assert missing.exit_code == 4 and "nowhere" in missing.stderr and "_delta_log" in missing.stderr


def test_classify_reads_and_writes_delta_on_one_machine(tmp_path: Path) -> None:
    import polars as pl
    from deltalake import DeltaTable, write_deltalake

    write_deltalake(str(tmp_path / "conversations"), pl.DataFrame(list(conversations(300))).to_arrow())
    project = Project(tmp_path)
    with FakeOpenAIServer(responder=judge()) as server:
        project.write("classify.yaml", spec(server, sample=120))
        result = project.run("classify", "label", "delta:conversations", "--spec", "classify.yaml",
                             "--out", "delta:labelled", env=ENV)

    assert result.exit_code == 0, result.output
    table = pl.from_arrow(DeltaTable(str(tmp_path / "labelled")).to_pyarrow_table())
    assert table.height == 300 and {"id", "model_version", "topic", "topic_confidence",
                                    "classifier_version"} <= set(table.columns)
    assert project.read_json("labelled.classify.json")["labelled"]["format"] == "delta"
