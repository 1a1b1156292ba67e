"""Offers: what each provider can rent for a request, and the cheapest way to get N GPUs.

A provider turns an :class:`OfferRequest` into :class:`Offer` records (one instance type in one
region or zone, spot or on-demand, at a price per hour). A :class:`Plan` is one offer times a
number of nodes. Everything here is pure policy over those records, so it is tested without a
cloud: the providers (and ``aws.prices`` for live AWS prices) only produce the records.
"""

from __future__ import annotations

import difflib
import itertools
import math
import pathlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date

import yaml

from jupyter_burst import config
from jupyter_burst.clusters import registry
from jupyter_burst.errors import ClusterError, OptionError

CATALOG_DIR = pathlib.Path(__file__).with_name("catalog")
_MiB_PER_GiB = 1024


@dataclass(frozen=True)
class Offer:
    """One instance type a provider rents, in one region (or zone), spot or on-demand."""

    provider: str
    instance_type: str
    gpus: int
    gpu_model: str
    gpu_mem_gib: float  # per GPU
    vcpus: int
    ram_gib: float
    region: str
    spot: bool
    price_per_hour: float
    zone: str | None = None
    notional: bool = False  # a configured internal price (local, on-prem), not a bill


@dataclass(frozen=True)
class OfferRequest:
    """What a cell asks for: GPUs in all, and optionally memory per GPU, market and regions."""

    gpus: int
    gpu_mem_gib: float | None = None
    spot: bool | None = None  # None: spot or on-demand
    regions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """``nodes`` machines of one offer."""

    offer: Offer
    nodes: int

    @property
    def gpus(self) -> int:
        return self.nodes * self.offer.gpus

    @property
    def price_per_hour(self) -> float:
        return self.nodes * self.offer.price_per_hour

    def describe(self) -> str:
        """One line, e.g. ``g5.12xlarge × 2 (8 × NVIDIA A10G 22.3 GiB) spot in us-east-1 at $4.20/h``."""
        o = self.offer
        count = f" × {self.nodes}" if self.nodes > 1 else ""
        notional = " (notional)" if o.notional else ""
        return (
            f"{o.instance_type}{count} ({self.gpus} × {o.gpu_model} {_gib(o.gpu_mem_gib)}) "
            f"{_market(o)} in {_where(o)} at ${_dollars(self.price_per_hour)}/h{notional}"
        )


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


def describe_request(request: OfferRequest) -> str:
    """``8 GPUs with >= 40 GiB each, spot, in us-east-1``."""
    text = f"{request.gpus} GPU{'s' if request.gpus != 1 else ''}"
    if request.gpu_mem_gib is not None:
        text += f" with >= {_gib(request.gpu_mem_gib)} each"
    if request.spot is not None:
        text += ", spot" if request.spot else ", on-demand"
    if request.regions:
        text += f", in {', '.join(request.regions)}"
    return text


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
                asks.append(f"ask gpu_mem={_number(most)} or less (the most on offer)")
            found = plans(offers, looser)
            if found:
                return found[0], " and ".join(asks)
    return None


# ---- the table -----------------------------------------------------------------------------

_COLUMNS = (
    ("provider", "<"),
    ("instance", "<"),
    ("GPUs", ">"),
    ("GPU", "<"),
    ("GPU mem", ">"),
    ("vCPUs", ">"),
    ("RAM", ">"),
    ("region", "<"),
    ("market", "<"),
    ("$/h", ">"),
)


