"""TRL glue: one place that turns gatekeeper's parameters into TRL trainer configs.

The trainers see the data in the order gatekeeper chooses (each epoch a permutation from a
generator seeded by ``seed``, read sequentially by the trainer), with the schedule the
hand-written loop had (AdamW, no weight decay, linear decay to zero without warm-up,
gradients clipped at 1.0), in float32 without gradient checkpointing (TRL's defaults
assume a GPU). Same seed, same data: same adapter, byte for byte, on the same machine.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.types import UsageError

if TYPE_CHECKING:
    from gatekeeper_hf.training_data import Encoded, Example
    from gatekeeper_hf.tuning import DpoParams, LoraParams


def total_steps(n_rows: int, hyper: LoraParams) -> int:
    """Optimizer steps: every epoch's rows in batches, capped by ``max_steps``."""
    steps = math.ceil(hyper.epochs * n_rows / hyper.batch_size)
    return min(steps, hyper.max_steps) if hyper.max_steps else steps


def row_order(n_rows: int, hyper: LoraParams, steps: int) -> list[int]:
    """Row indices in training order, ``steps × batch_size`` of them: each epoch a
    permutation from a torch generator seeded by ``seed``."""
    import torch

    generator = torch.Generator().manual_seed(hyper.seed)
    order: list[int] = []
    wanted = steps * hyper.batch_size
    while len(order) < wanted:
        order += torch.randperm(n_rows, generator=generator).tolist()
    return order[:wanted]


def common_args(hyper: LoraParams, scratch: Path, steps: int, device: str) -> dict[str, Any]:
    """TrainingArguments shared by every tuner: the old loop's optimiser and schedule."""
    return {
        "output_dir": str(scratch),
        "per_device_train_batch_size": hyper.batch_size,
        "gradient_accumulation_steps": 1,
        "learning_rate": hyper.learning_rate,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "optim": "adamw_torch",
        "max_steps": steps,
        "seed": hyper.seed,
        "data_seed": hyper.seed,
        "train_sampling_strategy": "sequential",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": device == "cpu",
        "disable_tqdm": True,
        "gradient_checkpointing": False,
        "bf16": False,
        "fp16": False,
        "dataloader_num_workers": 0,
    }


def silence(trainer: Any) -> Any:
    """Drop the callback that prints every step's logs to stdout (they go to provenance)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


class StepLog:
    """A TrainerCallback (made by :func:`step_log`) keeping every logged step's numbers."""

    rows: list[dict[str, float]]


def step_log() -> Any:
    from transformers import TrainerCallback

    class _StepLog(TrainerCallback, StepLog):
        def __init__(self) -> None:
            self.rows = []

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                self.rows.append({k: float(v) for k, v in logs.items() if isinstance(v, int | float)})

    return _StepLog()


def quiet_trl() -> None:
    """TRL and transformers warn about settings we chose on purpose (CPU, float32)."""
    import datasets
    import transformers

    hf_logging: Any = transformers.logging  # untyped in transformers
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=UserWarning, module=r"trl\..*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(trl|transformers|peft)\..*")


def summary(log: StepLog, steps: int, rows_seen: int, tokens: int, seconds: float) -> dict[str, Any]:
    """Steps, the loss of every step (each on its own batch, so noisy) and the throughput."""
    losses = [round(row["loss"], 6) for row in log.rows]
    return {
        "steps": steps,
        "examples_seen": rows_seen,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "losses": losses,
        "tokens": tokens,
        "train_seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else None,
        "trainer": "trl",
    }


def train_sft(
    model: Any, tokenizer: Any, encoded: Sequence[Encoded], hyper: LoraParams, scratch: Path, device: str
) -> dict[str, Any]:
    """Supervised fine-tuning with ``SFTTrainer`` on pre-tokenized rows whose labels are
    -100 outside assistant turns (so the loss is the mean over assistant tokens)."""
    quiet_trl()
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    steps = total_steps(len(encoded), hyper)
    order = row_order(len(encoded), hyper, steps)
    rows = [{"input_ids": encoded[i].input_ids, "labels": encoded[i].labels} for i in order]
    args = SFTConfig(**common_args(hyper, scratch, steps, device), max_length=hyper.max_length, packing=False,
                     dataset_num_proc=None)
    log = step_log()
    trainer = silence(SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                 processing_class=tokenizer, callbacks=[log]))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    model.eval()
    return summary(log, steps, len(rows), sum(len(r["input_ids"]) for r in rows), seconds)


def dpo_rows(examples: Sequence[Example]) -> list[dict[str, Any]]:
    """Conversational preference rows: the prompt's messages, each answer as an assistant turn."""
    return [
        {
            "prompt": list(e.messages),
            "chosen": [{"role": "assistant", "content": e.chosen}],
            "rejected": [{"role": "assistant", "content": e.rejected}],
        }
        for e in examples
    ]


