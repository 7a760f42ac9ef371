"""The ``openai-ft`` tuner: a hosted fine-tuning job on OpenAI or Azure OpenAI.

``gatekeeper tune --tuner openai-ft --base openai:gpt-4o-mini-2024-07-18 --data train.jsonl
--out runs/ft1`` checks the training file locally (``file:line: field`` errors before
anything is uploaded or paid for), uploads it, creates the job with the hyperparameters,
polls the job and its events with back-off (honouring ``Retry-After`` on 429s), reports
the events and checkpoint metrics as they come, and writes ``runs/ft1/provenance.json``
whose ``candidate.spec`` is the fine-tuned model as a model spec for ``gatekeeper check``.

A job costs money, so it is never started twice for the same request: the uploaded file's
id and the job's id are kept in ``.gatekeeper/finetunes/<key>.json`` (and the key in the
job's metadata), where ``key`` hashes the endpoint, base model, data and hyperparameters.
Running the same command again after an interruption resumes polling that job. Ctrl-C
asks whether to cancel the job; answering no (or no terminal to ask on) leaves it running.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, ValidationError

from gatekeeper import hookimpl
from gatekeeper.builtin.tuners.finetune_data import check_chat_file
from gatekeeper.files import write_atomic
from gatekeeper.host.plugins import DISTRIBUTION
from gatekeeper.kinds import Params, Register, Tuner
from gatekeeper.types import ModelSpec, PluginError, UsageError, stable_hash

if TYPE_CHECKING:
    from gatekeeper.builtin.providers.openai.endpoints import Endpoint
    from gatekeeper.types import Config

PLUGIN = "openai-ft"
STATE_DIR = ".gatekeeper/finetunes"
METADATA_KEY = "gatekeeper_job"
DONE = "succeeded"
FAILED = ("failed", "cancelled")
MAX_TRANSIENT_ERRORS = 20
# Failures the user fixes in the data, not by retrying: exit code 4 naming the file.
DATA_ERROR_CODES = ("invalid_training_file", "invalid_validation_file", "invalid_file_format",
                    "training_file_too_large", "invalid_n_examples")


class OpenAIFineTuneParams(Params):
    """Hyperparameters of a hosted job (``None``: the service chooses, "auto") and polling."""

    n_epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    learning_rate_multiplier: float | None = Field(None, gt=0)
    seed: int = 0
    suffix: str = Field("gatekeeper", min_length=1, max_length=64)
    poll_s: float = Field(10.0, gt=0, description="first wait between polls")
    max_poll_s: float = Field(120.0, gt=0, description="longest wait between polls (back-off cap)")
    max_wait_s: float = Field(48 * 3600.0, gt=0, description="stop waiting (the job keeps running)")


class JobState:
    """Where a job request's file id and job id are kept between runs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, **values: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(self.load() | values, indent=1, sort_keys=True))

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)


