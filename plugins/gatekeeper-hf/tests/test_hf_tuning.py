"""The ``lora`` and ``dpo`` tuners (TRL) on the tiny Llama: determinism, bounds, data errors, provenance."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.types import Config, ModelSpec, UsageError
from gatekeeper_hf.loading import adapter_digest
from gatekeeper_hf.tuning import DpoTuner, LoraTuner, encode_conversation

if os.environ.get("GATEKEEPER_ALL_EXTRAS") != "1":
    pytest.importorskip("trl")

POLICY_BOUNDS = {
    "rank": {"max": 16},
    "alpha": {"max": 32},
    "learning_rate": {"min": 1e-5, "max": 5e-4},
    "epochs": {"max": 3},
    "max_steps": {"max": 500},
    "target_modules": ["q_proj", "v_proj"],
    "seed": {"required": True},
}
WITHIN_BOUNDS = {"rank": 4, "alpha": 8, "learning_rate": 5e-4, "epochs": 1, "max_steps": 2,
                 "batch_size": 4, "seed": 3}


def tune(tiny_model: Path, data: Path, out: Path, params: dict[str, Any], *,
         tuner: Any = None, bounds: dict[str, Any] | None = None) -> dict[str, Any]:
    tuner = tuner or LoraTuner()
    return tuner.tune(ModelSpec("hf", str(tiny_model)), data, out, params, Config(root=out.parent), bounds)


def test_lora_tuning_is_deterministic_for_a_fixed_seed(
    helpers: Any, tiny_model: Path, sft_data: Path, tmp_path: Path
) -> None:
    first = tune(tiny_model, sft_data, tmp_path / "a", dict(helpers.tune_params))
    second = tune(tiny_model, sft_data, tmp_path / "b", dict(helpers.tune_params))
    other_seed = tune(tiny_model, sft_data, tmp_path / "c", dict(helpers.tune_params, seed=8))
    assert first["adapter"]["digest"] == second["adapter"]["digest"]
    assert first["training"]["loss_last"] == second["training"]["loss_last"]
    assert other_seed["adapter"]["digest"] != first["adapter"]["digest"]


def test_lora_provenance_records_base_data_and_adapter(
    helpers: Any, tiny_model: Path, sft_data: Path, tiny_adapter: Path
) -> None:
    provenance = json.loads((tiny_adapter / "provenance.json").read_text())
    assert provenance["modification"] == "lora_adapter_retrain"
    assert provenance["tuner"] == "lora"
    assert provenance["base_model"]["spec"] == f"hf:{tiny_model}"
    assert provenance["adapter"] | {"path": None} == {
        "path": None, "rank": 8, "alpha": 16, "target_modules": helpers.all_projections,
        "digest": adapter_digest(tiny_adapter),
    }
    assert provenance["data"] == {
        "path": str(sft_data),
        "sha256": hashlib.sha256(sft_data.read_bytes()).hexdigest(),
        "rows": 8,
        "sources": ["tickets-0", "tickets-1"],
    }
    assert provenance["seed"] == 7
    assert provenance["hyperparameters"]["learning_rate"] == 0.02
    assert set(provenance["versions"]) == {"torch", "transformers", "peft", "trl", "datasets", "accelerate",
                                           "llm-gatekeeper-hf"}
    assert provenance["manifest_version"] == 1
    assert provenance["training"]["trainer"] == "trl"
    assert provenance["training"]["tokens_per_s"] > 0
    assert provenance["wall_time_s"] > 0
    assert provenance["training"]["steps"] == 16
    assert provenance["training"]["loss_last"] < provenance["training"]["loss_first"]
    assert (tiny_adapter / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    ("override", "bound"),
    [
        ({"rank": 32}, "rank.max = 16"),
        ({"alpha": 64}, "alpha.max = 32"),
        ({"learning_rate": 1e-3}, "learning_rate.max = 0.0005"),
        ({"learning_rate": 1e-6}, "learning_rate.min = 1e-05"),
        ({"epochs": 4}, "epochs.max = 3"),
        ({"max_steps": None}, "max_steps.max = 500"),
        ({"target_modules": ["q_proj", "k_proj"]}, "'k_proj' is not"),
    ],
)
def test_out_of_bounds_hyperparameters_are_refused_before_training(
    tiny_model: Path, sft_data: Path, tmp_path: Path, override: dict[str, Any], bound: str
) -> None:
    out = tmp_path / "adapter"
    with pytest.raises(UsageError, match="outside the policy bound") as info:
        tune(tiny_model, sft_data, out, WITHIN_BOUNDS | override, bounds=POLICY_BOUNDS)
    assert bound in str(info.value)
    assert info.value.field is not None and info.value.field.startswith("retraining.hyperparameters.")
    assert not out.exists()


def test_a_required_seed_must_be_given(tiny_model: Path, sft_data: Path, tmp_path: Path) -> None:
    params = {k: v for k, v in WITHIN_BOUNDS.items() if k != "seed"}
    with pytest.raises(UsageError, match="requires hyperparameter 'seed'"):
        tune(tiny_model, sft_data, tmp_path / "adapter", params, bounds=POLICY_BOUNDS)


def test_within_bounds_trains_and_records_the_checked_bounds(tiny_model: Path, sft_data: Path, tmp_path: Path) -> None:
    retraining = {"hyperparameters": POLICY_BOUNDS | {"n_epochs": {"max": 3}}}
    provenance = tune(tiny_model, sft_data, tmp_path / "adapter", dict(WITHIN_BOUNDS), bounds=retraining)
    assert provenance["bounds"] == {
        "checked": ["alpha", "epochs", "learning_rate", "max_steps", "rank", "seed", "target_modules"],
        "ignored": ["n_epochs"],
    }
    assert provenance["training"]["steps"] == 2


def test_unknown_hyperparameter_is_a_usage_error(tiny_model: Path, sft_data: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown hyperparameter") as info:
        tune(tiny_model, sft_data, tmp_path / "a", {"rnak": 4})
    assert info.value.field == "params.rnak"


@pytest.mark.parametrize(
    ("row", "message", "field"),
    [
        ({"source": "x"}, "missing or empty list of messages", "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn", "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "needs a role", "messages[0]"),
    ],
)
def test_bad_rows_are_usage_errors_naming_file_and_line(
    helpers: Any,
    tiny_model: Path, tmp_path: Path, row: dict[str, Any], message: str, field: str
) -> None:
    data = helpers.write_jsonl(tmp_path / "train.jsonl", [*helpers.sft_rows(2), row])
    with pytest.raises(UsageError, match=message) as info:
        tune(tiny_model, data, tmp_path / "adapter", dict(WITHIN_BOUNDS))
    assert (info.value.file, info.value.line, info.value.field) == (str(data), 3, field)
    assert f"{data}:3:" in str(info.value)


def test_invalid_json_names_the_line(helpers: Any, tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps(helpers.sft_rows(1)[0]) + "\n{not json\n")
    with pytest.raises(UsageError, match="invalid JSON") as info:
        tune(tiny_model, data, tmp_path / "adapter", dict(WITHIN_BOUNDS))
    assert info.value.line == 2


def test_missing_data_file_is_a_usage_error(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="training data file not found"):
        tune(tiny_model, tmp_path / "nope.jsonl", tmp_path / "adapter", dict(WITHIN_BOUNDS))


def test_base_spec_with_an_adapter_is_refused(tiny_model: Path, tiny_adapter: Path, sft_data: Path,
                                              tmp_path: Path) -> None:
    base = ModelSpec("hf", str(tiny_model), {"adapter": str(tiny_adapter)})
    with pytest.raises(UsageError, match="must not carry an adapter"):
        LoraTuner().tune(base, sft_data, tmp_path / "a", dict(WITHIN_BOUNDS), Config(root=tmp_path))


def test_loss_is_taken_on_assistant_tokens_only(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": "It ships today."},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "You are welcome."},
    ]
    encoded = encode_conversation(tokenizer, messages, 512, "x.jsonl:1")
    learned = tokenizer.decode([t for t, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != -100])
    assert learned == "It ships today.<|im_end|>\nYou are welcome.<|im_end|>\n"
    last = encode_conversation(tokenizer, messages, 512, "x.jsonl:1", last_turn_only=True)
    assert tokenizer.decode([t for t, label in zip(last.input_ids, last.labels, strict=True) if label != -100]) == (
        "You are welcome.<|im_end|>\n"
    )


def dpo_rows(n: int = 8) -> list[dict[str, Any]]:
    return [
        {
            "prompt": [{"role": "user", "content": q}],
            "chosen": "Please open Settings and choose Billing.",
            "rejected": "The capital of Germany is Berlin.",
            "source": "feedback",
        }
        for q in ["How do I get a refund?", "Where is my order?"] * (n // 2)
    ]


def test_dpo_prefers_the_chosen_answers_and_records_provenance(helpers: Any, tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = helpers.write_jsonl(tmp_path / "prefs.jsonl", dpo_rows())
    params = {"rank": 8, "alpha": 16, "learning_rate": 0.02, "epochs": 4, "batch_size": 4, "seed": 5,
              "beta": 0.5, "target_modules": helpers.all_projections}
    provenance = tune(tiny_model, data, tmp_path / "dpo", params, tuner=DpoTuner())
    assert provenance["modification"] == "dpo_preference_tune"
    assert provenance["tuner"] == "dpo"
    assert provenance["data"]["rows"] == 8 and provenance["data"]["sources"] == ["feedback"]
    assert provenance["hyperparameters"]["beta"] == 0.5
    assert provenance["training"]["loss_first"] == pytest.approx(0.6931, abs=1e-3)  # log 2: adapter starts at zero
    assert provenance["training"]["loss_last"] < provenance["training"]["loss_first"]

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(tmp_path / "dpo")).eval()
    prompt = [{"role": "user", "content": "Where is my order?"}]
    rows = [encode_conversation(tokenizer, [*prompt, {"role": "assistant", "content": answer}], 512, "t",
                                last_turn_only=True)
            for answer in ("Please open Settings and choose Billing.", "The capital of Germany is Berlin.")]
    with torch.no_grad():
        tuned = [answer_logprob(model, row) for row in rows]
        with model.disable_adapter():
            reference = [answer_logprob(model, row) for row in rows]
    assert (tuned[0] - tuned[1]) > (reference[0] - reference[1])


def answer_logprob(model: Any, row: Any) -> float:
    """Sum of the log-probabilities of a row's labelled tokens, straight from the model's logits."""
    import torch

    ids = torch.tensor([row.input_ids])
    labels = torch.tensor(row.labels)[1:]
    logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    picked = logps.gather(1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return float((picked * (labels != -100)).sum())


def test_dpo_rows_need_chosen_and_rejected(helpers: Any, tiny_model: Path, tmp_path: Path) -> None:
    data = helpers.write_jsonl(tmp_path / "prefs.jsonl", [*dpo_rows(2), {"prompt": "hi", "chosen": "a"}])
    with pytest.raises(UsageError, match="missing or empty answer") as info:
        tune(tiny_model, data, tmp_path / "dpo", dict(WITHIN_BOUNDS), tuner=DpoTuner())
    assert (info.value.line, info.value.field) == (3, "rejected")


def test_dpo_refuses_out_of_bounds_like_lora(helpers: Any, tiny_model: Path, tmp_path: Path) -> None:
    data = helpers.write_jsonl(tmp_path / "prefs.jsonl", dpo_rows(2))
    with pytest.raises(UsageError, match=r"rank\.max = 16"):
        tune(tiny_model, data, tmp_path / "dpo", WITHIN_BOUNDS | {"rank": 64}, tuner=DpoTuner(), bounds=POLICY_BOUNDS)


def test_the_first_step_loss_is_the_base_models_loss_on_assistant_tokens(
    tiny_model: Path, helpers: Any, tmp_path: Path
) -> None:
    """Equivalence with the loop TRL replaced: the adapter starts at zero, so step 1's loss is
    the base model's mean cross-entropy over the assistant tokens of the first batch, which
    transformers computes on its own here (rows in the order the seed gives)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gatekeeper_hf.trl_training import row_order, total_steps
    from gatekeeper_hf.tuning import LoraParams

    data = helpers.write_jsonl(tmp_path / "train.jsonl", helpers.sft_rows(6))
    params = {"batch_size": 3, "seed": 11, "max_steps": 2, "dropout": 0.0}
    provenance = tune(tiny_model, data, tmp_path / "a", params)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    hyper = LoraParams(**params)
    first = row_order(6, hyper, total_steps(6, hyper))[:3]
    rows = [encode_conversation(tokenizer, helpers.sft_rows(6)[i]["messages"], 512, "t") for i in first]
    width = max(len(r.input_ids) for r in rows)
    ids = torch.tensor([r.input_ids + [tokenizer.pad_token_id] * (width - len(r.input_ids)) for r in rows])
    labels = torch.tensor([r.labels + [-100] * (width - len(r.labels)) for r in rows])
    mask = (torch.arange(width)[None, :] < torch.tensor([len(r.input_ids) for r in rows])[:, None]).long()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
    assert provenance["training"]["losses"][0] == pytest.approx(expected, rel=1e-4)
    assert provenance["training"]["steps"] == 2


