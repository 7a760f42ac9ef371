"""``gatekeeper serve-fake``: a local fake OpenAI endpoint for trying a gate in CI without a paid key.

The server is the project's own test fake (:mod:`gatekeeper.devtools.fake_openai`), which
speaks the wire protocol the ``openai`` SDK speaks and misbehaves on request; what it
answers per model name comes from :mod:`gatekeeper.devtools.fake_answers` (a recording, a
script or an echo). It runs in the foreground until SIGINT or SIGTERM (not until stdin
closes, so ``gatekeeper serve-fake ... &`` works in a CI step). See docs/ci.md.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.kinds import Command, Register, Session
from gatekeeper.types import UsageError


class ServeFakeCommand(Command):
    name = "serve-fake"
    help = ("serve a fake OpenAI-compatible endpoint answering each model name from a recording, "
            "a script or an echo (CI without a paid key; docs/ci.md)")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", action="append", default=[], metavar="NAME=SOURCE",
                            help="what model NAME answers: FILE.jsonl (a replay recording, or rows with "
                                 "'prompt'), script:FILE.yaml (replies in order, the last repeating) or echo; "
                                 "repeatable. Without any, every model echoes.")
        parser.add_argument("--suites", action="append", default=[], metavar="PATH",
                            help="suites whose rendered prompts map requests to the case ids of recordings")
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8089, help="port (default 8089; 0 picks a free one)")
        parser.add_argument("--latency-s", type=float, default=0.0, help="seconds before each answer")
        parser.add_argument("--rate-limit-rps", type=float, help="requests per second before 429s")
        parser.add_argument("--burst", type=float, help="requests allowed at once (default: the rate)")
        parser.add_argument("--retry-after-s", type=float, default=1.0, help="Retry-After of a 429")
        parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests answered 500")
        parser.add_argument("--storm-every-s", type=float, help="a storm of 429s every this many seconds")
        parser.add_argument("--storm-duration-s", type=float, default=2.0, help="how long a storm lasts")
        parser.add_argument("--api-key", action="append", default=[], metavar="KEY",
                            help="accept only these bearer keys (default: any)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the random errors")
        parser.add_argument("--ready-file", type=Path, help="write the base URL here once listening")

    def run(self, args: argparse.Namespace, session: Session) -> int:
        from gatekeeper.devtools.fake_answers import AnswerBook, parse_model_option
        from gatekeeper.devtools.fake_openai import FakeOpenAIServer

        for name in ("latency_s", "error_rate", "storm_duration_s"):
            if getattr(args, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be ≥ 0")
        if not 0 <= args.error_rate <= 1:
            raise UsageError("--error-rate is a fraction between 0 and 1")
        if args.rate_limit_rps is not None and args.rate_limit_rps <= 0:
            raise UsageError("--rate-limit-rps must be > 0")
        sources = [parse_model_option(text, Path.cwd()) for text in args.model]
        cases: list[Any] = []
        if any(s.by_id for s in sources):
            if not args.suites:
                raise UsageError("a recording keyed by case id needs --suites (the suites whose prompts it answers)")
            cases = [case for suite in session.collect(args.suites) for case in suite.cases]
        book = AnswerBook(sources, cases, default=None if sources else _echo)
        server = FakeOpenAIServer(
            host=args.host, port=args.port, latency_s=args.latency_s, rate_limit_rps=args.rate_limit_rps,
            burst=args.burst, retry_after_s=args.retry_after_s, error_rate=args.error_rate, seed=args.seed,
            storm_every_s=args.storm_every_s, storm_duration_s=args.storm_duration_s,
            api_keys=set(args.api_key) or None, responder=book,
        )
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                server.start()
            except OSError as exc:
                raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
            for s in sources:
                session.echo(f"model {s.name}: {s.kind}" + (f" {s.path}" if s.path else ""))
            if cases:
                session.echo(f"{len(book.prompt_ids)} prompts from {len(cases)} cases of {', '.join(args.suites)}")
            if args.ready_file:
                args.ready_file.write_text(server.base_url + "\n", encoding="utf-8")
            session.echo(f"READY {server.base_url}")
            _flush(session)
            while not stop.wait(0.2):
                pass
        finally:
            server.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        counters = dict(server.counters)
        session.echo(f"stopped after {counters.get('requests', 0)} requests ({counters.get('ok', 0)} answered 200)")
        return 0


def _echo(body: dict[str, Any]) -> str:
    from gatekeeper.devtools.fake_answers import last_user_message

    return f"You said: {last_user_message(body.get('messages') or [])}"


def _flush(session: Session) -> None:
    out = getattr(session, "out", None)
    if out is not None and hasattr(out, "flush"):
        out.flush()


@hookimpl
def gatekeeper_register_commands(register: Register[Command]) -> None:
    register(ServeFakeCommand)
