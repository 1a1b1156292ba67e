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
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from jupyter_burst.errors import BudgetExceeded, OptionError
from jupyter_burst.store.budget import daily_refusal, parse_usd, usd

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


# the daily budget -----------------------------------------------------------------------


def daily_budget() -> Decimal | None:
    """``burst.budget.daily`` in dollars, or None (no daily budget)."""
    from jupyter_burst import config

    value = config.get("budget.daily")
    if value is None or value == "":
        return None
    try:
        return parse_usd(value)
    except ValueError:
        raise OptionError(
            f"burst.budget.daily={value} is not an amount in USD; set a positive amount "
            "(e.g. DASK_BURST__BUDGET__DAILY=50) or null for none"
        ) from None


def launch_price(provider: Any, request: Any) -> Decimal:
    """$/hour of the nodes a launch would start.

    A provider quotes it with ``price_per_hour(request)``; the local provider's is the
    notional ``burst.local.price-per-hour`` (0 unless configured); otherwise 0.
    """
    quote = getattr(provider, "price_per_hour", None)
    if callable(quote):
        return Decimal(repr(float(quote(request) or 0.0)))
    if getattr(provider, "name", None) == "local":
        return local_price_per_hour()
    return ZERO


def local_price_per_hour() -> Decimal:
    """``burst.local.price-per-hour``: the notional price of a local cluster (default 0)."""
    from jupyter_burst import config

    value = config.get("local.price-per-hour", 0) or 0
    try:
        price = Decimal(repr(float(value)))
    except (TypeError, ValueError):
        price = Decimal(-1)
    if price < 0 or not price.is_finite():
        raise OptionError(
            f"burst.local.price-per-hour={value} is not a price; set dollars per hour >= 0 "
            "(e.g. DASK_BURST__LOCAL__PRICE_PER_HOUR=2.5)"
        )
    return price


def check_daily_budget(
    state_dir: Any,
    provider: Any,
    request: Any,
    now: float | None = None,
    price: float | None = None,
) -> None:
    """Refuse a launch that would take today's spend past ``burst.budget.daily`` (one line).

    Called just before a provider launches (or adds nodes to a running cluster: ``price`` is
    then what the added nodes cost an hour): a refused launch starts nothing.
    """
    from jupyter_burst.store.ledger import shared_ledger

    daily = daily_budget()
    if daily is None:
        return
    price = launch_price(provider, request) if price is None else Decimal(repr(float(price)))
    if price <= 0:
        return  # a free launch cannot pass any budget
    now = time.time() if now is None else now
    spent = spent_today(shared_ledger(state_dir).nodes(alive_since=day_start(now)), now)
    refusal = daily_refusal(spent.total, price, daily)
    if refusal is not None:
        raise BudgetExceeded(refusal)


def spent_today(nodes: Iterable[Node], now: float) -> Spend:
    return spend_between(nodes, day_start(now), math.inf, now)


# %burst cost ----------------------------------------------------------------------------


def session_started() -> float:
    """When this process (the kernel) started: the session's spend counts from there."""
    import psutil

    return psutil.Process().create_time()


def live_cluster_ids(state_dir: Any) -> set[str]:
    """Clusters whose head is still there, by their records (cheap: no connection)."""
    from jupyter_burst.clusters import records
    from jupyter_burst.clusters.registry import get_provider

    live = set()
    for record in records.all_records(state_dir):
        try:
            provider = get_provider(record.get("provider", "local"))
            if provider.is_alive(record):
                live.add(record["id"])
                if hasattr(provider, "settle") and len(record.get("instances") or ()) > 1:
                    # A node the cluster grew by, ended when it went idle: billed to its end.
                    provider.settle(dict(record, state_dir=str(state_dir)))
            elif hasattr(provider, "settle"):
                # Its machines ended by themselves (idle, lifetime): the ledger learns when,
                # from the provider's own records, so the bill shown is the bill sent.
                provider.settle(dict(record, state_dir=str(state_dir)))
        except Exception:  # an unknown or broken provider: its cluster is not shown live
            continue
    return live


def report(
    state_dir: Any,
    now: float | None = None,
    session_start: float | None = None,
    last_jobs: int = 10,
) -> str:
    """``%burst cost``: clusters running now, the last jobs with their cost, the totals."""
    from jupyter_burst.store.ledger import shared_ledger

    now = time.time() if now is None else now
    session_start = session_started() if session_start is None else session_start
    ledger = shared_ledger(state_dir)
    since = min(session_start, month_start(now))
    nodes = ledger.nodes(alive_since=since)
    lines: list[str] = []

    clusters = {c["id"]: c for c in ledger.clusters(running_only=True)}
    running = [n for n in nodes if n.get("stopped") is None]
    if running:
        live = live_cluster_ids(state_dir)  # settles what ended unseen: read the nodes again
        nodes = ledger.nodes(alive_since=since)
        running = [n for n in nodes if n.get("stopped") is None]
    else:
        live = set()
    rows = [("cluster", "provider", "nodes", "$/hour", "so far", "")]
    for cluster_id in sorted({n["cluster_id"] for n in running}):
        mine = [n for n in running if n["cluster_id"] == cluster_id]
        info = clusters.get(cluster_id, {})
        so_far = Spend()
        for node in mine:
            so_far += Spend.of(node, node_cost(node, now))
        rows.append(
            (
                info.get("name", cluster_id),
                mine[0].get("provider", "?"),
                str(len(mine)),
                running_rate(mine).show("/h"),
                so_far.show(),
                "" if cluster_id in live else "(its head is gone; its stop was never recorded)",
            )
        )
    if len(rows) > 1:
        lines.append("running now")
        lines.extend("  " + row for row in _table(rows))
    else:
        lines.append("running now: nothing")

    jobs = ledger.recent_jobs(last_jobs)
    if jobs:
        ran_on = ledger.job_clusters(j["id"] for j in jobs)
        job_nodes = ledger.nodes(cluster_ids={c for ids in ran_on.values() for c in ids})
        rows = [("job", "started", "seconds", "status", "cost")]
        for job in jobs:
            clusters_of_job = ran_on.get(job["id"], set())
            spend = job_spend(
                job, [n for n in job_nodes if n["cluster_id"] in clusters_of_job], now
            )
            seconds = (job["ended"] if job.get("ended") is not None else now) - job["started"]
            status = job["status"] + (f" ({job['stop_reason']})" if job.get("stop_reason") else "")
            rows.append(
                (
                    job["id"],
                    time.strftime("%Y-%m-%d %H:%M", time.localtime(job["started"])),
                    f"{seconds:.1f}",
                    status,
                    spend.show(),
                )
            )
        lines.append(f"last {len(jobs)} job{'s' if len(jobs) != 1 else ''}")
        lines.extend("  " + row for row in _table(rows))

    spend = totals(nodes, now, session_start)
    lines.append(
        f"spend: this session {spend.session.show()} · today {spend.today.show()} · "
        f"this month {spend.month.show()}"
    )
    daily = daily_budget()
    if daily is not None:
        left = max(ZERO, daily - spend.today.total)
        lines.append(f"daily budget: {usd(left)} left of {usd(daily)} (burst.budget.daily)")
    if any(is_notional(n) and price_per_hour(n) for n in nodes):
        lines.append(
            "notional: a configured internal price of local/on-prem machines "
            "(burst.local.price-per-hour), not a bill"
        )
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