def train_dpo(
    model: Any, tokenizer: Any, examples: Sequence[Example], hyper: DpoParams, scratch: Path, device: str
) -> dict[str, Any]:
    """DPO with ``DPOTrainer`` (sigmoid loss), the base model (adapter off) as the reference.

    Dropout stays on, as in the loop this replaced; log-probabilities are summed over the
    answer's tokens, end-of-turn marker included.
    """
    quiet_trl()
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    steps = total_steps(len(examples), hyper)
    order = row_order(len(examples), hyper, steps)
    rows = dpo_rows([examples[i] for i in order])
    args = DPOConfig(**common_args(hyper, scratch, steps, device), beta=hyper.beta, max_length=hyper.max_length,
                     loss_type=["sigmoid"], disable_dropout=False, precompute_ref_log_probs=False,
                     dataset_num_proc=None)
    log = step_log()
    trainer = silence(DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                 processing_class=tokenizer, callbacks=[log]))
    tokens = sum(len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"])
                 for r in trainer.train_dataset)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    model.eval()
    result = summary(log, steps, len(rows), tokens, seconds)
    accuracy = [row["rewards/accuracies"] for row in log.rows if "rewards/accuracies" in row]
    result["reward_accuracy_last"] = round(accuracy[-1], 4) if accuracy else None
    return result


def require_trl() -> None:
    """A clear UsageError when TRL is not installed (it is a dependency of gatekeeper-hf)."""
    try:
        import trl  # noqa: F401
    except ImportError:
        raise UsageError("the TRL library is not installed; pip install 'trl==1.16.0'", field="--tuner") from None


def train_grpo(model: Any, tokenizer: Any, scorer: Any, hyper: Any, scratch: Path, device: str) -> dict[str, Any]:
    """GRPO with ``GRPOTrainer``: each step samples ``num_generations`` completions for each
    of ``batch_size`` prompts (the reward suite's cases) and rewards them with ``scorer``."""
    quiet_trl()
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    steps = hyper.max_steps or math.ceil(hyper.epochs * len(scorer.cases) / hyper.batch_size)
    rows = [{"prompt": [dict(m) for m in case.messages], "case_index": i} for i, case in enumerate(scorer.cases)]
    args = common_args(hyper, scratch, steps, device) | {
        "per_device_train_batch_size": hyper.batch_size * hyper.num_generations,
    }
    del args["train_sampling_strategy"]  # GRPO samples prompt groups itself (seeded)
    config = GRPOConfig(**args, num_generations=hyper.num_generations,
                        max_completion_length=hyper.max_completion_length, temperature=hyper.temperature,
                        beta=hyper.beta, log_completions=False, use_vllm=False, remove_unused_columns=False)
    log = step_log()
    trainer = silence(GRPOTrainer(model=model, reward_funcs=[scorer], args=config,
                                  train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                  callbacks=[log]))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    model.eval()
    tokens = int(max((row.get("num_tokens", 0) for row in log.rows), default=0))
    result = summary(log, steps, steps * hyper.batch_size, tokens, seconds)
    rewards = [row["reward"] for row in log.rows if "reward" in row]
    result["reward_first"] = round(rewards[0], 4) if rewards else None
    result["reward_last"] = round(rewards[-1], 4) if rewards else None
    result["rewards"] = [round(r, 4) for r in rewards]
    result["completions_scored"] = steps * hyper.batch_size * hyper.num_generations
    return result


def train_on_policy_distillation(
    model: Any, teacher: Any, tokenizer: Any, prompts: Sequence[list[dict[str, str]]], hyper: Any, scratch: Path,
    device: str,
) -> dict[str, Any]:
    """On-policy distillation with ``DistillationTrainer``: the student samples completions of
    the prompts and is pulled towards the teacher's token distributions on them (generalized
    JSD with ``divergence_beta``)."""
    quiet_trl()
    from datasets import Dataset
    from trl import DistillationConfig, DistillationTrainer

    steps = total_steps(len(prompts), hyper)
    order = row_order(len(prompts), hyper, steps)
    rows = [{"prompt": list(prompts[i])} for i in order]
    args = common_args(hyper, scratch, steps, device)
    del args["train_sampling_strategy"]  # the trainer samples prompts itself (seeded)
    config = DistillationConfig(**args, max_completion_length=hyper.max_completion_length,
                                beta=hyper.divergence_beta, log_completions=False, use_vllm=False)
    log = step_log()
    trainer = silence(DistillationTrainer(model=model, teacher_model=teacher.eval(), args=config,
                                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                          callbacks=[log]))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    model.eval()
    tokens = int(max((row.get("num_tokens", 0) for row in log.rows), default=0))
    result = summary(log, steps, len(rows), tokens, seconds)
    result["method"] = "on_policy"
    return result
