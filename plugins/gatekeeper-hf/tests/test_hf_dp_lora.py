"""``dp-lora``: DP-SGD (opacus) on the LoRA parameters of the tiny Llama — ε and δ in the
provenance, more noise or more steps spend more ε, the adapter loads, and the policy's
LoRA bounds apply as to ``lora``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.types import Config, ModelSpec, UsageError
from gatekeeper_hf.dp_lora import DpLoraTuner
from gatekeeper_hf.loading import adapter_digest

if os.environ.get("GATEKEEPER_ALL_EXTRAS") != "1":
    pytest.importorskip("opacus")

PARAMS = {"rank": 4, "alpha": 8, "learning_rate": 0.01, "batch_size": 4, "epochs": 2, "max_steps": 3, "seed": 5,
          "noise_multiplier": 1.0, "max_grad_norm": 1.0}


def tune(tiny_model: Path, data: Path, out: Path, params: dict[str, Any],
         bounds: dict[str, Any] | None = None) -> dict[str, Any]:
    return DpLoraTuner().tune(ModelSpec("hf", str(tiny_model)), data, out, params, Config(root=out.parent), bounds)


def test_dp_lora_records_epsilon_and_delta(tiny_model: Path, sft_data: Path, tmp_path: Path) -> None:
    provenance = tune(tiny_model, sft_data, tmp_path / "a", dict(PARAMS))
    dp = provenance["training"]["dp"]
    assert provenance["tuner"] == "dp-lora" and provenance["modification"] == "lora_adapter_retrain"
    assert dp["delta"] == pytest.approx(1 / 80) and dp["sample_rate"] == 0.5 and dp["steps"] == 3
    assert dp["accountant"] == "rdp" and dp["trained"] == "LoRA parameters only"
    assert 0 < dp["epsilon"] < 50
    assert provenance["training"]["trainer"] == "opacus-dp-sgd"
    written = json.loads((tmp_path / "a" / "provenance.json").read_text())
    assert written["training"]["dp"] == dp and written["adapter"]["digest"] == adapter_digest(tmp_path / "a")
    # More noise for the same steps spends less privacy; the accountant is not a constant.
    quieter = tune(tiny_model, sft_data, tmp_path / "b", dict(PARAMS, noise_multiplier=3.0, delta=1e-3))
    assert quieter["training"]["dp"]["epsilon"] < dp["epsilon"]
    assert quieter["training"]["dp"]["delta"] == 1e-3


def test_dp_lora_keeps_the_lora_bounds(tiny_model: Path, sft_data: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="rank"):
        tune(tiny_model, sft_data, tmp_path / "c", dict(PARAMS, rank=32), bounds={"rank": {"max": 16}})
    with pytest.raises(UsageError, match="noise_multiplier"):
        tune(tiny_model, sft_data, tmp_path / "d", dict(PARAMS, noise_multiplier=0))
