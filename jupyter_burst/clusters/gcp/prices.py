"""GCP's offers: live on-demand and Spot prices from the Cloud Billing Catalog API where GCP is
configured, else the shipped catalog's on-demand list prices (``catalog/gcp.yaml``).

Compute Engine prices a GPU machine by its parts: the family's vCPU and memory rates (``G2
Instance Core`` per vCPU-hour, ``G2 Instance Ram`` per GiB-hour) plus each GPU's (``Nvidia L4
GPU``), per region, on demand or as Spot (``Spot Preemptible ...``). The Catalog API lists
these as SKUs of the Compute Engine service (``services/6F81-5844-456A``): a machine's price
is its parts' sum, for the shapes of the shipped catalog, in every region that prices all its
parts. A shape whose parts the Catalog does not name as we expect keeps its catalog price
and gets no Spot offer. The live prices are kept for an hour in this process.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters.gcp.shapes import shape
from jupyter_burst.clusters.offers import Offer, OfferRequest
from jupyter_burst.clusters.shipped_catalog import load_catalog

PROVIDER = "gcp"
BILLING_URL = "https://cloudbilling.googleapis.com"
COMPUTE_SKUS = "/v1/services/6F81-5844-456A/skus"
_LIVE_SECONDS = 3600.0
_PAGES = 200  # the Compute Engine service lists a few thousand SKUs, 5000 a page at most
# The vCPU and memory SKUs of each machine family, as the Catalog names them.
FAMILY_PARTS = {
    "g2": ("G2 Instance Core", "G2 Instance Ram"),
    "a2": ("A2 Instance Core", "A2 Instance Ram"),
    "a3": ("A3 Instance Core", "A3 Instance Ram"),
    "n1": ("N1 Predefined Instance Core", "N1 Predefined Instance Ram"),
}
# Each accelerator's SKU.
GPU_PARTS = {
    "nvidia-l4": "Nvidia L4 GPU",
    "nvidia-tesla-a100": "Nvidia Tesla A100 GPU",
    "nvidia-a100-80gb": "Nvidia A100 80GB GPU",
    "nvidia-h100-80gb": "Nvidia H100 80GB GPU",
    "nvidia-tesla-t4": "Nvidia Tesla T4 GPU",
    "nvidia-tesla-v100": "Nvidia Tesla V100 GPU",
}
_SPOT = re.compile(r"^(?:Spot Preemptible|Preemptible)\s+", re.IGNORECASE)
_WHERE = re.compile(r"\s+running in .*$")

# GET path+params -> the JSON answer (a test's fake, or the user's credentials' session).
Fetch = Callable[[str, dict[str, str]], dict[str, Any]]

_live: tuple[float, list[Offer]] | None = None


def catalog_offers() -> list[Offer]:
    return load_catalog(PROVIDER)[1]


def for_request(offers: Iterable[Offer], request: OfferRequest) -> list[Offer]:
    """The offers a request may use: of its market (either, without one), in its regions."""
    regions = set(request.regions or config.names("gcp.regions"))
    return [
        o
        for o in offers
        if (request.spot is None or o.spot == request.spot) and (not regions or o.region in regions)
    ]


def zones(region: str) -> list[str]:
    """Where a launch in ``region`` tries, in order: ``burst.gcp.zones`` of that region, else
    its usual zones (a zone out of the machine type moves the launch to the next)."""
    listed = [z for z in config.names("gcp.zones") if z.rsplit("-", 1)[0] == region]
    return listed or [f"{region}-{letter}" for letter in ("a", "b", "c", "f")]


def live_offers(fetch: Fetch) -> list[Offer]:
    """On-demand and Spot offers of the catalog's shapes, at the Catalog API's prices now."""
    rates: dict[tuple[str, bool, str], float] = {}
    token = ""
    for _ in range(_PAGES):
        page = fetch(COMPUTE_SKUS, {"pageSize": "5000", **({"pageToken": token} if token else {})})
        for sku in page.get("skus") or []:
            part = _part(sku)
            if part is not None:
                spot, name, price = part
                for region in sku.get("serviceRegions") or []:
                    rates[(str(region), spot, name)] = price
        token = str(page.get("nextPageToken") or "")
        if not token:
            break
    listed_offers = catalog_offers()
    shapes = {o.instance_type: o for o in listed_offers}
    regions = sorted({region for region, _, _ in rates})
    found: list[Offer] = []
    for name, listed in sorted(shapes.items()):
        parts = _parts_of(name, listed)
        if parts is None:
            continue
        for region in regions:
            for spot in (False, True):
                prices = [rates.get((region, spot, part)) for part, _ in parts]
                if None in prices:
                    continue
                total = sum(p * n for p, (_, n) in zip(prices, parts, strict=True))  # type: ignore[operator]
                found.append(
                    Offer(
                        provider=PROVIDER,
                        instance_type=name,
                        gpus=listed.gpus,
                        gpu_model=listed.gpu_model,
                        gpu_mem_gib=listed.gpu_mem_gib,
                        vcpus=listed.vcpus,
                        ram_gib=listed.ram_gib,
                        region=region,
                        spot=spot,
                        price_per_hour=round(total, 5),
                    )  # fmt: skip
                )
    priced = {o.instance_type for o in found}
    return found + [o for o in listed_offers if o.instance_type not in priced]


def cached_live_offers(fetch: Fetch) -> list[Offer]:
    global _live
    if _live is None or time.monotonic() - _live[0] > _LIVE_SECONDS:
        _live = (time.monotonic(), live_offers(fetch))
    return _live[1]


def _part(sku: dict[str, Any]) -> tuple[bool, str, float] | None:
    """(spot?, part name, $ per unit-hour) of a Compute SKU we price machines with."""
    category = sku.get("category") or {}
    usage = category.get("usageType")
    if usage not in ("OnDemand", "Preemptible"):
        return None  # commitments and the like
    description = str(sku.get("description") or "")
    name = _WHERE.sub("", _SPOT.sub("", description)).strip()
    try:
        expression = sku["pricingInfo"][-1]["pricingExpression"]
        unit = expression["tieredRates"][-1]["unitPrice"]
        price = int(unit.get("units") or 0) + int(unit.get("nanos") or 0) / 1e9
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    if expression.get("usageUnit") not in ("h", "GiBy.h"):
        return None
    return usage == "Preemptible", name, price


def _parts_of(name: str, listed: Offer) -> list[tuple[str, float]] | None:
    """(SKU name, how many units an hour) of each part of the machine ``name``."""
    asked = shape(name)
    family = FAMILY_PARTS.get(asked.machine_type.split("-", 1)[0])
    gpu = GPU_PARTS.get(asked.accelerator)
    if family is None or gpu is None:
        return None
    return [(family[0], listed.vcpus), (family[1], listed.ram_gib), (gpu, asked.count)]
