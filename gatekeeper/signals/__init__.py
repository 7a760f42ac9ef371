"""Production signals: the ``Signal`` record and the reader over signal sources
(:mod:`.records`), rate summaries (:mod:`.summary`), curation into suites and training
sets (:mod:`.curation`) and classification of conversations (:mod:`.classify`).

The curation defaults live here, light to import, because the CLI shows them in ``--help``.
"""

DEFAULT_SALT = "gatekeeper-sequestration-v1"
"""Salt of the sequestration split: keep it fixed, or prompts move between the halves."""
DEFAULT_EVAL_FRACTION = 0.2
"""Share of prompts (by content hash) reserved for evaluation."""
DEFAULT_SOURCE_ID = "production-signals"
"""The data source id a built training set names (the policy's allowed_data_sources)."""
