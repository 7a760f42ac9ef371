"""Local fakes of paid services, speaking their real wire protocols (see openai_server)."""

from tests.fakes.openai_server import FakeOpenAIServer

__all__ = ["FakeOpenAIServer"]
