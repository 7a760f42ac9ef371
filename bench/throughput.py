"""Throughput at an endpoint's rate limit: gatekeeper next to two common clients.

Each client sends the same 2,000 chat completions to the local fake OpenAI server
(``tests/fakes/openai_server.py``, run in its own process, a fresh one per client) that
answers after 200 ms and admits 20 requests a second (token bucket, 1 s of burst),
answering 429 with the exact ``Retry-After`` otherwise. Two scenarios:

* ``steady``: only the rate limit. Floor: 2,000 / 20 = 100 s.
* ``storms``: as steady, plus 5 % of admitted requests answer 500 and every 20 s the server
  answers 429 to everything for 3 s (``Retry-After`` = what is left of the storm). Floor:
  the time the server needs to admit 2,000 / 0.95 requests at 20/s outside the storms.

Clients, each with its defaults:

* gatekeeper: the real ``gatekeeper run`` (in-process) with ``openai:gpt-fake?base_url=...``
  and the default runner settings;
* a plain asyncio + openai SDK client with a fixed semaphore of 32 (the SDK's own
  retries: 2, honouring Retry-After);
* inspect_ai (``inspect_ai.eval`` of a task with the same samples, ``openai/gpt-fake`` with
  ``OPENAI_BASE_URL`` pointing at the server), run by the Python of a virtual environment
  that has it (``--inspect-python``; made with ``python -m venv .venv/inspect-ai &&
  .venv/inspect-ai/bin/pip install inspect_ai``), so its dependencies stay out of
  gatekeeper's environment.

Per client: wall time (the client's whole run: for gatekeeper, start-up, loading the suite,
scoring and writing reports too), the span the server was kept busy (first request received
to last answer), each over the floor, requests the server received, 429s and 500s it
answered, and cases lost (no correct answer at the end). Targets for gatekeeper: within
10 % of the floor, 0 lost, fewer 429s than the fixed-semaphore client.

    .venv/bin/python bench/throughput.py                       # the documented run (~12 min)
    .venv/bin/python bench/throughput.py --n 200 --clients gatekeeper,naive   # smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gatekeeper.testing import Project  # noqa: E402

MODEL = "gpt-fake"
KEY = "sk-bench-not-a-secret"


@dataclass(frozen=True)
class Scenario:
    name: str
    latency_s: float = 0.2
    rps: float = 20.0
    error_rate: float = 0.0
    storm_every_s: float | None = None
    storm_duration_s: float = 3.0

    def server_args(self) -> list[str]:
        args = ["--latency-s", str(self.latency_s), "--rate-limit-rps", str(self.rps),
                "--error-rate", str(self.error_rate), "--seed", "0"]
        if self.storm_every_s:
            args += ["--storm-every-s", str(self.storm_every_s), "--storm-duration-s", str(self.storm_duration_s)]
        return args

    def storm_time(self, t: float) -> float:
        """Seconds of [0, t] inside a storm (storms start at every k × every_s, k ≥ 1)."""
        if not self.storm_every_s:
            return 0.0
        total, k = 0.0, 1
        while k * self.storm_every_s < t:
            start = k * self.storm_every_s
            total += min(t, start + self.storm_duration_s) - start
            k += 1
        return total

    def floor(self, n: int) -> float:
        """Least wall time: admitting n / (1 - error_rate) requests at ``rps`` outside storms."""
        needed = n / (1.0 - self.error_rate) / self.rps
        t = needed
        while t - self.storm_time(t) < needed:
            t += 0.01
        return round(t, 2)


SCENARIOS = {
    "steady": Scenario("steady"),
    "storms": Scenario("storms", error_rate=0.05, storm_every_s=20.0, storm_duration_s=3.0),
}


class ServerProcess:
    """The fake server in a child process (so its work does not share our GIL)."""

    def __init__(self, scenario: Scenario) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes", *scenario.server_args()],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.base_url = line.removeprefix("READY ")

    def counters(self) -> dict[str, Any]:
        url = self.base_url.removesuffix("/v1") + "/_fake/counters"
        with urllib.request.urlopen(url, timeout=10) as response:
            return dict(json.loads(response.read()))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def prompts(n: int) -> list[str]:
    return [f"question {i}" for i in range(n)]


def expected(prompt: str) -> str:
    return f"You said: {prompt}"


# --------------------------------------------------------------------------- clients


def run_gatekeeper(base_url: str, n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        project = Project(Path(tmp))
        project.write_jsonl("suites/bench.jsonl", [
            {"id": f"c{i:04d}", "input": p, "expected": expected(p)} for i, p in enumerate(prompts(n))])
        project.write("suites/bench.yaml", "suite: bench\ndataset: bench.jsonl\n"
                      "prompt: {messages: [{role: user, content: '{{ input }}'}]}\n"
                      "evaluators: [{name: exact_match, field: expected}]\n")
        spec = f"openai:{MODEL}?base_url={base_url}&api_key_env=BENCH_OPENAI_KEY"
        started = time.perf_counter()
        result = project.run("run", "suites", "--model", spec, "--out", "out", "--no-progress",
                             env={"BENCH_OPENAI_KEY": KEY, "GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD": "1"})
        wall = time.perf_counter() - started
        if not (project.path / "out/results.json").exists():
            raise RuntimeError(f"gatekeeper run exited {result.exit_code}: {result.output[-500:]}")
        record = project.read_json("out/results.json")
    right = sum(1 for row in record["cases"] if row["error"] is None and row["scores"]["exact_match"]["value"] == 1.0)
    return {"wall_s": wall, "lost": n - right, "exit_code": result.exit_code,
            "peak_concurrency": record["stats"]["max_concurrency_reached"]}


def run_naive(base_url: str, n: int, concurrency: int = 32) -> dict[str, Any]:
    import openai

    async def main() -> int:
        client = openai.AsyncOpenAI(base_url=base_url, api_key=KEY)  # the SDK's defaults: 2 retries
        semaphore = asyncio.Semaphore(concurrency)

        async def one(prompt: str) -> bool:
            async with semaphore:
                try:
                    reply = await client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=256, temperature=0)
                except openai.APIError:
                    return False
                return reply.choices[0].message.content == expected(prompt)

        results = await asyncio.gather(*(one(p) for p in prompts(n)))
        await client.close()
        return sum(results)

    started = time.perf_counter()
    right = asyncio.run(main())
    return {"wall_s": time.perf_counter() - started, "lost": n - right}


INSPECT_SCRIPT = r'''
import json, os, sys, time
from inspect_ai import Task, eval as inspect_eval
from inspect_ai.dataset import Sample
from inspect_ai.scorer import exact
from inspect_ai.solver import generate

base_url, n, log_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.environ["OPENAI_API_KEY"] = "sk-bench-not-a-secret"
os.environ["OPENAI_BASE_URL"] = base_url
samples = [Sample(input=f"question {i}", target=f"You said: question {i}", id=i) for i in range(n)]
task = Task(dataset=samples, solver=generate(), scorer=exact())
started = time.perf_counter()
log = inspect_eval(task, model="openai/gpt-fake", log_dir=log_dir, display="none", fail_on_error=False)[0]
wall = time.perf_counter() - started
right = sum(1 for s in (log.samples or []) if s.error is None and s.output is not None
            and s.output.completion == s.target)
print(json.dumps({"wall_s": wall, "right": right, "status": log.status,
                  "error": str(log.error)[:300] if log.error else None}))
'''


def run_inspect(base_url: str, n: int, python: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "inspect_task.py"
        script.write_text(INSPECT_SCRIPT, encoding="utf-8")
        proc = subprocess.run([python, str(script), base_url, str(n), str(Path(tmp) / "logs")],
                              capture_output=True, text=True, timeout=3600, cwd=tmp)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"inspect_ai exited {proc.returncode}: {proc.stderr[-500:]}")
    out = json.loads(lines[-1])
    return {"wall_s": out["wall_s"], "lost": n - out["right"], "status": out["status"], "error": out["error"]}


# --------------------------------------------------------------------------- main


def measure(client: str, scenario: Scenario, n: int, inspect_python: str) -> dict[str, Any]:
    server = ServerProcess(scenario)
    try:
        if client == "gatekeeper":
            row = run_gatekeeper(server.base_url, n)
        elif client == "naive":
            row = run_naive(server.base_url, n)
        else:
            row = run_inspect(server.base_url, n, inspect_python)
        seen = server.counters()
    finally:
        server.close()
    counters = seen["counters"]
    floor = scenario.floor(n)
    wall = row.pop("wall_s")
    # From the first request the server received to the last answer it gave: the time
    # the endpoint was kept busy, without the client's start-up, suite loading and reports.
    span = (seen["last_request"] or 0.0) - (seen["first_request"] or 0.0) + scenario.latency_s
    return {
        "scenario": scenario.name, "client": client, "n": n, "floor_s": floor,
        "wall_s": round(wall, 2), "wall_over_floor": round(wall / floor, 3),
        "span_s": round(span, 2), "span_over_floor": round(span / floor, 3),
        "requests": counters.get("requests", 0), "429": counters.get("429", 0), "500": counters.get("500", 0),
        "server_peak_in_flight": seen["peak_in_flight"], **row,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--scenarios", default="steady,storms")
    parser.add_argument("--clients", default="gatekeeper,naive,inspect")
    parser.add_argument("--inspect-python", default=str(REPO / ".venv/inspect-ai/bin/python"))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    rows = []
    print(f"{'scenario':<8} {'client':<11} {'wall s':>7} {'floor s':>7} {'ratio':>6} {'span s':>7} {'ratio':>6} "
          f"{'requests':>8} {'429s':>6} {'500s':>5} {'lost':>5}")
    for name in args.scenarios.split(","):
        scenario = SCENARIOS[name]
        for client in args.clients.split(","):
            if client == "inspect" and not Path(args.inspect_python).exists():
                print(f"{name:<8} {client:<11} skipped: no {args.inspect_python} (see the docstring)")
                continue
            try:
                row = measure(client, scenario, args.n, args.inspect_python)
            except Exception as exc:  # a client that cannot run is reported, not hidden
                print(f"{name:<8} {client:<11} failed: {type(exc).__name__}: {exc}")
                rows.append({"scenario": name, "client": client, "failed": f"{type(exc).__name__}: {exc}"})
                continue
            rows.append(row)
            print(f"{name:<8} {client:<11} {row['wall_s']:>7.1f} {row['floor_s']:>7.1f} {row['wall_over_floor']:>6.3f} "
                  f"{row['span_s']:>7.1f} {row['span_over_floor']:>6.3f} "
                  f"{row['requests']:>8} {row['429']:>6} {row['500']:>5} {row['lost']:>5}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
