"""gatekeeper on Spark: signal tables, distributed evaluation and `classify` across executors."""

from __future__ import annotations
