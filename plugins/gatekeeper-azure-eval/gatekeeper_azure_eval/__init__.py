"""gatekeeper-azure-eval: azure-ai-evaluation's evaluators as gatekeeper evaluators and a detector.

The prompty-based evaluators' chat calls go through gatekeeper's runner
(:mod:`gatekeeper_azure_eval.routing`); the NLTK-based ones read data built offline
(:mod:`gatekeeper_azure_eval.nltk_data`). See docs/ecosystem.md.
"""
