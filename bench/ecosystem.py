"""deepeval and azure-ai-evaluation metrics through gatekeeper's runner vs each library's own loop.

For each metric, N cases (default 200) are scored twice in the same run, each time against a
fresh fake OpenAI server (tests/fakes/openai_server.py) answering as a scripted judge
(tests/fakes/ecosystem_judge.py) with a fixed latency, a token-bucket rate limit that answers
429 with Retry-After, and a share of 500s:

- **gatekeeper**: ``gatekeeper run`` (in-process, the real CLI) on a suite with the plugin's
  evaluator, judge = an ``openai:`` spec on the server: every judge call goes through the
  runner (AIMD concurrency, Retry-After, retries, cache).
- **deepeval**: deepeval's own judge, ``GPTModel(base_url=...)`` (the openai SDK, structured
  outputs), one metric per case awaited with ``a_measure`` under a semaphore of 20 — what
  ``deepeval.evaluate`` does with its default ``AsyncConfig(max_concurrent=20)``, without its
  console output and result files.
- **azure**: azure's own client (a model configuration with ``base_url`` on the server: its
  prompty flow's ``AsyncOpenAI`` with azure's own retry loop), every case awaited at once
  through the evaluator's async form.

Printed per metric and side: wall time, judge requests sent (429s and 500s included),
answered per case, the 429s and 500s seen, and cases lost (no score: an exception, NaN/None).

    .venv/bin/python bench/ecosystem.py                  # default metrics, 200 cases: a few minutes
    .venv/bin/python bench/ecosystem.py --metrics deepeval_faithfulness --cases 50 --rps 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gatekeeper_deepeval._library  # noqa: E402,F401  (telemetry and .env loading off before deepeval)

from gatekeeper.testing import Project  # noqa: E402
from tests.fakes import FakeOpenAIServer  # noqa: E402
from tests.fakes.ecosystem_judge import ecosystem_judge  # noqa: E402

KEY_ENV = "GK_BENCH_JUDGE_KEY"
DEEPEVAL = {"deepeval_faithfulness": "FaithfulnessMetric", "deepeval_answer_relevancy": "AnswerRelevancyMetric",
            "deepeval_geval": "GEval", "deepeval_hallucination": "HallucinationMetric"}
AZURE = {"azure_groundedness": "GroundednessEvaluator", "azure_relevance": "RelevanceEvaluator",
         "azure_similarity": "SimilarityEvaluator"}
DETECTORS = {"deepeval_faithfulness", "deepeval_hallucination"}
GEVAL = {"criteria": "The answer states the price the expected output states.",
         "evaluation_params": ["input", "actual_output", "expected_output"]}


def rows(n: int) -> list[dict[str, Any]]:
    """Support questions; every third answer invents a price the context does not give."""
    out = []
    for i in range(n):
        context = f"Item {i} costs ${10 + i} and ships in {i % 5 + 1} days."
        answer = f"Item {i} costs ${99 + i}." if i % 3 == 0 else f"Item {i} costs ${10 + i}."
        out.append({"id": f"c{i}", "input": f"How much does item {i} cost?", "context": context,
                    "expected": f"Item {i} costs ${10 + i}.", "output": answer})
    return out


def server(args: argparse.Namespace) -> FakeOpenAIServer:
    return FakeOpenAIServer(latency_s=args.latency, rate_limit_rps=args.rps, burst=args.burst,
                            error_rate=args.error_rate, seed=7, responder=ecosystem_judge)


def figures(srv: FakeOpenAIServer, n: int, wall: float, lost: int, first: str = "") -> dict[str, Any]:
    c = srv.counters
    return {"wall_s": round(wall, 1), "requests": c["requests"], "answered_per_case": round(c["ok"] / n, 2),
            "429": c["429"], "500": c["500"], "lost": lost, "first_failure": first}


def run_gatekeeper(metric: str, data: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    with server(args) as srv, tempfile.TemporaryDirectory() as tmp:
        project = Project(Path(tmp))
        judge = f"openai:gpt-fake?base_url={srv.base_url}&api_key_env={KEY_ENV}"
        project.write("gatekeeper.yaml", f"judge: '{judge}'\n"
                      "runner: {retries: 5, backoff_s: 0.2, max_backoff_s: 5, timeout_s: 30}\n")
        cases = "\n".join(f"  - {{id: {r['id']}, input: {json.dumps(r['input'])}, context: {json.dumps(r['context'])}, "
                          f"expected: {json.dumps(r['expected'])}}}" for r in data)
        entry = {"name": metric, **(GEVAL if metric == "deepeval_geval" else {})}
        kind = "detectors" if metric in DETECTORS else "evaluators"
        project.write("suites/bench.yaml", f"""\
suite: bench
prompt:
  messages:
    - {{role: user, content: "{{{{ input }}}}"}}
cases:
{cases}
{kind}:
  - {json.dumps(entry)}
