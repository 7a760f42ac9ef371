"""``gatekeeper serve-fake`` (issue 17, item 5): a fake OpenAI endpoint for users' own CI.

The command runs as a user would run it (a background process in the project, outside the
repository), answers each model name from its own recording, so a gate through the OpenAI
provider decides exactly as the same gate on the replay recordings; scripts give errors
and rate limits per model; it stops on SIGTERM, not when stdin closes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.testing import Project, run_paired_check, write_paired_project

GATEKEEPER = str(Path(sys.executable).with_name("gatekeeper"))


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def post(url: str, model: str) -> Answer:
    """One chat completion asking ``model`` "hi", as any HTTP client would."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(f"{url}/chat/completions", data=body, method="POST",
                                     headers={"authorization": "Bearer sk-x", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return Answer(response.status, headers, response.read().decode())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode())


@contextmanager
def serve_fake(project: Project, *args: str) -> Iterator[str]:
    """``gatekeeper serve-fake ARGS`` in the background (stdin closed); yields its base URL."""
    ready = project.path / "ready.txt"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen([GATEKEEPER, "serve-fake", "--port", "0", "--ready-file", str(ready), *args],
                            cwd=project.path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "GATEKEEPER_DEBUG": ""})
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text().strip()):
            if proc.poll() is not None:
                raise AssertionError(f"serve-fake exited {proc.returncode}: {proc.stdout.read()}")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "serve-fake did not start"
            time.sleep(0.05)
        yield ready.read_text().strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "stopped after" in out


def test_a_gate_through_the_fake_decides_as_the_same_gate_on_the_recordings(project: Project) -> None:
    write_paired_project(project, baseline=[True] * 60, candidates={"candidate": [True] * 50 + [False] * 10})
    replayed = run_paired_check(project, out="replayed")
    assert replayed.exit_code == 1, replayed.output  # 10 regressions: REJECT
    with serve_fake(project, "--suites", "suites", "--model", "base=baseline.jsonl",
                    "--model", "cand=candidate.jsonl") as url:
        result = project.run("check", "--baseline", f"openai:base?base_url={url}",
                             "--candidate", f"openai:cand?base_url={url}", "--policy", "policy.yaml",
                             "--out", "served", "--no-progress", env={"OPENAI_API_KEY": "sk-fake"})
    assert result.exit_code == 1, result.output
    served = json.loads((project.path / "served/decision.json").read_text())
    assert served["decision"] == replayed.record["decision"] == "REJECT"
    assert [(m["name"], m["n"], m["baseline"], m["candidate"]) for m in served["metrics"]] == \
        [(m["name"], m["n"], m["baseline"], m["candidate"]) for m in replayed.record["metrics"]]
    assert served["stats"]["model_calls"] == 120


def test_scripts_per_model_errors_rate_limits_and_unknown_models(project: Project) -> None:
    project.write("flaky.yaml", """
replies:
  - {status: 500, message: boom}
  - {status: 429, message: slow down, retry_after: 0.1}
  - first answer
  - last answer repeats
""")
    with serve_fake(project, "--model", "flaky=script:flaky.yaml", "--model", "parrot=echo",
                    "--latency-s", "0.05") as url:
        def ask(model: str) -> Answer:
            return post(url, model)

        assert ask("flaky").status_code == 500
        limited = ask("flaky")
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        assert ask("flaky").json()["choices"][0]["message"]["content"] == "first answer"
        assert [ask("flaky").json()["choices"][0]["message"]["content"] for _ in range(2)] == \
            ["last answer repeats"] * 2
        assert ask("parrot").json()["choices"][0]["message"]["content"] == "You said: hi"
        started = time.monotonic()
        missing = ask("gpt-4o")
        assert time.monotonic() - started >= 0.05  # --latency-s
        assert missing.status_code == 404
        assert "The model `gpt-4o` does not exist (serve-fake serves: flaky, parrot)" in missing.text


def test_rate_limit_flag_answers_429_with_headers(project: Project) -> None:
    with serve_fake(project, "--rate-limit-rps", "2", "--burst", "1") as url:
        codes = [post(url, "m").status_code for _ in range(3)]
    assert codes[0] == 200 and 429 in codes[1:]


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "x=missing.jsonl"], "missing.jsonl: cannot read the recording"),
    (["--model", "x"], "expected NAME=FILE.jsonl, NAME=script:FILE.yaml or NAME=echo"),
    (["--model", "x=rec.jsonl"], "a recording keyed by case id needs --suites"),
    (["--model", "x=script:bad.yaml"], "reply [0]: expected a string or a mapping of"),
    (["--error-rate", "2"], "--error-rate is a fraction between 0 and 1"),
])
def test_bad_options_are_usage_errors(project: Project, args: list[str], message: str) -> None:
    project.write_jsonl("rec.jsonl", [{"id": "a", "output": "x"}])
    project.write("bad.yaml", "- {colour: red}\n")
    result = project.run("serve-fake", "--port", "0", *args)
    assert result.exit_code == 4 and message in result.output, result.output
