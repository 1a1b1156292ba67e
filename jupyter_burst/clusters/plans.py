"""The cheapest way to get N GPUs from offers; when nothing fits, the closest offer and the fix.

Pure policy over :class:`~jupyter_burst.clusters.offers.Offer` records, so it is tested without
a cloud: the providers (and ``aws.prices`` for live AWS prices) only produce the records.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import replace

from jupyter_burst.clusters.offers import (
    Offer,
    OfferRequest,
    Plan,
    describe_request,
    format_number,
)
from jupyter_burst.errors import ClusterError


def fits(offer: Offer, request: OfferRequest) -> bool:
    """Whether nodes of this offer can serve the request (its GPU count aside: plans add nodes)."""
    if offer.gpus < 1:
        return False
    if request.gpu_mem_gib is not None and offer.gpu_mem_gib < request.gpu_mem_gib:
        return False
    if request.spot is not None and offer.spot != request.spot:
        return False
    return not request.regions or offer.region in request.regions


def plans(offers: Iterable[Offer], request: OfferRequest) -> list[Plan]:
    """Every way to get ``request.gpus`` GPUs from one offer type, cheapest first.

    Ties go to fewer nodes (NCCL inside one machine beats the network), then on-demand before
    spot (it is not taken back), then by name, so the same offers always give the same order.
    """
    found = [
        Plan(offer, max(1, math.ceil(request.gpus / offer.gpus)))
        for offer in offers
        if fits(offer, request)
    ]
    return sorted(found, key=_plan_order)


def _plan_order(plan: Plan) -> tuple:
    o = plan.offer
    # Rounded so that float noise (3 × 0.1 vs 0.3) never decides between two equal prices.
    return (
        round(plan.price_per_hour, 6),
        plan.nodes,
        o.spot,
        o.provider,
        o.instance_type,
        o.region,
        o.zone or "",
    )


def cheapest(offers: Iterable[Offer], request: OfferRequest) -> Plan:
    """The cheapest plan; a one-line :class:`ClusterError` naming the closest offer if none fits."""
    offers = list(offers)
    found = plans(offers, request)
    if found:
        return found[0]
    asked = describe_request(request)
    if not offers:
        raise ClusterError(
            f"nothing offers {asked}: no enabled provider has offers; "
            "add one to burst.providers (e.g. [local, aws])"
        )
    closest = _closest(offers, request)
    if closest is None:
        raise ClusterError(f"nothing offers {asked}: no offer has a GPU")
    plan, change = closest
    raise ClusterError(f"nothing offers {asked}; closest: {plan.describe()}; to get it, {change}")


def _closest(offers: list[Offer], request: OfferRequest) -> tuple[Plan, str] | None:
    """The cheapest plan once the fewest constraints are let go, and what to ask to get it."""
    active = [
        name
        for name, on in (
            ("region", bool(request.regions)),
            ("spot", request.spot is not None),
            ("gpu_mem", request.gpu_mem_gib is not None),
        )
        if on
    ]
    for size in range(1, len(active) + 1):
        for dropped in itertools.combinations(active, size):
            looser, asks = request, []
            if "region" in dropped:
                looser = replace(looser, regions=())
                asks.append("drop region=")
            if "spot" in dropped:
                looser = replace(looser, spot=None)
                asks.append("ask spot=no" if request.spot else "ask spot=yes")
            if "gpu_mem" in dropped:
                # Short of memory: the offers with the most memory there is are the closest.
                pool = [o for o in offers if fits(o, replace(looser, gpu_mem_gib=None))]
                if not pool:
                    continue
                most = max(o.gpu_mem_gib for o in pool)
                looser = replace(looser, gpu_mem_gib=most)
                asks.append(f"ask gpu_mem={format_number(most)} or less (the most on offer)")
            found = plans(offers, looser)
            if found:
                return found[0], " and ".join(asks)
    return None
