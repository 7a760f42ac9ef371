"""The ``lora`` (supervised) and ``dpo`` (preference) tuners: a LoRA adapter from a base and data.

Both check their hyperparameters against the policy's ``retraining.hyperparameters``
bounds before any work, train deterministically for a fixed seed (seeded torch,
deterministic algorithms, data order from a seeded generator), write the adapter with
peft's ``save_pretrained`` and a ``provenance.json`` that the gate and the audit trail read.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, ValidationError, field_validator

import gatekeeper.suites
from gatekeeper.kinds import Params, Tuner
from gatekeeper.types import ModelSpec, UsageError
from gatekeeper_hf.loading import (
    PROVENANCE_FILE,
    adapter_digest,
    deterministic_torch,
    load_base_model,
    load_tokenizer,
    materialize,
    resolve_source,
    source_digest,
)
from gatekeeper_hf.provider import parse_settings

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from gatekeeper.config import Config

ROLES = ("system", "user", "assistant")
IGNORE_INDEX = -100


class LoraParams(Params):
    """Hyperparameters of the ``lora`` tuner. The defaults bound a run to 8 optimizer steps
    of 4 conversations (about 2.5 minutes of two CPU cores for SmolLM2 on the demo's
    ~450-token support conversations); raise ``max_steps`` (or set it to None to run every
    epoch in full) when more time or a GPU is available."""

    rank: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)
    learning_rate: float = Field(5e-4, gt=0)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(8, ge=1)
    batch_size: int = Field(4, ge=1)
    seed: int = 0
    max_length: int = Field(1024, ge=8)

    @field_validator("target_modules", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """``--param target_modules=q_proj`` gives one string: read it as a list."""
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


class DpoParams(LoraParams):
    """Hyperparameters of the ``dpo`` tuner: those of ``lora`` plus ``beta``, the strength
    of the pull towards the reference model (the base with the adapter switched off)."""

    beta: float = Field(0.1, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(2, ge=1)
    """Pairs per step: each step runs 2 × batch_size sequences."""


# --------------------------------------------------------------------------- bounds


def parse_params(model: type[LoraParams], params: dict[str, Any]) -> LoraParams:
    """Validate tuner parameters; an unknown or ill-typed one is a UsageError naming it."""
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"])
        message = "unknown hyperparameter" if err["type"] == "extra_forbidden" else err["msg"]
        known = ", ".join(model.model_fields)
        raise UsageError(f"{message} (known: {known})", field=f"params.{name}") from None


def check_bounds(params: LoraParams, bounds: dict[str, Any] | None) -> dict[str, list[str]]:
    """Refuse hyperparameters outside the policy's bounds, before any training.

    ``bounds`` is the policy's ``retraining.hyperparameters`` mapping, or the whole
    ``retraining`` section (its ``hyperparameters`` and ``seed`` are used). Each bound is
    ``{min, max}``, ``{required: true}`` (must be given explicitly), ``{allowed: [...]}``
    or a list (the value, or every item of a list value, must be in it), or a scalar the
    value must equal. Returns the names checked and the names this tuner does not know.
    """
    rules = _bound_rules(bounds)
    checked: list[str] = []
    ignored: list[str] = []
    for name, rule in sorted(rules.items()):
        if name not in type(params).model_fields:
            ignored.append(name)
            continue
        _check_one(name, getattr(params, name), rule, name in params.model_fields_set)
        checked.append(name)
    return {"checked": checked, "ignored": ignored}


def _bound_rules(bounds: dict[str, Any] | None) -> dict[str, Any]:
    if not bounds:
        return {}
    if not isinstance(bounds, dict):
        raise UsageError("retraining bounds must be a mapping", field="retraining.hyperparameters")
    if "hyperparameters" in bounds:
        rules = dict(bounds.get("hyperparameters") or {})
        if "seed" in bounds and "seed" not in rules:
            rules["seed"] = bounds["seed"]
        return rules
    return dict(bounds)


def _check_one(name: str, value: Any, rule: Any, given: bool) -> None:
    where = f"retraining.hyperparameters.{name}"

    def refuse(what: str) -> UsageError:
        return UsageError(f"hyperparameter {name}={value!r} is outside the policy bound: {what}", field=where)

    if isinstance(rule, dict):
        if rule.get("required") and not given:
            raise UsageError(f"the policy requires hyperparameter {name!r} to be given explicitly", field=where)
        if "min" in rule and (value is None or value < rule["min"]):
            raise refuse(f"{name}.min = {rule['min']}")
        if "max" in rule and (value is None or value > rule["max"]):
            raise refuse(f"{name}.max = {rule['max']}" + (" (None means unlimited)" if value is None else ""))
        allowed = rule.get("allowed", rule.get("values"))
        if allowed is not None:
            _check_allowed(name, value, list(allowed), refuse)
    elif isinstance(rule, list):
        _check_allowed(name, value, rule, refuse)
    elif rule is not None and value != rule:
        raise refuse(f"{name} = {rule!r}")


def _check_allowed(name: str, value: Any, allowed: list[Any], refuse: Callable[[str], UsageError]) -> None:
    values = value if isinstance(value, list) else [value]
    outside = [v for v in values if v not in allowed]
    if outside:
        raise refuse(f"{name} must be in {allowed!r} ({outside[0]!r} is not)")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Example:
    """One training row, with the ``file:line`` it came from."""

    line: int
    source: str
    messages: list[dict[str, str]]
    """SFT: the whole conversation. DPO: the prompt."""
    chosen: str = ""
    rejected: str = ""


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; bad JSON is a UsageError at file:line."""
    if not path.is_file():
        raise UsageError("training data file not found", file=str(path))
    rows = list(gatekeeper.suites.read_jsonl(path))
    if not rows:
        raise UsageError("training data file has no rows", file=str(path))
    return rows


