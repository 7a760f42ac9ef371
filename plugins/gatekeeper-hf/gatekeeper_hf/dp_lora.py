"""``dp-lora``: a LoRA adapter trained with differential privacy (DP-SGD, opacus), for a
generator whose training data is personal (docs/privacy.md).

Only the LoRA parameters are trained, so only they get per-sample gradients: each example's
gradient is clipped to ``max_grad_norm``, Gaussian noise of ``noise_multiplier ×
max_grad_norm`` is added to the sum, batches are drawn by Poisson sampling (each row with
probability batch_size / rows), and the RDP accountant turns the steps taken into ε at the
given δ. ε, δ and everything that decides them go into the adapter's provenance under
``training.dp``.

The loss is each example's mean over its own assistant tokens, then the mean over the batch:
HF's built-in loss averages over the batch's tokens, which would scale one example's
gradient by the other examples' lengths — a dependence DP-SGD's per-sample clipping assumes
away. On two CPU cores a step of 4 short conversations takes tens of seconds (per-sample
gradients): a run with a useful ε is an overnight job, not a CI one.

Needs ``opacus`` (``pip install llm-gatekeeper-hf[dp]``); without it the tuner says so.
"""

from __future__ import annotations

import importlib.metadata
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from gatekeeper.types import UsageError
from gatekeeper_hf.training_data import IGNORE_INDEX, Encoded
from gatekeeper_hf.tuning import LoraParams, LoraTuner, TuningInputs, TuningRun


class DpLoraParams(LoraParams):
    """Hyperparameters of ``dp-lora``: those of ``lora`` plus the DP-SGD ones. ``delta``
    defaults to 1 / (10 × rows), below the 1/rows a meaningful guarantee needs."""

    noise_multiplier: float = Field(1.0, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    delta: float | None = Field(None, gt=0, lt=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    max_length: int = Field(512, ge=8)


def _opacus() -> Any:
    try:
        import opacus
    except ImportError:
        raise UsageError("the dp-lora tuner needs opacus: pip install 'llm-gatekeeper-hf[dp]' "
                         "(opacus==1.6.0, with torch==2.13.0 already installed)", field="--tuner") from None
    return opacus


def _batch(rows: Sequence[Encoded], pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r.input_ids)] = torch.tensor(r.input_ids)
        labels[i, :len(r.labels)] = torch.tensor(r.labels)
        mask[i, :len(r.input_ids)] = 1
    return ids, mask, labels


def per_example_loss(model: Any, ids: Any, mask: Any, labels: Any) -> Any:
    """Mean next-token loss over each example's own labelled tokens, then over the batch."""
    import torch

    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1, :]
    target = labels[:, 1:]
    token = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                                              ignore_index=IGNORE_INDEX, reduction="none").view(target.shape)
    counted = (target != IGNORE_INDEX).sum(1).clamp(min=1)
    return ((token.sum(1) / counted).mean())


def train_dp(model: Any, tokenizer: Any, encoded: Sequence[Encoded], hyper: DpLoraParams) -> dict[str, Any]:
    """DP-SGD on the trainable (LoRA) parameters; returns the training summary with ``dp``."""
    opacus = _opacus()
    import torch
    from opacus import PrivacyEngine

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable or any("lora_" not in n for n, _ in trainable):
        raise UsageError("dp-lora trains the LoRA parameters only; the model has other trainable parameters",
                         field="params")
    n = len(encoded)
    delta = hyper.delta if hyper.delta is not None else 1.0 / (10 * n)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    ids, mask, labels = _batch(encoded, pad_id)
    dataset = torch.utils.data.TensorDataset(ids, mask, labels)
    generator = torch.Generator().manual_seed(hyper.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=min(hyper.batch_size, n), generator=generator)
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=hyper.learning_rate, weight_decay=0.0)
    engine = PrivacyEngine(accountant="rdp", secure_mode=False)
    model.train()
    private, optimizer, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=hyper.noise_multiplier,
        max_grad_norm=hyper.max_grad_norm, poisson_sampling=True, noise_generator=generator)
    per_epoch = math.ceil(n / hyper.batch_size)
    steps = min(hyper.epochs * per_epoch, hyper.max_steps) if hyper.max_steps else hyper.epochs * per_epoch
    losses: list[float] = []
    tokens = seen = taken = 0
    started = time.perf_counter()
    while taken < steps:
        for b_ids, b_mask, b_labels in loader:
            if taken >= steps:
                break
            taken += 1
            optimizer.zero_grad(set_to_none=True)
            if len(b_ids) == 0:  # Poisson sampling drew no row: nothing is released this step
                continue
            loss = per_example_loss(private, b_ids, b_mask, b_labels)
            loss.backward()
            optimizer.step()
            losses.append(round(float(loss.detach()), 6))
            seen += len(b_ids)
            tokens += int(b_mask.sum())
    seconds = time.perf_counter() - started
    model.eval()
    epsilon = float(engine.get_epsilon(delta)) if losses else 0.0
    # opacus wraps the module; the adapter is saved from the unwrapped peft model.
    for p in model.parameters():
        if hasattr(p, "grad_sample"):
            p.grad_sample = None
    return {
        "steps": taken, "examples_seen": seen, "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None, "losses": losses, "tokens": tokens,
        "train_seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else None,
        "trainer": "opacus-dp-sgd",
        "dp": {
            "epsilon": round(epsilon, 4), "delta": delta, "accountant": "rdp",
            "noise_multiplier": hyper.noise_multiplier,
            "max_grad_norm": hyper.max_grad_norm, "sample_rate": round(min(hyper.batch_size, n) / n, 6),
            "poisson_sampling": True, "steps": taken, "rows": n,
            "trainable_parameters": sum(p.numel() for _, p in trainable), "trained": "LoRA parameters only",
            "opacus": getattr(opacus, "__version__", None) or importlib.metadata.version("opacus"),
        },
    }


class DpLoraTuner(LoraTuner):
    """``lora`` with DP-SGD (opacus) instead of TRL's trainer; the same change type, so a
    policy that allows LoRA retraining allows it, and its provenance says ε and δ."""

    name = "dp-lora"
    Params = DpLoraParams

    def train(self, run: TuningRun, inputs: TuningInputs, scratch: Path) -> dict[str, Any]:
        hyper = run.params
        assert isinstance(hyper, DpLoraParams)
        return train_dp(run.model, run.tokenizer, inputs.payload, hyper)
