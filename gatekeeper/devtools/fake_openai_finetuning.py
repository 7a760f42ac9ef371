"""The fine-tuning endpoints of the fake OpenAI server (mixed into ``FakeOpenAIServer``).

Speaks ``/v1/fine_tuning/jobs`` (create, list, retrieve, cancel), its ``events`` (newest
first, paged with ``after`` and ``limit``, like the real API) and ``checkpoints``. A job
moves one stage per ``ft_polls_per_stage`` retrieves: ``validating_files`` → ``queued``
→ ``running`` (``ft_steps`` metrics events, a few per poll) → ``succeeded`` with a
``fine_tuned_model``. Failure modes a test switches on:

``ft_fail``          ``{"code", "message", "param"}``: the job fails at that stage's end
                     (``ft_fail_stage``: ``validating_files`` or ``running``)
``ft_throttle``      the next N fine-tuning requests get a 429 with ``Retry-After``
``ft_hold``          jobs stay ``running`` until cleared

A training file whose rows are not chat conversations fails validation the way the real
service fails it (``invalid_training_file``, naming the line).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aiohttp import web

STAGES = ("validating_files", "queued", "running", "succeeded")


class FineTuningRoutes:
    """Mixin: state and handlers for the fine-tuning API. Needs ``error``, ``files``,
    ``counters``, ``_authorized`` and ``_unauthorized`` from the server class."""

    ft_polls_per_stage: int = 1
    ft_steps: int = 6
    ft_events_per_poll: int = 3
    ft_fail: dict[str, Any] | None = None
    ft_fail_stage: str = "validating_files"
    ft_throttle: int = 0
    ft_retry_after_s: float = 0.05
    ft_hold: bool = False

    def _ft_state(self) -> dict[str, dict[str, Any]]:
        jobs: dict[str, dict[str, Any]] | None = getattr(self, "_ft_jobs", None)
        if jobs is None:
            jobs = {}
            self._ft_jobs = jobs
        return jobs

    @property
    def ft_jobs(self) -> dict[str, dict[str, Any]]:
        """Job id → ``{"job": the job object, "events": [...], "polls": n}``."""
        return self._ft_state()

    def add_finetuning_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/fine_tuning/jobs", self._ft_create)
        app.router.add_get("/v1/fine_tuning/jobs", self._ft_list)
        app.router.add_get("/v1/fine_tuning/jobs/{job_id}", self._ft_retrieve)
        app.router.add_post("/v1/fine_tuning/jobs/{job_id}/cancel", self._ft_cancel)
        app.router.add_get("/v1/fine_tuning/jobs/{job_id}/events", self._ft_events)
        app.router.add_get("/v1/fine_tuning/jobs/{job_id}/checkpoints", self._ft_checkpoints)
        # Azure OpenAI routes the same API under /openai/ with an api-version query.
        app.router.add_post("/openai/fine_tuning/jobs", self._ft_create)
        app.router.add_get("/openai/fine_tuning/jobs", self._ft_list)
        app.router.add_get("/openai/fine_tuning/jobs/{job_id}", self._ft_retrieve)
        app.router.add_post("/openai/fine_tuning/jobs/{job_id}/cancel", self._ft_cancel)
        app.router.add_get("/openai/fine_tuning/jobs/{job_id}/events", self._ft_events)
        app.router.add_get("/openai/fine_tuning/jobs/{job_id}/checkpoints", self._ft_checkpoints)

    # ----------------------------------------------------------------- gatekeeping

    def _ft_gate(self, request: web.Request) -> web.Response | None:
        """401 for a bad key, 429 while throttled; None to go on."""
        server: Any = self
        if not server._authorized(request):
            return server._unauthorized(request)
        server.counters["ft_requests"] += 1
        if self.ft_throttle > 0:
            self.ft_throttle -= 1
            server.counters["429"] += 1
            return server.error(429, "Rate limit reached for fine-tuning requests", type_="requests",
                                code="rate_limit_exceeded",
                                headers={"retry-after-ms": str(max(1, round(self.ft_retry_after_s * 1000))),
                                         "retry-after": "1"})
        return None

    def _ft_job(self, request: web.Request) -> dict[str, Any] | None:
        return self._ft_state().get(request.match_info["job_id"])

    # ----------------------------------------------------------------- handlers

    async def _ft_create(self, request: web.Request) -> web.Response:
        server: Any = self
        refused = self._ft_gate(request)
        if refused is not None:
            return refused
        body = await request.json()
        entry = server.files.get(body.get("training_file", ""))
        if entry is None:
            return server.error(400, f"invalid training_file: {body.get('training_file')!r} not found",
                                code="invalid_training_file")
        if entry["purpose"] != "fine-tune":
            return server.error(400, "training_file must be uploaded with purpose 'fine-tune'",
                                code="invalid_training_file")
        if not isinstance(body.get("model"), str) or not body["model"]:
            return server.error(400, "model is required")
        method = body.get("method") or {"type": "supervised", "supervised": {
            "hyperparameters": body.get("hyperparameters") or {}}}
        chosen = dict((method.get("supervised") or {}).get("hyperparameters") or {})
        chosen = {"n_epochs": chosen.get("n_epochs", 3), "batch_size": chosen.get("batch_size", 1),
                  "learning_rate_multiplier": chosen.get("learning_rate_multiplier", 1.8)}
        now = int(time.time())
        job = {
            "id": f"ftjob-{uuid.uuid4().hex[:20]}", "object": "fine_tuning.job", "created_at": now,
            "model": body["model"], "training_file": entry["id"], "validation_file": body.get("validation_file"),
            "status": "validating_files", "fine_tuned_model": None, "finished_at": None, "error": None,
            "hyperparameters": chosen, "method": {"type": "supervised", "supervised": {"hyperparameters": chosen}},
            "organization_id": "org-fake", "result_files": [], "trained_tokens": None, "seed": body.get("seed", 0),
            "suffix": body.get("suffix"), "metadata": body.get("metadata"), "estimated_finish": None,
            "integrations": [],
        }
        problem = _check_training_file(entry["data"])
        self._ft_state()[job["id"]] = {"job": job, "events": [], "polls": 0, "problem": problem, "step": 0}
        self._ft_event(job["id"], "info", f"Created fine-tuning job: {job['id']}")
        self._ft_event(job["id"], "info", f"Validating training file: {entry['id']}")
        server.counters["ft_jobs_created"] += 1
        return web.json_response(job)

    async def _ft_list(self, request: web.Request) -> web.Response:
        refused = self._ft_gate(request)
        if refused is not None:
            return refused
        jobs = [state["job"] for state in reversed(self._ft_state().values())]
        return web.json_response(_page(jobs, request))

    async def _ft_retrieve(self, request: web.Request) -> web.Response:
        server: Any = self
        refused = self._ft_gate(request)
        if refused is not None:
            return refused
        state = self._ft_job(request)
        if state is None:
            return server.error(404, "No such fine-tuning job", code="not_found")
        server.counters["ft_polls"] += 1
        state["polls"] += 1
        self._ft_advance(state)
        return web.json_response(state["job"])

    async def _ft_cancel(self, request: web.Request) -> web.Response:
        server: Any = self
        refused = self._ft_gate(request)
        if refused is not None:
            return refused
        state = self._ft_job(request)
        if state is None:
            return server.error(404, "No such fine-tuning job", code="not_found")
        job = state["job"]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return server.error(400, f"Job {job['id']} has already {job['status']}")
        job["status"] = "cancelled"
        job["finished_at"] = int(time.time())
        self._ft_event(job["id"], "info", "Fine-tuning job cancelled")
        server.counters["ft_cancelled"] += 1
        return web.json_response(job)

    async def _ft_events(self, request: web.Request) -> web.Response:
        server: Any = self
        refused = self._ft_gate(request)
        if refused is not None:
            return refused
        state = self._ft_job(request)
        if state is None:
            return server.error(404, "No such fine-tuning job", code="not_found")
        server.counters["ft_event_pages"] += 1
        return web.json_response(_page(list(reversed(state["events"])), request))

    async def _ft_checkpoints(self, request: web.Request) -> web.Response:
        server: Any = self
        refused = self._ft_gate(request)
        if refused is not None:
            return refused
        state = self._ft_job(request)
        if state is None:
            return server.error(404, "No such fine-tuning job", code="not_found")
        job = state["job"]
        checkpoints = []
        if job["status"] == "succeeded":
            for step in (self.ft_steps // 2, self.ft_steps):
                checkpoints.append({
                    "id": f"ftckpt-{job['id'][-8:]}-{step}", "object": "fine_tuning.job.checkpoint",
                    "created_at": job["finished_at"], "fine_tuning_job_id": job["id"], "step_number": step,
                    "fine_tuned_model_checkpoint": f"{job['fine_tuned_model']}:ckpt-step-{step}",
                    "metrics": {"step": step, "train_loss": _loss(step), "full_valid_loss": _loss(step) + 0.1},
                })
        return web.json_response(_page(list(reversed(checkpoints)), request))

    # ----------------------------------------------------------------- the job's life

    def _ft_event(self, job_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        state = self._ft_state()[job_id]
        state["events"].append({"id": f"ftevent-{uuid.uuid4().hex[:20]}", "object": "fine_tuning.job.event",
                                "created_at": int(time.time()), "level": "info", "message": message,
                                "type": kind, "data": data or {}})

    def _ft_advance(self, state: dict[str, Any]) -> None:
        job = state["job"]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return
        if job["status"] == "running":
            self._ft_train(state)
            return
        if state["polls"] % self.ft_polls_per_stage:
            return
        if job["status"] == "validating_files":
            if state["problem"] or (self.ft_fail and self.ft_fail_stage == "validating_files"):
                self._ft_failed(state, state["problem"] or self.ft_fail or {})
                return
            job["status"] = "queued"
            self._ft_event(job["id"], "info", "Files validated, moving job to queued state")
        elif job["status"] == "queued":
            job["status"] = "running"
            self._ft_event(job["id"], "info", "Fine-tuning job started")

    def _ft_train(self, state: dict[str, Any]) -> None:
        job = state["job"]
        for _ in range(self.ft_events_per_poll):
            if state["step"] >= self.ft_steps:
                break
            state["step"] += 1
            step = state["step"]
            self._ft_event(job["id"], "metrics", f"Step {step}/{self.ft_steps}: training loss={_loss(step):.4f}",
                           {"step": step, "total_steps": self.ft_steps, "train_loss": _loss(step)})
        if state["step"] < self.ft_steps or self.ft_hold:
            return
        if self.ft_fail and self.ft_fail_stage == "running":
            self._ft_failed(state, self.ft_fail)
            return
        suffix = job.get("suffix") or "custom"
        job["status"] = "succeeded"
        job["finished_at"] = int(time.time())
        job["trained_tokens"] = 1000 * self.ft_steps
        job["fine_tuned_model"] = f"ft:{job['model']}:org-fake:{suffix}:{job['id'][-8:]}"
        self._ft_event(job["id"], "info", f"New fine-tuned model created: {job['fine_tuned_model']}")
        self._ft_event(job["id"], "info", "The job has successfully completed")

    def _ft_failed(self, state: dict[str, Any], error: dict[str, Any]) -> None:
        job = state["job"]
        job["status"] = "failed"
        job["finished_at"] = int(time.time())
        job["error"] = {"code": error.get("code", "server_error"), "message": error.get("message", "failed"),
                        "param": error.get("param")}
        self._ft_event(job["id"], "info", f"Fine-tuning job failed: {job['error']['message']}")


def _loss(step: int) -> float:
    return round(2.0 / (1 + 0.5 * step), 4)


def _page(items: list[dict[str, Any]], request: web.Request) -> dict[str, Any]:
    """A list page like the API's: ``after`` is the id of the last item of the previous page."""
    limit = int(request.query.get("limit", "20"))
    after = request.query.get("after")
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    data = items[:limit]
    return {"object": "list", "data": data, "has_more": len(items) > limit}


def _check_training_file(data: bytes) -> dict[str, Any] | None:
    """The service's own validation: a chat conversation with an assistant turn per line."""
    for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            return _invalid(f"Line {number}: invalid JSON")
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages:
            return _invalid(f"Line {number}, key \"messages\": missing")
        if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
            return _invalid(f"Line {number}: no assistant message")
    return None


def _invalid(detail: str) -> dict[str, Any]:
    return {"code": "invalid_training_file", "param": "training_file",
            "message": f"The job failed due to an invalid training file. {detail}"}