def ask_tty(question: str) -> bool | None:
    """Ask a yes/no question on the terminal; ``None`` when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        return None
    try:
        answer = input(question)
    except (EOFError, KeyboardInterrupt):
        return None
    return answer.strip().lower() in ("y", "yes")


class OpenAIFineTuneTuner(Tuner):
    """Supervised fine-tuning on OpenAI or Azure OpenAI; the result is a hosted model."""

    name = PLUGIN
    modification: ClassVar[str] = "hosted_finetune"
    Params: ClassVar[type[OpenAIFineTuneParams]] = OpenAIFineTuneParams

    # Seams for tests: a test replaces these to simulate Ctrl-C and the user's answer.
    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)

    @staticmethod
    def ask(question: str) -> bool | None:
        return ask_tty(question)

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.echo = echo or (lambda text: print(text, file=sys.stderr, flush=True))

    # ----------------------------------------------------------------- tune

    def tune(
        self,
        base: ModelSpec,
        data: Path,
        out: Path,
        params: dict[str, Any],
        config: Config,
        bounds: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        started = time.monotonic()
        hyper = self._parse(params)
        bound_report = check_bounds(hyper, bounds)
        endpoint, endpoint_params = self._endpoint(base, config)
        data = config.path(data)
        rows = check_chat_file(data)
        data_sha = hashlib.sha256(data.read_bytes()).hexdigest()
        job_params = hyper.model_dump(include={"n_epochs", "batch_size", "learning_rate_multiplier", "seed",
                                               "suffix"})
        key = stable_hash({"url": endpoint.url, "model": endpoint.model_id, "data": data_sha,
                           "params": job_params})[:32]
        state = JobState(config.path(STATE_DIR) / f"{key}.json")
        client = self._client(endpoint)
        job = self._submit(client, endpoint, state, key, data, hyper)
        job, events = self._poll(client, job, state, hyper, data, endpoint)
        checkpoints = self._checkpoints(client, job["id"])
        spec = ModelSpec("openai", str(job["fine_tuned_model"]), dict(endpoint_params))
        provenance = {
            "manifest_version": 1,
            "modification": self.modification,
            "tuner": self.name,
            "base_model": {"spec": str(base), "name": base.name, "digest": None},
            "candidate": {"spec": str(spec), "model": job["fine_tuned_model"]},
            "job": {"id": job["id"], "endpoint": endpoint.label, "status": job["status"],
                    "trained_tokens": job.get("trained_tokens"), "training_file": job.get("training_file"),
                    "events": len(events), "state_key": key},
            "data": {"path": str(data), "sha256": data_sha, "rows": len(rows),
                     "sources": sorted({r["source"] for r in rows if r.get("source")})},
            "hyperparameters": hyper.model_dump(include={"n_epochs", "batch_size", "learning_rate_multiplier",
                                                         "seed", "suffix"})
            | {"epochs": hyper.n_epochs, "service_chose": _service_hyperparameters(job)},
            "seed": hyper.seed,
            "bounds": bound_report,
            "training": {"checkpoints": checkpoints, "metrics_last": _last_metrics(events)},
            "versions": {"openai": _version("openai"), "gatekeeper": _version(DISTRIBUTION)},
            "wall_time_s": round(time.monotonic() - started, 2),
        }
        out = config.path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "provenance.json", json.dumps(provenance, indent=2, sort_keys=True, default=str) + "\n")
        state.drop()
        self.echo(f"fine-tuned model {job['fine_tuned_model']} (job {job['id']}); candidate spec: {spec}")
        return provenance

    # ----------------------------------------------------------------- steps

    @staticmethod
    def _parse(params: dict[str, Any]) -> OpenAIFineTuneParams:
        try:
            return OpenAIFineTuneParams.model_validate(params)
        except ValidationError as exc:
            err = exc.errors()[0]
            name = ".".join(str(p) for p in err["loc"])
            message = "unknown hyperparameter" if err["type"] == "extra_forbidden" else err["msg"]
            known = ", ".join(OpenAIFineTuneParams.model_fields)
            raise UsageError(f"{message} (known: {known})", field=f"params.{name}") from None

    @staticmethod
    def _endpoint(base: ModelSpec, config: Config) -> tuple[Endpoint, dict[str, str]]:
        from gatekeeper.builtin.providers.openai.endpoints import Endpoint, EndpointSettings, load_settings
        if base.provider != "openai":
            raise UsageError(f"the openai-ft tuner fine-tunes openai models, not {base.provider!r} ({base})",
                             field="--base")
        endpoint_fields = set(EndpointSettings.model_fields) - {"name"}
        unknown = set(base.params) - endpoint_fields
        if unknown:
            raise UsageError(f"unknown parameter(s) {', '.join(sorted(unknown))} in --base; known: "
                             f"{', '.join(sorted(endpoint_fields))}", field="--base")
        settings = load_settings(config.providers, config.source)
        endpoint_params = {k: str(v) for k, v in base.params.items()}
        if endpoint_params:
            try:
                endpoint_settings = EndpointSettings.model_validate(endpoint_params)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "base"
                raise UsageError(f"{where}: {str(first['msg']).removeprefix('Value error, ')}",
                                 field="--base") from None
        else:
            configured = settings.models.get(base.name)
            endpoint_settings = configured.endpoints[0] if configured and configured.endpoints else EndpointSettings()
        endpoint = Endpoint(endpoint_settings, base.name, default_timeout=60.0)
        endpoint.secret()  # a missing key is a usage error now, before the file is read or sent
        return endpoint, endpoint_params

    @staticmethod
    def _client(endpoint: Endpoint) -> Any:
        import openai

        s = endpoint.settings
        if endpoint.azure:
            secret: dict[str, Any] = (
                {"azure_ad_token": endpoint.secret()} if s.azure_ad_token_env else {"api_key": endpoint.secret()}
            )
            return openai.AzureOpenAI(azure_endpoint=s.azure_endpoint or "", api_version=s.api_version or
                                      "2024-10-21", max_retries=0, timeout=60.0, **secret)
        return openai.OpenAI(base_url=endpoint.url, api_key=endpoint.secret(), max_retries=0, timeout=60.0,
                             organization=s.organization)

    def _call(self, what: str, fn: Callable[[], Any], secrets: list[str]) -> Any:
        """One API call, retried on 429 (after its Retry-After), 5xx and dropped connections."""
        import openai

        from gatekeeper.builtin.providers.openai.endpoints import redact

        wait = 1.0
        for attempt in range(MAX_TRANSIENT_ERRORS):
            try:
                return fn()
            except openai.RateLimitError as exc:
                retry = _retry_after(exc) or wait
                self.echo(f"openai-ft: {what}: rate limited (429); retrying in {retry:.0f} s")
                self.sleep(retry)
            except (openai.APIConnectionError, openai.InternalServerError) as exc:
                self.echo(f"openai-ft: {what}: {type(exc).__name__}; retrying in {wait:.0f} s")
                self.sleep(wait)
            except openai.APIStatusError as exc:
                message = redact(_error_message(exc), secrets)
                if exc.status_code in (400, 404, 422):
                    raise UsageError(f"{what} refused by the endpoint: {message}", field="--base") from None
                raise PluginError(PLUGIN, f"{what} failed: HTTP {exc.status_code}: {message}") from None
            wait = min(wait * 2, 60.0)
            del attempt
        raise PluginError(PLUGIN, f"{what} failed {MAX_TRANSIENT_ERRORS} times in a row; giving up")

    def _submit(self, client: Any, endpoint: Endpoint, state: JobState, key: str, data: Path,
                hyper: OpenAIFineTuneParams) -> dict[str, Any]:
        """The job for this request: the one already submitted (resumed), or a new one."""
        secrets = [endpoint.secret()]
        saved = state.load()
        if saved.get("job_id"):
            self.echo(f"openai-ft: resuming job {saved['job_id']} (state {state.path})")
            return _plain(self._call("retrieving the job", lambda: client.fine_tuning.jobs.retrieve(saved["job_id"]),
                                     secrets))
        found = self._find_submitted(client, key, secrets)
        if found is not None:
            self.echo(f"openai-ft: found job {found['id']} submitted earlier for this request; resuming it")
            state.save(job_id=found["id"], file_id=found.get("training_file"))
            return found
        file_id = saved.get("file_id")
        if not file_id:
            with data.open("rb") as handle:
                uploaded = _plain(self._call("uploading the training file", lambda: client.files.create(
                    file=(data.name, handle.read()), purpose="fine-tune"), secrets))
            file_id = uploaded["id"]
            state.save(file_id=file_id)
            self.echo(f"openai-ft: uploaded {data} as {file_id}")
        hyperparameters = {k: v for k, v in hyper.model_dump(
            include={"n_epochs", "batch_size", "learning_rate_multiplier"}).items() if v is not None}
        job = _plain(self._call("creating the job", lambda: client.fine_tuning.jobs.create(
            model=endpoint.model_id, training_file=file_id, seed=hyper.seed, suffix=hyper.suffix,
            method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
            metadata={METADATA_KEY: key}), secrets))
        state.save(job_id=job["id"], file_id=file_id)
        self.echo(f"openai-ft: created job {job['id']} on {endpoint.label}")
        return job

    def _find_submitted(self, client: Any, key: str, secrets: list[str]) -> dict[str, Any] | None:
        page = _plain(self._call("listing jobs", lambda: client.fine_tuning.jobs.list(limit=100), secrets))
        for job in page.get("data") or []:
            if (job.get("metadata") or {}).get(METADATA_KEY) == key and job.get("status") not in FAILED:
                return dict(job)
        return None

    def _poll(self, client: Any, job: dict[str, Any], state: JobState, hyper: OpenAIFineTuneParams, data: Path,
              endpoint: Endpoint) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Poll until the job ends; report new events; back off while nothing changes."""
        secrets = [endpoint.secret()]
        seen: list[dict[str, Any]] = []
        seen_ids: set[str] = set()
        wait = hyper.poll_s
        deadline = time.monotonic() + hyper.max_wait_s
        job_id = job["id"]
        try:
            while True:
                new = self._new_events(client, job_id, seen_ids, secrets)
                for event in new:
                    seen.append(event)
                    seen_ids.add(event["id"])
                    self.echo(f"openai-ft: {job_id}: {event.get('message', '')}")
                if job.get("status") == DONE and job.get("fine_tuned_model"):
                    return job, seen
                if job.get("status") in FAILED:
                    state.drop()
                    raise self._job_failed(job, data, secrets)
                if time.monotonic() > deadline:
                    raise PluginError(PLUGIN, f"job {job_id} still {job.get('status')} after {hyper.max_wait_s:g} s; "
                                              "it keeps running: run the same command again to resume polling")
                wait = hyper.poll_s if new else min(wait * 1.5, hyper.max_poll_s)
                self.sleep(wait)
                job = _plain(self._call("polling the job", lambda: client.fine_tuning.jobs.retrieve(job_id),
                                        secrets))
        except KeyboardInterrupt:
            self._interrupted(client, job_id, state, secrets)
            raise

    def _new_events(self, client: Any, job_id: str, seen_ids: set[str], secrets: list[str]) -> list[dict[str, Any]]:
        """Events not seen yet, oldest first. The API lists newest first, a page at a time:
        read pages until one holds an event already seen."""
        fresh: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 20, **({"after": after} if after else {})}

            def read_page(kw: dict[str, Any] = kwargs) -> Any:
                return client.fine_tuning.jobs.list_events(job_id, **kw)

            page = _plain(self._call("reading job events", read_page, secrets))
            events = page.get("data") or []
            for event in events:
                if event["id"] in seen_ids:
                    return list(reversed(fresh))
                fresh.append(event)
            if not page.get("has_more") or not events:
                return list(reversed(fresh))
            after = events[-1]["id"]

    def _checkpoints(self, client: Any, job_id: str) -> list[dict[str, Any]]:
        import openai

        try:
            page = _plain(client.fine_tuning.jobs.checkpoints.list(job_id))
        except openai.APIError:
            return []  # checkpoints are a report, not the result: their absence does not fail the job
        found = [{"step": c.get("step_number"), "model": c.get("fine_tuned_model_checkpoint"),
                  "metrics": {k: v for k, v in (c.get("metrics") or {}).items() if v is not None}}
                 for c in page.get("data") or []]
        return sorted(found, key=lambda c: c["step"] or 0)

    def _job_failed(self, job: dict[str, Any], data: Path, secrets: list[str]) -> Exception:
        from gatekeeper.builtin.providers.openai.endpoints import redact
        error = job.get("error") or {}
        code, message = error.get("code"), redact(str(error.get("message") or "no reason given"), secrets)
        what = f"fine-tuning job {job['id']} {job.get('status')}" + (f" ({code})" if code else "")
        if code in DATA_ERROR_CODES:
            return UsageError(f"{what}: {message}", file=str(data), field=error.get("param") or "training_file")
        return PluginError(PLUGIN, f"{what}: {message}")

    def _interrupted(self, client: Any, job_id: str, state: JobState, secrets: list[str]) -> None:
        answer = self.ask(f"\ncancel fine-tuning job {job_id}? It stops the job; work so far is still billed. [y/N] ")
        if answer:
            self._call("cancelling the job", lambda: client.fine_tuning.jobs.cancel(job_id), secrets)
            state.drop()
            self.echo(f"openai-ft: cancelled job {job_id}")
        else:
            self.echo(f"openai-ft: job {job_id} keeps running; run the same command again to resume polling "
                      f"(state in {state.path})")


