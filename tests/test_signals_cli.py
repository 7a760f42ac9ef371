"""``gatekeeper signals`` from the command line: summaries, a suite that runs, training
data that ``gatekeeper tune`` vouches for in its provenance."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.signal_support import NO_AUTOLOAD, make_signal, write_jsonl, write_parquet

BUNDLED = Path(__file__).resolve().parents[1] / "suites" / "signals"
POLICIES = Path(__file__).resolve().parents[1] / "policies"


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval, written out (independent of the code under test)."""
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def small_history() -> list[dict]:
    v1 = ["accepted"] * 6 + ["edited", "edited", "rejected", "none"]
    v2 = ["accepted", "accepted", "rejected", "rejected", "rejected"]
    rows = []
    for i, verdict in enumerate(v1):
        rows.append(make_signal(i, verdict=verdict, version="1", topic="returns" if i < 5 else "billing",
                                rating={0: 5.0, 1: 4.0, 7: 2.0}.get(i), flags=["escalation"] if i == 8 else []))
    for j, verdict in enumerate(v2):
        rows.append(make_signal(20 + j, verdict=verdict, version="2", topic="billing"))
    return rows


@pytest.fixture
def history(project):
    write_jsonl(project.path / "signals.jsonl", small_history())
    return project


def run(project, *args):
    return project.run(*args, env=NO_AUTOLOAD)


def test_summarize_prints_rates_with_wilson_intervals(history):
    result = run(history, "signals", "summarize", "signals.jsonl")
    assert result.exit_code == 0, result.output
    low, high = wilson(6, 9)
    result.fnmatch_lines([
        "support-assistant version 1: 10 signals, 9 with feedback (90.0%)",
        "*slice*accepted*edited*rejected*rating*escalation*",
        f"*(all)*9*66.7%*{low * 100:4.1f}, {high * 100:4.1f}*22.2%*11.1%*3.67 (n=3)*10.0%*",
        "support-assistant version 2: 5 signals, 5 with feedback (100.0%)",
        "*(all)*5*40.0%*0.0%*60.0%*-*0.0%*",
        "rates: accepted/edited/rejected of the signals with feedback, flags of all signals; [[]95% Wilson interval]",
    ])