""")
        project.write_jsonl("answers.jsonl", [{"id": r["id"], "output": r["output"]} for r in data])
        start = time.perf_counter()
        result = project.run("run", "suites", "--model", "replay:answers.jsonl", "--out", "out", "--no-progress",
                             env={KEY_ENV: "sk-bench"})
        wall = time.perf_counter() - start
        if result.exit_code not in (0, 1, 5):
            raise SystemExit(result.output)
        record = project.read_json("out/results.json")
        bad = [row["scores"][metric] for row in record["cases"] if row["scores"][metric]["status"] != "ok"]
        return figures(srv, len(data), wall, len(bad), bad[0]["reason"][:100] if bad else "")


async def _deepeval_loop(metric: str, data: list[dict[str, Any]], base_url: str) -> tuple[int, str]:
    from deepeval import metrics
    from deepeval.models import GPTModel
    from deepeval.test_case import LLMTestCase, SingleTurnParams

    model = GPTModel(model="gpt-4o-mini", base_url=base_url, api_key="sk-bench", cost_per_input_token=0.0,
                     cost_per_output_token=0.0)
    gate = asyncio.Semaphore(20)

    def build() -> Any:
        if metric == "deepeval_geval":
            return metrics.GEval(name="correctness", criteria=GEVAL["criteria"], model=model, evaluation_params=[
                SingleTurnParams(p) for p in GEVAL["evaluation_params"]])
        return getattr(metrics, DEEPEVAL[metric])(model=model)

    async def one(r: dict[str, Any]) -> float | None:
        async with gate:
            case = LLMTestCase(input=r["input"], actual_output=r["output"], expected_output=r["expected"],
                               context=[r["context"]], retrieval_context=[r["context"]])
            m = build()
            await m.a_measure(case, _show_indicator=False)
            return m.score

    results = await asyncio.gather(*(one(r) for r in data), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    empty = [r for r in results if not isinstance(r, BaseException) and (r is None or math.isnan(r))]
    first = f"{type(failures[0]).__name__}: {str(failures[0])[:100]}" if failures else ""
    return len(failures) + len(empty), first


async def _azure_loop(metric: str, data: list[dict[str, Any]], base_url: str) -> tuple[int, str]:
    import azure.ai.evaluation as ae

    config = {"type": "openai", "model": "gpt-fake", "base_url": base_url, "api_key": "sk-bench"}
    evaluator = getattr(ae, AZURE[metric])(model_config=config)
    call = evaluator._to_async()
    key = metric.removeprefix("azure_")

    async def one(r: dict[str, Any]) -> float | None:
        result = await call(query=r["input"], response=r["output"], context=r["context"], ground_truth=r["expected"])
        return result.get(key)

    results = await asyncio.gather(*(one(r) for r in data), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    empty = [r for r in results if not isinstance(r, BaseException) and (r is None or math.isnan(float(r)))]
    first = f"{type(failures[0]).__name__}: {str(failures[0])[:100]}" if failures else ""
    return len(failures) + len(empty), first


def run_library(metric: str, data: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    loop: Callable[..., Any] = _deepeval_loop if metric.startswith("deepeval") else _azure_loop
    with server(args) as srv:
        start = time.perf_counter()
        lost, first = asyncio.run(loop(metric, data, srv.base_url))
        return figures(srv, len(data), time.perf_counter() - start, lost, first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--metrics", default="deepeval_faithfulness,deepeval_answer_relevancy,deepeval_geval,"
                                             "azure_groundedness,azure_relevance")
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per judge answer")
    parser.add_argument("--rps", type=float, default=50.0, help="server rate limit, requests per second")
    parser.add_argument("--burst", type=float, default=10.0)
    parser.add_argument("--error-rate", type=float, default=0.02, help="share of answers that are 500s")
    args = parser.parse_args()
    data = rows(args.cases)
    for name in ("openai", "httpx", "deepeval", "azure", "azure.ai.evaluation._legacy.prompty._prompty"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # else a logged traceback per failed call
    logging.disable(logging.ERROR)
    import azure.ai.evaluation  # noqa: F401  (imports before any timing, for both sides alike)
    import deepeval.metrics  # noqa: F401

    print(f"{args.cases} cases per metric; judge latency {args.latency}s, limit {args.rps:g} req/s "
          f"(burst {args.burst:g}), {args.error_rate:.0%} 500s")
    print(f"{'metric':<27} {'side':<11} {'wall s':>7} {'requests':>9} {'answered/case':>14} "
          f"{'429s':>6} {'500s':>5} {'lost':>5}")
    for metric in args.metrics.split(","):
        library = metric.split("_")[0]
        for side, fn in (("gatekeeper", run_gatekeeper), (library, run_library)):
            f = fn(metric, data, args)
            print(f"{metric:<27} {side:<11} {f['wall_s']:>7} {f['requests']:>9} {f['answered_per_case']:>14} "
                  f"{f['429']:>6} {f['500']:>5} {f['lost']:>5}", flush=True)
            if f["first_failure"]:
                print(f"{'':<27} {'':<11} first failure: {f['first_failure']}")


if __name__ == "__main__":
    main()
