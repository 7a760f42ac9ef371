"""ragas metrics through gatekeeper's runner vs ragas' own loop, against one flaky endpoint.

For each metric, 200 cases are scored twice in the same run, each time against a fresh
fake OpenAI server (tests/fakes/openai_server.py) answering as a scripted judge
(tests/fakes/ragas_judge.py) with a fixed latency, a token-bucket rate limit that answers
429 with Retry-After, and a share of 500s:

- **gatekeeper**: ``gatekeeper run`` (in-process, real CLI) on a suite with the
  ``ragas_<metric>`` evaluator, judge = an ``openai:`` spec on the server: every ragas
  call goes through gatekeeper's runner (AIMD concurrency, Retry-After, retries, cache).
- **ragas**: ragas' own client, ``llm_factory(model, client=AsyncOpenAI(base_url=...))``
  (instructor, JSON mode; the openai SDK's default 2 retries), every row scored at once
  with ``asyncio.gather`` over ``metric.ascore`` — what ``metric.abatch_score`` does, but
  keeping the rows that fail (``abatch_score`` itself raises on the first failure and
  returns nothing).

Printed per metric and side: wall time, judge requests sent (429s and 500s included) and
answered per case, the 429s and 500s seen, and cases lost (no score: an exception or
NaN). Both sides use the same local MiniLM embeddings for response relevancy.

    .venv/bin/python bench/ecosystem_ragas.py                       # default: about 1-2 minutes
    .venv/bin/python bench/ecosystem_ragas.py --metrics faithfulness --cases 50 --rps 20
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gatekeeper_ragas  # noqa: E402,F401  (analytics off before ragas is imported)

from gatekeeper.testing import Project  # noqa: E402
from tests.fakes import FakeOpenAIServer  # noqa: E402
from tests.fakes.ragas_judge import ragas_judge  # noqa: E402

KEY_ENV = "GK_BENCH_JUDGE_KEY"
CLASSES = {
    "faithfulness": "Faithfulness", "context_recall": "ContextRecall", "response_relevancy": "AnswerRelevancy",
    "context_precision": "ContextPrecisionWithReference", "factual_correctness": "FactualCorrectness",
    "noise_sensitivity": "NoiseSensitivity",
}
INPUTS = {
    "faithfulness": ("user_input", "response", "retrieved_contexts"),
    "context_recall": ("user_input", "retrieved_contexts", "reference"),
    "response_relevancy": ("user_input", "response"),
    "context_precision": ("user_input", "reference", "retrieved_contexts"),
    "factual_correctness": ("response", "reference"),
    "noise_sensitivity": ("user_input", "response", "reference", "retrieved_contexts"),
}


def rows(n: int) -> list[dict[str, Any]]:
    """Support questions; every third answer invents a price the context does not give."""
    out = []
    for i in range(n):
        context = f"Item {i} costs ${10 + i} and ships in {i % 5 + 1} days."
        answer = f"Item {i} costs ${99 + i}." if i % 3 == 0 else f"Item {i} costs ${10 + i}."
        out.append({"id": f"c{i}", "user_input": f"How much does item {i} cost?", "retrieved_contexts": [context],
                    "reference": f"Item {i} costs ${10 + i}.", "response": answer})
    return out


def server(args: argparse.Namespace) -> FakeOpenAIServer:
    return FakeOpenAIServer(latency_s=args.latency, rate_limit_rps=args.rps, burst=args.burst,
                            error_rate=args.error_rate, seed=7, responder=ragas_judge)


def side_figures(srv: FakeOpenAIServer, n: int, wall: float, lost: int) -> dict[str, Any]:
    c = srv.counters
    return {"wall_s": round(wall, 1), "requests": c["requests"], "answered_per_case": round(c["ok"] / n, 2),
            "429": c["429"], "500": c["500"], "lost": lost}


def run_gatekeeper(metric: str, data: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    with server(args) as srv, tempfile.TemporaryDirectory() as tmp:
        project = Project(Path(tmp))
        judge = f"openai:gpt-fake?base_url={srv.base_url}&api_key_env={KEY_ENV}"
        project.write("gatekeeper.yaml", "runner: {retries: 5, backoff_s: 0.2, max_backoff_s: 5, timeout_s: 30}\n")
        cases = "\n".join(
            f"  - {{id: {r['id']}, input: {json.dumps(r['user_input'])}, "
            f"context: {json.dumps(r['retrieved_contexts'][0])}, expected: {json.dumps(r['reference'])}}}"
            for r in data
        )
        project.write("suites/bench.yaml", f"""\
