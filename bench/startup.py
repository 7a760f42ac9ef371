"""Start-up cost of ``gatekeeper --help`` against ``python -c 'import pytest'`` in the same run.

``gatekeeper --help`` loads every installed plugin (entry points) and every command, so its
cost grows with the plugins installed; classes registered by import path are not imported
(docs/architecture.md, "Registering lazily"). Prints the median and the best of N runs of
each (wall and CPU seconds), their ratio, and what the --help process imported: the number
of modules and whether a heavy library is among them.

    .venv/bin/python bench/startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "numpy", "scipy", "pandas", "pyarrow", "yaml", "asyncio", "jinja2",
         "pydantic", "sqlite3", "ragas", "deepeval", "azure", "pyspark", "mlflow", "trl", "peft")

PROBE = (
    "import io, contextlib, sys, json\n"
    "from gatekeeper.cli import main\n"
    "with contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])\n"
    f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
    "print(json.dumps({'modules': len(sys.modules), 'heavy': heavy, "
    "'gatekeeper_modules': sorted(m for m in sys.modules if m.startswith('gatekeeper'))}))\n"
)


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    commands = {
        "gatekeeper --help": [sys.executable, "-m", "gatekeeper.cli", "--help"],
        "import pytest": [sys.executable, "-c", "import pytest"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(args.runs):  # interleaved, so load on a shared machine hits all alike
        for name, argv in commands.items():
            runs[name].append(timed(argv))
    print(f"{args.runs} runs each, interleaved (wall s / CPU s)")
    for name, samples in runs.items():
        walls, cpus = [w for w, _ in samples], [c for _, c in samples]
        print(f"  {name:20s} median {statistics.median(walls):.3f} / {statistics.median(cpus):.3f}   "
              f"best {min(walls):.3f} / {min(cpus):.3f}")
    ratio = statistics.median(c for _, c in runs["gatekeeper --help"]) / statistics.median(
        c for _, c in runs["import pytest"])
    print(f"  CPU ratio gatekeeper --help / import pytest: {ratio:.2f}")
    probe = json.loads(subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True,
                                      text=True).stdout.strip().splitlines()[-1])
    print(f"  --help imported {probe['modules']} modules, {len(probe['gatekeeper_modules'])} of gatekeeper "
          f"and its plugins; heavy among them: {', '.join(probe['heavy']) or 'none'}")


if __name__ == "__main__":
    main()