def format_table(
    plans: Sequence[Plan],
    *,
    catalog_date: date | None = None,
    notes: Sequence[str] = (),
    limit: int | None = None,
) -> str:
    """The plans as a fixed-width table, cheapest first as given; totals are for the whole plan."""
    shown = list(plans if limit is None else plans[:limit])
    # A notional price carries a star; the others a space, so the decimal points line up.
    mark = {True: "*", False: " " if any(p.offer.notional for p in shown) else ""}
    rows = [[name for name, _ in _COLUMNS]]
    for plan in shown:
        o = plan.offer
        rows.append(
            [
                o.provider,
                o.instance_type + (f" × {plan.nodes}" if plan.nodes > 1 else ""),
                str(plan.gpus),
                o.gpu_model,
                _gib(o.gpu_mem_gib),
                str(plan.nodes * o.vcpus),
                _gib(plan.nodes * o.ram_gib),
                _where(o),
                _market(o),
                _dollars(plan.price_per_hour) + mark[o.notional],
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(
            cell.ljust(width) if align == "<" else cell.rjust(width)
            for cell, width, (_, align) in zip(row, widths, _COLUMNS, strict=True)
        ).rstrip()
        for row in rows
    ]
    lines.append("")
    lines.append("GPU mem is per GPU; GPUs, vCPUs, RAM and $/h are for all the nodes of a row.")
    if len(shown) < len(plans):
        lines.append(
            f"{len(plans) - len(shown)} more not shown; narrow with gpu_mem=, spot= or region=."
        )
    if any(p.offer.notional for p in shown):
        lines.append("* notional: a configured internal price, not a bill.")
    if catalog_date is not None:
        lines.append(f"Prices from the shipped catalog of {catalog_date.isoformat()}.")
    lines.extend(notes)
    return "\n".join(lines)


def _gib(value: float) -> str:
    return f"{_number(value)} GiB"


def _number(value: float) -> str:
    # One decimal, rounded down: 22888 MiB shows as 22.3, so a gpu_mem= copied from the table
    # still matches the offer it was copied from (22.4 would not).
    return f"{math.floor(value * 10 + 1e-9) / 10:g}"


def _dollars(value: float) -> str:
    if value <= 0:
        return "0.00"
    if value >= 1:
        return f"{value:,.2f}"
    # Small prices keep three significant digits (a spot g4dn.xlarge is $0.158, not $0.16).
    decimals = max(2, 2 - math.floor(math.log10(value)))
    text = f"{value:.{decimals}f}".rstrip("0")
    return text if len(text.split(".")[1]) >= 2 else f"{value:.2f}"


def _market(offer: Offer) -> str:
    return "spot" if offer.spot else "on-demand"


def _where(offer: Offer) -> str:
    return offer.zone or offer.region


# ---- gathering offers from the enabled providers --------------------------------------------


def enabled_providers() -> list[str]:
    """The names in ``burst.providers`` (a list; a comma-separated string from the environment)."""
    names = config.get("providers", ["local"])
    if isinstance(names, str):  # "local,aws", or "[local, aws]" as YAML would have it
        names = names.strip().strip("[]").split(",")
    return [str(name).strip() for name in names or [] if str(name).strip()]


def gather(request: OfferRequest) -> list[Offer]:
    """Every enabled provider's offers for ``request``; a provider without ``offers`` is skipped."""
    found: list[Offer] = []
    for name in enabled_providers():
        ask = getattr(_provider(name), "offers", None)
        if ask is not None:
            found.extend(ask(request))
    return found


def _provider(name: str):
    try:
        return registry.get_provider(name)
    except OptionError as exc:
        raise OptionError(f"burst.providers: {str(exc).removeprefix('burst: ')}") from None


def _price_notes(names: Sequence[str]) -> list[str]:
    """Where each provider's prices come from: its own word, else its shipped catalog's date."""
    notes = []
    for name in names:
        provider = _provider(name)
        if getattr(provider, "offers", None) is None:
            continue
        note = getattr(provider, "prices_note", None)
        note = note() if callable(note) else note
        if note:
            notes.append(f"{name}: {note}")
        elif (CATALOG_DIR / f"{name}.yaml").exists():
            notes.append(
                f"{name}: on-demand list prices from the shipped catalog of "
                f"{load_catalog(name)[0].isoformat()}"
            )
    return notes


# ---- %burst offers ---------------------------------------------------------------------------

_OFFERS_KEYS = ("gpus", "gpu_mem", "spot", "region")
_OFFERS_USAGE = "%burst offers gpus=8 [gpu_mem=40] [spot=yes|no] [region=us-east-1,...]"
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_TABLE_ROWS = 30  # more rows than a notebook cell shows at once; the rest are counted


def parse_offers_words(words: Sequence[str]) -> OfferRequest:
    """The request ``%burst offers`` words make; one-line :class:`OptionError` on a mistake."""
    given: dict[str, str] = {}
    for word in words:
        key, sep, text = word.partition("=")
        if key == "spot" and not sep:
            sep, text = "=", "yes"
        if key not in _OFFERS_KEYS:
            hint = difflib.get_close_matches(key, _OFFERS_KEYS, n=1, cutoff=0.6)
            maybe = f" (did you mean '{hint[0]}'?)" if hint else ""
            what = f"unknown option '{key}'" if sep else f"'{word}' is not an option"
            raise OptionError(f"{what}{maybe}; write {_OFFERS_USAGE}")
        if key in given:
            raise OptionError(f"option '{key}' is given twice; keep one")
        if not sep or text == "":
            raise OptionError(f"option '{key}' needs a value: write {key}=...")
        given[key] = text
    if "gpus" not in given:
        raise OptionError(f"say how many GPUs: {_OFFERS_USAGE}")
    return OfferRequest(
        gpus=_parse_gpus(given["gpus"]),
        gpu_mem_gib=_parse_gpu_mem(given["gpu_mem"]) if "gpu_mem" in given else None,
        spot=_parse_spot(given["spot"]) if "spot" in given else None,
        regions=_parse_regions(given["region"]) if "region" in given else (),
    )


def _parse_gpus(text: str) -> int:
    if text == "auto":
        raise OptionError("gpus=auto needs a model; %burst offers takes a number, e.g. gpus=8")
    try:
        value = int(text)
    except ValueError:
        raise OptionError(f"gpus={text} is not a whole number; write e.g. gpus=8") from None
    if not 1 <= value <= 1024:
        raise OptionError(f"gpus={value} is out of range: from 1 to 1024")
    return value


def _parse_gpu_mem(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise OptionError(
            f"gpu_mem={text} is not a number of GiB per GPU; write e.g. gpu_mem=40"
        ) from None
    if not 0 < value <= 4096 or math.isnan(value):
        raise OptionError(f"gpu_mem={text} is out of range: GiB per GPU, more than 0")
    return value


def _parse_spot(text: str) -> bool | None:
    value = text.strip().lower()
    if value in ("yes", "true", "1", "on"):
        return True
    if value in ("no", "false", "0", "off"):
        return False
    if value in ("any", "both"):
        return None
    raise OptionError(f"spot={text} is not yes, no or any; write spot=yes or spot=no")


def _parse_regions(text: str) -> tuple[str, ...]:
    regions = tuple(part.strip() for part in text.split(","))
    for region in regions:
        if not _REGION.fullmatch(region):
            raise OptionError(
                f"region={text}: '{region}' is not a region name; write e.g. region=us-east-1,eu-west-1"
            )
    if len(set(regions)) != len(regions):
        raise OptionError(f"region={text} names a region twice")
    return regions


# The same words on a %%burst line (options.py): one grammar, the same one-line errors.
parse_gpu_mem = _parse_gpu_mem
parse_spot = _parse_spot
parse_regions = _parse_regions


def offers_command(words: list[str]) -> str:
    """The text ``%burst offers gpus=8 [gpu_mem=40] [spot=yes|no] [region=...]`` prints."""
    request = parse_offers_words(words)
    offers = gather(request)
    found = plans(offers, request)
    if not found:
        cheapest(offers, request)  # raises the one line that names the closest offer
    head = f"Offers for {describe_request(request)}, cheapest first:"
    table = format_table(found, notes=_price_notes(enabled_providers()), limit=_TABLE_ROWS)
    return f"{head}\n{table}"


# ---- the shipped catalog ---------------------------------------------------------------------


def load_catalog(provider: str = "aws") -> tuple[date, list[Offer]]:
    """The catalog's date and its on-demand offers (spot prices only ever come from live prices)."""
    path = CATALOG_DIR / f"{provider}.yaml"
    with path.open() as f:
        data = yaml.safe_load(f)
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
