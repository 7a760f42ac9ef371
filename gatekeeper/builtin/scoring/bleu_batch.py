"""Sentence BLEU for a batch of outputs, equal to ``sacrebleu.sentence_bleu`` to the last float.

sacrebleu scores one sentence in ~100 µs of Python (n-gram tuples in a ``Counter``, a score
object with formatted strings). A suite of 10^5 cases asks for 2 x 10^5 of them, so the
built-in ``bleu`` evaluator's ``score_batch`` computes the same statistics for a whole batch
at once:

* **tokens**: sacrebleu's own preprocessing (``lower``, ``rstrip``) and tokeniser. For the
  default ``13a`` tokeniser the batch is tokenised in one pass: its regular expressions pad
  the punctuation of regex 1 with spaces and split ``.``/``,``/``-`` according to whether
  their neighbours are digits, so a word's tokens do not depend on the words around it.
  The joined batch is cut into words with ``str.split`` and each distinct word goes through
  sacrebleu's regular expressions once (a bounded memo kept between batches). A batch with
  a ``\\x00`` in a text, or another tokeniser, is tokenised line by line with sacrebleu.
* **n-grams**: tokens become the batch's own numbers 1..V; the 1..4-grams become integer
  keys (their numbers as the digits of a number in base ``V + 1``, so keys of different
  orders differ) and are counted per text with ``numpy.unique``; each output n-gram's count
  is clipped by the largest count among the case's references (sacrebleu's merge of several
  references), and ``bincount`` sums the matches per order.
* **the formula**: :func:`sentence_bleu` is sacrebleu's ``BLEU.compute_bleu``: products and
  quotients in numpy (IEEE-rounded as Python's), logarithms, the sum and the exponential
  per row in Python, so the scores are bit-identical; the tests compare them with
  ``sacrebleu.sentence_bleu`` on a varied corpus.

Nothing is deduplicated across pairs: every output is tokenised and counted, whether or not
it repeats. Only what depends on a reference alone (its tokens, its n-gram counts) is
computed once per distinct reference text of a batch.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

import numpy as np

ORDER = 4
"""sacrebleu's ``MAX_NGRAM_ORDER``."""

SMOOTH_DEFAULTS: dict[str, float | None] = {"none": None, "floor": 0.1, "add-k": 1, "exp": None}
"""sacrebleu's ``BLEU.SMOOTH_DEFAULTS``."""

_MEMO_LIMIT = 1 << 17
_KEY_LIMIT = 2**63
"""n-gram keys must stay below this (int64), else the batch is counted with ``Counter``."""
_ENTRY_LIMIT = 2**63
"""(text, n-gram) entries must stay below this, else the n-grams are numbered first. The
tests lower both limits to exercise the other paths."""
_SEPARATOR = "\x00"

# The characters sacrebleu's first 13a regex pads with spaces (minus the space itself, whose
# padding changes no token): derived from the regex so that they cannot drift apart.
_R1 = re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])")
_PADDED = "".join(ch for ch in map(chr, range(0x20, 0x7F)) if ch != " " and _R1.fullmatch(ch))
_NEEDS_SPLIT = re.compile(f"[{re.escape(_PADDED)}.,\\-]")
_REGEXES_13A = [_R1.pattern, r"([^0-9])([\.,])", r"([\.,])([^0-9])", r"([0-9])(-)"]
"""sacrebleu's 13a regexes (2.x) that the word-by-word tokenisation relies on; a sacrebleu
whose regexes differ is used line by line."""


