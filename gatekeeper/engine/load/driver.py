"""The load driver: sends a load suite's requests on its arrival process and measures each.

One asyncio event loop does everything: open-loop arrivals are scheduled against the
loop's clock and each request is its own task, so a slow answer never delays the next
send; closed-loop workers send their next request when the last one ends. Candidate and
baseline share the window (interleaved per arrival, see :mod:`.arrivals`), so a change in
the endpoint during the run hits both.

Nothing is retried, paced or cached: a 429 is a measurement. A model with a load path
(``send_once(request, stream=..., on_delta=...)``, the ``openai`` provider's) is timed to
its first content delta; any other model is called through ``generate`` (no TTFT).
The run stops on its own at ``caps.max_requests`` and ``caps.max_duration_s``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from gatekeeper.engine.load.arrivals import open_loop_arrivals
from gatekeeper.engine.load.measurements import LoadRun, Measurement, RequestFailed, Status, Step
from gatekeeper.engine.load.prompts import Prompt
from gatekeeper.engine.load.safety import check_safety
from gatekeeper.engine.load.schema import LoadSuite
from gatekeeper.kinds import Model
from gatekeeper.types import Case, Config, Generation, GenerationRequest, ProviderError, RateLimited, utc_now

Progress = Callable[[str], None]
MAX_ERROR_CHARS = 300


def run_load(
    suite: LoadSuite, models: Mapping[str, Model], config: Config, *, confirm_rate: bool = False,
    progress: Progress | None = None,
) -> LoadRun:
    """Run ``suite`` against ``models`` (``{"candidate": m, "baseline": m}``; the baseline is
    optional) in a fresh event loop. Safety is checked before anything is sent."""
    check_safety(suite, models, config, confirm_rate=confirm_rate)
    return asyncio.run(run_load_async(suite, models, config, confirm_rate=confirm_rate, progress=progress))


async def run_load_async(
    suite: LoadSuite, models: Mapping[str, Model], config: Config, *, confirm_rate: bool = False,
    progress: Progress | None = None,
) -> LoadRun:
    check_safety(suite, models, config, confirm_rate=confirm_rate)
    driver = _Driver(suite, dict(models), progress)
    try:
        return await driver.run()
    finally:
        for model in models.values():
            await model.end_run()  # connection pools are bound to this loop


class _Driver:
    def __init__(self, suite: LoadSuite, models: dict[str, Model], progress: Progress | None) -> None:
        self.suite = suite
        self.schema = suite.schema
        self.models = models
        self.labels = list(models)
        self.progress = progress
        self.run_record = LoadRun(
            suite=suite.name, path=str(suite.path), hash=suite.hash, process=suite.process,
            stream=self.schema.request.stream, max_tokens=self.schema.request.max_tokens,
            models={label: f"{m.identity.provider}:{m.identity.name}" for label, m in models.items()},
            started_at=utc_now(), steps=list(suite.steps), warmup=self.schema.warmup,
        )
        self.prompt_streams = {label: self._prompt_stream() for label in self.labels}
        self.sent = 0
        self.in_flight: set[asyncio.Task[None]] = set()
        self.t0 = 0.0
        self.deadline = 0.0

    # ----------------------------------------------------------------- plan

    def _prompt_stream(self) -> Iterator[Prompt]:
        """The prompts one model is sent, in order: every model gets the same sequence, so the
        k-th request of the candidate and of the baseline ask the same thing."""
        prompts = self.suite.prompts
        if self.schema.prompts.order == "cycle":
            yield from itertools.cycle(prompts)
        rng = np.random.default_rng([self.schema.seed, 2])
        while True:
            for i in rng.permutation(len(prompts)):
                yield prompts[int(i)]

    def _request(self, prompt: Prompt) -> GenerationRequest:
        r = self.schema.request
        case = Case(id=prompt.id, suite=self.suite.name, messages=prompt.messages, source=str(self.suite.path))
        return GenerationRequest(case=case, messages=prompt.messages, max_tokens=r.max_tokens,
                                 temperature=r.temperature, seed=None)

    # ----------------------------------------------------------------- run

    async def run(self) -> LoadRun:
        await self._warm_up()
        # The objects alive now (plugins, SDK types: a large heap) are moved out of the
        # collector's reach for the run, so a full collection cannot stall the event loop
        # for hundreds of ms in the middle of the measured window (delaying sends and
        # inflating the latencies in flight). Only what the run allocates is collected.
        gc.collect()
        gc.freeze()
        try:
            return await self._measured()
        finally:
            gc.unfreeze()

    async def _measured(self) -> LoadRun:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        self.t0 = loop.time()
        self.deadline = self.t0 + self.suite.max_duration_s
        reporter = asyncio.create_task(self._report_steps()) if self.progress else None
        try:
            if self.suite.process == "closed":
                await self._closed_loop()
            else:
                await self._open_loop()
            await self._drain()
        finally:
            if reporter is not None:
                reporter.cancel()
        self.run_record.wall_s = time.perf_counter() - started
        self.run_record.measurements.sort(key=lambda m: m.t_sent)
        if self.progress is not None:  # once every answer is in: a line written at a step's end would miss some
            for step in self.suite.steps:
                self.progress(describe_step(self.run_record, step))
        return self.run_record

    async def _warm_up(self) -> None:
        """Open connections (and import SDKs) before the clock starts; not measured."""
        for label in self.labels:
            for _ in range(self.schema.warmup):
                if self.sent >= self.schema.caps.max_requests:
                    return
                self.sent += 1
                request = self._request(self.suite.prompts[0])  # the measured sequences stay paired
                try:
                    await asyncio.wait_for(self._send(self.models[label], request, None),
                                           self.schema.request.timeout_s)
                except Exception:  # a warm-up failure is not measured; the run measures its own
                    pass

    def _capped(self) -> bool:
        if self.sent >= self.schema.caps.max_requests:
            self.run_record.stopped_by = self.run_record.stopped_by or "max_requests"
            return True
        if asyncio.get_running_loop().time() >= self.deadline:
            self.run_record.stopped_by = self.run_record.stopped_by or "max_duration_s"
            return True
        return False

    async def _open_loop(self) -> None:
        loop = asyncio.get_running_loop()
        spacing = self.schema.arrival.within_step if self.suite.process == "ramp" else self.suite.process
        arrivals = open_loop_arrivals(self.suite.steps, spacing=spacing, labels=self.labels,
                                      assignment=self.schema.assignment, seed=self.schema.seed)
        cap = self.schema.caps.max_in_flight
        for arrival in arrivals:
            delay = self.t0 + arrival.t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._capped():
                return
            step = self.suite.steps[arrival.step]
            prompt = next(self.prompt_streams[arrival.model])
            if len(self.in_flight) >= cap:
                now = loop.time() - self.t0
                self._record(Measurement(arrival.model, step.index, step.offered_rate, None, arrival.t, now, "shed",
                                         prompt.id, error=f"{cap} requests already in flight (caps.max_in_flight)"))
                continue
            self.sent += 1
            self._spawn(arrival.model, prompt, step, arrival.t)

    async def _closed_loop(self) -> None:
        loop = asyncio.get_running_loop()
        workers: list[asyncio.Task[None]] = []
        for step in self.suite.steps:
            start = self.t0 + step.start_s
            if start > loop.time():
                await asyncio.sleep(start - loop.time())
            if self._capped():
                break
            end = start + step.duration_s
            assert step.concurrency is not None
            for label in self.labels:
                for _ in range(step.concurrency):
                    workers.append(asyncio.create_task(self._worker(label, step, end)))
        if workers:
            await asyncio.wait(workers, timeout=max(0.0, self.deadline - loop.time()))
            for task in workers:
                task.cancel()

    async def _worker(self, label: str, step: Step, end: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < end and not self._capped():
            self.sent += 1
            t = loop.time() - self.t0
            task = self._spawn(label, next(self.prompt_streams[label]), step, t)
            await asyncio.wait([task])

    def _spawn(self, label: str, prompt: Prompt, step: Step, t_scheduled: float) -> asyncio.Task[None]:
        task = asyncio.create_task(self._measure(label, prompt, step, t_scheduled))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        return task

    async def _drain(self) -> None:
        """Let requests in flight finish, up to the hard stop; cancel (and record) the rest."""
        loop = asyncio.get_running_loop()
        pending = set(self.in_flight)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=max(0.0, self.deadline - loop.time()))
        if pending:
            self.run_record.stopped_by = self.run_record.stopped_by or "max_duration_s"
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # ----------------------------------------------------------------- one request

    async def _measure(self, label: str, prompt: Prompt, step: Step, t_scheduled: float) -> None:
        loop = asyncio.get_running_loop()
        first: list[float] = []

        def on_delta(_: str) -> None:
            if not first:
                first.append(time.perf_counter())

        request = self._request(prompt)
        t_sent = loop.time() - self.t0
        start = time.perf_counter()
        concurrency = step.concurrency
        rate = step.offered_rate

        def record(status: Status, *, error: str | None = None, generation: Generation | None = None) -> None:
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            m = Measurement(label, step.index, rate, concurrency, t_scheduled if rate is not None else t_sent, t_sent,
                            status, prompt.id, latency_ms=elapsed_ms, error=_short(error))
            if generation is not None and status == "ok":
                if first and self.schema.request.stream:
                    m.ttft_ms = (first[0] - start) * 1000.0
                m.output_tokens = _output_tokens(generation)
                if m.output_tokens is not None and elapsed_ms > 0:
                    m.tokens_per_s = m.output_tokens / (elapsed_ms / 1000.0)
            self._record(m)

        try:
            generation = await asyncio.wait_for(self._send(self.models[label], request, on_delta),
                                                self.schema.request.timeout_s)
        except asyncio.CancelledError:
            record("cancelled", error="in flight when caps.max_duration_s stopped the run")
            raise
        except TimeoutError:
            record("timeout", error=f"no complete answer within {self.schema.request.timeout_s:g} s")
        except RateLimited as exc:
            record("429", error=str(exc))
        except RequestFailed as exc:
            record(exc.status, error=str(exc))
        except ProviderError as exc:
            record("error", error=str(exc))
        except Exception as exc:  # a provider bug is one failed request, not a dead run
            record("error", error=f"{type(exc).__name__}: {exc}")
        else:
            if generation.error:
                record("error", error=generation.error)
            else:
                record("ok", generation=generation)

    async def _send(self, model: Model, request: GenerationRequest, on_delta: Callable[[str], None] | None) -> Any:
        send_once = getattr(model, "send_once", None)
        if send_once is not None:
            return await send_once(request, stream=self.schema.request.stream, on_delta=on_delta)
        return (await model.generate([request]))[0]

    def _record(self, measurement: Measurement) -> None:
        self.run_record.measurements.append(measurement)

    # ----------------------------------------------------------------- progress

    async def _report_steps(self) -> None:
        """A line as each step starts, so a long ramp shows where it is."""
        assert self.progress is not None
        loop = asyncio.get_running_loop()
        for step in self.suite.steps:
            await asyncio.sleep(max(0.0, self.t0 + step.start_s - loop.time()))
            self.progress(f"  load step {step.index + 1}/{len(self.suite.steps)}: {_offered(step)} per model "
                          f"for {step.duration_s:g} s")


def describe_step(run: LoadRun, step: Step) -> str:
    """One line per step: what was offered, and what each model got back."""
    parts = []
    for label in run.models:
        ms = run.of(label, step=step.index)
        ok = [m.latency_ms for m in ms if m.status == "ok" and m.latency_ms is not None]
        p50 = f"{float(np.median(ok)):.0f} ms" if ok else "-"
        failed = sum(1 for m in ms if m.status != "ok")
        parts.append(f"{label} {len(ok)} ok / {failed} failed, p50 {p50}")
    return f"  load step {step.index + 1}/{len(run.steps)} ({_offered(step)}): " + "; ".join(parts)


def _offered(step: Step) -> str:
    return f"{step.offered_rate:g} req/s" if step.offered_rate is not None else f"concurrency {step.concurrency}"


def _output_tokens(generation: Generation) -> int | None:
    tokens = generation.usage.get("completion_tokens")
    if isinstance(tokens, int):
        return tokens
    deltas = generation.metadata.get("deltas")
    return deltas if isinstance(deltas, int) else None


def _short(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
