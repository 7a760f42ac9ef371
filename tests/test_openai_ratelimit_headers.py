"""Issue 14, item 13: what the OpenAI provider does with ``x-ratelimit-*`` headers.

It says what it learns, a configured rpm wins over an announced one, and a header that the
server's own behaviour contradicts (a per-second limit announced where a per-minute one
belongs) is reported and not used — it must not slow a run down 60× without a word.
"""

from __future__ import annotations

import time

from gatekeeper.testing import Project
from tests.fakes import FakeOpenAIServer
from tests.test_openai_provider import fast_runner, run, spec, suite


def test_a_per_second_limit_announced_as_per_minute_is_noticed_not_obeyed(project: Project) -> None:
    project.write("suites/remote.yaml", suite(60))
    fast_runner(project)
    # 50 requests a second allowed, announced as "x-ratelimit-limit-requests: 50" (per minute,
    # by OpenAI's convention): obeying it would take 60 s for 60 cases instead of about 1.
    with FakeOpenAIServer(rate_limit_rps=50, burst=50, limit_header_window_s=1.0) as server:
        started = time.monotonic()
        code, record, output = run(project, spec(server))
        elapsed = time.monotonic() - started
    assert code == 0, output
    assert server.counters["ok"] == 60 and not any(row["error"] for row in record["cases"])
    assert "announces x-ratelimit-limit-requests: 50 but its reset header says" in output, output
    assert "not a per-minute limit, so it is not used for pacing" in output
    assert elapsed < 20, f"{elapsed:.1f} s: the announced 50/min was obeyed (2 CPU shared: generous bound)"


def test_a_consistent_announced_limit_is_learned_and_logged(project: Project) -> None:
    project.write("suites/remote.yaml", suite(12))
    fast_runner(project)
    with FakeOpenAIServer(rate_limit_rps=10, burst=3, retry_after_s=None) as server:
        code, _, output = run(project, spec(server))
    assert code == 0, output
    assert "learned rpm 600 from x-ratelimit-limit-requests" in output, output
    assert "not a per-minute limit" not in output


def test_a_configured_rpm_takes_precedence_over_the_announced_one(project: Project) -> None:
    project.write("suites/remote.yaml", suite(40))
    fast_runner(project)
    # The server allows 100/s but announces "100" (per minute, read literally); the user knows
    # better and configured 6000/min. Before: min(100, 6000) = 100/min, 24 s for 40 cases.
    with FakeOpenAIServer(rate_limit_rps=100, burst=100, limit_header_window_s=1.0) as server:
        started = time.monotonic()
        code, _, output = run(project, spec(server, rpm="6000"))
        elapsed = time.monotonic() - started
    assert code == 0, output
    assert "announces rpm 100 (x-ratelimit-limit-requests); the configured rpm 6000 takes precedence" in output
    assert server.counters["ok"] == 40 and server.counters["429"] == 0
    assert elapsed < 15, f"{elapsed:.1f} s"


def test_duration_headers_are_read_as_openai_writes_them() -> None:
    from gatekeeper.builtin.providers.openai.endpoints import _duration_s

    assert _duration_s("6m0s") == 360.0 and _duration_s("120ms") == 0.12 and _duration_s("1h2m3.5s") == 3723.5
    assert _duration_s("0.050s") == 0.05 and _duration_s("2") == 2.0 and _duration_s("soon") is None