def sentence_bleu(
    correct: np.ndarray, total: np.ndarray, sys_len: np.ndarray, ref_len: np.ndarray, smooth_method: str,
) -> tuple[list[float], list[list[float]], list[float]]:
    """``(scores, precisions, brevity penalties)`` of each row of statistics: sacrebleu's
    ``BLEU.compute_bleu`` (2.4-2.6) with ``effective_order``, every float computed by the same
    IEEE operations in the same order (products and quotients in numpy, which rounds them
    as Python does; ``math.log``/``math.exp`` and the built-in ``sum`` per row), so that the
    scores are sacrebleu's bit for bit."""
    smooth_value = SMOOTH_DEFAULTS[smooth_method]
    rows = correct.shape[0]
    bp = np.ones(rows)
    short = sys_len < ref_len
    bp[short & (sys_len == 0)] = 0.0
    some = short & (sys_len > 0)
    if some.any():
        bp[some] = list(map(math.exp, (1 - ref_len[some] / sys_len[some]).tolist()))
    hits = correct.astype(np.float64)
    counts = total.astype(np.float64)
    if smooth_method == "add-k":
        assert smooth_value is not None
        hits[:, 1:] += smooth_value
        counts[:, 1:] += smooth_value
    # sacrebleu stops at the first order without n-grams; the orders before it count.
    effective = np.minimum.accumulate(counts > 0, axis=1)
    eff_order = effective.sum(axis=1)
    zero = hits == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        precisions = np.where(zero, 0.0, 100.0 * hits / counts)
        if smooth_method == "exp":
            doublings = np.cumsum(zero, axis=1)
            precisions = np.where(zero, 100.0 / (2.0**doublings * counts), precisions)
        elif smooth_method == "floor":
            assert smooth_value is not None
            precisions = np.where(zero, 100.0 * smooth_value / counts, precisions)
    matched: np.ndarray = np.asarray(correct.any(axis=1))
    precisions = np.where(effective & matched[:, None], precisions, 0.0)
    logs = np.full(precisions.shape, -9999999999.0)
    positive = precisions > 0
    logs[positive] = list(map(math.log, precisions[positive].tolist()))
    scores = [0.0] * rows
    bps = bp.tolist()
    exp = math.exp
    for row, (log_row, n, bp_row, any_match) in enumerate(
        zip(logs.tolist(), eff_order.tolist(), bps, matched.tolist(), strict=True)
    ):
        if any_match:
            scores[row] = bp_row * exp(sum(log_row[:n]) / n)
    return scores, precisions.tolist(), bps


def closest_ref_len(hyp_len: int, ref_lens: Sequence[int]) -> int:
    """sacrebleu's ``_get_closest_ref_len``: the nearest reference length, the shorter on a tie."""
    closest_diff, closest_len = -1, -1
    for ref_len in ref_lens:
        diff = abs(hyp_len - ref_len)
        if closest_diff == -1 or diff < closest_diff:
            closest_diff, closest_len = diff, ref_len
        elif diff == closest_diff and ref_len < closest_len:
            closest_len = ref_len
    return closest_len


class _Codes(dict[str, int]):
    """word → code, filled on first sight: a token id (>= 0) for a word that is one token,
    -1 for the line separator, ``-2 - k`` for a word of several tokens (``multi[k]``)."""

    def __init__(self, tokens: Tokens) -> None:
        super().__init__({_SEPARATOR: -1})
        self.tokens = tokens

    def __missing__(self, word: str) -> int:
        ids = self.tokens._word_ids(word)
        if len(ids) == 1:
            code = ids[0]
        else:
            code = -2 - len(self.tokens.multi)
            self.tokens.multi.append(ids)
        self[word] = code
        return code


