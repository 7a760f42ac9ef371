"""``gatekeeper loop``: the signals flywheel in one command (the flow is :mod:`gatekeeper.deploy.loop`)."""


from __future__ import annotations

import argparse
from pathlib import Path

from gatekeeper import hookimpl
from gatekeeper.deploy.loop import BUNDLED_HISTORY, BUNDLED_POLICY, DEFAULT_REGRESSION_CASES, REGRESSION_SUITE, Loop
from gatekeeper.kinds import Command, Register, Session


class LoopCommand(Command):
    name = "loop"
    help = "the signals flywheel: curate history signals, tune, check, promote to canary, monitor, promote or roll back"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--base", default="hf:smollm2", help="base model spec (default: hf:smollm2)")
        parser.add_argument("--history", default=BUNDLED_HISTORY, metavar="LOCATION",
                            help=f"signals that training data and the regression suite come from "
                            f"(default: {BUNDLED_HISTORY})")
        parser.add_argument("--window2", default="better", metavar="better|worse|LOCATION",
                            help="signals of the canary window to monitor (default: the bundled 'better' one)")
        parser.add_argument("--policy", help=f"PCCP policy (default: {BUNDLED_POLICY})")
        parser.add_argument("--suites", nargs="+", default=[], metavar="PATH",
                            help="suites checked besides the regression suite (default: config 'suites')")
        parser.add_argument("--cases", action="append", default=[], metavar="N|SUITE=N",
                            help="check at most N cases of every suite, or of SUITE (repeatable; chosen by the "
                            f"hash of their id; default: {REGRESSION_SUITE}={DEFAULT_REGRESSION_CASES}, "
                            "every case of the other suites)")
        parser.add_argument("--tuner", default="lora", help="tuner (default: lora)")
        parser.add_argument("--steps", type=int, default=4,
                            help="optimizer steps of the tuner (default: 4, about 100 s on two CPU cores)")
        parser.add_argument("--pii-allow-context", action="store_true",
                            help="keep contact details in retrieved passages (the shop's own phone and email); "
                            "user text is scrubbed regardless")
        parser.add_argument("--seed", type=int, default=0, help="tuner seed (default: 0)")
        parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                            help="another tuner hyperparameter (repeatable)")
        parser.add_argument("--stage", default="canary", help="the first rollout stage (default: canary)")
        parser.add_argument("--work", type=Path, help="working directory (default: OUT/loop-TIME)")
        parser.add_argument("--target", default="local", help="deploy target (default: local)")
        parser.add_argument("--registry", help="the target's location (default: WORK/registry)")
        parser.add_argument("--model", help="registered model name (default: from the policy)")
        parser.add_argument("--no-progress", action="store_true", help="plain progress lines")
        parser.epilog = (
            "exit codes: 0 the new version is in production, 1 the gate rejected it or monitoring rolled it back, "
            "2 HOLD (needs a signed approval), 3 INCONCLUSIVE (at the gate, or the canary had too little evidence), "
            "4 usage or configuration error, 5 harness error"
        )

    def run(self, args: argparse.Namespace, session: Session) -> int:
        loop = Loop(session, args)
        loop.case_limits()  # a bad --cases fails before any work
        return loop.run()


@hookimpl
def gatekeeper_register_commands(register: Register[Command]) -> None:
    register(LoopCommand)
