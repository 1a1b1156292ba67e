"""The ``lambda`` provider: Lambda Cloud GPU machines (issue #19, being built).

Built so far: the API client (:mod:`.api`: the user's key, the API's pace and errors) and
the offers (:mod:`.prices`: live prices and capacity with a key, the shipped catalog
without). Not yet registered as a provider: a provider that could be chosen as the
cheapest must be able to launch, and launching (machines reached over SSH, their host keys
bound to the launch, idle and orphan termination) is the next part.
"""

from __future__ import annotations

import time

from jupyter_burst.clusters.lambda_cloud import api, prices
from jupyter_burst.clusters.offers import Offer, OfferRequest
from jupyter_burst.clusters.shipped_catalog import load_catalog

# Capacity moves by the minute; a quote and the launch right after it share one answer.
_LIVE_SECONDS = 60.0


class LambdaProvider:
    name = "lambda"

    def __init__(self) -> None:
        self.prices_note = ""
        self._live: tuple[float, list[Offer]] | None = None

    def offers(self, request: OfferRequest) -> list[Offer]:
        key = api.api_key()
        if key is None:
            when = load_catalog(prices.PROVIDER)[0].isoformat()
            self.prices_note = (
                f"list prices from the shipped catalog of {when}; capacity is known only "
                f"with an API key ({api.KEY_ENV})"
            )
            return prices.for_request(prices.catalog_offers(), request)
        if self._live is None or time.monotonic() - self._live[0] > _LIVE_SECONDS:
            self._live = (time.monotonic(), prices.live_offers(api.LambdaApi(key)))
        self.prices_note = "live prices and the regions with capacity now, from Lambda's API"
        return prices.for_request(self._live[1], request)
