"""Development tools shipped with gatekeeper, outside the core layers.

``fake_openai`` is a local fake of the OpenAI HTTP API (the one the project's own tests use)
and ``fake_answers`` decides what it answers per model name; ``gatekeeper serve-fake``
(``builtin/commands/devtools.py``) runs them, so a user's CI can try a gate without a paid
key. Nothing in the core imports this package.
"""
