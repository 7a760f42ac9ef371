"""Multi-turn generation: a persona simulator (the generator, playing the persona) talks with
the candidate model for N turns, and the conversation becomes the row.

Turn by turn, every conversation advances together: one runner round for the users'
messages (structured: ``{"message": ...}``, validated and repaired like any row), one for
the candidate's answers. The candidate sees the seed suite's prompt on the first turn
(system message, retrieved passages) and the plain conversation after it. An evaluation
case ends on the user's N-th message (the gate asks the model for the next answer); an
SFT conversation ends on the candidate's N-th answer. A conversation whose turn fails is
dropped as ``conversation_failed`` with the turn and the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gatekeeper.synth.generate import Sampling, StructuredModel, Usage, run_round, structured_round
from gatekeeper.synth.prompts import format_instructions, simulator_template
from gatekeeper.synth.spec import TURN_SCHEMA
from gatekeeper.types import Message

if TYPE_CHECKING:
    from gatekeeper.synth.seeds import Seeds
    from gatekeeper.synth.state import Candidate, SynthOptions


def _candidate_messages(c: Candidate, history: list[dict[str, str]], seeds: Seeds) -> tuple[Message, ...]:
    from gatekeeper.synth.outputs import prompt_messages
    from gatekeeper.synth.seeds import NOT_INHERITED

    base = {k: v for k, v in (c.seeds[0] if c.seeds else {}).items() if k not in NOT_INHERITED}
    first = prompt_messages({**base, "input": history[0]["content"]}, seeds)
    return tuple([*first, *history[1:]])


def converse(session: Any, candidates: list[Candidate], generator: Any, options: SynthOptions, seeds: Seeds,
             kind: str, usage: Usage) -> None:
    from gatekeeper.synth.state import response_format, seed_view

    assert options.candidate is not None
    answerer = session.load_model(options.candidate)
    simulator = StructuredModel(generator, response_format(TURN_SCHEMA, options.json_mode))
    template = simulator_template()
    instructions = format_instructions(TURN_SCHEMA)
    talks: dict[str, list[dict[str, str]]] = {c.id: [] for c in candidates}
    alive = list(candidates)
    answer_sampling = Sampling(options.sampling.max_tokens, 0.0, options.sampling.seed)
    for turn in range(1, options.turns + 1):
        prompts = []
        for c in alive:
            variables = {"persona": c.persona.model_dump(), "cell": c.cell.model_dump(),
                         "seeds": [seed_view(s) for s in c.seeds], "history": talks[c.id], "turn": turn,
                         "turns": options.turns, "row_id": c.id}
            prompts.append((f"{c.id}~t{turn}-user", template.render(variables, instructions)))
        users = structured_round(session, simulator, options.generator, prompts, TURN_SCHEMA, options.sampling,
                                 usage, repair=options.repair, progress=options.progress)
        for c in alive:
            pid = f"{c.id}~t{turn}-user"
            if pid in users.values:
                talks[c.id].append({"role": "user", "content": str(users.values[pid]["message"])})
            else:
                reason, error = users.dropped[pid]
                c.drop("conversation_failed", f"turn {turn}, user ({reason}): {error}")
        alive = [c for c in alive if c.dropped is None]
        if turn == options.turns and kind == "cases":
            break
        asks = [(f"{c.id}~t{turn}-assistant", _candidate_messages(c, talks[c.id], seeds)) for c in alive]
        answers = run_round(session, answerer, options.candidate, asks, answer_sampling, usage, label="candidate",
                            progress=options.progress)
        for c in alive:
            gen = answers.get(f"{c.id}~t{turn}-assistant")
            if gen is None or gen.error is not None or not gen.text.strip():
                why = "no answer" if gen is None else gen.error or "empty answer"
                c.drop("conversation_failed", f"turn {turn}, candidate: {why}")
            else:
                talks[c.id].append({"role": "assistant", "content": gen.text.strip()})
        alive = [c for c in alive if c.dropped is None]
    for c in alive:
        messages = talks[c.id]
        last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        c.value = {"input": last_user, "messages": messages, "turns": options.turns}
        c.filters["schema"] = "valid"