suite: bench
prompt:
  messages:
    - {{role: user, content: "{{{{ input }}}}"}}
cases:
{cases}
evaluators:
  - {{ragas_{metric}: {{judge: '{judge}'}}}}
""")
        project.write_jsonl("answers.jsonl", [{"id": r["id"], "output": r["response"]} for r in data])
        start = time.perf_counter()
        result = project.run("run", "suites", "--model", "replay:answers.jsonl", "--out", "out", "--no-progress",
                             env={KEY_ENV: "sk-bench"})
        wall = time.perf_counter() - start
        if result.exit_code not in (0, 1):
            raise SystemExit(result.output)
        record = project.read_json("out/results.json")
        lost = sum(1 for row in record["cases"] if row["scores"][f"ragas_{metric}"]["status"] != "ok")
        return side_figures(srv, len(data), wall, lost)


async def _ragas_loop(metric: str, data: list[dict[str, Any]], base_url: str) -> tuple[int, str]:
    from openai import AsyncOpenAI
    from ragas.llms import llm_factory
    from ragas.metrics import collections

    client = AsyncOpenAI(base_url=base_url, api_key="sk-bench")
    llm = llm_factory("gpt-fake", client=client)
    kwargs: dict[str, Any] = {"llm": llm}
    if metric == "response_relevancy":
        from gatekeeper_ragas.embeddings import shared_embeddings

        kwargs["embeddings"] = shared_embeddings()
    scorer = getattr(collections, CLASSES[metric])(**kwargs)
    results = await asyncio.gather(
        *(scorer.ascore(**{k: r[k] for k in INPUTS[metric]}) for r in data), return_exceptions=True
    )
    await client.close()
    failures = [r for r in results if isinstance(r, BaseException)]
    nan = [r for r in results if not isinstance(r, BaseException) and (r.value is None or math.isnan(r.value))]
    first = f"{type(failures[0]).__name__}: {str(failures[0])[:100]}" if failures else ""
    return len(failures) + len(nan), first


def run_ragas(metric: str, data: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    with server(args) as srv:
        start = time.perf_counter()
        lost, first = asyncio.run(_ragas_loop(metric, data, srv.base_url))
        figures = side_figures(srv, len(data), time.perf_counter() - start, lost)
        figures["first_failure"] = first
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--metrics", default="faithfulness,context_recall,response_relevancy")
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per judge answer")
    parser.add_argument("--rps", type=float, default=50.0, help="server rate limit, requests per second")
    parser.add_argument("--burst", type=float, default=10.0)
    parser.add_argument("--error-rate", type=float, default=0.02, help="share of answers that are 500s")
    args = parser.parse_args()
    data = rows(args.cases)
    for name in ("instructor", "ragas", "openai", "httpx"):  # one log line per failed call otherwise
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # Imports and the embedding model are loaded before any timing, for both sides alike.
    import ragas.metrics.collections  # noqa: F401

    if "response_relevancy" in args.metrics:
        from gatekeeper_ragas.embeddings import shared_embeddings

        shared_embeddings().embed_texts(["warm up"])
    print(f"{args.cases} cases per metric; judge latency {args.latency}s, limit {args.rps:g} req/s "
          f"(burst {args.burst:g}), {args.error_rate:.0%} 500s")
    print(f"{'metric':<20} {'side':<11} {'wall s':>7} {'requests':>9} {'answered/case':>14} "
          f"{'429s':>6} {'500s':>5} {'lost':>5}")
    for metric in args.metrics.split(","):
        for side, fn in (("gatekeeper", run_gatekeeper), ("ragas", run_ragas)):
            f = fn(metric, data, args)
            print(f"{metric:<20} {side:<11} {f['wall_s']:>7} {f['requests']:>9} {f['answered_per_case']:>14} "
                  f"{f['429']:>6} {f['500']:>5} {f['lost']:>5}", flush=True)
            if f.get("first_failure"):
                print(f"{'':<20} {'':<11} first failure: {f['first_failure']}")


if __name__ == "__main__":
    main()
