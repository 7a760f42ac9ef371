"""``gatekeeper tune``: make a candidate with a tuner plugin and record its provenance."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gatekeeper import hookimpl
from gatekeeper.kinds import Command, Register, Session


def parse_params(items: list[str]) -> dict[str, Any]:
    """``--param rank=8 --param target_modules=q_proj,v_proj`` → typed values."""
    import yaml

    from gatekeeper.types import UsageError

    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {item!r} is not KEY=VALUE", field="--param")
        params[key] = [v for v in value.split(",") if v] if "," in value else yaml.safe_load(value)
    return params


class TuneCommand(Command):
    name = "tune"
    help = "make a candidate: train with a tuner plugin, write it with its provenance"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--tuner", required=True, help="tuner name (see gatekeeper plugins)")
        parser.add_argument("--base", required=True, help="base model spec, e.g. hf:smollm2")
        parser.add_argument("--data", required=True, type=Path, help="training data (JSONL; grpo and distill: a suite)")
        parser.add_argument("--out", required=True, type=Path, help="output directory")
        parser.add_argument("--policy", type=Path, help="bound hyperparameters by this policy's retraining section")
        parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                            help="hyperparameter (repeatable), e.g. --param rank=8")

    def run(self, args: argparse.Namespace, session: Session) -> int:
        from gatekeeper.types import ModelSpec, PluginError, UsageError

        tuner_cls = session.registries.tuners.get(args.tuner, field="--tuner")
        bounds = None
        if args.policy:
            from gatekeeper.gate.policy import load_policy

            policy = load_policy(args.policy)
            bounds = policy.retraining.hyperparameters.model_dump(exclude_none=True)
            kind = tuner_cls.modification
            allowed = [m.type for m in policy.modifications]
            if kind is not None and kind not in allowed:
                # A change of tuner kind is a different modification: refused before any training.
                raise UsageError(
                    f"the {args.tuner} tuner makes a {kind!r} change, which the policy does not allow "
                    f"(its modifications: {', '.join(f'{m.id} ({m.type})' for m in policy.modifications)})",
                    file=str(args.policy), field="modifications",
                )
        if not args.data.exists():  # a file, or a directory of suites (distill's prompt set)
            raise UsageError("training data not found", file=str(args.data), field="--data")
        from gatekeeper.signals.curation import dataset_provenance, merge_dataset_provenance

        data_card = dataset_provenance(args.data)  # built from signals: its manifest vouches for it
        from gatekeeper.synth.provenance import training_origin

        origin = training_origin(args.data, args.policy)  # synthetic share; over the policy's cap: refused here
        data_card = {**(origin or {}), **(data_card or {})} or None
        try:
            tuner = tuner_cls()
            tuner.session = session
            provenance = tuner.tune(
                ModelSpec.parse(args.base), args.data, args.out, parse_params(args.param),
                session.config, bounds,
            )
        except (UsageError, PluginError):
            raise
        except Exception as exc:
            plugin = session.registries.tuners.entry(args.tuner).plugin
            raise PluginError(plugin, f"tuner {args.tuner!r} failed: {type(exc).__name__}: {exc}") from None
        provenance = merge_dataset_provenance(provenance, data_card, args.out)
        from gatekeeper.gate.audit import AuditLog
        from gatekeeper.types import stable_hash

        AuditLog(session.config.path(session.config.audit_log)).append(
            "tune", subject=str(args.out),
            refs={"provenance": stable_hash(provenance),
                  **({"data": provenance["data"]["sha256"]} if provenance.get("data", {}).get("sha256") else {})},
            data={"tuner": args.tuner, "base": args.base, "out": str(args.out)},
        )
        session.echo(f"tuned {args.tuner} adapter written to {args.out}")
        session.echo(json.dumps({k: provenance.get(k) for k in ("modification", "hyperparameters", "data")},
                                indent=1, default=str))
        return 0


@hookimpl
def gatekeeper_register_commands(register: Register[Command]) -> None:
    register(TuneCommand)
