"""Hook-call tracing (``--trace-plugins`` or ``GATEKEEPER_TRACE_PLUGINS=1``).

Every call through the plugin manager prints one line with its arguments and the
plugins that implement it, in the order they run; then one line per implementation with
the plugin, the time it took and what it returned; then the total. Register hooks,
which the host calls one implementation at a time, print their per-plugin lines only::

    [trace] gatekeeper_load_suite -> example, suite_loader (path=suites/a.yaml, config=Config)
    [trace]   example.gatekeeper_load_suite returned None in 0.02 ms
    [trace]   suite_loader.gatekeeper_load_suite returned Suite(mini) in 3.10 ms
    [trace] gatekeeper_load_suite returned Suite(mini), done in 3.20 ms
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import pluggy

PREFIX = "[trace]"
_TRACED = "__gatekeeper_traced__"


def short(value: Any, width: int = 48) -> str:
    """A one-word picture of a hook argument or result, never its whole contents."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= width else value[: width - 1] + "…")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple | set | frozenset):
        return f"{type(value).__name__}[{len(value)}]"
    if isinstance(value, Mapping):
        return f"dict[{len(value)}]"
    kind = type(value).__name__
    case_key = getattr(getattr(value, "case", None), "key", None)  # a CaseResult: which case, which model
    if isinstance(case_key, str):
        return f"{kind}({case_key}, {getattr(value, 'model', '?')})"
    for attr in ("key", "name", "run_id"):
        label = getattr(value, attr, None)
        if isinstance(label, str):
            return f"{kind}({label})"
    return kind


class HookTracer:
    """Prints hook calls to ``stream``; attach it once to a plugin manager."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._local = threading.local()

    # ----------------------------------------------------------------- output

    @property
    def _starts(self) -> list[float]:
        if not hasattr(self._local, "starts"):
            self._local.starts = []
        starts: list[float] = self._local.starts
        return starts

    def line(self, text: str, extra_depth: int = 0) -> None:
        indent = "  " * (len(self._starts) - 1 + extra_depth) if self._starts else "  " * extra_depth
        self.stream.write(f"{PREFIX} {indent}{text}\n")
        self.stream.flush()

    # ----------------------------------------------------------------- wiring

    def attach(self, pm: pluggy.PluginManager) -> Callable[[], None]:
        """Time every implementation registered so far and monitor every hook call.

        Returns the function that stops the monitoring.
        """
        for caller in _hook_callers(pm):
            for impl in caller.get_hookimpls():
                self._wrap(caller.name, impl)
        return pm.add_hookcall_monitoring(self._before, self._after)

    def _before(self, hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        order = ", ".join(i.plugin_name for i in reversed(impls)) or "-"
        args = ", ".join(f"{k}={short(v)}" for k, v in kwargs.items())
        self._starts.append(time.perf_counter())
        self.line(f"{hook_name} -> {order} ({args})")

    def _after(self, outcome: Any, hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        started = self._starts[-1] if self._starts else time.perf_counter()
        took = (time.perf_counter() - started) * 1000
        exc = outcome.exception
        result = f"raised {type(exc).__name__}: {exc}" if exc is not None else f"returned {short(outcome.get_result())}"
        self.line(f"{hook_name} {result}, done in {took:.2f} ms")
        if self._starts:
            self._starts.pop()

    def _wrap(self, hook_name: str, impl: Any) -> None:
        function = impl.function
        if getattr(function, _TRACED, False):
            return
        plugin = impl.plugin_name
        tracer = self

        def report(started: float, outcome: str) -> None:
            took = (time.perf_counter() - started) * 1000
            tracer.line(f"{plugin}.{hook_name} {outcome} in {took:.2f} ms", extra_depth=1)

        traced: Callable[..., Any]
        if inspect.isgeneratorfunction(function):  # wrapper=True / hookwrapper=True

            @functools.wraps(function)
            def traced_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                started = time.perf_counter()
                try:
                    result = yield from function(*args, **kwargs)
                except BaseException as exc:
                    report(started, f"(wrapper) raised {type(exc).__name__}: {exc}")
                    raise
                report(started, f"(wrapper) returned {short(result)}")
                return result

            traced = traced_wrapper
        else:

            @functools.wraps(function)
            def traced_call(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    result = function(*args, **kwargs)
                except BaseException as exc:
                    report(started, f"raised {type(exc).__name__}: {exc}")
                    raise
                report(started, f"returned {short(result)}")
                return result

            traced = traced_call
        setattr(traced, _TRACED, True)
        impl.function = traced


def _hook_callers(pm: pluggy.PluginManager) -> Iterator[Any]:
    for name in dir(pm.hook):
        caller = getattr(pm.hook, name)
        if name.startswith("gatekeeper_") and hasattr(caller, "get_hookimpls"):
            yield caller
