"""What a load run may do: send only to endpoints someone named, and not faster than the
project allows unless the person running it confirms.

A load suite is data a pull request can change; pointed at a production endpoint at a
high rate it is an outage (and a bill). So, before any request leaves:

* every endpoint of every model must be named in the suite's ``targets`` or in
  ``load.targets`` of gatekeeper.yaml (a base URL, or ``scheme://host:port`` for any path
  on that server); a model that cannot say where it sends requests is refused;
* the total offered rate (every model together) must not exceed ``load.max_rate``, nor a
  closed loop's total concurrency ``load.max_concurrency``, unless ``--confirm-load-rate``.

The caps (``caps.max_requests``, ``caps.max_duration_s``) are enforced by the driver itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gatekeeper.types import UsageError

if TYPE_CHECKING:
    from gatekeeper.engine.load.schema import LoadSuite
    from gatekeeper.kinds import Model
    from gatekeeper.types import Config

CONFIRM_FLAG = "--confirm-load-rate"


def check_safety(suite: LoadSuite, models: Mapping[str, Model], config: Config, *, confirm_rate: bool = False) -> None:
    """Raise :class:`UsageError` (exit 4) naming the suite's file, line and field when the run
    would send somewhere unnamed or faster than allowed."""
    if not models:
        raise UsageError("a load run needs at least one model (the candidate)", **suite.where("load"))
    check_targets(suite, models, config)
    check_rate(suite, len(models), config, confirm_rate=confirm_rate)


def check_targets(suite: LoadSuite, models: Mapping[str, Model], config: Config) -> None:
    allowed = [*suite.schema.targets, *config.load.targets]
    for label, model in models.items():
        urls_of = getattr(model, "target_urls", None)
        name = f"{model.identity.provider}:{model.identity.name}"
        if urls_of is None:
            raise UsageError(
                f"the {label} ({name}) cannot say which endpoints it sends requests to, so a load run "
                "will not drive it (load runs only send to endpoints named in 'targets')", **suite.where("targets"))
        for url in urls_of():
            if not any(_matches(url, entry) for entry in allowed):
                named = ", ".join(allowed) or "none"
                raise UsageError(
                    f"the {label} ({name}) sends to {url}, which is not named in this suite's 'targets' or in "
                    f"load.targets of gatekeeper.yaml (named: {named}); a load run only sends to endpoints "
                    "named there", **suite.where("targets"))


def check_rate(suite: LoadSuite, n_models: int, config: Config, *, confirm_rate: bool) -> None:
    if confirm_rate:
        return
    limits = config.load
    rates = [s.offered_rate for s in suite.steps if s.offered_rate is not None]
    if rates:
        peak = max(rates)
        total = peak * n_models
        if total > limits.max_rate + 1e-9:
            field = "arrival.rates" if suite.process == "ramp" else "arrival.rate"
            raise UsageError(
                f"the suite offers up to {total:g} requests/s in total ({peak:g}/s to each of {n_models} "
                f"model{'s' if n_models > 1 else ''}), above load.max_rate {limits.max_rate:g}; pass "
                f"{CONFIRM_FLAG} to send it anyway, or lower the rate", **suite.where(field))
    levels = [s.concurrency for s in suite.steps if s.concurrency is not None]
    if levels:
        total_c = max(levels) * n_models
        if total_c > limits.max_concurrency:
            raise UsageError(
                f"the suite keeps up to {total_c} requests in flight in total ({max(levels)} per model), above "
                f"load.max_concurrency {limits.max_concurrency}; pass {CONFIRM_FLAG} to send it anyway, or "
                "lower the concurrency", **suite.where("arrival.concurrency"))


def _matches(url: str, entry: str) -> bool:
    """``entry`` names ``url``: the same base URL, a path prefix of it, or its origin."""
    target, named = urlsplit(url.rstrip("/")), urlsplit(entry.strip().rstrip("/"))
    if not named.scheme or (target.scheme, target.netloc.lower()) != (named.scheme, named.netloc.lower()):
        return False
    path, prefix = target.path.rstrip("/"), named.path.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")
