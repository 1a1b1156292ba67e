"""Offers: what a provider can rent, what a cell asks for, and a plan of so many machines.

A provider turns an :class:`OfferRequest` into :class:`Offer` records (one instance type in one
region or zone, spot or on-demand, at a price per hour). A :class:`Plan` is one offer times a
number of nodes. This module is the records and how they read in one line; the plan search
over them is :mod:`jupyter_burst.clusters.plans`, gathering them from the enabled providers
:mod:`jupyter_burst.clusters.gather`, the shipped price catalog
:mod:`jupyter_burst.clusters.shipped_catalog`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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

    @property
    def market(self) -> str:
        """``spot`` or ``on-demand``."""
        return "spot" if self.spot else "on-demand"

    @property
    def where(self) -> str:
        """Its zone, else its region."""
        return self.zone or self.region


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
            f"{o.instance_type}{count} ({self.gpus} × {o.gpu_model} {format_gib(o.gpu_mem_gib)}) "
            f"{o.market} in {o.where} at ${format_dollars(self.price_per_hour)}/h{notional}"
        )


def describe_request(request: OfferRequest) -> str:
    """``8 GPUs with >= 40 GiB each, spot, in us-east-1``."""
    text = f"{request.gpus} GPU{'s' if request.gpus != 1 else ''}"
    if request.gpu_mem_gib is not None:
        text += f" with >= {format_gib(request.gpu_mem_gib)} each"
    if request.spot is not None:
        text += ", spot" if request.spot else ", on-demand"
    if request.regions:
        text += f", in {', '.join(request.regions)}"
    return text


def format_gib(value: float) -> str:
    """``22.3 GiB``."""
    return f"{format_number(value)} GiB"


def format_number(value: float) -> str:
    """One decimal, rounded down: 22888 MiB shows as 22.3, so a gpu_mem= copied from a table
    still matches the offer it was copied from (22.4 would not)."""
    return f"{math.floor(value * 10 + 1e-9) / 10:g}"


def format_dollars(value: float) -> str:
    """A price without its ``$``: cents, or three significant digits below a dollar."""
    if value <= 0:
        return "0.00"
    if value >= 1:
        return f"{value:,.2f}"
    # Small prices keep three significant digits (a spot g4dn.xlarge is $0.158, not $0.16).
    decimals = max(2, 2 - math.floor(math.log10(value)))
    text = f"{value:.{decimals}f}".rstrip("0")
    return text if len(text.split(".")[1]) >= 2 else f"{value:.2f}"
