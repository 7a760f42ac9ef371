"""The ``distill`` tuner: a teacher model answers a prompt set; a LoRA student learns the answers.

``--data`` is a prompt set given as gatekeeper suites (a suite file or a directory of
them; production signals become one with ``gatekeeper signals build-suite``). The teacher
is any model spec (``openai:gpt-4o?...``, an Azure deployment, ``hf:...``, a
``replay:`` recording) and answers through gatekeeper's runner, so its answers are cached
(a second run pays nothing), rate-limited and retried like every model call in a check.
The student (``--base``, an hf model) is then fine-tuned with LoRA on the conversations
prompt + teacher answer (SFT with TRL, loss on the answer only). The manifest names the
teacher (spec and identity digest) and the SHA-256 of the prompt set.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from gatekeeper.types import ModelSpec, UsageError
from gatekeeper_hf.training_data import Example, encode_conversation
from gatekeeper_hf.tuning import AdapterTuner, LoraParams, TuningInputs, TuningRun

if TYPE_CHECKING:
    from gatekeeper.types import Config


class DistillParams(LoraParams):
    """Hyperparameters of the ``distill`` tuner: those of ``lora`` plus the teacher."""

    teacher: str = Field(min_length=1)
    """The teacher's model spec, e.g. ``openai:gpt-4o-mini`` or ``replay:teacher.jsonl``."""
    max_failed_fraction: float = Field(0.1, ge=0, le=1)
    """Give up when more of the teacher's answers than this failed (errors, empty answers)."""
    method: Literal["sft", "on_policy"] = "sft"
    """``sft``: learn the teacher's answers (any teacher). ``on_policy``: TRL's on-policy
    distillation, the student's own samples scored token by token against the teacher's
    distributions; needs an ``hf:`` teacher with the student's tokenizer."""
    max_completion_length: int = Field(64, ge=1)
    """on_policy: tokens the student samples per prompt."""
    divergence_beta: float = Field(0.5, ge=0, le=1)
    """on_policy: generalized JSD coefficient (0 forward KL, 0.5 JSD, 1 reverse KL)."""


def prompt_set_hash(cases: list[Any]) -> str:
    """SHA-256 over every prompt (its case key and rendered messages), in a stable order."""
    payload = sorted(
        json.dumps({"case": case.key, "messages": [dict(m) for m in case.messages]}, sort_keys=True,
                   ensure_ascii=False)
        for case in cases
    )
    return hashlib.sha256("\n".join(payload).encode("utf-8")).hexdigest()


