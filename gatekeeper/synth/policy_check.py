"""``gatekeeper synth --policy``: the written files checked against the policy's
``data_management`` before anyone uses them — the synthetic share of the suite
(``synthetic.evaluation``) and of the training files (``synthetic.training``), and the
privacy record (``privacy``), with the same functions ``gatekeeper check`` applies."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gatekeeper.files import read_jsonl
from gatekeeper.gate.policy import load_policy, origin_counts, synthetic_share_deviations

if TYPE_CHECKING:
    from gatekeeper.synth.state import SynthResult


def policy_deviations(path: Path, result: SynthResult | None) -> list[str]:
    """Deviations of ``result``'s files (``None``: only load and validate the policy)."""
    policy = load_policy(path)
    if result is None:
        return []
    rules = policy.data_management
    found: list[str] = []
    for name, entry in result.files.items():
        rule = rules.synthetic.evaluation if entry["kind"] == "cases" else rules.synthetic.training
        what = f"{'suite' if entry['kind'] == 'cases' else 'training file'} {name}"
        if rule is not None:
            rows = [row for _, row in read_jsonl(result.options.out / name)]
            found += synthetic_share_deviations(
                rule, origin_counts(rows, rule.slices),
                f"data_management.synthetic.{'evaluation' if entry['kind'] == 'cases' else 'training'}", what)
        if rules.privacy is not None:
            from gatekeeper.signals.privacy import check_privacy

            found += [f"{what}: {d}" for d in check_privacy(rules.privacy, entry.get("privacy"))]
    return found
