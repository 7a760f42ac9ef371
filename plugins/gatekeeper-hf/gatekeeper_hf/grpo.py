"""The ``grpo`` tuner: reinforcement learning (TRL's GRPO) rewarded by gatekeeper's own scorers.

``--data`` is a *reward suite*: an ordinary gatekeeper suite (YAML) whose cases are the
prompts and whose evaluators and detectors (``contains``, ``rouge_l``, ``json_schema``,
``grounding``, a judge ...) score each sampled completion; the reward is the mean of those
scores, detectors counted as ``1 - value`` (1.0 = grounded). The model is trained on what
the gate measures, so the gate must not measure it on the same cases: the tuner refuses,
before loading any model, a reward suite that shares a case id or a case's content (its
prompt messages and expected answer, hashed) with any suite the gate uses. The reward
suite's hash is recorded in the manifest.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from gatekeeper.kinds import EvalContext
from gatekeeper.types import Case, Generation, GenerationRequest, UsageError
from gatekeeper_hf.tuning import AdapterTuner, LoraParams, TuningInputs, TuningRun

if TYPE_CHECKING:
    from gatekeeper.types import Config


class GrpoParams(LoraParams):
    """Hyperparameters of the ``grpo`` tuner: those of ``lora`` plus sampling and the KL pull."""

    learning_rate: float = Field(1e-5, gt=0)
    batch_size: int = Field(2, ge=1)
    """Prompts per step; each is sampled ``num_generations`` times."""
    num_generations: int = Field(4, ge=2)
    max_completion_length: int = Field(64, ge=1)
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.0, ge=0)
    """KL coefficient towards the base model (0: no reference model, TRL's default)."""
    gate_suites: list[str] | None = None
    """Suites the gate decides with (files or directories); default: the project's ``suites``."""

    @field_validator("gate_suites", mode="before")
    @classmethod
    def _gate_list(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def case_content_hash(case: Case) -> str:
    """What a case asks and expects, hashed: equal for a gate case copied under another id."""
    payload = {"messages": [dict(m) for m in case.messages], "expected": case.expected}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def overlap(reward: list[Case], gate: list[Case]) -> list[tuple[Case, Case, str]]:
    """Pairs (reward case, gate case, "id" | "content") that the two suites share."""
    by_id = {c.id: c for c in gate}
    by_hash = {case_content_hash(c): c for c in gate}
    found = []
    for case in reward:
        if case.id in by_id:
            found.append((case, by_id[case.id], "id"))
        elif (twin := by_hash.get(case_content_hash(case))) is not None:
            found.append((case, twin, "content"))
    return found


class RewardSuiteScorer:
    """Turns completions into rewards with the reward suite's scorers (TRL reward function)."""

    __name__ = "gatekeeper_reward"

    def __init__(self, cases: list[Case], scorers: list[Any], config: Config, load_model: Any) -> None:
        self.cases = cases
        self.scorers = scorers
        self.context = EvalContext(config=config, load_model=load_model, generate=_generate_directly)
        self.calls = 0

    def __call__(self, prompts: list[Any], completions: list[Any], case_index: list[int], **_: Any) -> list[float]:
        self.calls += 1
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        return asyncio.run(self._score_all([self.cases[i] for i in case_index], texts))

    async def _score_all(self, cases: list[Case], texts: list[str]) -> list[float]:
        return [await self.reward(case, text) for case, text in zip(cases, texts, strict=True)]

    async def reward(self, case: Case, text: str) -> float:
        values = []
        for scorer in self.scorers:
            ctx = EvalContext(config=self.context.config, load_model=self.context.load_model,
                              generate=self.context.generate, request=GenerationRequest(case, case.messages))
            score = await scorer.ascore(case, Generation(text=text), ctx)
            if score.value is None:
                continue
            value = float(score.value)
            values.append(1.0 - value if scorer.lower_is_better else value)
        return sum(values) / len(values) if values else 0.0


async def _generate_directly(model: Any, request: GenerationRequest) -> Generation:
    """A judge's call, straight to its model (the tuner has no runner of its own)."""
    generations: list[Generation] = await model.generate([request])
    return generations[0]


class GrpoTuner(AdapterTuner):
    """Group-relative policy optimisation (Shao et al., 2024) of a LoRA adapter, rewarded by a
    gatekeeper reward suite's scorers, with TRL's ``GRPOTrainer``."""

    name = "grpo"
    modification = "rl_reward_tune"
    Params: ClassVar[type[LoraParams]] = GrpoParams
    session: Any = None
    """Set by ``gatekeeper tune``: suites are loaded and scorers built through it."""

    def read_inputs(self, data: Path, hyper: LoraParams, config: Config) -> TuningInputs:
        assert isinstance(hyper, GrpoParams)
        session = self._session()
        if not data.is_file():
            raise UsageError("reward suite not found", file=str(data), field="--data")
        suite = session.load_suite(data)
        if suite is None or not suite.cases:
            raise UsageError("not a gatekeeper suite with cases (the grpo tuner's --data is a reward suite)",
                             file=str(data), field="--data")
        scorers = suite.build_scorers(session.registries["evaluators"], session.registries["detectors"])
        if not scorers:
            raise UsageError("the reward suite declares no evaluators or detectors to reward with",
                             file=str(data), field="evaluators")
        self._refuse_overlap(suite, hyper, config, session, data)
        examples_data = {
            "path": str(data),
            "sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
            "rows": len(suite.cases),
            "sources": [f"reward-suite:{suite.name}"],
        }
        reward_suite = {
            "name": suite.name,
            "path": str(data),
            "hash": suite.hash,
            "datasets": dict(suite.datasets),
            "cases": len(suite.cases),
            "scorers": [s.metric for s in scorers],
        }
        return TuningInputs([], examples_data, {"reward_suite": reward_suite},
                            payload=RewardSuiteScorer(list(suite.cases), scorers, config, session.load_model))

    def _session(self) -> Any:
        if self.session is None:
            raise UsageError("the grpo tuner runs under `gatekeeper tune` (it loads suites and scorers)",
                             field="--tuner")
        return self.session

    @staticmethod
    def _refuse_overlap(suite: Any, hyper: GrpoParams, config: Config, session: Any, data: Path) -> None:
        paths = hyper.gate_suites or [str(p) for p in config.suites]
        gate_paths = [str(config.path(p)) for p in paths]
        if any(Path(p).resolve() == data.resolve() for p in gate_paths):
            raise UsageError("the reward suite is itself a gate suite: reward and gate must not share cases",
                             file=str(data), field="--data")
        try:
            gate_suites = session.collect(gate_paths)
        except UsageError as exc:
            raise UsageError(f"cannot load the gate suites to check them against the reward suite: {exc.message}",
                             file=exc.file, line=exc.line, field=exc.field or "params.gate_suites") from None
        gate_cases = [c for s in gate_suites if s.path.resolve() != data.resolve() for c in s.cases]
        if any(s.path.resolve() == data.resolve() for s in gate_suites):
            raise UsageError("the reward suite lies among the gate suites (the gate would evaluate it too); "
                             "move it out of " + ", ".join(paths), file=str(data), field="--data")
        shared = overlap(list(suite.cases), gate_cases)
        if shared:
            shown = "; ".join(f"{r.id} = {g.suite}::{g.id} (same {how})" for r, g, how in shared[:5])
            more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
            raise UsageError(
                f"{len(shared)} reward case(s) overlap the gate's suites: {shown}{more}. Training on the "
                "gate's own cases rewards the model for passing the gate, not for being better",
                file=str(data), field="cases",
            )

    def train(self, run: TuningRun, inputs: TuningInputs, scratch: Path) -> dict[str, Any]:
        from gatekeeper_hf.trl_training import train_grpo

        hyper = run.params
        assert isinstance(hyper, GrpoParams)
        scorer: RewardSuiteScorer = inputs.payload
        return train_grpo(run.model, run.tokenizer, scorer, hyper, scratch, run.device)
