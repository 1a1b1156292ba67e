"""Live AWS GPU offers: specs from EC2, on-demand prices from the Pricing API, spot from EC2.

Used only when AWS credentials exist; without them (or without boto3) the shipped catalog
(``catalog/aws.yaml``) answers instead. One refresh makes one ``describe_instance_types`` and
one ``describe_spot_price_history`` walk per region and one ``get_products`` walk per instance
type, so its result is cached in the state folder (``prices/aws.json``) for
``burst.aws.prices-max-age`` hours (24 by default).
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters.aws.sdk import boto3_module
from jupyter_burst.clusters.offers import Offer
from jupyter_burst.clusters.shipped_catalog import load_catalog, read_catalog
from jupyter_burst.errors import ClusterError

PROVIDER = "aws"
# The Pricing API answers only in a few regions; us-east-1 is one and serves every region's prices.
PRICING_REGION = "us-east-1"
_CACHE_VERSION = 1
_LINUX = ("Linux/UNIX", "Linux/UNIX (Amazon VPC)")
_MiB_PER_GiB = 1024


def has_credentials(session: Any) -> bool:
    """Whether the session resolves credentials (without calling AWS)."""
    return session.get_credentials() is not None


def catalog_families() -> tuple[str, ...]:
    """The instance families asked about: the catalog's list (one line there adds a family)."""
    return tuple(_catalog()["families"])


def default_regions() -> tuple[str, ...]:
    """``burst.aws.regions``, else the regions the shipped catalog prices."""
    return config.names("aws.regions") or tuple(_catalog()["on_demand"])


def _catalog() -> dict[str, Any]:
    return read_catalog(PROVIDER)


def refresh(
    session: Any,
    regions: Sequence[str],
    *,
    families: Sequence[str] | None = None,
    endpoint_url: str | None = None,
) -> list[Offer]:
    """Ask AWS now: every GPU type of ``families`` in ``regions``, on-demand and spot per zone.

    ``endpoint_url`` points the EC2 clients elsewhere (a moto server in tests); the Pricing API
    always goes to its own endpoint. Raises :class:`ClusterError` without credentials.
    """
    if not has_credentials(session):
        raise ClusterError(
            "no AWS credentials found; run `aws configure` or set AWS_PROFILE, "
            "or use the shipped price catalog"
        )
    # botocore comes with boto3, an optional dependency: imported once AWS is asked.
    from botocore.exceptions import BotoCoreError, ClientError

    patterns = [f"{family}.*" for family in (families or catalog_families())]
    specs: dict[str, dict[str, dict[str, Any]]] = {}
    spot: dict[str, list[tuple[str, str, float]]] = {}
    step = "ec2:DescribeInstanceTypes"
    try:
        for region in regions:
            ec2 = session.client("ec2", region_name=region, endpoint_url=endpoint_url)
            step = f"ec2:DescribeInstanceTypes in {region}"
            specs[region] = _gpu_types(ec2, patterns)
            step = f"ec2:DescribeSpotPriceHistory in {region}"
            spot[region] = _spot_prices(ec2, sorted(specs[region])) if specs[region] else []
        wanted_types = sorted({t for types in specs.values() for t in types})
        pricing = session.client("pricing", region_name=PRICING_REGION)
        step = "pricing:GetProducts"
        on_demand = {t: _on_demand_prices(pricing, t, set(regions)) for t in wanted_types}
    except (BotoCoreError, ClientError) as exc:
        reason = " ".join(str(exc).split())[:200]
        # A refusal names the permission to grant; anything else (network, endpoint) the reason.
        fix = (
            f"allow {step.split()[0]} for these credentials"
            if isinstance(exc, ClientError)
            else "check the network"
        )
        raise ClusterError(
            f"AWS prices could not be read ({step}: {reason}); "
            f"{fix}, or unset the credentials to use the shipped catalog"
        ) from None

    offers = []
    for region in regions:
        for instance_type, spec in sorted(specs[region].items()):
            price = on_demand.get(instance_type, {}).get(region)
            if price is not None:
                offers.append(_offer(spec, region, spot=False, price=price))
        for instance_type, zone, price in spot[region]:
            offers.append(_offer(specs[region][instance_type], region, True, price, zone))
    return offers