class Tokens:
    """Texts → integer token ids as sacrebleu's preprocessing and tokeniser would cut them.

    One per evaluator; the vocabulary and the word memo are kept between batches (words
    repeat across a suite) and cleared when they grow past a bound. Not for concurrent use:
    the runner scores a batch at a time on one thread.
    """

    def __init__(self, tokenize: str, lowercase: bool) -> None:
        from sacrebleu.metrics.bleu import _get_tokenizer

        self.tokenize = tokenize
        self.lowercase = lowercase
        self.tokenizer: Callable[[str], str] = _get_tokenizer(tokenize)()
        post = getattr(self.tokenizer, "_post_tokenizer", None)
        self.by_word = tokenize == "13a" and [regex.pattern for regex, _ in getattr(post, "_re", [])] == _REGEXES_13A
        self.vocab: dict[str, int] = {}
        self.multi: list[tuple[int, ...]] = []
        self.codes = _Codes(self)

    def start_batch(self) -> None:
        """Bound the memory: the ids of one batch must not change, so clear between batches."""
        if len(self.vocab) > _MEMO_LIMIT or len(self.codes) > _MEMO_LIMIT:
            self.vocab.clear()
            self.multi.clear()
            self.codes = _Codes(self)

    def preprocess(self, text: str) -> str:
        """sacrebleu's ``BLEU._preprocess_segment`` before the tokeniser."""
        return (text.lower() if self.lowercase else text).rstrip()

    def ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, lengths)``: the token ids of all texts end to end, and each text's count."""
        lines = [self.preprocess(text) for text in texts]
        if not lines:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        if self.by_word and not any(_SEPARATOR in line for line in lines):
            return self._ids_13a(lines)
        vocab = self.vocab
        flat: list[int] = []
        lengths = np.empty(len(lines), dtype=np.int64)
        for i, line in enumerate(lines):
            tokens = self.tokenizer(line).split()
            lengths[i] = len(tokens)
            for token in tokens:
                index = vocab.get(token)
                if index is None:
                    index = vocab[token] = len(vocab)
                flat.append(index)
        return np.asarray(flat, dtype=np.int64), lengths

    def _ids_13a(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # Tokenizer13a's line-level replacements on the joined batch (none spans a separator),
        # then words; each distinct word is tokenised once (``_Codes``).
        joined = f" {_SEPARATOR} ".join(lines).replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
        if "&" in joined:
            joined = (joined.replace("&quot;", '"').replace("&amp;", "&")
                      .replace("&lt;", "<").replace("&gt;", ">"))
        found = joined.split()
        codes = np.fromiter(map(self.codes.__getitem__, found), dtype=np.int64, count=len(found))
        several = np.flatnonzero(codes <= -2)
        if len(several):
            # Words of several tokens: make room for their tokens and write them in.
            runs = [self.multi[-2 - code] for code in codes[several].tolist()]
            widths = np.ones(len(codes), dtype=np.int64)
            widths[several] = [len(run) for run in runs]
            firsts = np.cumsum(widths) - widths
            codes = np.repeat(codes, widths)
            run_widths = widths[several]
            offsets = np.arange(int(run_widths.sum())) - np.repeat(np.cumsum(run_widths) - run_widths, run_widths)
            codes[np.repeat(firsts[several], run_widths) + offsets] = np.fromiter(
                chain.from_iterable(runs), dtype=np.int64, count=len(offsets))
        marks = np.flatnonzero(codes == -1)
        ends = np.append(marks, len(codes))
        starts = np.concatenate(([0], marks + 1))
        return codes[codes >= 0], ends - starts

    def _word_ids(self, word: str) -> tuple[int, ...]:
        """A word's token ids (a word: what ``str.split`` cuts a line into). sacrebleu's
        regexes pad the punctuation of regex 1 with spaces and split ``.``, ``,`` and ``-``
        by whether their neighbours are digits; whitespace and padded punctuation are both
        non-digits to them, so a word's tokens do not depend on the words around it: they
        are the tokens of ``" word "`` (the tests check this against sacrebleu)."""
        split = _NEEDS_SPLIT.search(word) is not None
        tokens = self.tokenizer._post_tokenizer(f" {word} ").split() if split else [word]  # type: ignore[attr-defined]
        vocab = self.vocab
        out = []
        for token in tokens:
            index = vocab.get(token)
            if index is None:
                index = vocab[token] = len(vocab)
            out.append(index)
        return tuple(out)


def _ngram_keys(digits: np.ndarray, lengths: np.ndarray, base: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, owners)`` of every 1..``order``-gram of the texts: a key is the n-gram's
    token numbers (1..base-1) as the digits of a number in ``base``, so keys of different
    orders differ; an owner is the index of the text holding the n-gram."""
    total = int(lengths.sum())
    owner = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    if total == 0:
        return np.empty(0, dtype=np.int64), owner
    ends = np.repeat(np.cumsum(lengths), lengths)
    position = np.arange(total, dtype=np.int64)
    key = digits
    keys, owners = [key], [owner]
    for n in range(2, min(order, total) + 1):
        key = key[:-1] * base + digits[n - 1:]
        valid = position[: total - n + 1] + n <= ends[: total - n + 1]
        keys.append(key[valid])
        owners.append(owner[: total - n + 1][valid])
    return np.concatenate(keys), np.concatenate(owners)


def ngram_statistics(
    hyp_ids: np.ndarray, hyp_lens: np.ndarray, ref_ids: np.ndarray, ref_lens: np.ndarray,
    refs_of: Sequence[Sequence[int]], order: int = ORDER,
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(correct, total)``, each ``(pairs, order)``: sacrebleu's clipped n-gram matches of
    each output against its references (``refs_of[i]``: indexes of its reference texts) and
    its n-gram counts. ``None`` when the batch's vocabulary is too large for 63-bit keys."""
    pairs = len(hyp_lens)
    total = np.maximum(hyp_lens[:, None] - np.arange(order)[None, :], 0)
    correct = np.zeros((pairs, order), dtype=np.int64)
    if len(hyp_ids) == 0 or len(ref_ids) == 0:
        return correct, total
    # The batch's own token numbers 1..V (0 is no token, so keys of different orders differ).
    present = np.zeros(int(max(hyp_ids.max(), ref_ids.max())) + 1, dtype=bool)
    present[hyp_ids] = True
    present[ref_ids] = True
    local = np.cumsum(present)
    base = int(local[-1]) + 1
    if base**order >= _KEY_LIMIT:
        return None
    hyp_keys, hyp_owner = _ngram_keys(local[hyp_ids], hyp_lens, base, order)
    ref_keys, ref_owner = _ngram_keys(local[ref_ids], ref_lens, base, order)
    distinct: np.ndarray | None = None
    span = base**order
    if max(pairs, len(ref_lens)) * span >= _ENTRY_LIMIT:
        # (text, n-gram) does not fit in 63 bits: number the batch's distinct n-grams first.
        distinct, compact = np.unique(np.concatenate((hyp_keys, ref_keys)), return_inverse=True)
        hyp_keys, ref_keys = compact[: len(hyp_keys)], compact[len(hyp_keys):]
        span = len(distinct)
    hyp_entries, hyp_counts = np.unique(hyp_owner * span + hyp_keys, return_counts=True)
    ref_entries, ref_counts = np.unique(ref_owner * span + ref_keys, return_counts=True)
    entry_pair, entry_key = np.divmod(hyp_entries, span)
    clip = np.zeros(len(hyp_entries), dtype=np.int64)
    slots = max((len(refs) for refs in refs_of), default=0)
    for slot in range(slots):
        unit = np.array([refs[slot] if slot < len(refs) else -1 for refs in refs_of], dtype=np.int64)
        entry_unit = unit[entry_pair]
        wanted = entry_unit * span + entry_key
        at = np.minimum(np.searchsorted(ref_entries, wanted), len(ref_entries) - 1)
        hit = (ref_entries[at] == wanted) & (entry_unit >= 0)
        clip = np.maximum(clip, np.where(hit, ref_counts[at], 0))
    # A key of order n lies in [base^(n-1), base^n).
    keys = entry_key if distinct is None else distinct[entry_key]
    order_of = np.searchsorted(base ** np.arange(1, order, dtype=np.int64), keys, side="right")
    matched = np.minimum(hyp_counts, clip)
    flat = np.bincount(entry_pair * order + order_of, weights=matched, minlength=pairs * order)
    return flat.reshape(pairs, order).astype(np.int64), total


def counter_statistics(
    hyp_tokens: Sequence[Sequence[Any]], ref_tokens: Sequence[Sequence[Any]],
    refs_of: Sequence[Sequence[int]], order: int = ORDER,
) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`ngram_statistics` gives, with ``Counter`` (sacrebleu's own way): the
    fallback for a vocabulary too large for integer keys."""
    def ngrams(tokens: Sequence[Any]) -> Counter[tuple[Any, ...]]:
        counts: Counter[tuple[Any, ...]] = Counter()
        for n in range(1, order + 1):
            counts.update(zip(*(tokens[i:] for i in range(n)), strict=False))
        return counts

    ref_counts = [ngrams(tokens) for tokens in ref_tokens]
    correct = np.zeros((len(hyp_tokens), order), dtype=np.int64)
    total = np.zeros((len(hyp_tokens), order), dtype=np.int64)
    for i, (tokens, refs) in enumerate(zip(hyp_tokens, refs_of, strict=True)):
        merged: Counter[tuple[Any, ...]] = Counter()
        for unit in refs:
            for gram, count in ref_counts[unit].items():
                merged[gram] = max(merged[gram], count)
        for gram, count in ngrams(tokens).items():
            total[i, len(gram) - 1] += count
            if gram in merged:
                correct[i, len(gram) - 1] += min(count, merged[gram])
    return correct, total
