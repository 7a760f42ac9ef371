"""The load generator's own accuracy: achieved vs requested rate, and its cost per request.

A load test is only as good as its generator: if the client cannot send at the requested
rate, or adds milliseconds of its own to every latency, the SLO gate measures the client.
Against the local fake OpenAI server with **zero delay** (``python -m tests.fakes``, in
its own process, so the server's CPU is not counted), the driver of ``gatekeeper.engine.load``
runs a constant-rate open-loop load at several rates, streaming and not, and we report:

* **achieved rate**: requests sent / the span from first to last send, against the
  requested rate; and answered (ok) requests per second of the planned window;
* **generator lag**: how late requests left against their schedule (p50, p99, ms);
* **client CPU per request** (ms of this process's CPU time / requests): the generator's
  own overhead — event loop, the openai SDK, HTTP, SSE parsing, bookkeeping;
* **latency p50** against the zero-delay server (client + loopback + server overhead).

Baselines measured in the same run: the same driver against an in-process model that
answers at once (the driver's own cost, no HTTP), and a minimal open-loop sender on raw
``httpx`` (no SDK, no measurement records) at the same rates, for the SDK's share.

    .venv/bin/python bench/load_generator.py                  # the documented run (~2 min)
    .venv/bin/python bench/load_generator.py --rates 20 --duration 2   # smoke test

The machine is shared (2 cores, other jobs running): figures are noisy; ratios within one
run are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gatekeeper.engine.load import LoadRun, load_load_suite, run_load  # noqa: E402
from gatekeeper.kinds import Model  # noqa: E402
from gatekeeper.types import Config, Generation, GenerationRequest, ModelIdentity, ModelSpec  # noqa: E402

SUITE = """
suite: bench
prompt: {messages: [{role: user, content: "{{ input }}"}]}
cases:
  - {id: a, input: how long do I have to return boots}
  - {id: b, input: is express shipping available}
