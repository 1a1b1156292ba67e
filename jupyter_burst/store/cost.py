"""What the machines cost: the billing rules, and the totals the ledger adds up to.

Money is :class:`~decimal.Decimal` dollars, exact; it is rounded to the cent only when shown,
so a sum of many small amounts is still right to the cent. Times are the ledger's
(``time.time()`` seconds), read to the microsecond: the float noise below that would
otherwise turn 10 s of running into 11 billed seconds.

**A node** is billed as its provider bills, from its launch to its termination (or to now,
while it runs): per second, each second begun counted whole, and at least a minimum
(EC2 Linux: 60 s; a provider records its own in ``nodes.billing_minimum``). The price is the
one in force when it started (``nodes.price_per_hour``), spot or on-demand alike.

**Notional** prices: local and on-prem machines send no bill; their price is an internal one
someone configured (``burst.local.price-per-hour``). Such amounts are shown as notional,
and budgets count them like any other (they were configured to be counted).

**A job** is charged, for each node of each cluster it ran on, the node's price for the
seconds of the job's run (start to end) that fall inside the node's life: the node time it
overlapped, unrounded (rounding and minimums belong to the bill, not to any one job).
Jobs that run at once on one cluster are each charged the node time they overlapped, so
their costs add up to more than the bill; the cluster's own total is the bill.

**Totals** over a period (this session, today, this month; local time) add each node's bill
over the part of its life inside the period; what rounding up and the minimum add to a
node's bill is counted once, in the period where the node started. The periods of a
partition of time therefore add up exactly to the bills.

This module is the arithmetic only. The daily budget checked before a launch is
:mod:`jupyter_burst.clusters.launch_checks`; settling what providers ended by themselves is
:mod:`jupyter_burst.clusters.settlement`; the ``%burst cost`` text is
:mod:`jupyter_burst.kernel.cost_report`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from jupyter_burst.store.budget import usd

ZERO = Decimal(0)
HOUR = Decimal(3600)
EC2_MINIMUM_SECONDS = 60.0
# Providers whose machines send no bill: their price is a configured internal one.
NOTIONAL_PROVIDERS = frozenset({"local", "ssh"})

Node = Mapping[str, Any]


# the rules, pure --------------------------------------------------------------------------


def instant(t: float) -> Decimal:
    """A ledger time, to the microsecond."""
    return Decimal(f"{t:.6f}")


def billed_seconds(started: float, stopped: float, minimum: float = EC2_MINIMUM_SECONDS) -> int:
    """Seconds billed for a machine that ran from ``started`` to ``stopped``.

    Per second, each second begun counted whole, and at least ``minimum`` (EC2 Linux: 60;
    0 where nothing is billed).
    """
    ran = max(ZERO, instant(stopped) - instant(started))
    return max(math.ceil(ran), math.ceil(minimum))


def price_per_hour(node: Node) -> Decimal:
    """The node's price, in force at its launch, as the ledger recorded it."""
    return Decimal(repr(float(node.get("price_per_hour") or 0.0)))


def is_notional(node: Node) -> bool:
    """Whether the node's price is an internal one (local, on-prem) rather than a bill."""
    flag = node.get("notional")
    if flag is not None:
        return bool(flag)
    return node.get("provider") in NOTIONAL_PROVIDERS


def minimum_seconds(node: Node) -> float:
    """The node's billing minimum: as its provider recorded it, else none for notional
    machines and EC2's 60 s for the others."""
    recorded = node.get("billing_minimum")
    if recorded is not None:
        return float(recorded)
    return 0.0 if is_notional(node) else EC2_MINIMUM_SECONDS


def _end(node: Node, now: float) -> float:
    stopped = node.get("stopped")
    return float(stopped) if stopped is not None else max(now, float(node["started"]))


def node_billed_seconds(node: Node, now: float) -> int:
    """Seconds billed for ``node`` (a running one: so far)."""
    return billed_seconds(float(node["started"]), _end(node, now), minimum_seconds(node))


def node_cost(node: Node, now: float) -> Decimal:
    """The node's bill: price x billed seconds (a running one: billed so far)."""
    return price_per_hour(node) * node_billed_seconds(node, now) / HOUR


def _overlap(a0: Decimal, a1: Decimal, b0: Decimal, b1: Decimal) -> Decimal:
    return max(ZERO, min(a1, b1) - max(a0, b0))


def node_cost_between(node: Node, start: float, end: float, now: float) -> Decimal:
    """The part of the node's bill that falls in ``[start, end)``.

    Its seconds inside the period, plus, when it started inside the period, what rounding
    up and the minimum add to its bill: counted once, where it started.
    """
    began, ended = instant(float(node["started"])), instant(_end(node, now))
    period_start, period_end = instant(start), instant(end)
    seconds = _overlap(began, ended, period_start, period_end)
    if period_start <= began < period_end:
        seconds += node_billed_seconds(node, now) - (ended - began)
    return price_per_hour(node) * seconds / HOUR


def job_cost(job: Node, nodes: Iterable[Node], now: float) -> Decimal:
    """What ``job`` (a ledger job row) cost: the node time its run overlapped, at each node's price.

    ``nodes`` are those of the clusters the job ran on.
    """
    return job_spend(job, nodes, now).total


def job_spend(job: Node, nodes: Iterable[Node], now: float) -> Spend:
    """:func:`job_cost`, with its notional part apart."""
    began = instant(float(job["started"]))
    ended = instant(float(job["ended"]) if job.get("ended") is not None else now)
    spend = Spend()
    for node in nodes:
        seconds = _overlap(began, ended, instant(float(node["started"])), instant(_end(node, now)))
        spend += Spend.of(node, price_per_hour(node) * seconds / HOUR)
    return spend


def running_rate(nodes: Iterable[Node]) -> Spend:
    """$/hour of the nodes still running."""
    rate = Spend()
    for node in nodes:
        if node.get("stopped") is None:
            rate += Spend.of(node, price_per_hour(node))
    return rate


@dataclass(frozen=True)
class Spend:
    """An amount in dollars, with its billed and its notional parts apart."""

    billed: Decimal = ZERO
    notional: Decimal = ZERO

    @classmethod
    def of(cls, node: Node, amount: Decimal) -> Spend:
        return cls(notional=amount) if is_notional(node) else cls(billed=amount)

    @property
    def total(self) -> Decimal:
        return self.billed + self.notional

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.billed + other.billed, self.notional + other.notional)

    def show(self, unit: str = "") -> str:
        """``$1.20``, ``$3.00 notional`` or ``$1.20 + $3.00 notional``."""
        if not self.notional:
            return usd(self.billed) + unit
        if not self.billed:
            return f"{usd(self.notional)}{unit} notional"
        return f"{usd(self.billed)}{unit} + {usd(self.notional)}{unit} notional"


def spend_between(nodes: Iterable[Node], start: float, end: float, now: float) -> Spend:
    """What ``nodes`` cost in ``[start, end)`` (their minimums counted where they started)."""
    spend = Spend()
    for node in nodes:
        spend += Spend.of(node, node_cost_between(node, start, end, now))
    return spend


def day_start(now: float) -> float:
    """Local midnight that began the day of ``now``."""
    t = time.localtime(now)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


def month_start(now: float) -> float:
    """Local midnight that began the month of ``now``."""
    t = time.localtime(now)
    return time.mktime((t.tm_year, t.tm_mon, 1, 0, 0, 0, 0, 0, -1))


@dataclass(frozen=True)
class Totals:
    rate: Spend  # $/hour of the nodes running now
    running: Spend  # what the nodes running now have been billed so far
    session: Spend
    today: Spend
    month: Spend


def totals(nodes: Iterable[Node], now: float, session_started: float) -> Totals:
    """The running rate and the spend of this session, today and this month, from node rows."""
    nodes = list(nodes)
    running = [n for n in nodes if n.get("stopped") is None]
    end = math.inf
    so_far = Spend()
    for node in running:
        so_far += Spend.of(node, node_cost(node, now))
    return Totals(
        rate=running_rate(running),
        running=so_far,
        session=spend_between(nodes, session_started, end, now),
        today=spend_between(nodes, day_start(now), end, now),
        month=spend_between(nodes, month_start(now), end, now),
    )


def spent_today(nodes: Iterable[Node], now: float) -> Spend:
    """What ``nodes`` cost since local midnight (their minimums counted where they started)."""
    return spend_between(nodes, day_start(now), math.inf, now)