def test_identical_preference_pair_is_refused_naming_the_line(helpers: Any, tiny_model: Path, tmp_path: Path) -> None:
    same = {"prompt": "Where is my order?", "chosen": "It ships today.", "rejected": " It ships today. "}
    data = helpers.write_jsonl(tmp_path / "prefs.jsonl", [*dpo_rows(2), same])
    with pytest.raises(UsageError, match="the same answer") as info:
        tune(tiny_model, data, tmp_path / "dpo", dict(WITHIN_BOUNDS), tuner=DpoTuner())
    assert (info.value.file, info.value.line, info.value.field) == (str(data), 3, "rejected")


def test_a_failed_run_leaves_no_directory_that_looks_complete(
    helpers: Any, tiny_model: Path, sft_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "adapter"
    with pytest.raises(UsageError, match="target module 'w_proj' is not in the base model"):
        tune(tiny_model, sft_data, out, dict(WITHIN_BOUNDS, target_modules=["w_proj"]))
    assert list(tmp_path.iterdir()) == []


def test_retraining_replaces_the_adapter_only_when_the_new_one_is_complete(
    helpers: Any, tiny_model: Path, sft_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "adapter"
    first = tune(tiny_model, sft_data, out, dict(WITHIN_BOUNDS))
    with pytest.raises(UsageError):
        tune(tiny_model, sft_data, out, dict(WITHIN_BOUNDS, target_modules=["w_proj"]))
    assert json.loads((out / "provenance.json").read_text())["adapter"]["digest"] == first["adapter"]["digest"]
    second = tune(tiny_model, sft_data, out, dict(WITHIN_BOUNDS, seed=4))
    assert adapter_digest(out) == second["adapter"]["digest"] != first["adapter"]["digest"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
