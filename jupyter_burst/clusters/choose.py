"""Where a ``%%burst`` cell that names no provider runs: the cheapest offer of the enabled ones.

With several providers in ``burst.providers`` (and no ``burst.provider``), a cell's request
(GPUs, ``gpu_mem=`` or the gpus=auto estimate, ``spot=``, ``region=``) is put to every one of
them; the cheapest plan wins, is announced before anything starts, and is the one launched.
A cluster of the cell's name that already runs is used as it is: nothing is chosen again.

``choose`` is the rule, pure over offers; :mod:`jupyter_burst.driver.placement` applies it
to a cell's options.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from jupyter_burst.clusters.offers import Offer, OfferRequest, Plan, describe_request
from jupyter_burst.clusters.plans import cheapest
from jupyter_burst.errors import ClusterError
from jupyter_burst.estimate import RESERVED_BYTES, MemoryEstimate

# The local provider's offer on a machine without CUDA (local.py): ranks on CPU slots.
CPU_SLOTS = "CPU slots (no GPU)"


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


def gpu_mem_floor(estimate: MemoryEstimate, gpus: int, strategy: str) -> float:
    """gpus=auto: the GiB each GPU needs for the estimate's recommendation, rounded up to 0.1.

    The need itself, not the size class the estimate names (24 GiB): an A10G has 22.3 GiB
    usable and still fits a model that needs 20. ``RESERVED_BYTES``: the CUDA context the
    estimate keeps free.
    """
    need = (estimate.per_gpu(gpus, strategy) + RESERVED_BYTES) / (1 << 30)
    return math.ceil(need * 10 - 1e-9) / 10


def announcement(plan: Plan, asked: OfferRequest) -> str:
    """The line printed before the chosen plan launches."""
    return f"burst: cheapest offer for {describe_request(asked)}: {plan.offer.provider} {plan.describe()}"
