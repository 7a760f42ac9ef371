"""``gatekeeper signals summarize`` over millions of Parquet rows, next to pandas.

Writes ``--rows`` synthetic signals (default 10 million) in the flat Parquet layout of
``gatekeeper.signals.records`` — one column per field, flags as a list column, slice attributes
(topic, channel, locale) as columns — generated with numpy in chunks of a million rows,
two model versions (90 % / 10 % of traffic) with different acceptance rates.

Then, each in a fresh child process (peak memory is the child's own high-water RSS,
``VmHWM`` in ``/proc/self/status``, read when it is done; ``ru_maxrss`` would not do here,
because Linux carries the forking parent's peak over into the child):

* **gatekeeper**: :func:`gatekeeper.signals.summary.summarize`, the function the CLI's
  ``signals summarize`` calls (the source's lazy Polars scan, filters pushed down,
  ``group_by`` counts, Wilson intervals), per model version and per version × topic;
* **gatekeeper CLI**: the real ``gatekeeper signals summarize FILE --by topic --json``
  command, start-up included;
* **pandas**: the same summary written the usual way with pandas 2/3 (``read_parquet`` of
  the needed columns, ``groupby`` counts, ``explode`` for flags, the same Wilson
  intervals); its counts are checked against gatekeeper's.

Per run: seconds for the summary (in-process timing, imports excluded; the CLI row is wall
time), rows per second, peak RSS, and the ratios against pandas.

    .venv/bin/python bench/signals.py                  # the documented run: 10 M rows
    .venv/bin/python bench/signals.py --rows 1000000   # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 1_000_000
TOPICS = np.array(["returns", "billing", "shipping", "orders", "warranty", "loyalty", "account", "rentals"])
CHANNELS = np.array(["chat", "email", "web"])
LOCALES = np.array(["en-US", "en-CA", "en-GB"])
ROLES = np.array(["agent", "senior_agent", "customer"])
VERDICTS = np.array(["accepted", "edited", "rejected", "none"])
START_US = 1_793_577_600_000_000  # 2026-11-02T00:00:00Z in microseconds


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """Write ``rows`` signals to ``path`` in row groups of a million."""
    import polars as pl
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    try:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            is_v2 = rng.random(n) >= 0.9
            accept = np.where(is_v2, 0.55, 0.61)
            draw = rng.random(n)
            verdict_index = np.select([draw < 0.12, draw < 0.12 + 0.88 * accept,
                                       draw < 0.12 + 0.88 * (accept + (1 - accept) * 0.65)], [3, 0, 1], 2)
            rated = rng.random(n) < 0.3
            rating = np.where(rated, rng.integers(1, 6, n).astype(float), np.nan)
            flag_draw = rng.random(n)
            def pick(values: np.ndarray, index: np.ndarray) -> pl.Series:
                return pl.Series(values.tolist(), dtype=pl.String).gather(index)

            ids = pl.int_range(start, start + n, eager=True)
            frame = pl.DataFrame({
                "id": ("s" + ids.cast(pl.String)),
                "conversation_id": ("c" + (ids // 2).cast(pl.String)),
                "time": pl.Series(START_US + np.sort(rng.integers(0, 14 * 86_400_000_000, n))).cast(
                    pl.Datetime("us", "UTC")),
                "model_version": pick(np.array(["1", "2"]), is_v2.astype(np.int64)),
                "feedback_rating": pl.Series(rating, nan_to_null=True),
                "user_role": pick(ROLES, rng.choice(3, n, p=[0.66, 0.22, 0.12])),
                "consent_training": rng.random(n) > 0.12, "consent_evaluation": rng.random(n) > 0.06,
                "topic": pick(TOPICS, rng.integers(0, len(TOPICS), n)),
                "channel": pick(CHANNELS, rng.choice(3, n, p=[0.55, 0.35, 0.10])),
                "locale": pick(LOCALES, rng.choice(3, n, p=[0.78, 0.10, 0.12])),
                "_flag": np.select([flag_draw < 0.03, flag_draw < 0.035], [1, 2], 0),
            })
            frame = frame.with_columns(
                pl.lit("support-assistant").alias("model"),
                pl.lit('[{"role": "user", "content": "How long do I have to return boots?"}]').alias("messages"),
                pl.lit('["Items can be returned within 45 days."]').alias("context"),
                pl.lit("You have 45 days.").alias("answer"),
                pick(VERDICTS, verdict_index).alias("feedback_verdict"),
                pl.when(pl.col("_flag") == 1).then(pl.lit(["escalation"]))
                .when(pl.col("_flag") == 2).then(pl.lit(["safety"]))
                .otherwise(pl.lit([], dtype=pl.List(pl.String))).alias("flags"),
                pl.lit(None, dtype=pl.String).alias("feedback_edited_text"),
                pl.lit("standard-1y").alias("retention"),
            ).drop("_flag")
            table = frame.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=CHUNK)
    finally:
        if writer is not None:
            writer.close()


# --------------------------------------------------------------------------- children


def child_gatekeeper(path: str) -> dict[str, Any]:
    os.environ["GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    import polars  # noqa: F401  (imports are timed in neither child: the pandas one imports first too)
    import scipy.stats  # noqa: F401

    from gatekeeper.host.config import load_config
    from gatekeeper.host.plugins import PluginHost
    from gatekeeper.signals.summary import summarize

    registries = PluginHost(load_config(None)).registries
    started = time.perf_counter()
    summary = summarize(path, registries, by=["topic"])
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "counts": _counts(summary["groups"])}


def _counts(groups: list[dict[str, Any]]) -> dict[str, list[int]]:
    """A comparable digest: per (version, topic) the signal, verdict and flag counts."""
    out = {}
    for g in groups:
        key = f"{g['model_version']}|{g['slice'].get('topic', '')}"
        flags = [g["flag_rates"].get(f, {"k": 0})["k"] for f in ("escalation", "safety")]
        out[key] = [g["signals"], g["with_feedback"], g["acceptance_rate"]["k"], g["edit_rate"]["k"],
                    g["rejection_rate"]["k"], g["rating"]["n"], *flags]
    return out


def child_pandas(path: str) -> dict[str, Any]:
    import pandas as pd
    from scipy import stats

    def wilson(k: int, n: int) -> tuple[float | None, float | None]:
        if n == 0:
            return None, None
        ci = stats.binomtest(int(k), int(n)).proportion_ci(0.95, method="wilson")
        return float(ci.low), float(ci.high)

    started = time.perf_counter()
    df = pd.read_parquet(path, columns=["model", "model_version", "feedback_verdict", "feedback_rating", "flags",
                                        "topic"])
    df["with_feedback"] = df["feedback_verdict"] != "none"
    for verdict in ("accepted", "edited", "rejected"):
        df[verdict] = df["feedback_verdict"] == verdict
    groups = []
    for keys in (["model", "model_version"], ["model", "model_version", "topic"]):
        agg = df.groupby(keys).agg(
            signals=("feedback_verdict", "size"), with_feedback=("with_feedback", "sum"),
            accepted=("accepted", "sum"), edited=("edited", "sum"), rejected=("rejected", "sum"),
            rating_n=("feedback_rating", "count"), rating_mean=("feedback_rating", "mean"),
            rating_std=("feedback_rating", "std"),
        ).reset_index()
        flags = df[[*keys, "flags"]].explode("flags").dropna(subset=["flags"])
        flag_counts = flags.groupby([*keys, "flags"]).size().to_dict()
        for row in agg.itertuples(index=False):
            key = tuple(getattr(row, k) for k in keys)
            n, fb = int(row.signals), int(row.with_feedback)
            group = {
                "model_version": row.model_version, "slice": {"topic": row.topic} if "topic" in keys else {},
                "signals": n, "with_feedback": fb,
                "acceptance_rate": {"k": int(row.accepted), "ci": wilson(row.accepted, fb)},
                "edit_rate": {"k": int(row.edited), "ci": wilson(row.edited, fb)},
                "rejection_rate": {"k": int(row.rejected), "ci": wilson(row.rejected, fb)},
                "rating": {"n": int(row.rating_n), "mean": row.rating_mean},
                "flag_rates": {f: {"k": int(flag_counts.get((*key, f), 0)),
                                   "ci": wilson(flag_counts.get((*key, f), 0), n)} for f in ("escalation", "safety")},
            }
            groups.append(group)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "counts": _counts(groups)}


# --------------------------------------------------------------------------- parent


def peak_rss_mib() -> float:
    """This process's high-water resident set size (``VmHWM``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def measure(argv: list[str]) -> dict[str, Any]:
    """Run a child that prints one JSON line (its timing and its own ``ru_maxrss``)."""
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:2])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    last = [line for line in proc.stdout.splitlines() if line.startswith("{")][-1]
    result: dict[str, Any] = json.loads(last)
    result["wall_s"] = wall
    return result