def _gpu_types(ec2: Any, patterns: list[str]) -> dict[str, dict[str, Any]]:
    """The region's instance types matching ``patterns`` that have GPUs, by name."""
    found = {}
    pages = ec2.get_paginator("describe_instance_types").paginate(
        Filters=[{"Name": "instance-type", "Values": patterns}]
    )
    for page in pages:
        for item in page["InstanceTypes"]:
            gpus = (item.get("GpuInfo") or {}).get("Gpus") or []
            count = sum(int(g.get("Count", 0)) for g in gpus)
            if not count:
                continue
            first = gpus[0]
            found[item["InstanceType"]] = {
                "instance_type": item["InstanceType"],
                "gpus": count,
                "gpu_model": f"{first.get('Manufacturer', '')} {first.get('Name', '')}".strip(),
                "gpu_mem_gib": first["MemoryInfo"]["SizeInMiB"] / _MiB_PER_GiB,
                "vcpus": int(item["VCpuInfo"]["DefaultVCpus"]),
                "ram_gib": item["MemoryInfo"]["SizeInMiB"] / _MiB_PER_GiB,
            }
    return found


def _spot_prices(ec2: Any, instance_types: list[str]) -> list[tuple[str, str, float]]:
    """(type, zone, $/h): the latest Linux spot price of each type in each zone."""
    latest: dict[tuple[str, str], tuple[datetime, float]] = {}
    # StartTime=now asks for the price in effect now, not the last 90 days of history.
    pages = ec2.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=instance_types,
        ProductDescriptions=["Linux/UNIX"],
        StartTime=datetime.now(UTC),
    )
    for page in pages:
        for item in page["SpotPriceHistory"]:
            if item.get("ProductDescription") not in _LINUX:
                continue
            key = (item["InstanceType"], item["AvailabilityZone"])
            stamp = item["Timestamp"]
            if key not in latest or stamp > latest[key][0]:
                latest[key] = (stamp, float(item["SpotPrice"]))
    return [(t, zone, price) for (t, zone), (_, price) in sorted(latest.items()) if price > 0]


