"""A third-party-style plugin: one evaluator, one reporter, and a case-result counter.

It is installed into the test environment and found through the ``gatekeeper``
entry-point group, exactly as a plugin from PyPI would be.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gatekeeper import Evaluator, Reporter, hookimpl

SEEN: list[str] = []


class Shouty(Evaluator):
    name = "shouty"
    description = "1.0 when the output is written in capitals"

    def score(self, case, generation):  # type: ignore[no-untyped-def]
        ok = generation.text.isupper()
        return self.result(1.0 if ok else 0.0, reason="all capitals" if ok else "not all capitals",
                           passed=ok)


class CountReporter(Reporter):
    name = "example-counts"
    description = "counts.json: how many results each model produced"

    def write(self, record: dict[str, Any], out_dir: Path) -> Path:
        counts: dict[str, int] = {}
        for row in record["cases"]:
            counts[row["model"]] = counts.get(row["model"], 0) + 1
        path = out_dir / "counts.json"
        path.write_text(json.dumps(counts))
        return path


@hookimpl
def gatekeeper_register_evaluators(register):  # type: ignore[no-untyped-def]
    register(Shouty)


@hookimpl
def gatekeeper_register_reporters(register):  # type: ignore[no-untyped-def]
    register(CountReporter)


@hookimpl
def gatekeeper_case_result(result):  # type: ignore[no-untyped-def]
    SEEN.append(result.case.id)
