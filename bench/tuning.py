"""LoRA SFT on the demo data: the TRL-based ``lora`` tuner against the hand-written loop it replaced.

Same run, same machine, same base (SmolLM2-135M-Instruct, float32, CPU), same adapter
(rank 8 on q_proj/v_proj, seed 0), same rows in the same order (each epoch a permutation
seeded by ``seed``), same schedule (AdamW, learning rate 5e-4 decaying linearly to zero,
gradients clipped at 1.0). Prints each step's loss from both and the training throughput
(tokens of the batches, prompt and answer, per second of training; model loading excluded).

    python bench/tuning.py                 # 4 steps of 4 conversations, as `make demo`
    python bench/tuning.py --steps 8 --order trl-first
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import legacy_lora_loop
from gatekeeper_hf.loading import (
    deterministic_torch,
    load_base_model,
    load_tokenizer,
    materialize,
    resolve_source,
)
from gatekeeper_hf.training_data import encode_conversation, read_sft_examples
from gatekeeper_hf.trl_training import train_sft
from gatekeeper_hf.tuning import LoraParams, LoraTuner

ROOT = Path(__file__).resolve().parent.parent


def fresh_model(directory: Path, hyper: LoraParams) -> object:
    model = load_base_model(directory)
    return LoraTuner()._with_adapter(model, hyper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=ROOT / "suites/training/support_sft.jsonl")
    parser.add_argument("--order", choices=["legacy-first", "trl-first"], default="legacy-first")
    args = parser.parse_args()

    import torch

    hyper = LoraParams(seed=args.seed, max_steps=args.steps)
    cache = Path(os.environ.get("GATEKEEPER_HF_CACHE", Path.home() / ".cache/gatekeeper/hf"))
    directory = materialize(resolve_source("smollm2", ROOT), cache)
    tokenizer = load_tokenizer(directory)
    examples = read_sft_examples(args.data)
    encoded = [encode_conversation(tokenizer, e.messages, hyper.max_length, f"{args.data}:{e.line}")
               for e in examples]
    print(f"data: {len(encoded)} conversations, {sum(len(e.input_ids) for e in encoded)} tokens; "
          f"{args.steps} steps of {hyper.batch_size}; torch threads {torch.get_num_threads()}")

    results: dict[str, dict[str, object]] = {}
    runs = ["legacy", "trl"] if args.order == "legacy-first" else ["trl", "legacy"]
    for name in runs:
        cpu_started = time.process_time()
        with deterministic_torch(hyper.seed):
            model = fresh_model(directory, hyper)
            if name == "legacy":
                out = legacy_lora_loop.train(
                    model, [(e.input_ids, e.labels) for e in encoded],
                    pad_id=tokenizer.pad_token_id, learning_rate=hyper.learning_rate, batch_size=hyper.batch_size,
                    epochs=1, max_steps=args.steps, seed=hyper.seed,
                )
                results[name] = {"losses": out["losses"], "tokens": out["tokens"], "seconds": out["seconds"]}
            else:
                with tempfile.TemporaryDirectory() as scratch:
                    out = train_sft(model, tokenizer, encoded, hyper, Path(scratch), "cpu")
                results[name] = {"losses": out["losses"], "tokens": out["tokens"], "seconds": out["train_seconds"]}
        results[name]["cpu"] = time.process_time() - cpu_started  # load + train: CPU seconds of this process
        print(f"{name}: done in {results[name]['seconds']:.1f} s", flush=True)

    legacy, trl = results["legacy"], results["trl"]
    print("\n| step | hand-written loop | TRL SFTTrainer | difference |")
    print("|---:|---:|---:|---:|")
    for i, (a, b) in enumerate(zip(legacy["losses"], trl["losses"], strict=True), 1):  # type: ignore[call-overload]
        print(f"| {i} | {a:.4f} | {b:.4f} | {b - a:+.4f} |")
    rate = {k: float(v["tokens"]) / float(v["seconds"]) for k, v in results.items()}  # type: ignore[arg-type]
    print("\n| trainer | tokens | training s (wall) | tokens/s (wall) | CPU s (load + train) |")
    print("|---|---:|---:|---:|---:|")
    for k in runs:
        r = results[k]
        print(f"| {k} | {r['tokens']} | {float(r['seconds']):.1f} | {rate[k]:.1f} | {float(r['cpu']):.1f} |")  # type: ignore[arg-type]
    print(f"\nTRL / hand-written throughput (wall): {rate['trl'] / rate['legacy']:.2f}x; "
          f"CPU seconds TRL / hand-written: {float(results['trl']['cpu']) / float(results['legacy']['cpu']):.2f}")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
