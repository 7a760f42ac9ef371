"""Built-in model providers: ``replay`` (recorded outputs) and ``python`` (a callable)."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from gatekeeper import hookimpl
from gatekeeper.files import parse_jsonl_line, read_jsonl_at, sha256_file
from gatekeeper.kinds import Model, ModelProvider, Register
from gatekeeper.types import (
    Config,
    Generation,
    GenerationRequest,
    ModelIdentity,
    ModelSpec,
    UsageError,
)


class ReplayModel(Model):
    """Answers from a JSONL recording ``{"id", "output"[, "epoch", "latency_ms", "usage"]}``.

    Every row is checked when the recording is loaded; then only where each row is stays in
    memory (its byte offset, by epoch and id) and a row is read back when it is replayed: a
    recording of a million answers costs ~150 MB, not the ~600 MB of its parsed rows."""

    max_batch_size = 256

    def __init__(self, path: Path, spec: ModelSpec) -> None:
        self.path = path
        self.offsets: dict[int, dict[str, int]] = {}
        """epoch -> case id -> byte offset of its row."""
        count = 0
        for offset, lineno, row in read_jsonl_at(path):
            if "id" not in row:
                raise UsageError("recording row has no 'id'", file=str(path), line=lineno, field="id")
            if not isinstance(row.get("output"), str):
                raise UsageError(
                    "recording row has no text 'output'", file=str(path), line=lineno, field="output"
                )
            for name in ("latency_ms", "cost"):
                value = row.get(name)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise UsageError(f"{name!r} must be a number", file=str(path), line=lineno, field=name)
            if row.get("usage") is not None and not isinstance(row["usage"], dict):
                raise UsageError("'usage' must be an object", file=str(path), line=lineno, field="usage")
            epoch = row.get("epoch", 0)
            if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
                raise UsageError(
                    "'epoch' must be a whole number >= 0", file=str(path), line=lineno, field="epoch"
                )
            case_id = str(row["id"])
            by_id = self.offsets.setdefault(epoch, {})
            if case_id in by_id:
                # Last-one-wins would replay whichever answer happened to be written later.
                first = path.read_bytes()[: by_id[case_id]].count(b"\n") + 1
                raise UsageError(
                    f"duplicate recording for id {case_id!r} epoch {epoch} (first at line {first})",
                    file=str(path), line=lineno, field="id",
                )
            by_id[case_id] = offset
            count += 1
        self._fh: BinaryIO | None = None
        stat = path.stat()
        self._stamp = (stat.st_size, stat.st_mtime_ns)
        self.identity = ModelIdentity(
            provider="replay", name=spec.name, digest=sha256_file(path),
            version=f"{count} recorded outputs",
        )

    def recorded(self, case_id: str, epoch: int = 0) -> dict[str, Any] | None:
        """The recorded row for ``case_id`` at ``epoch`` (else at epoch 0), read from the file."""
        offset = self.offsets.get(epoch, {}).get(case_id)
        if offset is None:
            offset = self.offsets.get(0, {}).get(case_id)
        if offset is None:
            return None
        if self._fh is None:
            self._fh = self.path.open("rb")
            stat = os.fstat(self._fh.fileno())
            if (stat.st_size, stat.st_mtime_ns) != self._stamp:  # not the recording the identity hashed
                self._fh.close()
                self._fh = None
                raise UsageError("the recording changed after it was loaded; run again", file=str(self.path))
        self._fh.seek(offset)
        return parse_jsonl_line(self._fh.readline(), self.path, 0)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = []
        for req in requests:
            row = self.recorded(req.case.id, req.epoch)
            if row is None:
                out.append(Generation(text="", error=f"no recorded output for case {req.case.id!r}"))
                continue
            out.append(Generation(
                text=row["output"], latency_ms=row.get("latency_ms"),
                usage=dict(row.get("usage") or {}), cost=row.get("cost"),
            ))
        return out

    async def aclose(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class ReplayProvider(ModelProvider):
    name = "replay"
    description = "recorded outputs from a JSONL file: replay:PATH"

    def load(self, spec: ModelSpec, config: Config) -> Model:
        path = config.path(spec.name) if not Path(spec.name).exists() else Path(spec.name)
        if not path.is_file():
            raise UsageError("replay recording not found", file=spec.name, field="model")
        return ReplayModel(path, spec)


class PythonModel(Model):
    """Calls ``fn(messages, params)``; it returns the text, or ``{"output", "usage"}``."""

    def __init__(self, fn: Callable[..., Any], spec: ModelSpec) -> None:
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            source = f"{fn.__module__}.{fn.__qualname__}"
        self.identity = ModelIdentity(
            provider="python", name=spec.name,
            digest=hashlib.sha256(
                (source + json.dumps(spec.params, sort_keys=True)).encode()
            ).hexdigest(),
        )
        self.max_concurrency = int(spec.params.get("concurrency", 0)) or None

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        (req,) = requests
        params = {
            "max_tokens": req.max_tokens, "temperature": req.temperature, "seed": req.seed,
            "stop": list(req.stop), "epoch": req.epoch, "case_id": req.case.id,
        }
        started = time.perf_counter()
        if self.is_async:
            value = await self.fn(list(req.messages), params)
        else:
            import asyncio

            value = await asyncio.to_thread(self.fn, list(req.messages), params)
        latency = (time.perf_counter() - started) * 1000
        if isinstance(value, dict):
            return [Generation(
                text=str(value.get("output", "")), latency_ms=value.get("latency_ms", latency),
                usage=dict(value.get("usage") or {}), cost=value.get("cost"),
            )]
        return [Generation(text=str(value), latency_ms=latency)]


class PythonProvider(ModelProvider):
    name = "python"
    description = "a Python callable: python:package.module:function"
    loads_code = True
    """Suites and policies may name it only with --allow-code (gatekeeper.host.code_specs)."""

    def load(self, spec: ModelSpec, config: Config) -> Model:
        module_name, sep, attr = spec.name.partition(":")
        if not sep:
            raise UsageError(f"python model {spec.name!r} is not module:function", field="model")
        root = str(config.root)
        if root not in sys.path:
            sys.path.insert(0, root)
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise UsageError(
                f"cannot import {module_name!r}: {type(exc).__name__}: {exc}", field="model"
            ) from None
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise UsageError(f"{module_name!r} has no callable {attr!r}", field="model")
        return PythonModel(fn, spec)


@hookimpl
def gatekeeper_register_models(register: Register[ModelProvider]) -> None:
    register(ReplayProvider)
    register(PythonProvider)
