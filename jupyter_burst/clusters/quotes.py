"""A provider's plan for a cell: the one announced across providers, else its cheapest offer,
looked up once for the daily budget's quote and the launch right after it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from jupyter_burst.clusters.offers import Offer, OfferRequest, Plan
from jupyter_burst.clusters.plans import cheapest

if TYPE_CHECKING:
    from jupyter_burst.clusters.provider import ClusterRequest

QUOTE_SECONDS = 60.0  # a plan quoted for the daily budget still holds for the launch


class Quotes:
    """The last plan one provider quoted, kept for :data:`QUOTE_SECONDS`."""

    def __init__(self) -> None:
        self._last: tuple[ClusterRequest, float, Plan] | None = None

    def plan(
        self,
        provider: str,
        request: ClusterRequest,
        offers: Callable[[OfferRequest], list[Offer]],
    ) -> Plan:
        """``request.plan`` where it is this provider's (announced: launch exactly that), else
        the cheapest of ``offers``: on-demand unless the cell said spot=yes."""
        if request.plan is not None and request.plan.offer.provider == provider:
            return request.plan
        last = self._last
        if last and last[0] == request and time.monotonic() - last[1] < QUOTE_SECONDS:
            return last[2]
        wanted = OfferRequest(
            gpus=request.slots,
            gpu_mem_gib=request.gpu_mem_gib,
            spot=bool(request.spot),  # None (no preference) is on-demand
            regions=request.regions,
        )
        plan = cheapest(offers(wanted), wanted)
        self._last = (request, time.monotonic(), plan)
        return plan

    def forget(self) -> None:
        self._last = None