# --------------------------------------------------------------------------- helpers


def check_bounds(hyper: OpenAIFineTuneParams, bounds: dict[str, Any] | None) -> dict[str, list[str]]:
    """The policy's ``retraining.hyperparameters`` that apply to a hosted job: ``epochs``
    (``n_epochs``, which must then be given: "auto" cannot be shown to be in bounds) and
    ``seed``. The others (rank, learning rate ...) name things a hosted job does not expose."""
    rules = dict((bounds or {}).get("hyperparameters", bounds) or {})
    checked: list[str] = []
    epochs = rules.pop("epochs", None)
    if epochs:
        where = "retraining.hyperparameters.epochs"
        if hyper.n_epochs is None:
            raise UsageError("the policy bounds epochs, so give n_epochs explicitly (auto cannot be checked)",
                             field=where)
        if epochs.get("max") is not None and hyper.n_epochs > epochs["max"]:
            raise UsageError(f"hyperparameter n_epochs={hyper.n_epochs} is outside the policy bound: "
                             f"epochs.max = {epochs['max']}", field=where)
        if epochs.get("min") is not None and hyper.n_epochs < epochs["min"]:
            raise UsageError(f"hyperparameter n_epochs={hyper.n_epochs} is outside the policy bound: "
                             f"epochs.min = {epochs['min']}", field=where)
        checked.append("epochs")
    seed = rules.pop("seed", None)
    if seed:
        if seed.get("required") and "seed" not in hyper.model_fields_set:
            raise UsageError("the policy requires hyperparameter 'seed' to be given explicitly",
                             field="retraining.hyperparameters.seed")
        checked.append("seed")
    return {"checked": checked, "ignored": sorted(k for k, v in rules.items() if v)}


def _plain(obj: Any) -> dict[str, Any]:
    """An SDK object as a plain dict (what the wire carried)."""
    if hasattr(obj, "model_dump"):
        return dict(obj.model_dump())
    return dict(obj)


def _retry_after(exc: Any) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return float(value) * scale
            except ValueError:
                continue
    return None


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(exc, "message", exc))


def _service_hyperparameters(job: dict[str, Any]) -> dict[str, Any]:
    method = job.get("method") or {}
    chosen = ((method.get("supervised") or {}).get("hyperparameters")) or job.get("hyperparameters") or {}
    return dict(chosen)


def _last_metrics(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    metrics = [e.get("data") for e in events if e.get("type") == "metrics" and e.get("data")]
    return metrics[-1] if metrics else None


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@hookimpl
def gatekeeper_register_tuners(register: Register[Tuner]) -> None:
    register(OpenAIFineTuneTuner)