class DistillTuner(AdapterTuner):
    """Sequence-level knowledge distillation (Kim and Rush, 2016) into a LoRA adapter."""

    name = "distill"
    modification = "distillation"
    Params: ClassVar[type[LoraParams]] = DistillParams
    session: Any = None
    """Set by ``gatekeeper tune``: the teacher is loaded and run through it."""

    def read_inputs(self, data: Path, hyper: LoraParams, config: Config) -> TuningInputs:
        assert isinstance(hyper, DistillParams)
        if self.session is None:
            raise UsageError("the distill tuner runs under `gatekeeper tune` (it runs the teacher through the runner)",
                             field="--tuner")
        try:
            teacher_spec = ModelSpec.parse(hyper.teacher)
        except UsageError as exc:
            raise UsageError(f"teacher: {exc.message}", field="params.teacher") from None
        suites = self.session.collect([str(data)])
        cases = [case for suite in suites for case in suite.cases]
        if hyper.method == "on_policy":
            return self._on_policy_inputs(data, teacher_spec, suites, cases, config)
        teacher = self.session.load_model(teacher_spec)
        results, stats = self.session.run({"teacher": teacher}, suites, run_id="distill-teacher",
                                          specs={"teacher": str(teacher_spec)}, progress=False)
        examples, failed = [], []
        for result in results:
            text = (result.generation.text or "").strip()
            if result.generation.error or not text:
                failed.append(f"{result.case.key}: {result.generation.error or 'empty answer'}")
                continue
            messages = [dict(m) for m in result.case.messages] + [{"role": "assistant", "content": text}]
            examples.append(Example(0, result.case.suite, messages))
        if not examples or len(failed) > hyper.max_failed_fraction * len(results):
            shown = "; ".join(failed[:3])
            raise UsageError(f"the teacher failed on {len(failed)} of {len(results)} prompts ({shown}); "
                             "nothing was trained", field="params.teacher")
        identity = getattr(teacher, "identity", None)
        data_section = {
            "path": str(data),
            "sha256": prompt_set_hash(cases),
            "rows": len(examples),
            "sources": sorted({s.name for s in suites}),
        }
        extra = {
            "teacher": {
                "spec": str(teacher_spec),
                "digest": getattr(identity, "digest", None),
                "answers": len(examples),
                "failed": len(failed),
                "cached": sum(1 for r in results if r.generation.cached),
                "cost": round(sum(r.generation.cost or 0.0 for r in results), 6),
            },
            "prompts": {"sha256": prompt_set_hash(cases), "cases": len(cases),
                        "suites": {s.name: s.hash for s in suites}},
        }
        del stats
        return TuningInputs(examples, data_section, extra)

    def _on_policy_inputs(self, data: Path, teacher: ModelSpec, suites: list[Any], cases: list[Any],
                          config: Config) -> TuningInputs:
        """Prompts only: the teacher scores the student's samples during training."""
        from gatekeeper_hf.loading import resolve_source, source_digest
        from gatekeeper_hf.provider import parse_settings

        if teacher.provider != "hf":
            raise UsageError("on-policy distillation needs the teacher's token distributions: give an hf: teacher "
                             f"(not {teacher.provider!r}), or method=sft", field="params.teacher")
        settings = parse_settings(teacher, config)
        source = resolve_source(teacher.name, config.root)
        prompts = prompt_set_hash(cases)
        examples = [Example(0, case.suite, [dict(m) for m in case.messages]) for case in cases]
        extra = {
            "teacher": {"spec": str(teacher), "digest": source_digest(source, settings.cache_root),
                        "method": "on_policy"},
            "prompts": {"sha256": prompts, "cases": len(cases), "suites": {s.name: s.hash for s in suites}},
        }
        data_section = {"path": str(data), "sha256": prompts, "rows": len(cases),
                        "sources": sorted({s.name for s in suites})}
        return TuningInputs(examples, data_section, extra, payload=(source, settings))

    def check_encodable(self, run: TuningRun, inputs: TuningInputs, where: str) -> None:
        hyper = run.params
        assert isinstance(hyper, DistillParams)
        if hyper.method == "on_policy":
            from gatekeeper_hf.loading import load_tokenizer, materialize

            source, settings = inputs.payload
            teacher_tokenizer = load_tokenizer(materialize(source, settings.cache_root))
            if teacher_tokenizer.get_vocab() != run.tokenizer.get_vocab():
                raise UsageError("the teacher's tokenizer is not the student's: on-policy distillation compares "
                                 "their token distributions; use method=sft", field="params.teacher")
            return
        inputs.payload = [
            encode_conversation(run.tokenizer, e.messages, run.params.max_length, f"{where} ({e.source})",
                                last_turn_only=True)
            for e in inputs.examples
        ]

    def train(self, run: TuningRun, inputs: TuningInputs, scratch: Path) -> dict[str, Any]:
        from gatekeeper_hf.trl_training import train_on_policy_distillation, train_sft

        hyper = run.params
        assert isinstance(hyper, DistillParams)
        if hyper.method == "sft":
            return train_sft(run.model, run.tokenizer, inputs.payload, hyper, scratch, run.device)
        from gatekeeper_hf.loading import load_base_model, materialize

        source, settings = inputs.payload
        teacher = load_base_model(materialize(source, settings.cache_root), settings.dtype, run.device)
        prompts = [e.messages for e in inputs.examples]
        return train_on_policy_distillation(run.model, teacher, run.tokenizer, prompts, hyper, scratch, run.device)