def test_summarize_json_by_slice_with_filters(history):
    result = run(history, "signals", "summarize", "signals.jsonl", "--by", "topic", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["schema"] == "gatekeeper.signals.records-summary/1"
    groups = {(g["model_version"], tuple(g["slice"].items())): g for g in summary["groups"]}
    assert set(groups) == {("1", ()), ("1", (("topic", "billing"),)), ("1", (("topic", "returns"),)),
                           ("2", ()), ("2", (("topic", "billing"),))}
    overall = groups[("1", ())]
    assert overall["acceptance_rate"]["k"] == 6 and overall["acceptance_rate"]["n"] == 9
    assert overall["acceptance_rate"]["low"] == pytest.approx(wilson(6, 9)[0])
    assert overall["rating"]["mean"] == pytest.approx(11 / 3)
    assert overall["flag_rates"]["escalation"]["k"] == 1
    assert groups[("1", (("topic", "returns"),))]["signals"] == 5
    # signal i is at 09:00 + i hours: from 12:00 on, version 1 has signals 3..9
    result = run(history, "signals", "summarize", "signals.jsonl", "--since", "2026-03-01T12:00:00Z",
                 "--model-version", "1", "--where", "topic=billing", "--json")
    [group] = json.loads(result.stdout)["groups"]
    assert (group["model_version"], group["signals"]) == ("1", 5)


def test_summarize_errors_are_usage_errors(history):
    result = run(history, "signals", "summarize", "signals.jsonl", "--by", "planet")
    assert result.exit_code == 4
    assert "--by: no field or attribute 'planet' in the signals (known:" in result.stderr
    result = run(history, "signals", "summarize", "signals.jsonl", "--where", "planet=mars")
    assert result.exit_code == 4 and "--where: no field or attribute 'planet'" in result.stderr
    write_parquet(history.path / "bad.parquet", small_history())
    import polars as pl

    frame = pl.read_parquet(history.path / "bad.parquet")
    frame = frame.with_columns(pl.when(pl.col("id") == "s3").then(pl.lit("meh")).otherwise(pl.col("feedback_verdict"))
                               .alias("feedback_verdict"))
    frame.write_parquet(history.path / "bad.parquet")
    result = run(history, "signals", "summarize", "bad.parquet")
    assert result.exit_code == 4
    assert "bad.parquet:4: feedback.verdict: Input should be 'accepted', 'edited', 'rejected' or 'none'" \
        in result.stderr
    assert run(history, "signals", "summarize", "signals.jsonl", "--since", "soon").exit_code == 4


def test_summarize_shows_the_bundled_canary_windows():
    from gatekeeper.signals.summary import summarize
    from tests.signal_support import builtin_registries

    registries = builtin_registries()
    for variant, worse in (("better", False), ("worse", True)):
        summary = summarize(str(BUNDLED / f"window2-{variant}.parquet"), registries)
        rates = {g["model_version"]: g["acceptance_rate"] for g in summary["groups"]}
        if worse:
            assert rates["2"]["high"] < rates["1"]["low"]
        else:
            assert rates["2"]["rate"] >= rates["1"]["rate"]


def test_built_suite_loads_and_runs_with_a_replay_model(history):
    grounded = "Items can be returned within 45 days."  # from the passage, so the grounding detector passes
    rows = [make_signal(i, verdict=("edited", "rejected", "accepted")[i % 3],
                        edited=grounded if i % 3 != 2 else None, topic=("returns", "billing")[i % 2])
            for i in range(300)]
    write_jsonl(history.path / "many.jsonl", rows)
    result = run(history, "signals", "build-suite", "many.jsonl", "--out", "suites/regression.yaml")
    assert result.exit_code == 0, result.output
    result.fnmatch_lines(["wrote suite 'regression': suites/regression.yaml (* cases in suites/regression.jsonl)",
                          "*reserved for training*", "*PII removed*", "*test set sha256 *"])
    cases = [json.loads(line) for line in (history.path / "suites/regression.jsonl").open()]
    by_signal = {r["id"]: r for r in rows}
    assert cases and all(c["expected"] == by_signal[c["signal_id"]]["feedback"]["edited_text"] for c in cases)
    assert {c["verdict"] for c in cases} == {"edited", "rejected"}
    assert all(c["topic"] in ("returns", "billing") and c["context"] for c in cases)
    history.write_jsonl("replay.jsonl", [{"id": c["id"], "output": c["expected"]} for c in cases])
    ran = run(history, "run", "suites/regression.yaml", "--model", "replay:replay.jsonl", "--out", "out",
              "--no-progress")
    assert ran.exit_code == 0, ran.output
    ran.fnmatch_lines(["*rouge_l*1.000*", "*token_f1*1.000*", "*grounding*0.000*"])
    record = history.read_record("out/results.json")
    assert len(record["cases"]) == len(cases)
    manifest = history.read_json("suites/regression.manifest.json")
    assert manifest["dataset_file"]["rows"] == len(cases)
    assert manifest["consent"] == "evaluation" and manifest["pii_scrubbed"] is True


def test_built_suite_hash_is_what_the_policy_pins(history):
    from gatekeeper.builtin.suite_loader import gatekeeper_load_suite
    from gatekeeper.gate.policy import SequesteredTestSet, check_sequestered, load_policy
    from gatekeeper.host.config import load_config

    write_jsonl(history.path / "many.jsonl", [make_signal(i, verdict="edited") for i in range(80)])
    assert run(history, "signals", "build-suite", "many.jsonl", "--out", "suites/reg.yaml").exit_code == 0
    manifest = history.read_json("suites/reg.manifest.json")
    sha = manifest["dataset_file"]["sha256"]
    assert manifest["policy_snippet"]["data_management"]["sequestered_test_sets"] == [{"suite": "reg", "sha256": sha}]
    policy = load_policy(POLICIES / "support-assistant.yaml")
    policy.data_management.sequestered_test_sets = [SequesteredTestSet(suite="reg", sha256=sha, max_reuse=2)]
    suite = gatekeeper_load_suite(path=history.path / "suites/reg.yaml", config=load_config(None, cwd=history.path))
    hashes = {"reg": [suite.hash, *suite.datasets.values()]}
    assert check_sequestered(policy, hashes, {"reg": 1}) == []
    assert "max_reuse" in check_sequestered(policy, hashes, {"reg": 2})[0]
    with (history.path / "suites/reg.jsonl").open("a") as fh:
        fh.write(json.dumps({"id": "extra", "input": "x", "system": "s", "topic": "t"}) + "\n")
    suite = gatekeeper_load_suite(path=history.path / "suites/reg.yaml", config=load_config(None, cwd=history.path))
    assert "changed" in check_sequestered(policy, {"reg": [suite.hash, *suite.datasets.values()]}, {})[0]


FAKE_TUNER = '''
import hashlib, json
from pathlib import Path
from gatekeeper import hookimpl
from gatekeeper.kinds import Tuner


class Copy(Tuner):
    """Records what it was given, like a real tuner's provenance (see gatekeeper-hf)."""
    name = "copy"

    def tune(self, base, data, out, params, config, bounds=None):
        rows = [json.loads(line) for line in Path(data).open()]
        out.mkdir(parents=True, exist_ok=True)
        provenance = {
            "modification": "lora_adapter_retrain", "tuner": self.name,
            "data": {"path": str(data), "sha256": hashlib.sha256(Path(data).read_bytes()).hexdigest(),
                     "rows": len(rows), "sources": sorted({r.get("source", "") for r in rows} - {""})},
        }
        (out / "provenance.json").write_text(json.dumps(provenance))
        return provenance


@hookimpl
def gatekeeper_register_tuners(register):
    register(Copy)
'''


def test_built_dataset_feeds_tune_with_its_provenance(history):
    from gatekeeper.gate.policy import check_scope, load_policy

    rows = [make_signal(i, verdict=("accepted", "edited", "rejected")[i % 3],
                        edited=f"Better {i}." if i % 3 else None) for i in range(120)]
    write_jsonl(history.path / "many.jsonl", rows)
    history.write("gatekeeper_plugins.py", FAKE_TUNER)
    built = run(history, "signals", "build-dataset", "many.jsonl", "--out", "data", "--source-id", "corrected-notes")
    assert built.exit_code == 0, built.output
    built.fnmatch_lines(["wrote data: * SFT examples (sft.jsonl, for the lora tuner), * preference pairs*"])
    sft = [json.loads(line) for line in (history.path / "data/sft.jsonl").open()]
    pairs = [json.loads(line) for line in (history.path / "data/preference.jsonl").open()]
    assert all(r["messages"][-1]["role"] == "assistant" and r["source"] == "corrected-notes" for r in sft)
    assert pairs and all(p["chosen"] != p["rejected"] and p["prompt"][-1]["role"] == "user" for p in pairs)
    by_id = {r["id"]: r for r in rows}
    assert all(p["rejected"] == by_id[p["signal_id"]]["answer"] for p in pairs)

    tuned = run(history, "tune", "--tuner", "copy", "--base", "hf:smollm2", "--data", "data/sft.jsonl",
                "--out", "runs/cand")
    assert tuned.exit_code == 0, tuned.output
    provenance = history.read_json("runs/cand/provenance.json")
    data = provenance["data"]
    assert data["sources"] == ["corrected-notes"]
    assert data["pii_scrubbed"] is True and data["consent_verified"] is True
    assert data["manifest"]["sha256"] and data["signal_sources"] == ["many.jsonl"]
    policy = load_policy(POLICIES / "clinical-notes.yaml")
    deviations = check_scope(policy, provenance).deviations
    assert not [d for d in deviations if d.startswith("data_management")], deviations
    bare = {**provenance, "data": {k: v for k, v in data.items() if k not in ("pii_scrubbed", "consent_verified")}}
    assert any("pii_scrubbing_required" in d for d in check_scope(policy, bare).deviations)

    (history.path / "data/sft.jsonl").write_text((history.path / "data/sft.jsonl").read_text() + "\n")
    changed = run(history, "tune", "--tuner", "copy", "--base", "hf:smollm2", "--data", "data/sft.jsonl",
                  "--out", "runs/cand2")
    assert changed.exit_code == 4
    assert "sft.jsonl changed after it was built" in changed.stderr


def test_summarize_compares_versions_with_newcombe_intervals(history):
    result = run(history, "signals", "summarize", "signals.jsonl", "--baseline-version", "1", "--json")
    assert result.exit_code == 0, result.output
    groups = {g["model_version"]: g for g in json.loads(result.stdout)["groups"]}
    assert "vs_baseline" not in groups["1"]
    vs = groups["2"]["vs_baseline"]
    assert vs["version"] == "1"
    (l1, u1), (l2, u2) = wilson(2, 5), wilson(6, 9)
    d = 2 / 5 - 6 / 9
    assert vs["acceptance_rate"]["delta"] == pytest.approx(d)
    assert vs["acceptance_rate"]["low"] == pytest.approx(d - math.hypot(2 / 5 - l1, u2 - 6 / 9))
    assert vs["acceptance_rate"]["high"] == pytest.approx(d + math.hypot(u1 - 2 / 5, 6 / 9 - l2))
    table = run(history, "signals", "summarize", "signals.jsonl", "--baseline-version", "1")
    table.fnmatch_lines(["*(all)*5*40.0%*", "*vs version 1*-26.7 *", "vs version 1: difference in percentage points*"])
    missing = run(history, "signals", "summarize", "signals.jsonl", "--baseline-version", "9")
    assert missing.exit_code == 4 and "no signals of version '9'" in missing.stderr


def test_built_dataset_is_what_the_hf_tuners_read(history):
    tuning = pytest.importorskip("gatekeeper_hf.tuning")
    rows = [make_signal(i, verdict=("accepted", "edited")[i % 2]) for i in range(60)]
    write_jsonl(history.path / "many.jsonl", rows)
    assert run(history, "signals", "build-dataset", "many.jsonl", "--out", "data").exit_code == 0
    manifest = history.read_json("data/manifest.json")
    sft = tuning.read_sft_examples(history.path / "data/sft.jsonl")
    pairs = tuning.read_dpo_examples(history.path / "data/preference.jsonl")
    assert len(sft) == manifest["files"]["sft.jsonl"]["rows"] > 0
    assert len(pairs) == manifest["files"]["preference.jsonl"]["rows"] > 0
    assert {e.source for e in sft} == {"production-signals"}
    assert all(p.messages[-1]["role"] == "user" and p.chosen.startswith("You have 45 days") for p in pairs)


def test_summarize_names_a_bad_time_in_a_csv(history):
    from tests.signal_support import write_csv

    path = write_csv(history.path / "s.csv", small_history())
    lines = path.read_text().splitlines()
    lines[5] = lines[5].replace("2026-03-01T13:00:00", "13 o'clock")
    path.write_text("\n".join(lines) + "\n")
    result = run(history, "signals", "summarize", "s.csv")
    assert result.exit_code == 4
    assert "s.csv:6: time: Input should be a valid datetime" in result.stderr
