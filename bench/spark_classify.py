"""``gatekeeper classify`` at scale: rows per second on one machine (Polars) and on Spark
``local[1]`` / ``local[2]``, the LLM calls the embedding classifier saves, its agreement
with the LLM labels, and a projection to 100 million conversations on 100 executors.

What it does, in order:

1. writes ``--rows`` synthetic support conversations (default 1,000,000; two model versions
   whose topic mixes differ; each user message unique: a phrase, an item and an order
   number) to one Parquet file;
2. draws the stratified sample (``--sample``, default 2,000) from the whole table with the
   streaming Polars path, and has the LLM classifier label it through gatekeeper's runner;
   the "LLM" is the local fake OpenAI server answering by keyword with 8 % of answers
   replaced by a random topic (no paid endpoint is called);
3. trains the calibrated logistic regression on MiniLM embeddings and reports its
   agreement with the LLM on the held-out part;
4. labels ``--label-rows`` rows (default 5,000) of the table three ways, each in a fresh
   child process: Polars streaming in one process, Spark ``local[1]`` and ``local[2]``
   (``mapInPandas``, the embedding model loaded once per Python worker); the Spark
   figures exclude the session's start-up, which is printed apart. Rows per second of
   the labelling are extrapolated to the whole table (embedding dominates and is linear
   in rows: 1,000,000 rows at the measured rate is stated, not run, on a shared 2-core box);
5. the projection: 100 million rows on 100 executors of ``--cores-per-executor`` cores at
   the per-core rate measured on ``local[1]``, with ``--core-hour-usd`` and the LLM price
   assumptions printed next to the figures.

    .venv/bin/python bench/spark_classify.py                     # the documented run
    .venv/bin/python bench/spark_classify.py --rows 100000 --label-rows 2000   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def write_table(path: Path, rows: int, seed: int = 0) -> None:
    """Synthetic conversations in the flat layout, a million rows at a time."""
    import numpy as np
    import polars as pl
    import pyarrow.parquet as pq

    from tests.classify_support import ITEMS, LABELS, MIX, PHRASES

    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, 1_000_000):
        n = min(1_000_000, rows - start)
        ids = np.arange(start, start + n)
        version = np.where(ids % 2 == 0, "1", "2")
        topic = np.where(version == "1", rng.choice(4, n, p=MIX["1"]), rng.choice(4, n, p=MIX["2"]))
        phrase = rng.integers(0, 4, n)
        item = rng.integers(0, len(ITEMS), n)
        order = rng.integers(100_000, 999_999, n)
        questions = [PHRASES[LABELS[t]][p].format(item=ITEMS[i]) + f" (order {o})"
                     for t, p, i, o in zip(topic, phrase, item, order, strict=True)]
        frame = pl.DataFrame({
            "id": [f"s{i:09d}" for i in ids], "model": "support", "model_version": version,
            "time": pl.datetime_range(pl.datetime(2026, 3, 1, time_zone="UTC"), pl.datetime(2026, 3, 1, time_zone="UTC")
                                      + pl.duration(seconds=n - 1), "1s", eager=True).alias("time"),
            "messages": [json.dumps([{"role": "user", "content": q}]) for q in questions],
            "answer": "Thanks for reaching out, I will look into it.", "feedback_verdict": "none",
        })
        table = frame.to_arrow()
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=100_000)
    if writer is not None:
        writer.close()


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def train_classifier(table: Path, sample: int, work: Path) -> dict[str, Any]:
    """Steps 2 and 3: sample, LLM labels through the runner, training; returns figures."""
    import polars as pl

    from gatekeeper.engine.session import Session
    from gatekeeper.host.config import load_config
    from gatekeeper.host.plugins import PluginHost
    from gatekeeper.signals.classify.embedding import get_encoder, model_identity
    from gatekeeper.signals.classify.llm_labels import llm_label
    from gatekeeper.signals.classify.sample import stratified_sample
    from gatekeeper.signals.classify.spec import load_spec
    from gatekeeper.signals.classify.text_model import Labeller, row_text, train
    from tests.classify_support import ENV, judge, spec
    from tests.fakes import FakeOpenAIServer

    os.environ.update(ENV)
    config = load_config(None, work)
    session = Session(config, PluginHost(config), out=open(os.devnull, "w"))  # noqa: SIM115
    with FakeOpenAIServer(responder=judge(noise=0.08)) as server:
        (work / "classify.yaml").write_text(spec(server, sample=sample).replace("batch_size: 64", "batch_size: 256"))
        parsed = load_spec(work / "classify.yaml", session.registries)
        started = time.perf_counter()
        rows = list(stratified_sample(pl.scan_parquet(table), size=parsed.sample, strata=parsed.stratify,
                                      columns=["id", "model_version", "messages", "answer"],
                                      seed=0).iter_rows(named=True))
        sample_s = time.perf_counter() - started
        started = time.perf_counter()
        labels, usage = llm_label(session, rows, parsed.classifier, str(work / "classify.yaml"), ["topic"])
        llm_s = time.perf_counter() - started
    started = time.perf_counter()
    vectors = get_encoder().encode([row_text(r["messages"], r["answer"], "input") for r in rows], 256)
    classifier, agreement = train(vectors, labels, parsed.tasks(), target="input", holdout=parsed.holdout,
                                  seed=0, C=parsed.C, embedding=model_identity())
    train_s = time.perf_counter() - started
    labeller = Labeller(classifier, ["id", "model_version"], batch_size=256)
    (work / "labeller.pkl").write_bytes(pickle.dumps(labeller))
    return {"sample_rows": len(rows), "sample_s": sample_s, "llm_s": llm_s,
            "llm_calls": usage["rows"], "train_s": train_s, "agreement": agreement["topic"],
            "version": classifier.version}


def child(mode: str, table: str, labeller_path: str, out: str) -> None:
    """Step 4 in a fresh process: label ``table`` with ``mode`` and print the figures."""
    labeller = pickle.loads(Path(labeller_path).read_bytes())
    if mode == "polars":
        import polars as pl

        from gatekeeper.signals.classify.embedding import get_encoder
        from gatekeeper.signals.classify.label_local import label_local

        get_encoder()  # load the model before the clock starts, as a worker would have it
        started = time.perf_counter()
        written = label_local(pl.scan_parquet(table), labeller, out)
        seconds, startup = time.perf_counter() - started, 0.0
    else:
        from gatekeeper_spark.engine import SparkEngine
        from gatekeeper_spark.spark_session import get_spark

        from gatekeeper.signals.records import SignalFilter

        started = time.perf_counter()
        get_spark(mode, conf={"spark.sql.shuffle.partitions": "2",
                              "spark.sql.files.maxPartitionBytes": str(4 * 1024 * 1024)})
        startup = time.perf_counter() - started
        started = time.perf_counter()
        written = SparkEngine().label_table(table, SignalFilter(), labeller, out)
        seconds = time.perf_counter() - started
    print(json.dumps({"mode": mode, "rows": written["rows"], "seconds": seconds, "startup_s": startup,
                      "peak_rss_mb": peak_rss_mb()}))


def run_child(mode: str, table: Path, work: Path) -> dict[str, Any]:
    out = work / f"labelled-{mode.replace('[', '').replace(']', '')}" / ("t.parquet" if mode == "polars" else "")
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(table), str(work / "labeller.pkl"),
                           str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["out"] = str(out)
    return result


def truth_agreement(table: Path, labelled: str) -> float:
    """Share of rows whose label is the topic the conversation's keywords name (no noise)."""
    import polars as pl

    from tests.classify_support import keyword_topic

    frame = pl.scan_parquet(labelled).join(pl.scan_parquet(table).select("id", "messages"), on="id").collect()
    hits = sum(keyword_topic(m) == t for m, t in zip(frame["messages"], frame["topic"], strict=True))
    return hits / frame.height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--label-rows", type=int, default=5_000)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--cores-per-executor", type=int, default=4)
    parser.add_argument("--core-hour-usd", type=float, default=0.05, help="price of one vCPU-hour (assumption)")
    parser.add_argument("--llm-usd-per-call", type=float, default=0.00005,
                        help="one classifier call (~300 input + 30 output tokens at a small model's price)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="gk-classify-bench-") as tmp:
        work = Path(tmp)
        table, part = work / "conversations.parquet", work / "slice.parquet"
        started = time.perf_counter()
        write_table(table, args.rows)
        print(f"wrote {args.rows:,} conversations in {time.perf_counter() - started:.1f} s "
              f"({table.stat().st_size / 1e6:.0f} MB)")
        import polars as pl

        pl.scan_parquet(table).head(args.label_rows).sink_parquet(part)
        trained = train_classifier(table, args.sample, work)
        a = trained["agreement"]
        print(f"sample: {trained['sample_rows']} rows from {args.rows:,} in {trained['sample_s']:.1f} s; "
              f"LLM labels: {trained['llm_calls']} calls in "
              f"{trained['llm_s']:.1f} s; training {trained['train_s']:.1f} s")
        print(f"agreement with the LLM on {a['n']} held-out rows: accuracy {a['accuracy']:.3f}, macro-F1 "
              f"{a['macro_f1']:.3f}, kappa {a['kappa']:.3f}")
        results = [run_child(mode, part, work) for mode in ("polars", "local[1]", "local[2]")]
        base = results[0]["rows"] / results[0]["seconds"]
        print(f"\nlabelling {args.label_rows:,} rows (2 shared CPU cores; timings are noisy):")
        print(f"| engine | rows/s | vs Polars | time for {args.rows:,} rows (extrapolated) | start-up | peak RSS |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in results:
            rate = r["rows"] / r["seconds"]
            print(f"| {r['mode']} | {rate:,.0f} | {rate / base:.2f}x | {args.rows / rate / 60:,.1f} min | "
                  f"{r['startup_s']:.0f} s | {r['peak_rss_mb']:.0f} MB |")
        agree = truth_agreement(part, results[0]["out"])
        print(f"\nlabels matching the noise-free keyword topic on {args.label_rows:,} rows: {agree:.3f}")
        per_core = results[1]["rows"] / results[1]["seconds"]
        saved = 1_000_000 - args.sample
        print(f"LLM calls per million rows: {args.sample:,} (the sample) instead of 1,000,000: "
              f"{saved:,} saved ({saved / 1e6:.1%})")
        cores = 100 * args.cores_per_executor
        hours = 100_000_000 / (per_core * cores) / 3600
        print(f"projection, 100 M rows on 100 executors x {args.cores_per_executor} cores at {per_core:,.0f} "
              f"rows/s per core (local[1]): {hours:.2f} h, {hours * cores * args.core_hour_usd:,.0f} USD at "
              f"{args.core_hour_usd} USD per core-hour; the LLM on every row: "
              f"{100_000_000 * args.llm_usd_per_call:,.0f} "
              f"USD at {args.llm_usd_per_call} USD per call")


if __name__ == "__main__":
    main()
