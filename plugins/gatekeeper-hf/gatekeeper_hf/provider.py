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
import itertools
import math
import os
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
    adapter_digest,
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

    from gatekeeper.types import Config

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
    model.train(False)  # inference mode (what .eval() does; .eval is untyped)
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
        # What the gate verifies a tuner's provenance against (base_model.digest, adapter.digest).
        "base_digest": source_digest(source, settings.cache_root),
        "adapter_digest": adapter_digest(settings.adapter, settings.cache_root) if settings.adapter else None,
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
        self._cache_keyword = _cache_keyword(model)

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
        token_lists = [
            list(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts
        ]
        rows = [_Row(r, len(t), _generator(r, self.device)) for r, t in zip(requests, token_lists, strict=True)]
        active = list(range(len(rows)))
        with torch.inference_mode():
            logits, cache, attention, positions = self._prefill(token_lists)
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
                    use_cache=True,
                    **{self._cache_keyword: cache},
                )
                cache = _cache_of(out)
                logits = out.logits[:, -1, :]
        return [self._finish(row) for row in rows]

    def _prefill(self, token_lists: list[list[int]]) -> tuple[Any, Any, Any, Any]:
        """Run the prompts of a batch, computing each shared prefix only once.

        Prompts of one suite often share a long prefix (system prompt, retrieved passage).
        Rows are grouped by :func:`prefix_groups`; each group's prefix runs once, its keys
        and values are copied to the group's rows, then every row's remaining tokens run in
        one batched call. A row's layout is ``[pad][prefix][pad][rest]``: padding sits where
        the attention mask is 0, and position ids count only real tokens, so every row
        computes exactly what it would alone. Returns the last logits, the cache, the
        attention mask and the position ids of the last step.
        """
        import torch

        groups = prefix_groups(token_lists)
        prefix_of = {row: (g, length) for g, (members, length) in enumerate(groups) for row in members}
        width = max(length for _, length in groups)
        per_group = []
        for members, length in groups:
            ids = torch.tensor([token_lists[members[0]][:length]], device=self.device)
            out = self.model(input_ids=ids, position_ids=torch.arange(length, device=self.device)[None],
                             use_cache=True, logits_to_keep=1)
            per_group.append(_cache_of(out))
        n = len(token_lists)
        rests = [token_lists[i][prefix_of[i][1]:] for i in range(n)]
        rest_width = max(len(r) for r in rests)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((n, rest_width), int(pad_id), dtype=torch.long, device=self.device)
        attention = torch.zeros((n, width + rest_width), dtype=torch.long, device=self.device)
        positions = torch.zeros((n, rest_width), dtype=torch.long, device=self.device)
        for i, rest in enumerate(rests):
            length = prefix_of[i][1]
            attention[i, width - length : width] = 1
            attention[i, width + rest_width - len(rest) :] = 1
            input_ids[i, rest_width - len(rest) :] = torch.tensor(rest, device=self.device)
            positions[i, rest_width - len(rest) :] = torch.arange(length, length + len(rest), device=self.device)
        cache = _stack_prefix_caches(self.model, per_group, [prefix_of[i][0] for i in range(n)], width)
        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                         use_cache=True, logits_to_keep=1, **{self._cache_keyword: cache})
        return out.logits[:, -1, :], _cache_of(out), attention, positions

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


def prefix_groups(token_lists: list[list[int]], min_shared: int = 16) -> list[tuple[list[int], int]]:
    """Partition rows into groups that share a token prefix, to compute it once per group.

    Rows are sorted by their tokens, so rows with a common prefix are adjacent; a dynamic
    programme over that order picks the contiguous groups that save the most prefix tokens
    (a group of ``k`` rows sharing ``p`` tokens saves ``(k - 1) * p``). Returns
    ``(rows, prefix_length)`` pairs; every row keeps at least one token of its own, and a
    prefix shared by fewer than ``min_shared`` tokens is not worth a group.
    """
    order = sorted(range(len(token_lists)), key=lambda i: token_lists[i])
    own = [len(token_lists[i]) - 1 for i in order]  # the most a row can put in a prefix

    # commonprefix compares any sequences item by item: here token ids, not paths.
    adjacent = [len(os.path.commonprefix([token_lists[a], token_lists[b]]))  # noqa: RUF071
                for a, b in itertools.pairwise(order)]
    n = len(order)
    best = [0.0] * (n + 1)  # best[j]: tokens saved by the best grouping of order[:j]
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        best[j], cut[j] = best[j - 1], j - 1
        shared = own[j - 1]
        for i in range(j - 2, -1, -1):  # group order[i:j]
            shared = min(shared, adjacent[i], own[i])
            if shared < min_shared:
                break
            if best[i] + (j - i - 1) * shared > best[j]:
                best[j], cut[j] = best[i] + (j - i - 1) * shared, i
    groups: list[tuple[list[int], int]] = []
    j = n
    while j > 0:
        i = cut[j]
        members = order[i:j]
        shared = min([own[k] for k in range(i, j)] + adjacent[i : j - 1])
        groups.append((members, shared if len(members) > 1 else own[i]))
        j = i
    return groups[::-1]


def _stack_prefix_caches(model: PreTrainedModel, caches: list[Any], group_of_row: list[int], width: int) -> Any:
    """One cache for the batch: row ``r`` gets its group's prefix keys/values, left-padded to ``width``."""
    import torch
    from transformers import DynamicCache

    batch = DynamicCache(config=model.config)
    for layer in range(len(caches[0].layers)):
        keys, values = [], []
        for cache in caches:
            k, v = cache.layers[layer].keys, cache.layers[layer].values
            pad = width - k.shape[2]
            keys.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
            values.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
        index = torch.tensor(group_of_row, device=keys[0].device)
        batch.update(torch.cat(keys)[index], torch.cat(values)[index], layer)
    return batch


def _cache_keyword(model: PreTrainedModel) -> str:
    """transformers 5.2x renamed ``past_key_values`` to ``cache`` (the old name warns)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


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
