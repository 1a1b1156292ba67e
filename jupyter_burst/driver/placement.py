"""Which provider a ``%%burst`` cell runs on: the one it names, its running cluster's, or the
cheapest offer of the enabled providers (:mod:`jupyter_burst.clusters.choose`'s rule).

The choice made while the cell is packed holds for its launch a moment later (a background
cell asks twice): the offers are gathered once, as the AWS provider's quote is.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Protocol, TypeVar

from jupyter_burst.clusters import registry
from jupyter_burst.clusters.choose import choose
from jupyter_burst.clusters.gather import enabled_providers, gather
from jupyter_burst.clusters.offers import OfferRequest, Plan
from jupyter_burst.driver.cluster import running_provider
from jupyter_burst.errors import OptionError

_HOLD_SECONDS = 60
_held: tuple[tuple, float, Plan] | None = None


class CellAsk(Protocol):
    """What placing a cell reads of its options: the kernel's ``CellOptions``, a frozen
    dataclass (a placed copy is made with :func:`dataclasses.replace`)."""

    @property
    def provider(self) -> str | None: ...
    @property
    def cluster(self) -> str: ...
    @property
    def gpus(self) -> int: ...
    @property
    def gpu_mem(self) -> float | None: ...
    @property
    def spot(self) -> bool | None: ...
    @property
    def regions(self) -> tuple[str, ...]: ...
    @property
    def plan(self) -> Plan | None: ...
    @property
    def given(self) -> frozenset[str]: ...


Options = TypeVar("Options", bound=CellAsk)


def offer_request(options: CellAsk) -> OfferRequest:
    """What the cell asks the providers for."""
    # No preference means on-demand: the head holds the scheduler, and a spot head that is
    # taken back takes the cluster with it. Spot (the head included) is the user's call: spot=yes.
    return OfferRequest(
        gpus=options.gpus,
        gpu_mem_gib=options.gpu_mem,
        spot=False if options.spot is None else options.spot,
        regions=options.regions,
    )


def resolve(options: Options) -> Options:
    """``options`` with a provider: the one named, the running cluster's, or the cheapest offer's."""
    global _held
    if options.provider is not None:
        _check_honoured(options)
        return options
    running = running_provider(options.cluster)
    if running is not None:
        return replace(options, provider=running)
    request = offer_request(options)
    enabled = enabled_providers()
    key = (options.cluster, request, tuple(enabled))
    now = time.monotonic()
    if _held is not None and _held[0] == key and now - _held[1] < _HOLD_SECONDS:
        plan = _held[2]
    else:
        plan = choose(gather(request), request, enabled)
        _held = (key, now, plan)
    return replace(options, provider=plan.offer.provider, plan=plan)


def _check_honoured(options: CellAsk) -> None:
    """spot=, gpu_mem=, region= for a named provider that cannot honour them: refused, not ignored."""
    asked = [word for word in ("spot", "gpu_mem", "region") if word in options.given]
    if not asked or options.plan is not None:
        return
    if getattr(registry.get_provider(options.provider), "plan", None) is None:
        words = ", ".join(f"{word}=" for word in asked)
        raise OptionError(
            f"provider={options.provider} does not choose among offers, so {words} would be ignored; "
            "drop it, or name a provider that does (e.g. provider=aws)"
        )
