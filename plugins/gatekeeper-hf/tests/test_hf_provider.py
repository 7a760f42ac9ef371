"""The ``hf`` provider on a tiny random Llama: batching, sampling, stops, identity, errors."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from gatekeeper.types import Case, Config, GenerationRequest, ModelSpec, UsageError
from gatekeeper_hf.provider import HFModel, HFProvider

CASE = Case(id="c1", suite="s", messages=())
PROMPTS = [
    "Hi",
    "What is the capital of France?",
    "Please open Settings and choose Billing to ask for a refund of my last order, thanks.",
    "Where is my order?",
    "Reset your password from the login page, then sign in again. Did it work?",
]


def load(spec: str, root: Path | None = None) -> HFModel:
    return HFProvider().load(ModelSpec.parse(spec), Config(root=root or Path.cwd()))


def request(text: str, **kwargs: object) -> GenerationRequest:
    return GenerationRequest(case=CASE, messages=({"role": "user", "content": text},), **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def model(tiny_model: Path) -> HFModel:
    return load(f"hf:{tiny_model}?device=cpu&batch_size=16")


def test_generates_with_usage_latency_and_finish_reason(model: HFModel) -> None:
    [generation] = model.generate_sync([request("Hi", max_tokens=6)])
    assert generation.text
    assert generation.usage["completion_tokens"] <= 6
    assert generation.usage["prompt_tokens"] > 0
    assert generation.usage["total_tokens"] == generation.usage["prompt_tokens"] + generation.usage["completion_tokens"]
    assert generation.latency_ms is not None and generation.latency_ms > 0
    assert generation.metadata["finish_reason"] in ("length", "stop")


def test_batched_greedy_equals_one_at_a_time(model: HFModel) -> None:
    requests = [request(p, max_tokens=12) for p in PROMPTS]
    batched = [g.text for g in model.generate_sync(requests)]
    single = [model.generate_sync([r])[0].text for r in requests]
    assert batched == single
    assert len(set(batched)) > 1  # the prompts really lead to different answers


def test_results_keep_request_order_when_split_into_batches(tiny_model: Path, model: HFModel) -> None:
    small_batches = load(f"hf:{tiny_model}?batch_size=2")
    requests = [request(p, max_tokens=8) for p in PROMPTS]
    assert [g.text for g in small_batches.generate_sync(requests)] == [g.text for g in model.generate_sync(requests)]


def test_sampling_is_seeded_per_request_whatever_the_batch(model: HFModel) -> None:
    sampled = request("Where is my order?", max_tokens=10, temperature=1.0, seed=3)
    alone = model.generate_sync([sampled])[0].text
    in_batch = model.generate_sync([request("Hi", max_tokens=4), sampled, request(PROMPTS[2], max_tokens=9)])[1].text
    assert alone == in_batch
    other_seeds = {model.generate_sync([request("Where is my order?", max_tokens=10, temperature=1.0, seed=s)])[0].text
                   for s in (4, 5, 6)}
    assert other_seeds - {alone}


def test_epoch_changes_the_sample(model: HFModel) -> None:
    first = request("Hi", max_tokens=10, temperature=1.0, seed=1, epoch=0)
    second = request("Hi", max_tokens=10, temperature=1.0, seed=1, epoch=1)
    texts = [g.text for g in model.generate_sync([first, second])]
    assert texts[0] != texts[1]


def test_stop_string_truncates_at_its_first_occurrence(model: HFModel) -> None:
    full = model.generate_sync([request(PROMPTS[1], max_tokens=16)])[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    [cut] = model.generate_sync([request(PROMPTS[1], max_tokens=16, stop=(stop,))])
    assert cut.text == full[: full.index(stop)]
    assert cut.metadata["finish_reason"] == "stop"


def test_generate_runs_in_a_thread_and_leaves_the_event_loop_free(model: HFModel) -> None:
    async def scenario() -> tuple[int, list[str]]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        generations = await model.generate([request(p, max_tokens=24) for p in PROMPTS])
        task.cancel()
        return ticks, [g.text for g in generations]

    ticks, texts = asyncio.run(scenario())
    assert len(texts) == len(PROMPTS)
    assert ticks > 1


def test_identity_is_a_stable_digest_of_the_weights(tiny_model: Path, model: HFModel) -> None:
    again = load(f"hf:{tiny_model}")
    assert model.identity.provider == "hf"
    assert model.identity.digest == again.identity.digest
    assert len(model.identity.digest) == 64
    assert model.max_batch_size == 16


def test_an_adapter_changes_outputs_and_digest(tiny_model: Path, tiny_adapter: Path, model: HFModel) -> None:
    adapted = load(f"hf:{tiny_model}?adapter={tiny_adapter}")
    requests = [request(p, max_tokens=10) for p in PROMPTS]
    assert [g.text for g in adapted.generate_sync(requests)] != [g.text for g in model.generate_sync(requests)]
    assert adapted.identity.digest != model.identity.digest
    assert adapted.identity.name.endswith(tiny_adapter.name)
    # The adapter learned the answer it was trained on.
    assert "Settings" in adapted.generate_sync([request("How do I get a refund?", max_tokens=16)])[0].text


def test_adapter_path_is_relative_to_the_project_root(tiny_model: Path, tiny_adapter: Path) -> None:
    adapted = load(f"hf:{tiny_model}?adapter={tiny_adapter.name}", root=tiny_adapter.parent)
    assert adapted.identity.details["adapter"] == str(tiny_adapter)


def test_missing_model_path_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(UsageError, match="does not exist") as info:
        load(f"hf:{missing}")
    assert str(missing) in str(info.value)


def test_unknown_spec_parameter_is_a_usage_error(tiny_model: Path) -> None:
    with pytest.raises(UsageError, match="unknown parameter 'adaptor'"):
        load(f"hf:{tiny_model}?adaptor=x")


def test_corrupt_adapter_is_a_usage_error_naming_it(tiny_model: Path, tiny_adapter: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-adapter"
    shutil.copytree(tiny_adapter, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"this is not a safetensors file")
    with pytest.raises(UsageError) as info:
        load(f"hf:{tiny_model}?adapter={broken}")
    assert str(broken) in str(info.value)


def test_missing_adapter_is_a_usage_error(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load(f"hf:{tiny_model}?adapter={tmp_path / 'nothing'}")


def test_adapter_recorded_for_another_base_is_refused(
    other_tiny_model: Path, tiny_adapter: Path
) -> None:
    with pytest.raises(UsageError, match="was trained for base model") as info:
        load(f"hf:{other_tiny_model}?adapter={tiny_adapter}")
    assert str(tiny_adapter) in str(info.value)


def test_foreign_adapter_that_does_not_fit_the_base_is_refused(
    other_tiny_model: Path, tiny_adapter: Path, tmp_path: Path
) -> None:
    # Without our provenance file only the shapes can tell: they do not fit.
    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_adapter, foreign)
    (foreign / "provenance.json").unlink()
    with pytest.raises(UsageError, match="cannot apply adapter") as info:
        load(f"hf:{other_tiny_model}?adapter={foreign}")
    assert str(foreign) in str(info.value)


def test_provenance_of_the_adapter_names_the_base_digest(tiny_model: Path, tiny_adapter: Path) -> None:
    provenance = json.loads((tiny_adapter / "provenance.json").read_text())
    from gatekeeper_hf.loading import resolve_source, source_digest

    assert provenance["base_model"]["digest"] == source_digest(resolve_source(str(tiny_model), Path.cwd()))


def test_the_plugin_registers_through_its_entry_point() -> None:
    import importlib.metadata

    [entry] = [ep for ep in importlib.metadata.entry_points(group="gatekeeper") if ep.name == "hf"]
    plugin = entry.load()
    registered: dict[str, list[str]] = {}
    for hook in ("models", "tuners", "evaluators", "detectors"):
        getattr(plugin, f"gatekeeper_register_{hook}")(
            register=lambda cls, name=None, hook=hook: registered.setdefault(hook, []).append(name or cls.name)
        )
    assert registered == {
        "models": ["hf"],
        "tuners": ["lora", "dpo", "grpo", "distill", "dp-lora"],
        "evaluators": ["semantic_similarity"],
        "detectors": ["embedding_grounding", "self_consistency", "nli_grounding"],
    }


SHARED_CONTEXT = "Please open Settings and choose Billing to ask for a refund. " * 3


def test_prompts_sharing_a_prefix_decode_as_transformers_generate_does(model: HFModel) -> None:
    """Rows that share a long prefix (a suite's system prompt and passage) compute it once;
    each still decodes exactly what transformers' own generate gives for it alone."""
    import torch

    questions = ["Where is my order?", "Hi", "What is the capital of France?", "Reset it?"]
    requests = [request(SHARED_CONTEXT + q, max_tokens=10) for q in questions] + [request("Hi", max_tokens=10)]
    ours = [g.text for g in model.generate_sync(requests)]
    theirs = []
    for r in requests:
        ids = model.tokenizer(model.render(r), add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = model.model.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=sorted(model.eos_ids),
                                       pad_token_id=model.tokenizer.pad_token_id)
        theirs.append(model.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    assert ours == theirs
    assert len(set(ours)) > 1


def test_prefix_groups_share_the_longest_prefixes() -> None:
    from gatekeeper_hf.provider import prefix_groups

    system = list(range(100, 120))
    passage_a, passage_b = list(range(200, 240)), list(range(300, 340))
    rows = [system + passage_a + [1], system + passage_b + [2], system + passage_a + [3, 4],
            system + passage_b + [5], [7, 8]]
    groups = {tuple(sorted(members)): length for members, length in prefix_groups(rows)}
    assert groups == {(0, 2): 60, (1, 3): 60, (4,): 1}
    # Every row keeps at least one token of its own, even when one prompt prefixes another.
    assert prefix_groups([[1] * 30, [1] * 30 + [2]]) == [([0, 1], 29)]