"""


class InstantModel(Model):
    """Answers at once, in process: what the driver alone costs."""

    identity = ModelIdentity(provider="bench", name="instant", digest="instant")

    def target_urls(self) -> list[str]:
        return []

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return [Generation(text="ok", usage={"completion_tokens": 1})]


class FakeServer:
    """``python -m tests.fakes`` in its own process (its CPU is not the client's)."""

    def __init__(self) -> None:
        # stderr dropped: a request the client gave up on (its timeout) makes aiohttp log a
        # traceback per disconnect; the client counts those requests in 'fail'.
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fakes", "--latency-s", "0"], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.base_url = line.removeprefix("READY ")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def suite_at(tmp: Path, rate: float, duration: float, stream: bool, target: str) -> Any:
    (tmp / "bench.yaml").write_text(SUITE.lstrip())
    path = tmp / f"load-{rate:g}-{stream}.yaml"
    path.write_text(textwrap.dedent(f"""
        load: bench-{rate:g}
        prompts: {{suite: bench.yaml}}
        arrival: {{process: constant, rate: {rate}}}
        duration_s: {duration}
        warmup: 3
        request: {{stream: {str(stream).lower()}, max_tokens: 16, timeout_s: 10}}
        caps: {{max_in_flight: 1000}}
        targets: ["{target}"]
    """).lstrip())
    return load_load_suite(path)


def measure(run: LoadRun, cpu_s: float, rate: float, duration: float) -> dict[str, Any]:
    sent = [m for m in run.measurements if m.status != "shed"]
    t = np.array([m.t_sent for m in sent])
    ok = [m.latency_ms for m in run.measurements if m.status == "ok"]
    lag = run.generator_lag()
    return {
        "requested": rate, "sent": len(sent), "ok": len(ok),
        "achieved": (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else 0.0,
        "answered_per_s": len(ok) / duration,
        "lag_p50_ms": lag["lag_p50_ms"], "lag_p99_ms": lag["lag_p99_ms"],
        "cpu_ms_per_request": 1000.0 * cpu_s / max(1, len(sent)),
        "latency_p50_ms": float(np.median(ok)) if ok else None,
        "failed": len(run.measurements) - len(ok),
    }


def driver_run(suite: Any, model: Model, config: Config, rate: float, duration: float) -> dict[str, Any]:
    cpu = time.process_time()
    run = run_load(suite, {"candidate": model}, config)
    return measure(run, time.process_time() - cpu, rate, duration)


async def raw_httpx(base_url: str, rate: float, duration: float) -> dict[str, Any]:
    """A minimal open-loop sender: one task per request on a fixed schedule, raw JSON."""
    import httpx

    body = {"model": "gpt-fake", "max_tokens": 16,
            "messages": [{"role": "user", "content": "how long do I have to return boots"}]}
    async with httpx.AsyncClient(base_url=base_url, timeout=10,
                                 limits=httpx.Limits(max_connections=1000)) as client:
        for _ in range(3):
            await client.post("/chat/completions", json=body)
        latencies: list[float] = []
        sends: list[float] = []
        loop = asyncio.get_running_loop()

        async def one() -> None:
            start = time.perf_counter()
            response = await client.post("/chat/completions", json=body)
            response.json()
            latencies.append((time.perf_counter() - start) * 1000)

        cpu = time.process_time()
        t0 = loop.time()
        tasks = []
        n = int(rate * duration)
        for i in range(n):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sends.append(loop.time() - t0)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        cpu_s = time.process_time() - cpu
    lags = np.array(sends) - np.arange(n) / rate
    return {"requested": rate, "sent": n, "ok": len(latencies),
            "achieved": (n - 1) / (sends[-1] - sends[0]) if n > 1 else 0.0,
            "answered_per_s": len(latencies) / duration,
            "lag_p50_ms": float(np.median(lags) * 1000), "lag_p99_ms": float(np.quantile(lags, 0.99) * 1000),
            "cpu_ms_per_request": 1000.0 * cpu_s / n, "latency_p50_ms": float(np.median(latencies)), "failed": 0}


def row(name: str, r: dict[str, Any]) -> str:
    lat = "-" if r["latency_p50_ms"] is None else f"{r['latency_p50_ms']:.1f}"
    return (f"{name:<22} {r['requested']:>6g} {r['achieved']:>8.1f} {r['achieved'] / r['requested']:>6.3f} "
            f"{r['answered_per_s']:>7.1f} {r['lag_p50_ms']:>7.2f} {r['lag_p99_ms']:>8.2f} "
            f"{r['cpu_ms_per_request']:>7.2f} {lat:>7} {r['failed']:>5}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="10,25,50,100,200", help="requested requests/s, comma-separated")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per rate")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    from gatekeeper.builtin.providers.openai.provider import OpenAIProvider

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load generator accuracy; {os.cpu_count()} cores, load average {load} (shared machine: noisy), "
          f"{args.duration:g} s per rate")
    print(f"{'client':<22} {'req/s':>6} {'achieved':>8} {'ratio':>6} {'ok/s':>7} {'lag p50':>7} {'lag p99':>8} "
          f"{'cpu ms':>7} {'lat p50':>7} {'fail':>5}")
    results: list[dict[str, Any]] = []
    server = FakeServer()
    try:
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            config = Config(root=tmp)
            config.load.max_rate = 1e6
            model = OpenAIProvider().load(ModelSpec.parse(f"openai:gpt-fake?base_url={server.base_url}"), config)
            # Unmeasured first pass: the SDK's and httpx's first-use imports are not per-request costs.
            for stream in (False, True):
                driver_run(suite_at(tmp, 20, 0.5, stream, server.base_url), model, config, 20, 0.5)
            asyncio.run(raw_httpx(server.base_url, 20, 0.5))
            for rate in rates:
                for name, result in (
                    ("driver, in-process", driver_run(suite_at(tmp, rate, args.duration, False, server.base_url),
                                                      InstantModel(), config, rate, args.duration)),
                    ("raw httpx", asyncio.run(raw_httpx(server.base_url, rate, args.duration))),
                    ("driver+SDK, no stream", driver_run(suite_at(tmp, rate, args.duration, False, server.base_url),
                                                         model, config, rate, args.duration)),
                    ("driver+SDK, streaming", driver_run(suite_at(tmp, rate, args.duration, True, server.base_url),
                                                         model, config, rate, args.duration)),
                ):
                    print(row(name, result), flush=True)
                    results.append({"client": name, **result})
    finally:
        server.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
