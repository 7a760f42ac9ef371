"""pytest plugin: what batching the model calls of a session buys, against one run per item.

On a copy of the bundled suite (80 cases), with a `python:` model that answers after a
fixed latency (an endpoint stand-in; no network), each from a cold cache:

  gatekeeper run            the reference: one run over every case
  pytest                    the plugin: one batch per process through the runner
  pytest -n 2               pytest-xdist: each worker batches its share
  one run per item          what a plugin calling the runner per item would cost (the
                            same Session.run, once per case), measured in-process
  pytest (warm cache)       a re-run: no model call

plus the cost of --trace-plugins on `gatekeeper run` (replay model, warm cache).

    .venv/bin/python bench/pytest_plugin.py [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = '''
import asyncio, os

async def answer(messages, params):
    await asyncio.sleep(float(os.environ["BENCH_LATENCY_S"]))
    return "Please contact Northwind Customer Care."
'''


def project(root: Path) -> Path:
    (root / "suites").mkdir(parents=True)
    shutil.copy(REPO / "suites/support_assistant.yaml", root / "suites")
    shutil.copytree(REPO / "suites/data", root / "suites/data")
    shutil.copytree(REPO / "suites/recordings", root / "suites/recordings")
    (root / "latency_model.py").write_text(MODEL)
    return root


REPEAT = 3


def timed(cmd: list[str], root: Path, env: dict[str, str], cold: bool = True) -> float:
    """Best of REPEAT wall times (the machine is shared; the minimum is the least noisy)."""
    best = float("inf")
    for _ in range(REPEAT):
        if cold:
            shutil.rmtree(root / ".gatekeeper", ignore_errors=True)
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1800)
        best = min(best, time.perf_counter() - started)
        if done.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return best


def in_process(root: Path, spec: str, latency_s: float, *, per_case: bool) -> tuple[float, int]:
    """Session.run once per case (a naive plugin) or once for all; returns (seconds, runs)."""
    shutil.rmtree(root / ".gatekeeper", ignore_errors=True)
    os.environ["BENCH_LATENCY_S"] = str(latency_s)
    old = Path.cwd()
    os.chdir(root)
    sys.path.insert(0, str(root))
    try:
        from gatekeeper.engine.session import Session
        from gatekeeper.host.config import load_config
        from gatekeeper.host.plugins import PluginHost

        session = Session(load_config(), PluginHost(load_config()))
        suites = session.collect(["suites"])
        started = time.perf_counter()
        runs = 0
        batches = [[dataclasses.replace(s, cases=[c])] for s in suites for c in s.cases] if per_case else [suites]
        for batch in batches:
            session.run({spec: session.load_model(spec)}, batch, run_id=f"bench-{runs}", specs={spec: spec},
                        progress=False, close_models=False)
            runs += 1
        elapsed = time.perf_counter() - started
        session.close_models()
        return elapsed, runs
    finally:
        os.chdir(old)
        sys.path.remove(str(root))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()
    root = project(Path(tempfile.mkdtemp(prefix="gk-bench-pytest-")))
    env = {**os.environ, "BENCH_LATENCY_S": str(args.latency_ms / 1000), "PYTHONPATH": str(root)}
    spec = "python:latency_model:answer"
    py = sys.executable
    pytest_cmd = [py, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider", "--gatekeeper-model", spec]
    rows = [
        ("gatekeeper run", timed([py, "-m", "gatekeeper.cli", "run", "suites", "--model", spec, "--out", "out",
                                  "--no-progress"], root, env)),
        ("pytest (one batch per process)", timed(pytest_cmd, root, env)),
        ("pytest -n 2 (a batch per worker)", timed([*pytest_cmd, "-n", "2"], root, env)),
    ]
    for per_case in (False, True):
        seconds, runs = in_process(root, spec, args.latency_ms / 1000, per_case=per_case)
        rows.append((f"in-process: {runs} Session.run call(s)", seconds))
    rows.append(("pytest, warm cache (no model call)", timed(pytest_cmd, root, env, cold=False)))
    base = rows[0][1]
    print(f"80 cases, model latency {args.latency_ms:g} ms per call, cold cache, best of {REPEAT}\n")
    print(f"| {'how':<44} | {'wall s':>7} | {'vs gatekeeper run':>17} |")
    print(f"|{'-' * 46}|{'-' * 9}:|{'-' * 19}:|")
    for name, seconds in rows:
        print(f"| {name:<44} | {seconds:>7.2f} | {seconds / base:>16.2f}x |")

    replay = ["-m", "gatekeeper.cli", "run", "suites", "--model", "replay:suites/recordings/baseline.jsonl",
              "--out", "out-replay", "--no-progress"]
    timed([py, *replay], root, env)  # warm the cache
    plain = timed([py, *replay], root, env, cold=False)
    traced = timed([py, "-m", "gatekeeper.cli", "--trace-plugins", *replay[2:]], root, env, cold=False)
    print(f"\n--trace-plugins on `gatekeeper run` (replay, warm cache, best of 3): {plain:.2f} s plain, "
          f"{traced:.2f} s traced ({traced / plain:.2f}x)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
