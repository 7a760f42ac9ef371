"""Fixtures: a tiny randomly initialised Llama with a byte-level BPE tokenizer, built offline.

Everything but the ``slow`` tests runs on this model, so the suite takes seconds. The
tokenizer is trained here on a few sentences (no download); its chat template is ChatML,
like SmolLM2's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The capital of France is Paris. The capital of Germany is Berlin.",
    "Please open Settings and choose Billing to ask for a refund.",
    "Your order ships within two business days. Thanks for reaching out!",
    "What is the weather like today? It is sunny and warm.",
    "Reset your password from the login page, then sign in again.",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: uses the real embedded model (SmolLM2); runs in CI too")


def build_tokenizer(directory: Path) -> None:
    """Train a 400-token byte-level BPE on CORPUS and save it with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(directory)


def build_tiny_llama(directory: Path, *, hidden_size: int = 32, seed: int = 0) -> Path:
    """A 2-layer Llama with random weights and the tiny tokenizer, saved as a transformers dir."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    build_tokenizer(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session", autouse=True)
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep the plugin's disk cache (digests, dequantized GGUFs) out of the home directory."""
    cache = tmp_path_factory.mktemp("hf-cache")
    old = os.environ.get("GATEKEEPER_HF_CACHE")
    os.environ["GATEKEEPER_HF_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("GATEKEEPER_HF_CACHE", None)
    else:
        os.environ["GATEKEEPER_HF_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def other_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second base with other dimensions: adapters of one do not fit the other."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-48"), hidden_size=48, seed=1)


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sft_rows(n: int = 8) -> list[dict[str, object]]:
    """Support conversations whose answers all say the same thing (easy to learn)."""
    questions = ["How do I get a refund?", "Where is my order?", "What is the capital of France?",
                 "How do I reset my password?"]
    return [
        {
            "messages": [
                {"role": "user", "content": questions[i % len(questions)]},
                {"role": "assistant", "content": "Please open Settings and choose Billing."},
            ],
            "source": f"tickets-{i % 2}",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="session")
def sft_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "sft.jsonl", sft_rows())


ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TUNE_PARAMS = {"rank": 8, "alpha": 16, "learning_rate": 0.02, "epochs": 8, "batch_size": 4, "seed": 7,
               "dropout": 0.1, "target_modules": ALL_PROJECTIONS, "max_steps": None}


@dataclass(frozen=True)
class Helpers:
    """Data builders for the tests (conftest is not importable as a module under pytest 9)."""

    tune_params: dict[str, object]
    all_projections: list[str]
    write_jsonl: Callable[[Path, list[dict[str, object]]], Path]
    sft_rows: Callable[[int], list[dict[str, object]]]


@pytest.fixture(scope="session")
def helpers() -> Helpers:
    return Helpers(dict(TUNE_PARAMS), list(ALL_PROJECTIONS), write_jsonl, sft_rows)


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model: Path, sft_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter trained on the tiny model with the ``lora`` tuner."""
    from gatekeeper.types import Config, ModelSpec
    from gatekeeper_hf.tuning import LoraTuner

    out = tmp_path_factory.mktemp("adapter")
    LoraTuner().tune(ModelSpec("hf", str(tiny_model)), sft_data, out, dict(TUNE_PARAMS), Config(root=out))
    return out
