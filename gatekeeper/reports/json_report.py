"""The JSON reporter: the record itself (``results.json`` or ``decision.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gatekeeper.kinds import Reporter
from gatekeeper.reports.common import record_body


class JsonReporter(Reporter):
    name = "json"
    description = "the full record: results.json (run) or decision.json (check)"

    def write(self, record: dict[str, Any], out_dir: Path) -> Path:
        path = out_dir / ("decision.json" if record["kind"] == "check" else "results.json")
        tmp = path.with_suffix(".json.tmp")
        text = json.dumps(record_body(record), indent=1, ensure_ascii=False, default=str)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        return path
