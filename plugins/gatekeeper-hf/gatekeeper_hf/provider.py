"""The ``hf`` model provider: local transformers models, GGUF files and LoRA adapters.

Spec: ``hf:NAME[?adapter=DIR&device=cpu|cuda&batch_size=16&dtype=float32]`` where NAME is a
transformers directory, a ``.gguf`` file or ``smollm2``. Generation is batched with left
padding and a decoding loop of our own, so that every request keeps its own settings in a
batch: greedy at temperature 0, otherwise sampling from a ``torch.Generator`` seeded with
``seed + epoch`` (the same request gives the same text whatever else is in the batch),
its own ``max_tokens`` and its own stop strings. Finished rows leave the batch.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.kinds import Model, ModelProvider
from gatekeeper.types import Generation, GenerationRequest, ModelIdentity, ModelSpec, UsageError
from gatekeeper_hf import __version__
from gatekeeper_hf.loading import (
    DTYPES,
    ModelSource,
    apply_adapter,
    check_adapter_dir,
    default_cache_root,
    load_base_model,
    load_tokenizer,
    materialize,
    model_digest,
    resolve_source,
    source_digest,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from gatekeeper.config import Config

SPEC_PARAMS = ("adapter", "device", "batch_size", "dtype")
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class HFSettings:
    """What a spec's query and the ``providers.hf`` config section ask for."""

    adapter: Path | None
    device: str
    batch_size: int
    dtype: str
    cache_root: Path


def parse_settings(spec: ModelSpec, config: Config) -> HFSettings:
    """Validate the spec's parameters (unknown ones are errors), falling back to config."""
    defaults = dict(config.providers.get("hf", {}))
    unknown = sorted(set(spec.params) - set(SPEC_PARAMS))
    if unknown:
        raise UsageError(
            f"unknown parameter {unknown[0]!r} in model spec {spec} (known: {', '.join(SPEC_PARAMS)})",
            field="model",
        )
    merged = {k: str(v) for k, v in defaults.items() if k in SPEC_PARAMS} | spec.params
    device = merged.get("device") or _default_device()
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UsageError(f"device {device!r} is not cpu or cuda", field="model.device")
    if device.startswith("cuda") and not _cuda_available():
        raise UsageError("device 'cuda' was asked for but torch sees no CUDA device", field="model.device")
    try:
        batch_size = int(merged.get("batch_size") or DEFAULT_BATCH_SIZE)
    except ValueError:
        raise UsageError(f"batch_size {merged['batch_size']!r} is not an integer", field="model.batch_size") from None
    if batch_size < 1:
        raise UsageError("batch_size must be at least 1", field="model.batch_size")
    dtype = merged.get("dtype") or "float32"
    if dtype not in DTYPES:
        raise UsageError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}", field="model.dtype")
    adapter = None
    if merged.get("adapter"):
        adapter = config.path(merged["adapter"])
    return HFSettings(adapter, device, batch_size, dtype, default_cache_root(defaults))


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _default_device() -> str:
    return "cuda" if _cuda_available() else "cpu"


class HFProvider(ModelProvider):
    """Loads ``hf:`` specs: transformers directories, GGUF files, ``smollm2``; optional LoRA adapter."""

    name = "hf"
    description = "local transformers models (GGUF, SmolLM2 embedded), LoRA adapters via peft"

    def load(self, spec: ModelSpec, config: Config) -> HFModel:
        settings = parse_settings(spec, config)
        return load_model(spec, settings, config.root)


def load_model(spec: ModelSpec, settings: HFSettings, root: Path) -> HFModel:
    """Resolve, check, load and identify the model of ``spec``."""
    source = resolve_source(spec.name, root)
    base_digest = source_digest(source, settings.cache_root)
    if settings.adapter is not None:
        check_adapter_dir(settings.adapter, base_digest)
    directory = materialize(source, settings.cache_root)
    tokenizer = load_tokenizer(directory)
    model = load_base_model(directory, settings.dtype, settings.device)
    if settings.adapter is not None:
        model = apply_adapter(model, settings.adapter, merge=True)
    model.eval()
    identity = make_identity(spec, source, settings)
    return HFModel(model, tokenizer, identity, settings.device, settings.batch_size)


def make_identity(spec: ModelSpec, source: ModelSource, settings: HFSettings) -> ModelIdentity:
    """provider ``hf``, the name as given (plus the adapter), digest over weights + adapter."""
    import peft
    import torch
    import transformers

    name = spec.name if settings.adapter is None else f"{spec.name}+{settings.adapter.name}"
    details: dict[str, Any] = {
        "source": str(source.path),
        "adapter": str(settings.adapter) if settings.adapter else None,
        "dtype": settings.dtype,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }
    return ModelIdentity(
        provider="hf",
        name=name,
        digest=model_digest(source, settings.adapter, settings.cache_root),
        version=f"gatekeeper-hf {__version__}",
        details=details,
    )


@dataclass
class _Row:
    """One request being decoded: its tokens so far and how it ended."""

    request: GenerationRequest
    prompt_tokens: int
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    finish_reason: str = ""
    latency_ms: float = 0.0


