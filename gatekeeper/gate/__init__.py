"""The gate: paired statistics, the PCCP policy, the decision, the check use case,
approvals, the audit trail and evidence bundles.

The vocabulary of signatures lives here, light to import, because ``gatekeeper approve --help``
lists it.
"""

from typing import Literal, get_args

Meaning = Literal["approval", "review", "responsibility"]
"""What a signature over a decision record means (21 CFR Part 11 style)."""
MEANINGS: tuple[str, ...] = get_args(Meaning)
