"""Tokens per second of the ``hf`` provider's batched generation on SmolLM2-135M-Instruct.

Compares, in one run and on the same prompts (greedy, max_new_tokens 64):

1. the provider: ``HFModel.generate_sync`` with batch size 16 (our decoding loop:
   left padding, per-request settings, finished rows leave the batch);
2. a naive loop: ``model.generate`` one prompt at a time;
3. raw batched ``model.generate`` on the same left-padded batch.

Tokens are the generated tokens up to and including EOS. Prints tokens/s and the ratios.

    .venv/bin/python bench/hf_generation.py [--prompts 16] [--batch-size 16] [--max-new-tokens 64]
    .venv/bin/python bench/hf_generation.py --suite suites/support_assistant.yaml --prompts 32

``--suite`` takes the prompts of a suite instead (system prompt, retrieved passages, question):
prompts that share a prefix are where the provider's shared-prefix prefill pays.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOPICS = [
    "What is the capital of France?",
    "Write a haiku about rain.",
    "Explain photosynthesis in two sentences.",
    "How do I reset a forgotten password on a website?",
    "Give three tips for writing a clear email.",
    "What is the difference between a list and a tuple in Python?",
    "Summarise the plot of Romeo and Juliet.",
    "Why is the sky blue?",
    "Suggest a name for a bakery.",
    "How many legs does a spider have?",
    "What should I pack for a weekend hiking trip?",
    "Translate 'good morning' into Spanish.",
    "What causes the seasons on Earth?",
    "Describe a cat in one sentence.",
    "How can I ask my bank for a refund of a duplicate charge?",
    "List the planets of the solar system.",
]


Messages = list[dict[str, str]]


def prompts(n: int) -> list[Messages]:
    texts = [TOPICS[i % len(TOPICS)] + ("" if i < len(TOPICS) else f" (variant {i // len(TOPICS)})") for i in range(n)]
    return [[{"role": "user", "content": t}] for t in texts]


def suite_prompts(path: str, n: int) -> list[Messages]:
    """The first ``n`` cases of a suite, in the order the runner sends them (by prompt length)."""
    from pathlib import Path

    from gatekeeper.engine.suites import load_yaml_suite

    suite = load_yaml_suite(Path(path))
    assert suite is not None, f"{path} is not a suite"
    messages = sorted((list(c.messages) for c in suite.cases), key=lambda m: sum(len(x["content"]) for x in m))
    return messages[:n]


def load() -> Any:
    from gatekeeper_hf.provider import HFProvider

    from gatekeeper.types import Config, ModelSpec

    return HFProvider().load(ModelSpec.parse("hf:smollm2?device=cpu"), Config())


def generated_tokens(rows: Any, prompt_width: int, eos_ids: set[int]) -> int:
    """Generated tokens per row up to and including the first EOS, summed."""
    total = 0
    for row in rows.tolist():
        new = row[prompt_width:]
        ends = [i for i, t in enumerate(new) if t in eos_ids]
        total += ends[0] + 1 if ends else len(new)
    return total


def run_provider(model: Any, texts: list[Messages], max_new: int) -> tuple[int, float]:
    from gatekeeper.types import Case, GenerationRequest

    case = Case(id="bench", suite="bench", messages=())
    requests = [GenerationRequest(case=case, messages=tuple(t), max_tokens=max_new) for t in texts]
    started = time.perf_counter()
    generations = model.generate_sync(requests)
    elapsed = time.perf_counter() - started
    return sum(g.usage["completion_tokens"] for g in generations), elapsed


def run_naive(model: Any, texts: list[Messages], max_new: int) -> tuple[int, float]:
    import torch

    tokens = 0
    started = time.perf_counter()
    for text in texts:
        encoded = model.tokenizer([model.render_text(text)], add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            out = model.model.generate(**encoded, max_new_tokens=max_new, do_sample=False,
                                       pad_token_id=model.tokenizer.pad_token_id)
        tokens += generated_tokens(out, encoded["input_ids"].shape[1], model.eos_ids)
    return tokens, time.perf_counter() - started


def run_raw_batched(model: Any, texts: list[Messages], max_new: int, batch_size: int) -> tuple[int, float]:
    import torch

    tokens = 0
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        chunk = [model.render_text(t) for t in texts[start : start + batch_size]]
        encoded = model.tokenizer(chunk, add_special_tokens=False, padding=True, padding_side="left",
                                  return_tensors="pt")
        with torch.inference_mode():
            out = model.model.generate(**encoded, max_new_tokens=max_new, do_sample=False,
                                       pad_token_id=model.tokenizer.pad_token_id)
        tokens += generated_tokens(out, encoded["input_ids"].shape[1], model.eos_ids)
    return tokens, time.perf_counter() - started


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="best of N interleaved runs of each")
    parser.add_argument("--suite", help="take the prompts of this suite instead of short chat prompts")
    args = parser.parse_args()

    model = load()
    model.max_batch_size = args.batch_size
    model.render_text = lambda messages: model.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False)
    texts = suite_prompts(args.suite, args.prompts) if args.suite else prompts(args.prompts)
    run_provider(model, texts[:2], 4)  # warm-up

    runners = {
        "provider (batched)": lambda: run_provider(model, texts, args.max_new_tokens),
        "naive loop": lambda: run_naive(model, texts, args.max_new_tokens),
        "raw batched generate": lambda: run_raw_batched(model, texts, args.max_new_tokens, args.batch_size),
    }
    # Interleaved repeats, best of each: the machine is shared, and a burst of load from
    # elsewhere should not land on one method only.
    runs: dict[str, list[tuple[int, float]]] = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, runner in runners.items():
            runs[name].append(runner())
    results = {name: max(r, key=lambda run: run[0] / run[1]) for name, r in runs.items()}

    source = f" of {args.suite}" if args.suite else ""
    print(f"SmolLM2-135M-Instruct, {args.prompts} prompts{source}, batch {args.batch_size}, "
          f"max_new_tokens {args.max_new_tokens}, greedy, torch threads {torch.get_num_threads()}, "
          f"best of {args.repeats} interleaved")
    rate = {name: tokens / seconds for name, (tokens, seconds) in results.items()}
    for name, (tokens, seconds) in results.items():
        print(f"{name:<22} {tokens:>5} tokens {seconds:>7.2f} s {rate[name]:>8.1f} tokens/s")
    print(f"provider / naive loop:           {rate['provider (batched)'] / rate['naive loop']:.2f}x")
    print(f"provider / raw batched generate: {rate['provider (batched)'] / rate['raw batched generate']:.2f}x")


if __name__ == "__main__":
    main()
