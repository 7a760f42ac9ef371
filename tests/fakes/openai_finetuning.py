"""The fake's fine-tuning routes now ship in the package: gatekeeper/devtools/fake_openai_finetuning.py."""

from gatekeeper.devtools.fake_openai_finetuning import *  # noqa: F403
