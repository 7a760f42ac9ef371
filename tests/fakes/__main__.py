"""``python -m tests.fakes``: serve the fake OpenAI API in the foreground (see openai_server.main)."""

from tests.fakes.openai_server import main

main()
