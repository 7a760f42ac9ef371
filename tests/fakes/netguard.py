"""A socket guard: records every DNS lookup and outgoing connection made in this process.

The ecosystem plugins promise that, while metrics run, nothing leaves for anywhere but the
configured judge endpoint (no telemetry, no NLTK download, no hub). Tests wrap a real run in
:func:`guard` and assert on what it saw; a destination off the allow list also fails the
call itself (``ConnectionRefusedError``), so nothing reaches the network meanwhile.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass
class NetLog:
    lookups: list[str] = field(default_factory=list)
    connections: list[tuple[str, int]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def beyond(self, allowed: set[tuple[str, int]]) -> list[str]:
        """Everything that went anywhere but ``allowed`` (host, port) pairs."""
        hosts = {h for h, _ in allowed}
        out = [f"lookup {h}" for h in self.lookups if h not in hosts]
        out += [f"connect {h}:{p}" for h, p in self.connections if (h, p) not in allowed]
        return out + self.refused


@contextlib.contextmanager
def guard() -> Iterator[NetLog]:
    log = NetLog()
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        log.lookups.append(name)
        if name not in LOOPBACK:
            log.refused.append(f"lookup {name} (refused)")
            raise socket.gaierror(socket.EAI_NONAME, f"netguard: lookup of {name} refused")
        return real_getaddrinfo(host, *args, **kwargs)

    def check(address: Any) -> None:
        if isinstance(address, tuple) and len(address) >= 2:
            host, port = str(address[0]), int(address[1])
            log.connections.append((host, port))
            if host not in LOOPBACK:
                log.refused.append(f"connect {host}:{port} (refused)")
                raise ConnectionRefusedError(f"netguard: connection to {host}:{port} refused")

    def connect(self: socket.socket, address: Any) -> Any:
        check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        check(address)
        return real_connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    try:
        yield log
    finally:
        socket.getaddrinfo = real_getaddrinfo  # type: ignore[assignment]
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = real_connect_ex  # type: ignore[method-assign]
