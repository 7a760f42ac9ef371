"""Built-in model providers: ``replay`` (recorded outputs) and ``python`` (a callable)."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.files import read_jsonl
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
    """Answers from a JSONL recording ``{"id", "output"[, "epoch", "latency_ms", "usage"]}``."""

    max_batch_size = 256

    def __init__(self, path: Path, spec: ModelSpec) -> None:
        self.path = path
        self.outputs: dict[tuple[str, int], dict[str, Any]] = {}
        lines: dict[tuple[str, int], int] = {}
        for lineno, row in read_jsonl(path):
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
            key = (str(row["id"]), epoch)
            if key in lines:
                # Last-one-wins would replay whichever answer happened to be written later.
                raise UsageError(
                    f"duplicate recording for id {key[0]!r} epoch {epoch} (first at line {lines[key]})",
                    file=str(path), line=lineno, field="id",
                )
            lines[key] = lineno
            self.outputs[key] = row
        self.identity = ModelIdentity(
            provider="replay", name=spec.name, digest=hashlib.sha256(path.read_bytes()).hexdigest(),
            version=f"{len(self.outputs)} recorded outputs",
        )

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = []
        for req in requests:
            row = self.outputs.get((req.case.id, req.epoch)) or self.outputs.get((req.case.id, 0))
            if row is None:
                out.append(Generation(text="", error=f"no recorded output for case {req.case.id!r}"))
                continue
            out.append(Generation(
                text=row["output"], latency_ms=row.get("latency_ms"),
                usage=dict(row.get("usage") or {}), cost=row.get("cost"),
            ))
        return out


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
