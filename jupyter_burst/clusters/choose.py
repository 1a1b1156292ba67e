"""Where a ``%%burst`` cell that names no provider runs: the cheapest offer of the enabled ones.

With several providers in ``burst.providers`` (and no ``burst.provider``), a cell's request
(GPUs, ``gpu_mem=`` or the gpus=auto estimate, ``spot=``, ``region=``) is put to every one of
them; the cheapest plan wins, is announced before anything starts, and is the one launched.
A cluster of the cell's name that already runs is used as it is: nothing is chosen again.

``choose`` is the rule, pure over offers; ``resolve`` applies it to a cell's options.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from jupyter_burst.clusters.offers import (
    Offer,
    OfferRequest,
    Plan,
    cheapest,
    describe_request,
    enabled_providers,
    gather,
)
from jupyter_burst.errors import ClusterError, OptionError

if TYPE_CHECKING:
    from jupyter_burst.estimate import MemoryEstimate
    from jupyter_burst.kernel.options import CellOptions

# The local provider's offer on a machine without CUDA (local.py): ranks on CPU slots.
CPU_SLOTS = "CPU slots (no GPU)"
# The choice made while the cell is packed holds for its launch a moment later (a background
# cell asks twice): the offers are gathered once, as the AWS provider's quote is.
_HOLD_SECONDS = 60
_held: tuple[tuple, float, Plan] | None = None


def is_cpu_stand_in(offer: Offer) -> bool:
    """Whether the offer is CPU slots standing in for GPUs (the local provider without CUDA)."""
    return offer.gpu_model == CPU_SLOTS


def choose(offers: Iterable[Offer], request: OfferRequest, enabled: Sequence[str]) -> Plan:
    """The cheapest plan with real GPUs; a one-line :class:`ClusterError` if none fits.

    The rule for CPU stand-ins: a choice across providers is a choice of GPUs, so this
    machine's CPU slots are never chosen. At a notional $0 they would beat every GPU of a
    cloud the user enabled; whoever wants CPU ranks names ``provider=local``.
    """
    offers = list(offers)
    gpus = [o for o in offers if not is_cpu_stand_in(o)]
    if not gpus:
        here = "; this machine has CPU slots only (provider=local runs there)" if offers else ""
        raise ClusterError(
            f"no provider in burst.providers ({', '.join(enabled)}) offers GPUs for "
            f"{describe_request(request)}{here}; add one that does to burst.providers, e.g. [local, aws]"
        )
    return cheapest(gpus, request)


def offer_request(options: CellOptions) -> OfferRequest:
    """What the cell asks the providers for."""
    # No preference means on-demand: the head holds the scheduler, and a spot head that is
    # taken back takes the cluster with it. Spot (the head included) is the user's call: spot=yes.
    return OfferRequest(
        gpus=options.gpus,
        gpu_mem_gib=options.gpu_mem,
        spot=False if options.spot is None else options.spot,
        regions=options.regions,
    )


def gpu_mem_floor(estimate: MemoryEstimate, gpus: int, strategy: str) -> float:
    """gpus=auto: the GiB each GPU needs for the estimate's recommendation, rounded up to 0.1.

    The need itself, not the size class the estimate names (24 GiB): an A10G has 22.3 GiB
    usable and still fits a model that needs 20.
    """
    from jupyter_burst.estimate import _RESERVED_BYTES  # the CUDA context the estimate keeps free

    need = (estimate.per_gpu(gpus, strategy) + _RESERVED_BYTES) / (1 << 30)
    return math.ceil(need * 10 - 1e-9) / 10


def announcement(plan: Plan, asked: OfferRequest) -> str:
    """The line printed before the chosen plan launches."""
    return f"burst: cheapest offer for {describe_request(asked)}: {plan.offer.provider} {plan.describe()}"


def resolve(options: CellOptions) -> CellOptions:
    """``options`` with a provider: the one named, the running cluster's, or the cheapest offer's."""
    global _held
    if options.provider is not None:
        _check_honoured(options)
        return options
    from jupyter_burst.driver import cluster

    running = cluster.running_provider(options.cluster)
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


def _check_honoured(options: CellOptions) -> None:
    """spot=, gpu_mem=, region= for a named provider that cannot honour them: refused, not ignored."""
    asked = [word for word in ("spot", "gpu_mem", "region") if word in options.given]
    if not asked or options.plan is not None:
        return
    from jupyter_burst.clusters.registry import get_provider

    if getattr(get_provider(options.provider), "plan", None) is None:
        words = ", ".join(f"{word}=" for word in asked)
        raise OptionError(
            f"provider={options.provider} does not choose among offers, so {words} would be ignored; "
            "drop it, or name a provider that does (e.g. provider=aws)"
        )