def pricing_filters(instance_type: str) -> list[dict[str, str]]:
    """The Pricing API filters for one type's plain on-demand Linux price (no SQL, no reservation)."""
    terms = {
        "instanceType": instance_type,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
    }
    return [
        {"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in terms.items()
    ]


def _on_demand_prices(pricing: Any, instance_type: str, regions: set[str]) -> dict[str, float]:
    """$/h of ``instance_type`` in each of ``regions`` that has a price (one call, every region)."""
    prices: dict[str, float] = {}
    pages = pricing.get_paginator("get_products").paginate(
        ServiceCode="AmazonEC2", Filters=pricing_filters(instance_type)
    )
    for page in pages:
        for text in page["PriceList"]:
            product = json.loads(text) if isinstance(text, str) else text
            region = product.get("product", {}).get("attributes", {}).get("regionCode")
            if region not in regions:
                continue
            price = _hourly(product)
            # Several products can survive the filters (usage-type variants); the plain one is lowest.
            if price is not None and (region not in prices or price < prices[region]):
                prices[region] = price
    return prices


def _hourly(product: dict[str, Any]) -> float | None:
    for term in (product.get("terms", {}).get("OnDemand") or {}).values():
        for dimension in (term.get("priceDimensions") or {}).values():
            usd = dimension.get("pricePerUnit", {}).get("USD")
            if dimension.get("unit") == "Hrs" and usd is not None and float(usd) > 0:
                return float(usd)
    return None


def _offer(
    spec: dict[str, Any], region: str, spot: bool, price: float, zone: str | None = None
) -> Offer:
    return Offer(
        provider=PROVIDER, region=region, spot=spot, price_per_hour=price, zone=zone, **spec
    )


# ---- the cache -------------------------------------------------------------------------------


def cache_path(state_dir: pathlib.Path) -> pathlib.Path:
    return state_dir / "prices" / "aws.json"


def read_cache(
    state_dir: pathlib.Path, regions: Iterable[str], max_age_hours: float, now: float
) -> tuple[list[Offer], float] | None:
    """The cached offers for ``regions`` and when they were fetched, if fresh enough."""
    try:
        data = json.loads(cache_path(state_dir).read_text())
    except (OSError, ValueError):
        return None
    if data.get("version") != _CACHE_VERSION:
        return None
    fetched_at = float(data.get("fetched_at", 0))
    if not 0 <= now - fetched_at <= max_age_hours * 3600:
        return None
    wanted = set(regions)
    if not wanted <= set(data.get("regions", [])):
        return None
    try:
        offers = [Offer(**item) for item in data["offers"]]
    except (KeyError, TypeError):
        return None  # a cache written by another version: refresh rather than fail
    return [o for o in offers if o.region in wanted], fetched_at


def write_cache(
    state_dir: pathlib.Path, regions: Iterable[str], offers: list[Offer], fetched_at: float
) -> None:
    path = cache_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {
        "version": _CACHE_VERSION,
        "fetched_at": fetched_at,
        "fetched": datetime.fromtimestamp(fetched_at, UTC).isoformat(timespec="seconds"),
        "regions": sorted(set(regions)),
        "offers": [asdict(o) for o in offers],
    }
    # Written whole and renamed, so a second kernel never reads half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def live_offers(
    regions: Sequence[str],
    *,
    session: Any = None,
    state_dir: pathlib.Path | None = None,
    max_age_hours: float | None = None,
    endpoint_url: str | None = None,
    now: Callable[[], float] = time.time,
) -> tuple[list[Offer], float] | None:
    """Live offers and when they were fetched: from the cache if fresh, else from AWS.

    None when live prices cannot be had here (no credentials); the caller uses the catalog.
    """
    state_dir = state_dir or config.state_dir()
    if max_age_hours is None:
        max_age_hours = float(config.get("aws.prices-max-age", 24))
    cached = read_cache(state_dir, regions, max_age_hours, now())
    if cached is not None:
        return cached
    if session is None:
        session = boto3_module().Session()
    if not has_credentials(session):
        return None
    fetched_at = now()
    offers = refresh(session, regions, endpoint_url=endpoint_url)
    write_cache(state_dir, regions, offers, fetched_at)
    return offers, fetched_at


# A live lookup that failed (no pricing permission, a throttled API) costs its retries, seconds
# each time: a launch asks twice (its plan, then the same shape's alternatives), so the
# failure is remembered this long per (regions, endpoint, state folder) and the catalog used
# meanwhile.
_FAILED_SECONDS = 300.0
_failed: dict[tuple[tuple[str, ...], str | None, str], tuple[float, str]] = {}


def current(
    regions: Sequence[str],
    *,
    session: Any = None,
    state_dir: pathlib.Path | None = None,
    endpoint_url: str | None = None,
) -> tuple[list[Offer], str]:
    """The best offers to be had here and where their prices come from (a note for the table).

    Live prices when credentials exist; else the shipped catalog's on-demand prices (no spot),
    with the reason in the note: a table that quietly shows stale prices would mislead.
    """
    regions = tuple(regions) or default_regions()
    key = (regions, endpoint_url, str(state_dir))
    failed = _failed.get(key)
    if failed is not None and time.monotonic() - failed[0] < _FAILED_SECONDS:
        live, reason = None, failed[1]  # asked again within minutes: the same answer, at once
    else:
        try:
            live = live_offers(
                regions, session=session, state_dir=state_dir, endpoint_url=endpoint_url
            )
            reason = "no AWS credentials"
        except ClusterError as exc:
            live, reason = None, str(exc).removeprefix("burst: ")
            _failed[key] = (time.monotonic(), reason)
    if live is not None:
        offers, fetched_at = live
        stamp = datetime.fromtimestamp(fetched_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return offers, f"live AWS prices fetched {stamp}"
    when, catalog = load_catalog(PROVIDER)
    offers = [o for o in catalog if o.region in regions]
    return offers, (
        f"on-demand list prices from the shipped catalog of {when.isoformat()}, "
        f"no spot prices ({reason})"
    )
