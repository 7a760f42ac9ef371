"""Headless Chromium: printing the report to PDF, and a small DevTools client.

:func:`print_pdf` is what ``gatekeeper report RUN --pdf`` uses. :class:`BrowserPage`
drives a real page over the Chrome DevTools Protocol (console messages, dialogs, DOM
queries, screenshots, load time) for the report's browser tests and benchmark; it needs
the ``websocket-client`` package (in the ``dev`` extra).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeeper.types import UsageError

CHROMIUM_ENV = "GATEKEEPER_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# Quiet, offline, reproducible: no first-run UI, no background fetches, a fresh profile.
HEADLESS_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
)
PDF_TIMEOUT_S = 120.0


def find_chromium() -> str | None:
    """``$GATEKEEPER_CHROMIUM``, else the first Chromium or Chrome on ``PATH``."""
    explicit = os.environ.get(CHROMIUM_ENV, "").strip()
    if explicit:
        return explicit if Path(explicit).is_file() else shutil.which(explicit)
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def require_chromium() -> str:
    found = find_chromium()
    if not found:
        raise UsageError(
            "--pdf needs headless Chromium and none was found (install the 'chromium' package, "
            f"or set {CHROMIUM_ENV} to the browser's path)", field="--pdf",
        )
    return found


def print_pdf(html: Path, pdf: Path, *, chromium: str | None = None) -> Path:
    """Print ``html`` to ``pdf`` (A4, the report's print stylesheet) with headless Chromium.

    :raises UsageError: no Chromium. :raises RuntimeError: Chromium failed or wrote nothing.
    """
    browser = chromium or require_chromium()
    pdf.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="gatekeeper-chromium-") as profile:
        proc = subprocess.run(
            [browser, *HEADLESS_FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
             f"--print-to-pdf={pdf}", html.resolve().as_uri()],
            capture_output=True, text=True, timeout=PDF_TIMEOUT_S, check=False,
        )
    if not pdf.is_file() or pdf.stat().st_size == 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"Chromium exited {proc.returncode} without writing {pdf}: {' | '.join(tail)}")
    return pdf


# --------------------------------------------------------------------------- DevTools


@dataclass
class PageEvents:
    """What a page did that a test cares about."""

    console: list[dict[str, Any]] = field(default_factory=list)
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    dialogs: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Console messages, uncaught exceptions, error/warning log entries and dialogs, as text."""
        out = [f"console.{c.get('type')}: {_console_text(c)}" for c in self.console]
        out += [f"exception: {e.get('exceptionDetails', {}).get('text')} "
                f"{e.get('exceptionDetails', {}).get('exception', {}).get('description', '')}"
                for e in self.exceptions]
        out += [f"log.{e['entry'].get('level')}: {e['entry'].get('text')}" for e in self.log
                if e["entry"].get("level") in ("error", "warning")]
        out += [f"dialog {d.get('type')}: {d.get('message')}" for d in self.dialogs]
        return out


def _console_text(call: dict[str, Any]) -> str:
    return " ".join(str(a.get("value", a.get("description", ""))) for a in call.get("args", []))


class BrowserPage:
    """One headless Chromium with one page, driven over the DevTools Protocol.

    Use as a context manager; :meth:`open` loads a URL and waits for its load event.
    Dialogs (``alert``...) are recorded and dismissed so a page can never hang the test.
    """

    def __init__(self, chromium: str | None = None, *, width: int = 1280, height: int = 900,
                 timeout_s: float = 60.0) -> None:
        self.chromium = chromium or find_chromium()
        if not self.chromium:
            raise RuntimeError("no Chromium found")
        self.width, self.height, self.timeout_s = width, height, timeout_s
        self.events = PageEvents()
        self._next_id = 0
        self._profile = tempfile.TemporaryDirectory(prefix="gatekeeper-cdp-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._ws: Any = None

    def __enter__(self) -> BrowserPage:
        import websocket

        profile = Path(self._profile.name)
        self._proc = subprocess.Popen(
            [str(self.chromium), *HEADLESS_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port = self._wait_for_port(profile / "DevToolsActivePort")
        target = self._page_target(port)
        # Our own socket: websocket-client would send even 127.0.0.1 through $http_proxy.
        sock = socket.create_connection(("127.0.0.1", port), timeout=self.timeout_s)
        self._ws = websocket.create_connection(target, timeout=self.timeout_s, suppress_origin=True, socket=sock)
        for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
            self.send(method)
        self.send("Emulation.setDeviceMetricsOverride",
                  width=self.width, height=self.height, deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            if self._ws is not None:
                self._ws.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        # Chromium's helper processes can still be writing into the profile just after the
        # browser exits ("Directory not empty"): try again for a moment, then leave it to /tmp.
        for _ in range(30):
            try:
                self._profile.cleanup()
                return
            except OSError:
                time.sleep(0.1)
        shutil.rmtree(self._profile.name, ignore_errors=True)

    def _wait_for_port(self, path: Path) -> int:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if path.is_file():
                lines = path.read_text().splitlines()
                if lines and lines[0].strip().isdigit():
                    return int(lines[0])
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"Chromium exited with {self._proc.returncode} before DevTools was up")
            time.sleep(0.05)
        raise RuntimeError("Chromium's DevTools port did not appear")

    def _page_target(self, port: int) -> str:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            # A local address: never through an http_proxy the environment may set.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=5) as resp:
                targets = json.loads(resp.read())
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.05)
        raise RuntimeError("Chromium opened no page")

    # ----------------------------------------------------------------- protocol

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call a DevTools method and return its result (events meanwhile are recorded)."""
        self._next_id += 1
        call_id = self._next_id
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = self._receive()
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result") or {})

    def _receive(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self._ws.recv())
        self._record(message)
        return message

    def _record(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params") or {}
        if method == "Runtime.consoleAPICalled":
            self.events.console.append(params)
        elif method == "Runtime.exceptionThrown":
            self.events.exceptions.append(params)
        elif method == "Log.entryAdded":
            self.events.log.append(params)
        elif method == "Network.requestWillBeSent":
            self.events.requests.append(str(params.get("request", {}).get("url", "")))
        elif method == "Page.javascriptDialogOpening":
            self.events.dialogs.append(params)
            self._ws.send(json.dumps({"id": 0, "method": "Page.handleJavaScriptDialog",
                                      "params": {"accept": False}}))

    def wait_for(self, method: str, timeout_s: float | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while time.monotonic() < deadline:
            message = self._receive()
            if message.get("method") == method:
                return dict(message.get("params") or {})
        raise TimeoutError(f"no {method} within the timeout")

    # ----------------------------------------------------------------- page

    def open(self, url: str, *, settle_s: float = 0.3) -> float:
        """Load ``url``; return seconds until its load event. Waits ``settle_s`` for late events."""
        start = time.perf_counter()
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        took = time.perf_counter() - start
        self.evaluate("0")  # flush events queued before the load event
        end = time.monotonic() + settle_s
        self._ws.settimeout(0.05)
        try:
            while time.monotonic() < end:
                with contextlib.suppress(Exception):
                    self._receive()
        finally:
            self._ws.settimeout(self.timeout_s)
        return took

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluate {expression!r}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            height = int(self.evaluate("document.documentElement.scrollHeight"))
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1})
        data = self.send("Page.captureScreenshot", **params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path