class HFModel(Model):
    """A loaded causal LM; ``generate`` decodes a batch in a worker thread."""

    max_concurrency = 1  # one batch at a time: parallel batches only fight over the cores
    timeout_s = math.inf  # a running batch cannot be cancelled; never time it out and start another

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        identity: ModelIdentity,
        device: str = "cpu",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.identity = identity
        self.device = device
        self.max_batch_size = batch_size
        self._lock = threading.Lock()
        self.eos_ids = _eos_ids(model, tokenizer)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return await asyncio.to_thread(self.generate_sync, requests)

    def generate_sync(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Generate for any number of requests, ``max_batch_size`` at a time, shortest prompts
        together; results come back in the order of ``requests``."""
        prompts = [self.render(r) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: len(prompts[i]))
        results: list[Generation | None] = [None] * len(requests)
        with self._lock:
            for start in range(0, len(order), self.max_batch_size):
                chunk = order[start : start + self.max_batch_size]
                outputs = self._decode_batch([requests[i] for i in chunk], [prompts[i] for i in chunk])
                for i, generation in zip(chunk, outputs, strict=True):
                    results[i] = generation
        return [g for g in results if g is not None]

    def render(self, request: GenerationRequest) -> str:
        """The prompt text: the request's messages through the tokenizer's chat template."""
        text = self.tokenizer.apply_chat_template(
            list(request.messages), add_generation_prompt=True, tokenize=False
        )
        return str(text)

    def _decode_batch(self, requests: list[GenerationRequest], prompts: list[str]) -> list[Generation]:
        import torch

        started = time.perf_counter()
        encoded = self.tokenizer(
            prompts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt"
        )
        input_ids = encoded["input_ids"].to(self.device)
        attention = encoded["attention_mask"].to(self.device)
        prompt_lengths = attention.sum(-1).tolist()
        rows = [_Row(r, int(n), _generator(r, self.device)) for r, n in zip(requests, prompt_lengths, strict=True)]
        active = list(range(len(rows)))
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, logits_to_keep=1
            )
            cache = out.past_key_values
            logits = out.logits[:, -1, :]
            while active:
                next_tokens = self._choose(logits, [rows[i] for i in active])
                keep = [j for j, i in enumerate(active) if self._append(rows[i], next_tokens[j], started)]
                if not keep:
                    break
                step_tokens = torch.tensor([[next_tokens[j]] for j in keep], device=self.device)
                if len(keep) < len(active):
                    index = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(index)
                    attention, positions = attention[index], positions[index]
                    active = [active[j] for j in keep]
                attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=-1)
                positions = positions[:, -1:] + 1
                out = self.model(
                    input_ids=step_tokens,
                    attention_mask=attention,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                )
                cache = out.past_key_values
                logits = out.logits[:, -1, :]
        return [self._finish(row) for row in rows]

    def _choose(self, logits: torch.Tensor, rows: list[_Row]) -> list[int]:
        """Greedy for temperature 0; otherwise one draw from the row's own generator."""
        import torch

        chosen: list[int] = logits.argmax(dim=-1).tolist()
        for j, row in enumerate(rows):
            if row.request.temperature > 0:
                probs = torch.softmax(logits[j].float() / row.request.temperature, dim=-1)
                chosen[j] = int(torch.multinomial(probs, 1, generator=row.generator).item())
        return chosen

    def _append(self, row: _Row, token: int, started: float) -> bool:
        """Add a token to ``row``; False when the row is finished (EOS, length or stop string)."""
        if token in self.eos_ids:
            row.finish_reason = "stop"
        else:
            row.tokens.append(token)
            if row.request.stop and _first_stop(self._text(row), row.request.stop) is not None:
                row.finish_reason = "stop"
            elif len(row.tokens) >= row.request.max_tokens:
                row.finish_reason = "length"
        if row.finish_reason:
            row.latency_ms = (time.perf_counter() - started) * 1000
            return False
        return True

    def _text(self, row: _Row) -> str:
        return str(self.tokenizer.decode(row.tokens, skip_special_tokens=True))

    def _finish(self, row: _Row) -> Generation:
        text = self._text(row)
        cut = _first_stop(text, row.request.stop)
        if cut is not None:
            text = text[:cut]
        completion = len(row.tokens) + (1 if row.finish_reason == "stop" and cut is None else 0)
        return Generation(
            text=text,
            latency_ms=row.latency_ms,
            usage={
                "prompt_tokens": row.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": row.prompt_tokens + completion,
            },
            metadata={"finish_reason": row.finish_reason or "length"},
        )

    async def aclose(self) -> None:
        self.model = None  # type: ignore[assignment]


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop string in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def _generator(request: GenerationRequest, device: str) -> torch.Generator | None:
    """A generator seeded with ``seed + epoch`` for sampled requests; None for greedy ones."""
    import torch

    if request.temperature <= 0:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed((request.seed or 0) + request.epoch)
    return generator


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, list):
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids
