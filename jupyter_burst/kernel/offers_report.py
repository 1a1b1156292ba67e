"""``%burst offers gpus=N [gpu_mem=GiB] [spot=yes|no] [region=a,b]``: every enabled provider's
plans for the request, cheapest first, with where the prices come from."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from jupyter_burst.clusters.gather import enabled_providers, gather, price_notes
from jupyter_burst.clusters.offers import Plan, describe_request, format_dollars, format_gib
from jupyter_burst.clusters.plans import cheapest, plans
from jupyter_burst.kernel.offer_words import parse_offers_words
from jupyter_burst.kernel.report_table import Column, Table

_TABLE_ROWS = 30  # more rows than a notebook cell shows at once; the rest are counted


def offers_command(words: list[str]) -> Table:
    """What ``%burst offers gpus=8 [gpu_mem=40] [spot=yes|no] [region=...]`` returns: every
    plan as data (``offers[0].price_per_hour``), the first 30 in its table."""
    request = parse_offers_words(words)
    offers = gather(request)
    found = plans(offers, request)
    if not found:
        cheapest(offers, request)  # raises the one line that names the closest offer
    return offers_table(
        found,
        heading=f"Offers for {describe_request(request)}, cheapest first:",
        notes=price_notes(enabled_providers()),
        limit=_TABLE_ROWS,
    )


def offers_table(
    plans: Sequence[Plan],
    *,
    heading: str = "",
    catalog_date: date | None = None,
    notes: Sequence[str] = (),
    limit: int | None = None,
) -> Table:
    """The plans, cheapest first as given; the totals are for the whole plan."""
    shown = list(plans if limit is None else plans[:limit])
    # A notional price carries a star; the others a space, so the decimal points line up.
    mark = {True: "*", False: " " if any(p.offer.notional for p in shown) else ""}
    columns = [
        Column("provider", lambda p: p.offer.provider),
        Column(
            "instance", lambda p: p.offer.instance_type + (f" × {p.nodes}" if p.nodes > 1 else "")
        ),
        Column("GPUs", lambda p: str(p.gpus), ">"),
        Column("GPU", lambda p: p.offer.gpu_model),
        Column("GPU mem", lambda p: format_gib(p.offer.gpu_mem_gib), ">"),
        Column("vCPUs", lambda p: str(p.nodes * p.offer.vcpus), ">"),
        Column("RAM", lambda p: format_gib(p.nodes * p.offer.ram_gib), ">"),
        Column("region", lambda p: p.offer.where),
        Column("market", lambda p: p.offer.market),
        Column("$/h", lambda p: format_dollars(p.price_per_hour) + mark[p.offer.notional], ">"),
    ]
    below = ["", "GPU mem is per GPU; GPUs, vCPUs, RAM and $/h are for all the nodes of a row."]
    if len(shown) < len(plans):
        below.append(
            f"{len(plans) - len(shown)} more not shown; narrow with gpu_mem=, spot= or region="
            " (all of them are in the returned value: offers = %burst offers ...)."
        )
    if any(p.offer.notional for p in shown):
        below.append("* notional: a configured internal price, not a bill.")
    if catalog_date is not None:
        below.append(f"Prices from the shipped catalog of {catalog_date.isoformat()}.")
    below.extend(notes)
    return Table(plans, columns, heading=heading, notes=below, limit=limit)
