"""gatekeeper-hf: local transformers models for gatekeeper.

Registers, through the ``gatekeeper`` entry-point group (module :mod:`gatekeeper_hf.plugin`):

- the model provider ``hf`` (``hf:smollm2``, ``hf:path/to/model?adapter=runs/a7``),
- the tuners ``lora`` (supervised LoRA fine-tuning), ``dpo`` (preference tuning), ``grpo``
  (reinforcement learning rewarded by a reward suite) and ``distill`` (a teacher's answers),
  all on TRL (docs/tuning.md),
- the evaluator ``semantic_similarity`` and the detectors ``embedding_grounding`` and
  ``self_consistency``.

torch and transformers are imported only when one of these runs, so loading the plugin
keeps ``gatekeeper --help`` fast. See ``docs/hf.md``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
