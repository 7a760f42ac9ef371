"""The adapter tuners' shared run: parameters, policy bounds, manifest, training, output.

Every tuner here (``lora``, ``dpo``, ``grpo``, ``distill``) goes through
:meth:`AdapterTuner.tune`, in an order that puts every cheap check before expensive work:
parse and bound-check the hyperparameters, read and validate every input row (``file:line``
errors), build the training manifest (data hashes, parameters, library versions, seed,
base model, teacher or reward suite), load the tokenizer and tokenize, and only then load
the model and train (with TRL, :mod:`gatekeeper_hf.trl_training`). The adapter is written
to a staging directory beside ``out`` and renamed into place with its ``provenance.json``
last, so an interrupted run never leaves a directory that looks like a finished adapter.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, ValidationError, field_validator

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
from gatekeeper_hf.training_data import (
    Encoded,
    Example,
    encode_conversation,
    file_sha256,
    read_dpo_examples,
    read_sft_examples,
)

if TYPE_CHECKING:
    from gatekeeper.types import Config

__all__ = [
    "AdapterTuner",
    "DpoParams",
    "DpoTuner",
    "LoraParams",
    "LoraTuner",
    "check_bounds",
    "encode_conversation",
    "parse_params",
]

MANIFEST_VERSION = 1
VERSIONED_LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "llm-gatekeeper-hf")


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


def check_bounds(params: Params, bounds: dict[str, Any] | None) -> dict[str, list[str]]:
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


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose code decides the trained weights."""
    versions = {}
    for dist in VERSIONED_LIBRARIES:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


# --------------------------------------------------------------------------- the run


@dataclass
class TuningInputs:
    """What a tuner read and checked before loading any model."""

    examples: list[Example]
    data: dict[str, Any]
    """The manifest's ``data`` section: path, sha256, rows, sources (and extra files)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further manifest sections (``reward_suite``, ``teacher``, ``prompts``)."""
    payload: Any = None
    """Tuner-specific material for training (reward scorers, teacher answers)."""


@dataclass
class TuningRun:
    """What training needs: the base, its tokenizer, the peft model, the parameters."""

    base: ModelSpec
    base_digest: str
    device: str
    tokenizer: Any
    model: Any
    params: LoraParams
    config: Config
    settings: Any = None
    """The hf provider's settings for the base spec (dtype, device, cache)."""


class AdapterTuner(Tuner):
    """Shared steps of the LoRA-adapter tuners; subclasses read inputs and train."""

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
        _check_base_spec(self.name, base)
        data = config.path(data)
        inputs = self.read_inputs(data, hyper, config)
        manifest = self.manifest(base, hyper, inputs, bound_report)
        out = config.path(out)
        run = self._prepare(base, hyper, config)
        manifest["base_model"]["digest"] = run.base_digest
        self.check_encodable(run, inputs, str(data))
        run.model = load_base_model(run.model, run.settings.dtype, run.device)
        with staged_output(out) as staging, deterministic_torch(hyper.seed):
            run.model = self._with_adapter(run.model, hyper)
            training = self.train(run, inputs, staging / ".trainer")
            shutil.rmtree(staging / ".trainer", ignore_errors=True)
            run.model.save_pretrained(str(staging))
            provenance = manifest | {
                "adapter": {
                    "path": str(out),
                    "rank": hyper.rank,
                    "alpha": hyper.alpha,
                    "target_modules": list(hyper.target_modules),
                    "digest": adapter_digest(staging),
                },
                "training": training,
                "wall_time_s": round(time.perf_counter() - started, 2),
            }
            write_provenance(staging, provenance)
        return provenance

    # ---- what subclasses provide

    def read_inputs(self, data: Path, hyper: LoraParams, config: Config) -> TuningInputs:
        """Read and validate every input row; errors name file, line and field."""
        raise NotImplementedError

    def check_encodable(self, run: TuningRun, inputs: TuningInputs, where: str) -> None:
        """Tokenize what will be trained on, so a row that cannot be used fails before training."""

    def train(self, run: TuningRun, inputs: TuningInputs, scratch: Path) -> dict[str, Any]:
        raise NotImplementedError

    # ---- shared

    def manifest(
        self, base: ModelSpec, hyper: LoraParams, inputs: TuningInputs, bound_report: dict[str, list[str]]
    ) -> dict[str, Any]:
        """The training manifest: everything that decides the adapter, known before training.

        It is the ``provenance.json`` the gate's scope check reads, less what only training
        produces (the adapter's digest, the losses).
        """
        return {
            "manifest_version": MANIFEST_VERSION,
            "modification": self.modification,
            "tuner": self.name,
            "base_model": {"spec": str(base), "name": base.name, "digest": None},
            "data": inputs.data,
            "hyperparameters": hyper.model_dump(),
            "seed": hyper.seed,
            "bounds": bound_report,
            "versions": library_versions(),
            **inputs.extra,
        }

    def _prepare(self, base: ModelSpec, hyper: LoraParams, config: Config) -> TuningRun:
        settings = parse_settings(base, config)
        if settings.adapter is not None:
            raise UsageError("the base model spec must not carry an adapter; a new one is trained from the base",
                             field="base")
        source = resolve_source(base.name, config.root)
        digest = source_digest(source, settings.cache_root)
        directory = materialize(source, settings.cache_root)
        # The model itself is loaded once the rows have been tokenized: a row that cannot be
        # used fails first. Until then ``model`` holds the directory to load it from.
        return TuningRun(base, digest, settings.device, load_tokenizer(directory), directory, hyper, config, settings)

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


