"""GCP's offers: the shipped catalog's on-demand list prices (``catalog/gcp.yaml``).

Spot prices come only from live prices (the Cloud Billing Catalog API, not yet read): a
``spot=yes`` request gets no GCP offer until then. ``burst.gcp.regions`` narrows the regions.
"""

from __future__ import annotations

from collections.abc import Iterable

from jupyter_burst import config
from jupyter_burst.clusters.offers import Offer, OfferRequest
from jupyter_burst.clusters.shipped_catalog import load_catalog

PROVIDER = "gcp"


def catalog_offers() -> list[Offer]:
    return load_catalog(PROVIDER)[1]


def for_request(offers: Iterable[Offer], request: OfferRequest) -> list[Offer]:
    """The offers a request may use: on-demand only (for now), in its regions."""
    if request.spot:
        return []
    regions = set(request.regions or config.names("gcp.regions"))
    return [o for o in offers if not regions or o.region in regions]


def zones(region: str) -> list[str]:
    """Where a launch in ``region`` tries, in order: ``burst.gcp.zones`` of that region, else
    its usual zones (a zone out of the machine type moves the launch to the next)."""
    listed = [z for z in config.names("gcp.zones") if z.rsplit("-", 1)[0] == region]
    return listed or [f"{region}-{letter}" for letter in ("a", "b", "c", "f")]
