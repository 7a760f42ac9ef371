"""bench/large_suites.py as a module: its synthetic project (10 metrics, 12 topic slices,
clusters of 5) is the large-suite tests' fixture too."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench" / "large_suites.py"


def bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("large_suites_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