def run_child(kind: str, path: str) -> dict[str, Any]:
    """The child runs under a small runner so the parent gets its own rusage."""
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import signals as bench; r = bench.child_{kind}({path!r}); "
            "r['peak_rss_mib'] = bench.peak_rss_mib(); print(json.dumps(r))")
    return measure([sys.executable, "-c", code])


def run_cli(path: str) -> dict[str, Any]:
    code = (f"import io, json, sys, time, contextlib; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "import signals as bench; from gatekeeper.cli import main; t = time.perf_counter(); "
            "out = io.StringIO(); ctx = contextlib.redirect_stdout(out); ctx.__enter__(); "
            f"rc = main(['signals', 'summarize', {path!r}, '--by', 'topic', '--json']); "
            "ctx.__exit__(None, None, None); "
            "s = time.perf_counter() - t; "
            "print(json.dumps({'rc': rc, 'seconds': s, 'peak_rss_mib': bench.peak_rss_mib()}))")
    env_code = "import os; os.environ['GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD'] = '1'; " + code
    return measure([sys.executable, "-c", env_code])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, help="where to write the Parquet file (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    args = parser.parse_args(argv)
    folder = args.out or Path(tempfile.mkdtemp(prefix="gk-signals-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"signals-{args.rows}.parquet"
    started = time.perf_counter()
    if not path.exists():
        generate(path, args.rows)
    print(f"data: {args.rows:,} rows, {path.stat().st_size / 2**20:.0f} MiB Parquet, "
          f"written in {time.perf_counter() - started:.1f} s ({path})")
    results = {"gatekeeper": run_child("gatekeeper", str(path)), "pandas": run_child("pandas", str(path)),
               "gatekeeper CLI": run_cli(str(path))}
    same = results["gatekeeper"]["counts"] == results["pandas"]["counts"]
    print(f"counts agree between gatekeeper and pandas: {same}")
    base = results["pandas"]
    print("\n| run | summary s | rows/s | peak RSS MiB | time vs pandas | memory vs pandas |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        seconds = r["seconds"]
        print(f"| {name} | {seconds:.2f} | {args.rows / seconds:,.0f} | {r['peak_rss_mib']:.0f} | "
              f"{seconds / base['seconds']:.2f} | {r['peak_rss_mib'] / base['peak_rss_mib']:.2f} |")
    cli = results["gatekeeper CLI"]
    print(f"\nCLI process wall time, start-up included: {cli['wall_s']:.2f} s (exit code {cli.get('rc')})")
    if not args.keep and args.out is None:
        path.unlink()
        folder.rmdir()
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
