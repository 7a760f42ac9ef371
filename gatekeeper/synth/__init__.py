"""Synthetic evaluation cases and training data (``gatekeeper synth``, docs/synthetic.md).

From seed rows, personas and a coverage plan, a generator model writes structured rows
through the runner; filters drop invalid, duplicate, personal, memorized and
judge-rejected rows with counted reasons; every kept row carries its provenance; the
coverage report says per taxonomy cell what was planned, kept and short.

Modules: ``spec`` (personas, plan, schemas), ``seeds``, ``prompts``, ``generate`` (the
runner path, structured output and repair), ``conversation`` (multi-turn), ``filters``
(duplicates, diversity), ``privacy`` (PII, memorization), ``judge_filter``, ``provenance``,
``report``, ``outputs``, and ``pipeline`` (the use case the command calls).
"""
