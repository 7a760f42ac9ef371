"""Load runs: ``load:`` suites, arrival processes, the asyncio driver and its measurements.

The gate's SLO guardrails read what this package measures (see docs/load.md)::

    suite = load_load_suite(Path("suites/support-load.yaml"), roots=[project])
    run = run_load(suite, {"candidate": cand, "baseline": base}, config)
    run.measurements   # one Measurement per request
"""

from __future__ import annotations

from gatekeeper.engine.load.driver import describe_step, run_load, run_load_async
from gatekeeper.engine.load.measurements import STATUSES, LoadRun, Measurement, RequestFailed, Status, Step
from gatekeeper.engine.load.prompts import Prompt
from gatekeeper.engine.load.safety import CONFIRM_FLAG, check_safety
from gatekeeper.engine.load.schema import LoadSuite, LoadSuiteSchema, collect_load_suites, load_load_suite

__all__ = [
    "CONFIRM_FLAG", "STATUSES", "LoadRun", "LoadSuite", "LoadSuiteSchema", "Measurement", "Prompt", "RequestFailed",
    "Status", "Step", "check_safety", "collect_load_suites", "describe_step", "load_load_suite", "run_load",
    "run_load_async",
]
