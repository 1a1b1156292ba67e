"""``%burst cost``: the clusters running now, the last jobs with their cost, the totals.

Read from the ledger with :mod:`jupyter_burst.store.cost`'s arithmetic; the clusters whose
machines ended unseen are settled first (:mod:`jupyter_burst.clusters.settlement`).
"""

from __future__ import annotations

import time
from typing import Any

import psutil

from jupyter_burst.clusters.settlement import live_cluster_ids
from jupyter_burst.kernel.report_table import Column, Report, Row, Table
from jupyter_burst.store.budget import daily_budget, usd
from jupyter_burst.store.cost import (
    ZERO,
    Spend,
    is_notional,
    job_spend,
    month_start,
    node_cost,
    price_per_hour,
    running_rate,
    totals,
)
from jupyter_burst.store.ledger import shared_ledger


def session_started() -> float:
    """When this process (the kernel) started: the session's spend counts from there."""
    return psutil.Process().create_time()


def report(
    state_dir: Any,
    now: float | None = None,
    session_start: float | None = None,
    last_jobs: int = 10,
) -> Report:
    """``%burst cost``: clusters running now, the last jobs with their cost, the totals.

    The data as attributes: ``running`` and ``jobs`` (tables of rows), ``session``,
    ``today`` and ``month`` (:class:`Spend`), ``budget_left`` (dollars, or None).
    """
    now = time.time() if now is None else now
    session_start = session_started() if session_start is None else session_start
    ledger = shared_ledger(state_dir)
    since = min(session_start, month_start(now))
    nodes = ledger.nodes(alive_since=since)

    clusters = {c["id"]: c for c in ledger.clusters(running_only=True)}
    running = [n for n in nodes if n.get("stopped") is None]
    if running:
        live = live_cluster_ids(state_dir)  # settles what ended unseen: read the nodes again
        nodes = ledger.nodes(alive_since=since)
        running = [n for n in nodes if n.get("stopped") is None]
    else:
        live = set()
    running_rows = []
    for cluster_id in sorted({n["cluster_id"] for n in running}):
        mine = [n for n in running if n["cluster_id"] == cluster_id]
        so_far = Spend()
        for node in mine:
            so_far += Spend.of(node, node_cost(node, now))
        running_rows.append(
            Row(
                cluster=clusters.get(cluster_id, {}).get("name", cluster_id),
                cluster_id=cluster_id,
                provider=mine[0].get("provider", "?"),
                nodes=len(mine),
                per_hour=running_rate(mine),
                so_far=so_far,
                head_gone=cluster_id not in live,
            )
        )
    running_table = Table(
        running_rows,
        [
            Column("cluster", lambda r: r.cluster),
            Column("provider", lambda r: r.provider),
            Column("nodes", lambda r: str(r.nodes)),
            Column("$/hour", lambda r: r.per_hour.show("/h")),
            Column("so far", lambda r: r.so_far.show()),
            Column(
                "",
                lambda r: "(its head is gone; its stop was never recorded)" if r.head_gone else "",
            ),
        ],
        heading="running now" if running_rows else "running now: nothing",
        indent="  ",
    )
    parts: list[Table | str] = [running_table]

    jobs = ledger.recent_jobs(last_jobs)
    job_rows = []
    if jobs:
        ran_on = ledger.job_clusters(j["id"] for j in jobs)
        job_nodes = ledger.nodes(cluster_ids={c for ids in ran_on.values() for c in ids})
        for job in jobs:
            clusters_of_job = ran_on.get(job["id"], set())
            job_rows.append(
                Row(
                    job=job["id"],
                    started=job["started"],
                    seconds=(job["ended"] if job.get("ended") is not None else now)
                    - job["started"],
                    status=job["status"],
                    stop_reason=job.get("stop_reason"),
                    cost=job_spend(
                        job, [n for n in job_nodes if n["cluster_id"] in clusters_of_job], now
                    ),
                )
            )
    jobs_table = Table(
        job_rows,
        [
            Column("job", lambda r: r.job),
            Column("started", lambda r: time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started))),
            Column("seconds", lambda r: f"{r.seconds:.1f}"),
            Column("status", lambda r: r.status + (f" ({r.stop_reason})" if r.stop_reason else "")),
            Column("cost", lambda r: r.cost.show()),
        ],
        heading=f"last {len(jobs)} job{'s' if len(jobs) != 1 else ''}" if jobs else "",
        indent="  ",
    )
    if jobs:
        parts.append(jobs_table)

    spend = totals(nodes, now, session_start)
    parts.append(
        f"spend: this session {spend.session.show()} · today {spend.today.show()} · "
        f"this month {spend.month.show()}"
    )
    daily = daily_budget()
    budget_left = None
    if daily is not None:
        budget_left = max(ZERO, daily - spend.today.total)
        parts.append(f"daily budget: {usd(budget_left)} left of {usd(daily)} (burst.budget.daily)")
    if any(is_notional(n) and price_per_hour(n) for n in nodes):
        parts.append(
            "notional: a configured internal price of local/on-prem machines "
            "(burst.local.price-per-hour), not a bill"
        )
    return Report(
        parts,
        running=running_table,
        jobs=jobs_table,
        session=spend.session,
        today=spend.today,
        month=spend.month,
        budget_left=budget_left,
    )
