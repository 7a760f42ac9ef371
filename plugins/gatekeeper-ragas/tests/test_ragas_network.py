"""No phoning home: while every ragas metric runs, the only connection made is to the
configured judge endpoint (the fake server on loopback), and no name is resolved; and the
plugin switches ragas' analytics off before ragas is first imported."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
from typing import Any

import pytest
from ragas_support import judge_spec, run, setup, suite
from test_ragas_metrics import ANSWERS, ROWS, every_metric
from tests.fakes import FakeOpenAIServer

from gatekeeper.testing import Project


class SocketGuard:
    """Refuses (and records) any connection but to ``allowed``, and any name lookup but of
    a loopback address."""

    def __init__(self, allowed: tuple[str, int]) -> None:
        self.allowed = allowed
        self.refused: list[str] = []
        self.allowed_connects = 0

    def check_address(self, address: Any) -> None:
        if isinstance(address, tuple) and len(address) >= 2:
            host, port = address[0], address[1]
            if (host, port) != self.allowed:
                self.refused.append(f"connect {host}:{port}")
                raise ConnectionRefusedError(f"socket guard: no connection to {host}:{port}")
            self.allowed_connects += 1

    def check_lookup(self, host: Any) -> None:
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            if ipaddress.ip_address(name).is_loopback:
                return
        except ValueError:
            pass
        self.refused.append(f"lookup {name}")
        raise socket.gaierror(f"socket guard: no lookup of {name}")

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        guard = self
        real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, \
            socket.getaddrinfo

        def connect(sock: socket.socket, address: Any) -> Any:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                guard.check_address(address)
            return real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> Any:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                guard.check_address(address)
            return real_connect_ex(sock, address)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if host is not None:
                guard.check_lookup(host)
            return real_getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_only_the_judge_endpoint_is_contacted(
    project: Project, judge_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector_entry = f"  - {{ragas_hallucination: {{judge: '{judge_spec(judge_server)}'}}}}"
    setup(project, suite(every_metric(judge_server), detector_entry, ROWS), {"candidate": ANSWERS})
    guard = SocketGuard(("127.0.0.1", judge_server.port))
    guard.install(monkeypatch)
    with pytest.raises(OSError):  # the guard is live: anything else is refused
        socket.create_connection(("127.0.0.2", judge_server.port), timeout=1)
    guard.refused.clear()

    result, record = run(project)

    assert result.exit_code in (0, 1), result.output
    assert guard.refused == []
    assert guard.allowed_connects > 0  # the judge's connections went through the guard
    assert judge_server.counters["ok"] > 0
    statuses = {s["status"] for row in record["cases"] for s in row["scores"].values()}
    assert statuses == {"ok"}


def test_analytics_are_off_before_ragas_is_imported() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAGAS_DO_NOT_TRACK"}
    code = (
        "import sys; import gatekeeper_ragas.plugin; assert 'ragas' not in sys.modules, 'imported at start-up'; "
        "from ragas._analytics import do_not_track; print(do_not_track())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