def _messages(value: Any, path: Path, line: int, field: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise UsageError("missing or empty list of messages", file=str(path), line=line, field=field)
    messages: list[dict[str, str]] = []
    for i, message in enumerate(value):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise UsageError(
                "each message needs a role (system, user or assistant) and a string content",
                file=str(path), line=line, field=f"{field}[{i}]",
            )
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def read_sft_examples(path: Path) -> list[Example]:
    """Rows ``{"messages": [...], "source": "..."}`` each with at least one assistant turn."""
    examples = []
    for line, row in read_jsonl(path):
        messages = _messages(row.get("messages"), path, line, "messages")
        if not any(m["role"] == "assistant" for m in messages):
            raise UsageError("the conversation has no assistant turn to learn from",
                             file=str(path), line=line, field="messages")
        examples.append(Example(line, str(row.get("source", "")), messages))
    return examples


def read_dpo_examples(path: Path) -> list[Example]:
    """Rows ``{"prompt": [messages] | str, "chosen": str, "rejected": str, "source": ...}``."""
    examples = []
    for line, row in read_jsonl(path):
        prompt = row.get("prompt")
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        messages = _messages(prompt, path, line, "prompt")
        for key in ("chosen", "rejected"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise UsageError("missing or empty answer", file=str(path), line=line, field=key)
        if row["chosen"] == row["rejected"]:
            raise UsageError("chosen and rejected are the same answer", file=str(path), line=line, field="rejected")
        examples.append(Example(line, str(row.get("source", "")), messages, row["chosen"], row["rejected"]))
    return examples


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- tokenization


@dataclass
class Encoded:
    """Token ids and labels (``-100`` where no loss is taken: everything but assistant turns)."""

    input_ids: list[int]
    labels: list[int]


def _render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]], prompt: bool) -> str:
    return str(tokenizer.apply_chat_template(list(messages), add_generation_prompt=prompt, tokenize=False))


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[dict[str, str]],
    max_length: int,
    where: str,
    *,
    last_turn_only: bool = False,
) -> Encoded:
    """Tokenize a conversation, labelling the tokens of assistant turns only (or of the
    last turn only, for preference pairs whose earlier turns are context).

    An assistant turn is the text the chat template adds between the conversation before
    it (with the generation prompt) and the conversation including it, end marker
    included, so the model also learns where to stop.
    """
    full = _render(tokenizer, messages, prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or (last_turn_only and i != len(messages) - 1):
            continue
        before = _render(tokenizer, messages[:i], prompt=True) if i else ""
        upto = _render(tokenizer, messages[: i + 1], prompt=False)
        if not full.startswith(upto) or not upto.startswith(before):
            raise UsageError(
                f"the chat template does not render turn {i} as a prefix of the conversation; "
                "cannot tell the assistant's tokens apart", file=where, field=f"messages[{i}]",
            )
        spans.append((len(before), len(upto)))
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])[:max_length]
    offsets = list(encoded["offset_mapping"])[:max_length]
    labels = [
        token if any(start <= begin < end for start, end in spans) else IGNORE_INDEX
        for token, (begin, _) in zip(ids, offsets, strict=True)
    ]
    if all(label == IGNORE_INDEX for label in labels):
        raise UsageError(f"no assistant token within max_length={max_length} tokens; raise max_length",
                         file=where, field="messages")
    return Encoded(ids, labels)


