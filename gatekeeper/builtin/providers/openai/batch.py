"""Batch mode of the ``openai`` provider: the Batch API, resumable across restarts.

The requests the runner hands over become one JSONL file whose ``custom_id`` is each
request's cache key; it is uploaded, a batch is created and polled until it completes,
and the output file is read back into generations. The batch id is kept in
``.gatekeeper/batches/<job>.json`` (and in the batch's metadata), so a process that is
killed while the batch runs resumes polling the same batch when started again instead of
submitting — and paying for — a second one.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from gatekeeper.builtin.providers.openai.endpoints import Endpoint
from gatekeeper.builtin.providers.openai.wire import generation_from_completion, request_body
from gatekeeper.engine.cache import generation_key
from gatekeeper.files import write_atomic
from gatekeeper.types import Generation, GenerationRequest, ProviderError, stable_hash

if TYPE_CHECKING:
    from gatekeeper.builtin.providers.openai.provider import OpenAIModel

CHAT_URL = "/v1/chat/completions"
METADATA_KEY = "gatekeeper_job"
FINISHED_BAD = ("failed", "expired", "cancelled", "cancelling")
MAX_POLL_ERRORS = 10


class BatchJob:
    """One batch: its requests by custom id, and where its state is kept."""

    def __init__(self, model: OpenAIModel, requests: list[GenerationRequest]) -> None:
        self.model = model
        self.endpoint: Endpoint = model.pool.endpoints[0]
        self.by_id: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            self.by_id.setdefault(generation_key(model.identity, request), []).append(index)
        self.requests = requests
        self.key = stable_hash({"model": model.identity.digest, "requests": sorted(self.by_id)})[:32]
        self.state_path = model.config.path(model.settings.batch_dir) / f"{self.key}.json"

    # ----------------------------------------------------------------- state

    def load_state(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return state if isinstance(state, dict) and state.get("batch_id") else None

    def save_state(self, state: dict[str, Any]) -> None:
        write_atomic(self.state_path, json.dumps(state, indent=1))

    def drop_state(self) -> None:
        self.state_path.unlink(missing_ok=True)

    # ----------------------------------------------------------------- steps

    def input_jsonl(self) -> bytes:
        lines = []
        for custom_id, indices in self.by_id.items():
            body = request_body(self.endpoint.model_id, self.requests[indices[0]], self.model.token_param)
            lines.append(json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT_URL, "body": body},
                                    ensure_ascii=False))
        return ("\n".join(lines) + "\n").encode("utf-8")

    async def find_submitted(self, client: Any) -> str | None:
        """A batch of this job already on the endpoint (its state file was lost)."""
        page = await client.batches.list(limit=100)
        for batch in page.data:
            if (batch.metadata or {}).get(METADATA_KEY) == self.key and batch.status not in FINISHED_BAD:
                return str(batch.id)
        return None

    async def submit(self, client: Any) -> str:
        uploaded = await client.files.create(file=(f"gatekeeper-{self.key}.jsonl", io.BytesIO(self.input_jsonl())),
                                             purpose="batch")
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint=CHAT_URL, completion_window="24h",
            metadata={METADATA_KEY: self.key},
        )
        self.save_state({
            "batch_id": batch.id, "input_file_id": uploaded.id, "endpoint": self.endpoint.label,
            "model": self.endpoint.model_id, "requests": len(self.by_id), "submitted": time.time(),
        })
        return str(batch.id)

    async def wait(self, client: Any, batch_id: str) -> Any:
        started = time.monotonic()
        errors = 0
        last_status = ""
        while True:
            try:
                batch = await client.batches.retrieve(batch_id)
                errors = 0
            except Exception as exc:
                errors += 1
                if errors >= MAX_POLL_ERRORS:
                    # Retryable: the runner calls again and resumes this same batch.
                    raise ProviderError(self.model.message(
                        self.endpoint, f"batch {batch_id}: polling failed {errors} times",
                        f"{type(exc).__name__}: {exc}"), retryable=True) from None
                await asyncio.sleep(min(60.0, self.model.poll_s * 2 ** errors))
                continue
            if batch.status != last_status:
                counts = batch.request_counts
                done = f" ({counts.completed}/{counts.total})" if counts is not None else ""
                print(f"  openai batch {batch_id}: {batch.status}{done}", file=sys.stderr)
                last_status = batch.status
            if batch.status == "completed":
                return batch
            if batch.status in FINISHED_BAD:
                self.drop_state()
                detail = "; ".join(e.message or "" for e in (batch.errors.data or [])) if batch.errors else ""
                raise ProviderError(self.model.message(self.endpoint, f"batch {batch_id} {batch.status}", detail))
            if time.monotonic() - started > self.model.settings.batch_max_wait_s:
                raise ProviderError(self.model.message(
                    self.endpoint, f"batch {batch_id} still {batch.status} after "
                    f"{self.model.settings.batch_max_wait_s:g} s; run again later to resume it"))
            await asyncio.sleep(self.model.poll_s)

    async def results(self, client: Any, batch: Any) -> list[Generation]:
        rows: dict[str, dict[str, Any]] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await client.files.content(file_id)
                for line in content.text.splitlines():
                    if line.strip():
                        row = json.loads(line)
                        rows[str(row.get("custom_id"))] = row
        slots: list[Generation | None] = [None] * len(self.requests)
        factor = self.model.settings.batch_discount
        for custom_id, indices in self.by_id.items():
            gen = self._generation(rows.get(custom_id), batch.id, factor)
            for index in indices:
                slots[index] = gen
        return [g for g in slots if g is not None]

    def _generation(self, row: dict[str, Any] | None, batch_id: str, factor: float) -> Generation:
        if row is None:
            return Generation(text="", error=f"endpoint {self.endpoint.label}: batch {batch_id} has no result "
                              "for this request")
        response = row.get("response") or {}
        body = response.get("body")
        if row.get("error") or response.get("status_code") != 200:
            error = row.get("error") or (body or {}).get("error") or {}
            message = error.get("message", "") if isinstance(error, dict) else str(error)
            return Generation(text="", error=self.model.message(
                self.endpoint, f"batch {batch_id}: HTTP {response.get('status_code')}", message))
        try:
            gen = generation_from_completion(body, self.endpoint, price=self.model.price, factor=factor)
        except ProviderError as exc:
            return Generation(text="", error=str(exc))
        gen.metadata["batch_id"] = batch_id
        return gen


async def run_batch(model: OpenAIModel, requests: list[GenerationRequest]) -> list[Generation]:
    """Submit (or resume) the batch for ``requests`` and return their generations."""
    import openai

    job = BatchJob(model, requests)
    client = job.endpoint.client()
    try:
        state = job.load_state()
        batch_id = state["batch_id"] if state else await job.find_submitted(client)
        if batch_id is None:
            batch_id = await job.submit(client)
        elif state is None:
            job.save_state({"batch_id": batch_id, "endpoint": job.endpoint.label, "resumed": time.time()})
        batch = await job.wait(client, batch_id)
        generations = await job.results(client, batch)
    except openai.NotFoundError as exc:
        job.drop_state()  # the batch is gone (deleted, or another account): submit anew next time
        raise ProviderError(model.message(job.endpoint, "batch not found", exc.message), retryable=True) from None
    except openai.APIError as exc:
        raise ProviderError(model.message(job.endpoint, f"batch API: {type(exc).__name__}", exc.message),
                            retryable=True) from None
    job.drop_state()
    return generations

