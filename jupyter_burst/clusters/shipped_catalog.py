"""The price catalogs shipped with the package (``catalog/<provider>.yaml``), read as offers.

A catalog holds instance specs and on-demand list prices per region, dated; it answers when
live prices cannot be had (no credentials, no network). Spot prices only ever come live.
"""

from __future__ import annotations

import pathlib
from datetime import date
from typing import Any

import yaml

from jupyter_burst.clusters.offers import Offer

CATALOG_DIR = pathlib.Path(__file__).with_name("catalog")
_MiB_PER_GiB = 1024


def has_catalog(provider: str) -> bool:
    """Whether a catalog is shipped for ``provider``."""
    return (CATALOG_DIR / f"{provider}.yaml").exists()


def read_catalog(provider: str = "aws") -> dict[str, Any]:
    """The catalog file as it is written."""
    with (CATALOG_DIR / f"{provider}.yaml").open() as f:
        return yaml.safe_load(f)


def load_catalog(provider: str = "aws") -> tuple[date, list[Offer]]:
    """The catalog's date and its on-demand offers (spot prices only ever come from live prices)."""
    data = read_catalog(provider)
    when = data["date"]
    if not isinstance(when, date):
        when = date.fromisoformat(str(when))
    types = data["instance_types"]
    offers = []
    for region, prices in (data.get("on_demand") or {}).items():
        for instance_type, price in (prices or {}).items():
            spec = types[instance_type]  # a price for an unknown type is a catalog bug: fail loudly
            offers.append(
                Offer(
                    provider=provider,
                    instance_type=instance_type,
                    gpus=int(spec["gpus"]),
                    gpu_model=str(spec["gpu_model"]),
                    gpu_mem_gib=spec["gpu_mem_mib"] / _MiB_PER_GiB,
                    vcpus=int(spec["vcpus"]),
                    ram_gib=float(spec["ram_gib"]),
                    region=str(region),
                    spot=False,
                    price_per_hour=float(price),
                )
            )
    return when, offers
