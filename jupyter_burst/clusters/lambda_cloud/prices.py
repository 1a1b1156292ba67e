"""Lambda Cloud's offers: live from ``GET /instance-types`` with a key, else the catalog.

The live answer names, per instance type, its price in cents an hour, its GPUs and the
regions with capacity available now: an offer is made only where there is capacity, so a
launch is never sent where it must fail (launches are limited to one in about 12 s).
Lambda has no spot market: a ``spot=yes`` request gets no Lambda offer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters.lambda_cloud.api import LambdaApi
from jupyter_burst.clusters.offers import Offer, OfferRequest
from jupyter_burst.clusters.shipped_catalog import load_catalog

PROVIDER = "lambda"
# "H100 (80 GB SXM5)", "1x A10 (24 GB PCIe)", "Tesla V100 (16 GB)": the model and its memory.
_GPU = re.compile(r"^(?:\d+x\s*)?(?P<model>.+?)\s*\((?P<gb>\d+(?:\.\d+)?)\s*GB\b")


def live_offers(api: LambdaApi) -> list[Offer]:
    """Every GPU type in every region that has capacity for it now, at the API's price."""
    return offers_from(api.get("/instance-types") or {})


def offers_from(types: Mapping[str, Any]) -> list[Offer]:
    """Offers from the ``data`` of ``GET /instance-types``; a type we cannot read is skipped."""
    found = []
    for name, entry in types.items():
        kind = entry.get("instance_type") or {}
        specs = kind.get("specs") or {}
        gpu = _GPU.match(str(kind.get("gpu_description") or kind.get("description") or ""))
        gpus = int(specs.get("gpus") or 0)
        if gpu is None or gpus < 1 or "price_cents_per_hour" not in kind:
            continue  # a CPU-only type, or one described in a way we do not know
        model = gpu["model"].removeprefix("Tesla ").strip()
        for region in entry.get("regions_with_capacity_available") or []:
            found.append(
                Offer(
                    provider=PROVIDER,
                    instance_type=str(name),
                    gpus=gpus,
                    gpu_model=model if model.startswith("NVIDIA") else f"NVIDIA {model}",
                    gpu_mem_gib=float(gpu["gb"]),
                    vcpus=int(specs.get("vcpus") or 0),
                    ram_gib=float(specs.get("memory_gib") or 0),
                    region=str(region.get("name")),
                    spot=False,
                    price_per_hour=int(kind["price_cents_per_hour"]) / 100,
                )
            )
    return found


def catalog_offers() -> list[Offer]:
    return load_catalog(PROVIDER)[1]


def for_request(offers: Iterable[Offer], request: OfferRequest) -> list[Offer]:
    """The offers a request may use: on-demand only, in its regions (or burst.lambda.regions)."""
    if request.spot:
        return []
    regions = set(request.regions or configured_regions())
    return [o for o in offers if not regions or o.region in regions]


def configured_regions() -> tuple[str, ...]:
    """``burst.lambda.regions`` (a list, or a comma-separated string); empty: every region."""
    return config.names("lambda.regions")
