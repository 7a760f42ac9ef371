"""The hand-written LoRA SFT loop that gatekeeper-hf used before it moved to TRL (issue 21).

Kept here, and only here, as the baseline of ``bench/tuning.py``: the same data, seed,
schedule and adapter trained by this loop and by the TRL-based ``lora`` tuner, so their
loss curves and training throughput are compared in one run on one machine. It is the
plugin's former ``LoraTuner.train`` with its helpers, unchanged apart from being gathered
into one module.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

IGNORE_INDEX = -100


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int, device: str) -> dict[str, Any]:
    """Right-pad a batch of (ids, labels): ids with ``pad_id``, labels with -100, and the mask."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids_t = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels_t = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, labels) in enumerate(rows):
        n = len(ids)
        ids_t[i, :n] = torch.tensor(ids)
        labels_t[i, :n] = torch.tensor(labels)
        mask[i, :n] = 1
    return {"input_ids": ids_t.to(device), "labels": labels_t.to(device), "attention_mask": mask.to(device)}


def causal_lm_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean cross-entropy over the labelled tokens, the output layer run only where labelled."""
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    body = getattr(base, getattr(base, "base_model_prefix", ""), None)
    if body is not None and body is not base:
        hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = base.get_output_embeddings()(hidden[:, :-1][mask])
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1][mask]
    return F.cross_entropy(logits.float(), labels[mask])


def schedule(n_examples: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    steps = epochs * math.ceil(n_examples / batch_size)
    return min(steps, max_steps) if max_steps else steps


def batches(n_examples: int, batch_size: int, seed: int, total_steps: int) -> list[list[int]]:
    """Index batches: each epoch a permutation from a generator seeded by ``seed``."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out: list[list[int]] = []
    while len(out) < total_steps:
        order = torch.randperm(n_examples, generator=generator).tolist()
        for start in range(0, n_examples, batch_size):
            out.append(order[start : start + batch_size])
    return out[:total_steps]


def train(
    model: Any,
    encoded: list[tuple[list[int], list[int]]],
    *,
    pad_id: int,
    learning_rate: float,
    batch_size: int,
    epochs: int,
    max_steps: int | None,
    seed: int,
    device: str = "cpu",
) -> dict[str, Any]:
    """AdamW on the adapter, linear decay to zero, gradient clipping at 1.0; returns the
    per-step losses, the labelled-and-context tokens seen and the time spent in the loop."""
    import torch

    total = schedule(len(encoded), batch_size, epochs, max_steps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / max(total, 1))
    model.train()
    losses: list[float] = []
    tokens = 0
    started = time.perf_counter()
    for indices in batches(len(encoded), batch_size, seed, total):
        rows = [encoded[i] for i in indices]
        tokens += sum(len(ids) for ids, _ in rows)
        loss = causal_lm_loss(model, collate(rows, pad_id, device))
        losses.append(float(loss.detach()))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return {"losses": losses, "tokens": tokens, "seconds": time.perf_counter() - started, "steps": total}
