"""gatekeeper-deepeval: deepeval's metrics as gatekeeper evaluators and detectors.

Every LLM call deepeval makes goes through gatekeeper's runner (cache, retries, rate
limits, cost) via :class:`gatekeeper_deepeval.judge.RunnerLLM`; see docs/ecosystem.md.
"""
