"""``%burst cost``: the clusters running now, the last jobs with their cost, the totals.

Read from the ledger with :mod:`jupyter_burst.store.cost`'s arithmetic; the clusters whose
machines ended unseen are settled first (:mod:`jupyter_burst.clusters.settlement`).
"""

from __future__ import annotations

import time
from typing import Any

import psutil

from jupyter_burst.clusters.settlement import live_cluster_ids
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
) -> str:
    """``%burst cost``: clusters running now, the last jobs with their cost, the totals."""
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
