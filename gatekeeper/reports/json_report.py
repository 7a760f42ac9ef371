"""The JSON reporter: the record itself (``results.json`` or ``decision.json``).

Format 2 (:mod:`gatekeeper.engine.record`): the per-case files beside it are written (or
copied, when re-rendering into another directory) before the record file that names them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gatekeeper.engine.record import write_record_file
from gatekeeper.kinds import Reporter


class JsonReporter(Reporter):
    name = "json"
    description = "the full record: results.json (run) or decision.json (check), with cases.jsonl beside it"

    def write(self, record: dict[str, Any], out_dir: Path) -> Path:
        return write_record_file(record, out_dir)
