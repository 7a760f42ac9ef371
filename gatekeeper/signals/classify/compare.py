"""Label distributions by model version, and the A/B comparison of two versions.

Per version and label: the count and share with a Wilson interval. Between two versions:
the chi-square test of homogeneity (:func:`gatekeeper.gate.stats.label_distribution_test`,
the test ``measure: distribution`` gates on), the Jensen-Shannon distance (base 2, 0 same
distribution .. 1 disjoint) with a percentile bootstrap interval (each version's counts
resampled from its observed shares: the versions served different traffic), and per
label the difference of shares with Newcombe's hybrid score interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gatekeeper.types import UsageError

Counts = Mapping[str, Mapping[str, int]]
"""model version → label → rows."""


def check_taxonomy(counts: Mapping[str, Counts], taxonomy: Mapping[str, Sequence[str]], where: str) -> None:
    """Every label in the table is one of its task's labels (a labelled table from another
    specification is refused, naming the table, the column and the label)."""
    for task, per_version in counts.items():
        known = set(taxonomy.get(task, ()))
        for version, labels in per_version.items():
            for label in labels:
                if label not in known:
                    raise UsageError(f"column {task!r} holds label {label!r} (model version {version}), which is "
                                     f"not in the taxonomy ({', '.join(taxonomy.get(task, ()))})",
                                     file=where, field=task)


def distributions(counts: Counts, labels: Sequence[str], level: float = 0.95) -> dict[str, Any]:
    from gatekeeper.signals.summary import wilson_rate

    out: dict[str, Any] = {}
    for version, per_label in counts.items():
        n = sum(per_label.values())
        out[version] = {"n": n, "labels": {}}
        for label in labels:
            rate = wilson_rate(int(per_label.get(label, 0)), n, level)
            out[version]["labels"][label] = {"k": rate.k, "share": rate.rate, "low": rate.low, "high": rate.high}
    return out


def jensen_shannon(a: Any, b: Any) -> float:
    import numpy as np
    from scipy.spatial.distance import jensenshannon

    pa_, pb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if pa_.sum() == 0 or pb.sum() == 0:
        return float("nan")
    value = jensenshannon(pa_ / pa_.sum(), pb / pb.sum(), base=2)
    return float(0.0 if np.isnan(value) else value)


def compare_versions(
    baseline: Mapping[str, int], candidate: Mapping[str, int], labels: Sequence[str], *,
    level: float = 0.95, resamples: int = 2000, seed: int = 0,
) -> dict[str, Any]:
    """The A/B comparison of two versions' label counts (see the module docstring)."""
    import numpy as np

    from gatekeeper.gate.stats import label_distribution_test, newcombe_independent_ci

    a = np.array([baseline.get(lab, 0) for lab in labels], dtype=np.int64)
    b = np.array([candidate.get(lab, 0) for lab in labels], dtype=np.int64)
    if a.sum() == 0 or b.sum() == 0:
        raise UsageError("both versions need labelled rows to be compared", field="--compare")
    rng = np.random.default_rng(seed)
    boot_a = rng.multinomial(int(a.sum()), a / a.sum(), size=resamples)
    boot_b = rng.multinomial(int(b.sum()), b / b.sum(), size=resamples)
    draws = np.array([jensen_shannon(x, y) for x, y in zip(boot_a, boot_b, strict=True)])
    tail = (1 - level) / 2
    per_label = {}
    for i, label in enumerate(labels):
        low, high = newcombe_independent_ci(int(b[i]), int(b.sum()), int(a[i]), int(a.sum()),
                                            alpha=1 - level, sides="two")
        per_label[label] = {"baseline": float(a[i] / a.sum()), "candidate": float(b[i] / b.sum()),
                            "delta": float(b[i] / b.sum() - a[i] / a.sum()), "low": low, "high": high}
    return {
        "chi_square": label_distribution_test(dict(zip(labels, a.tolist(), strict=True)),
                                              dict(zip(labels, b.tolist(), strict=True))),
        "jensen_shannon": {"distance": jensen_shannon(a, b), "low": float(np.quantile(draws, tail)),
                           "high": float(np.quantile(draws, 1 - tail)), "resamples": resamples,
                           "interval": "percentile bootstrap, multinomial resampling per version"},
        "labels": per_label,
        "confidence_level": level,
    }
