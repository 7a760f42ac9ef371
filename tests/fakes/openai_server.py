"""The fake OpenAI server now ships in the package (``gatekeeper serve-fake``): gatekeeper/devtools/fake_openai.py."""

from gatekeeper.devtools.fake_openai import *  # noqa: F403
