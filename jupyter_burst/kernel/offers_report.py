"""``%burst offers gpus=N [gpu_mem=GiB] [spot=yes|no] [region=a,b]``: every enabled provider's
plans for the request, cheapest first, as a fixed-width table with where the prices come from."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from jupyter_burst.clusters.gather import enabled_providers, gather, price_notes
from jupyter_burst.clusters.offers import Plan, describe_request, format_dollars, format_gib
from jupyter_burst.clusters.plans import cheapest, plans
from jupyter_burst.kernel.offer_words import parse_offers_words

_TABLE_ROWS = 30  # more rows than a notebook cell shows at once; the rest are counted
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


def offers_command(words: list[str]) -> str:
    """The text ``%burst offers gpus=8 [gpu_mem=40] [spot=yes|no] [region=...]`` prints."""
    request = parse_offers_words(words)
    offers = gather(request)
    found = plans(offers, request)
    if not found:
        cheapest(offers, request)  # raises the one line that names the closest offer
    head = f"Offers for {describe_request(request)}, cheapest first:"
    table = format_table(found, notes=price_notes(enabled_providers()), limit=_TABLE_ROWS)
    return f"{head}\n{table}"


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
                format_gib(o.gpu_mem_gib),
                str(plan.nodes * o.vcpus),
                format_gib(plan.nodes * o.ram_gib),
                o.where,
                o.market,
                format_dollars(plan.price_per_hour) + mark[o.notional],
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