def collate(rows: Sequence[Encoded], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    """Right-pad a batch: ids with ``pad_id``, labels with -100, and the attention mask."""
    import torch

    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        ids[i, :n] = torch.tensor(row.input_ids)
        labels[i, :n] = torch.tensor(row.labels)
        mask[i, :n] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def labelled_logits(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits at the positions that predict a labelled token, those tokens, and their rows.

    The answers are a small part of long prompts, so the output layer (576 × 49152 for
    SmolLM2, a fifth of the model's work per token) runs only there. Models whose logits
    are post-processed (soft-capping, scaling) go through their own forward instead.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    rows = mask.nonzero()[:, 0]
    config = base.config
    plain_head = not getattr(config, "final_logit_softcapping", None) and getattr(config, "logit_scale", None) in (
        None, 1, 1.0)
    body = getattr(base, getattr(base, "base_model_prefix", ""), None)
    if plain_head and body is not None and body is not base:
        hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = base.get_output_embeddings()(hidden[:, :-1][mask])
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1][mask]
    return logits.float(), labels[mask], rows


def causal_lm_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the labelled tokens (what ``model(**batch).loss`` gives)."""
    import torch.nn.functional as F

    logits, targets, _ = labelled_logits(model, batch)
    return F.cross_entropy(logits, targets)


def sequence_logprobs(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of log-probabilities of the labelled tokens of each row (for DPO)."""
    import torch

    logits, targets, rows = labelled_logits(model, batch)
    picked = torch.log_softmax(logits, dim=-1).gather(1, targets.unsqueeze(-1)).squeeze(-1)
    return torch.zeros(batch["labels"].shape[0], dtype=picked.dtype, device=picked.device).index_add(0, rows, picked)


# --------------------------------------------------------------------------- tuners


@dataclass
class TuningRun:
    """What every tuner run needs: the base, its tokenizer and the peft model to train."""

    base: ModelSpec
    base_digest: str
    device: str
    tokenizer: Any
    model: Any
    params: LoraParams


class _AdapterTuner(Tuner):
    """Shared steps: parse and bound-check params, read data, load the base, train, save."""

    modification: ClassVar[str]
    Params: ClassVar[type[LoraParams]]

    def tune(
        self,
        base: ModelSpec,
        data: Path,
        out: Path,
        params: dict[str, Any],
        config: Config,
        bounds: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        hyper = parse_params(self.Params, params)
        bound_report = check_bounds(hyper, bounds)
        data = config.path(data)
        examples = self.read_examples(data)
        run = self._prepare(base, hyper, config)
        with deterministic_torch(hyper.seed):
            run.model = self._with_adapter(run.model, hyper)
            training = self.train(run, examples, str(data))
        out = config.path(out)
        out.mkdir(parents=True, exist_ok=True)
        run.model.save_pretrained(str(out))
        provenance = self._provenance(run, data, examples, out, bound_report, training)
        provenance["wall_time_s"] = round(time.perf_counter() - started, 2)
        (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return provenance

    def read_examples(self, path: Path) -> list[Example]:
        raise NotImplementedError

    def train(self, run: TuningRun, examples: list[Example], where: str) -> dict[str, Any]:
        raise NotImplementedError

    def _prepare(self, base: ModelSpec, hyper: LoraParams, config: Config) -> TuningRun:
        if base.provider != "hf":
            raise UsageError(f"the {self.name} tuner trains hf models, not {base.provider!r} ({base})",
                             field="base")
        settings = parse_settings(base, config)
        if settings.adapter is not None:
            raise UsageError("the base model spec must not carry an adapter; a new one is trained from the base",
                             field="base")
        source = resolve_source(base.name, config.root)
        digest = source_digest(source, settings.cache_root)
        directory = materialize(source, settings.cache_root)
        tokenizer = load_tokenizer(directory)
        model = load_base_model(directory, settings.dtype, settings.device)
        return TuningRun(base, digest, settings.device, tokenizer, model, hyper)

    def _with_adapter(self, model: Any, hyper: LoraParams) -> Any:
        from peft import LoraConfig, get_peft_model

        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [m for m in hyper.target_modules if m not in present]
        if missing:
            raise UsageError(f"target module {missing[0]!r} is not in the base model", field="params.target_modules")
        lora = LoraConfig(
            r=hyper.rank,
            lora_alpha=hyper.alpha,
            lora_dropout=hyper.dropout,
            target_modules=list(hyper.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():
            # peft calls a transformers property that transformers 5 deprecates; not ours to fix.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, lora)

    def _provenance(
        self,
        run: TuningRun,
        data: Path,
        examples: list[Example],
        out: Path,
        bound_report: dict[str, list[str]],
        training: dict[str, Any],
    ) -> dict[str, Any]:
        hyper = run.params
        return {
            "modification": self.modification,
            "tuner": self.name,
            "base_model": {"spec": str(run.base), "name": run.base.name, "digest": run.base_digest},
            "adapter": {
                "path": str(out),
                "rank": hyper.rank,
                "alpha": hyper.alpha,
                "target_modules": list(hyper.target_modules),
                "digest": adapter_digest(out),
            },
            "data": {
                "path": str(data),
                "sha256": file_sha256(data),
                "rows": len(examples),
                "sources": sorted({e.source for e in examples if e.source}),
            },
            "hyperparameters": hyper.model_dump(),
            "seed": hyper.seed,
            "bounds": bound_report,
            "training": training,
            "versions": _versions(),
        }


def _versions() -> dict[str, str]:
    versions = {}
    for dist in ("torch", "transformers", "peft", "gatekeeper-hf"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


def _schedule(n_examples: int, hyper: LoraParams) -> int:
    """Optimizer steps: epochs × batches per epoch, capped by ``max_steps``."""
    steps = hyper.epochs * math.ceil(n_examples / hyper.batch_size)
    return min(steps, hyper.max_steps) if hyper.max_steps else steps


def _batches(n_examples: int, hyper: LoraParams, total_steps: int) -> list[list[int]]:
    """Index batches for every step: each epoch a permutation from a generator seeded by ``seed``."""
    import torch

    generator = torch.Generator().manual_seed(hyper.seed)
    batches: list[list[int]] = []
    while len(batches) < total_steps:
        order = torch.randperm(n_examples, generator=generator).tolist()
        for start in range(0, n_examples, hyper.batch_size):
            batches.append(order[start : start + hyper.batch_size])
    return batches[:total_steps]


def _optimizer(model: Any, hyper: LoraParams, total_steps: int) -> tuple[Any, Any]:
    """AdamW over the adapter's parameters with a linear decay to zero."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=hyper.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / max(total_steps, 1))
    return optimizer, scheduler


def _step(model: Any, optimizer: Any, scheduler: Any, loss: torch.Tensor) -> None:
    import torch

    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


class LoraTuner(_AdapterTuner):
    """Supervised fine-tuning of a LoRA adapter on chat conversations (loss on assistant turns)."""

    name = "lora"
    modification = "lora_adapter_retrain"
    Params = LoraParams

    def read_examples(self, path: Path) -> list[Example]:
        return read_sft_examples(path)

    def train(self, run: TuningRun, examples: list[Example], where: str) -> dict[str, Any]:
        hyper = run.params
        encoded = [
            encode_conversation(run.tokenizer, e.messages, hyper.max_length, f"{where}:{e.line}") for e in examples
        ]
        total = _schedule(len(encoded), hyper)
        optimizer, scheduler = _optimizer(run.model, hyper, total)
        run.model.train()
        losses: list[float] = []
        for indices in _batches(len(encoded), hyper, total):
            batch = collate([encoded[i] for i in indices], run.tokenizer.pad_token_id, run.device)
            loss = causal_lm_loss(run.model, batch)
            losses.append(float(loss.detach()))
            _step(run.model, optimizer, scheduler, loss)
        run.model.eval()
        return _training_summary(losses, total, hyper)


class DpoTuner(_AdapterTuner):
    """Direct preference optimisation (Rafailov et al., 2023) of a LoRA adapter.

    Loss per pair: ``-log σ(β · ((log π(chosen) − log π_ref(chosen)) − (log π(rejected) −
    log π_ref(rejected))))``, log-probabilities summed over the answer's tokens; the
    reference is the base model, i.e. the same network with the adapter disabled.
    """

    name = "dpo"
    modification = "dpo_preference_tune"
    Params = DpoParams

    def read_examples(self, path: Path) -> list[Example]:
        return read_dpo_examples(path)

    def train(self, run: TuningRun, examples: list[Example], where: str) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        hyper = run.params
        assert isinstance(hyper, DpoParams)
        pairs = [self._encode_pair(run, e, f"{where}:{e.line}") for e in examples]
        reference: dict[int, torch.Tensor] = {}
        total = _schedule(len(pairs), hyper)
        optimizer, scheduler = _optimizer(run.model, hyper, total)
        run.model.train()
        losses: list[float] = []
        accuracies: list[float] = []
        for indices in _batches(len(pairs), hyper, total):
            rows = [pairs[i][0] for i in indices] + [pairs[i][1] for i in indices]
            logps = sequence_logprobs(run.model, collate(rows, run.tokenizer.pad_token_id, run.device))
            chosen, rejected = logps[: len(indices)], logps[len(indices) :]
            unseen = [i for i in indices if i not in reference]
            if unseen:
                reference |= self._reference_logprobs(run, pairs, unseen)
            ref = torch.stack([reference[i] for i in indices])
            margin = (chosen - ref[:, 0]) - (rejected - ref[:, 1])
            loss = -F.logsigmoid(hyper.beta * margin).mean()
            losses.append(float(loss.detach()))
            accuracies.append(float((margin > 0).float().mean()))
            _step(run.model, optimizer, scheduler, loss)
        run.model.eval()
        summary = _training_summary(losses, total, hyper)
        summary["reward_accuracy_last"] = round(accuracies[-1], 4) if accuracies else None
        return summary

    @staticmethod
    def _encode_pair(run: TuningRun, example: Example, where: str) -> tuple[Encoded, Encoded]:
        """The prompt with the chosen answer and with the rejected one, labelled on the answer."""
        pair = []
        for answer in (example.chosen, example.rejected):
            messages = [*example.messages, {"role": "assistant", "content": answer}]
            pair.append(encode_conversation(run.tokenizer, messages, run.params.max_length, where,
                                            last_turn_only=True))
        return pair[0], pair[1]

    @staticmethod
    def _reference_logprobs(
        run: TuningRun, pairs: list[tuple[Encoded, Encoded]], indices: list[int]
    ) -> dict[int, torch.Tensor]:
        """Log-probabilities (chosen, rejected) of the given pairs under the base model (the
        adapter switched off). Computed when a pair is first used: with ``max_steps`` most
        rows of a large file are never used, and their forward passes would be wasted."""
        import torch

        run.model.eval()
        rows = [pairs[i][0] for i in indices] + [pairs[i][1] for i in indices]
        with torch.no_grad(), run.model.disable_adapter():
            logps = sequence_logprobs(run.model, collate(rows, run.tokenizer.pad_token_id, run.device))
        run.model.train()
        n = len(indices)
        return {i: torch.stack([logps[j], logps[n + j]]) for j, i in enumerate(indices)}


def _training_summary(losses: list[float], total: int, hyper: LoraParams) -> dict[str, Any]:
    """Steps taken and the loss of every step (each on its own batch, so they are noisy)."""
    return {
        "steps": total,
        "examples_seen": total * hyper.batch_size,
        "loss_first": round(losses[0], 6) if losses else None,
        "loss_last": round(losses[-1], 6) if losses else None,
        "losses": [round(loss, 6) for loss in losses],
    }