def _check_base_spec(tuner: str, base: ModelSpec) -> None:
    if base.provider != "hf":
        raise UsageError(f"the {tuner} tuner trains hf models, not {base.provider!r} ({base})", field="base")


def data_section(path: Path, examples: list[Example]) -> dict[str, Any]:
    """The manifest's ``data``: the file, its SHA-256, its rows and their sources."""
    return {
        "path": str(path),
        "sha256": file_sha256(path),
        "rows": len(examples),
        "sources": sorted({e.source for e in examples if e.source}),
    }


def write_provenance(directory: Path, provenance: dict[str, Any]) -> None:
    (directory / PROVENANCE_FILE).write_text(
        json.dumps(provenance, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
    )


@contextlib.contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A staging directory beside ``out``, renamed to ``out`` when the block succeeds.

    On failure (an exception, Ctrl-C) the staging directory is removed and ``out`` is left
    as it was. An existing ``out`` is replaced only once the new one is complete.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- lora and dpo


class LoraTuner(AdapterTuner):
    """Supervised fine-tuning of a LoRA adapter on chat conversations (loss on assistant
    turns only), with TRL's ``SFTTrainer``."""

    name = "lora"
    modification = "lora_adapter_retrain"
    Params = LoraParams

    def read_inputs(self, data: Path, hyper: LoraParams, config: Config) -> TuningInputs:
        examples = read_sft_examples(data)
        return TuningInputs(examples, data_section(data, examples))

    def check_encodable(self, run: TuningRun, inputs: TuningInputs, where: str) -> None:
        inputs.payload = [
            encode_conversation(run.tokenizer, e.messages, run.params.max_length, f"{where}:{e.line}")
            for e in inputs.examples
        ]

    def train(self, run: TuningRun, inputs: TuningInputs, scratch: Path) -> dict[str, Any]:
        from gatekeeper_hf.trl_training import train_sft

        encoded: list[Encoded] = inputs.payload
        return train_sft(run.model, run.tokenizer, encoded, run.params, scratch, run.device)


class DpoTuner(AdapterTuner):
    """Direct preference optimisation (Rafailov et al., 2023) of a LoRA adapter with TRL's
    ``DPOTrainer``: sigmoid loss on the log-probability margins of the chosen over the
    rejected answer; the reference is the base model, i.e. the adapter switched off."""

    name = "dpo"
    modification = "dpo_preference_tune"
    Params = DpoParams

    def read_inputs(self, data: Path, hyper: LoraParams, config: Config) -> TuningInputs:
        examples = read_dpo_examples(data)
        return TuningInputs(examples, data_section(data, examples))

    def check_encodable(self, run: TuningRun, inputs: TuningInputs, where: str) -> None:
        for example in inputs.examples:
            for answer in (example.chosen, example.rejected):
                encode_conversation(run.tokenizer, [*example.messages, {"role": "assistant", "content": answer}],
                                    run.params.max_length, f"{where}:{example.line}", last_turn_only=True)

    def train(self, run: TuningRun, inputs: TuningInputs, scratch: Path) -> dict[str, Any]:
        from gatekeeper_hf.trl_training import train_dpo

        hyper = run.params
        assert isinstance(hyper, DpoParams)
        return train_dpo(run.model, run.tokenizer, inputs.examples, hyper, scratch, run.device)
