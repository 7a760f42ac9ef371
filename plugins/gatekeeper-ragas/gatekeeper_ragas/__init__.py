"""gatekeeper-ragas: ragas metrics as gatekeeper evaluators and a hallucination detector.

Every LLM call ragas makes goes through gatekeeper's runner (cache, retries, rate limits,
cost) via :class:`gatekeeper_ragas.judge.RunnerJudge`; docs/ecosystem.md has the metric
table. ragas itself is imported only when a ragas metric is built, never at start-up.
"""

from __future__ import annotations

import os

# ragas sends usage analytics unless this is set, and reads it once (lru_cache) at its
# first event: it must be in the environment before ragas is imported, which is why it
# is set here, in the package every other module of the plugin is imported through.
os.environ["RAGAS_DO_NOT_TRACK"] = "true"

__all__: list[str] = []
