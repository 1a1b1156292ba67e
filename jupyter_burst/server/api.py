"""The sidebar's JSON views: plain functions of a state folder, testable without a server.

Every view reads the ledger (the single source of truth) and returns JSON-ready dicts.
Money is never a float: each amount is a dict with the figure shown (to the cent) and the
exact decimal string, so the sidebar can add amounts without drift.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from jupyter_burst.clusters import records, start_phases
from jupyter_burst.store import checkpoints, cost
from jupyter_burst.store.budget import usd
from jupyter_burst.store.ledger import shared_ledger

EXCERPT_CHARS = 80
MAX_LOG_LINES = 5000  # one backfill page; the sidebar asks again from ``next``
RECENT_STOPPED_SECONDS = 24 * 3600  # stopped clusters stay listed this long
# A foreground cell's end is written by its kernel alone, so a kernel that died mid-cell
# leaves its job 'running' in the ledger (the cell itself was stopped on the worker:
# orphans.py). Once every cluster it ran on has been stopped for longer than a live kernel
# takes to start another one for a rerun (burst.start-timeout, 60 s), nobody runs it.
LOST_AFTER_SECONDS = 180.0
LOST_ERROR = "lost: its kernel went away while it ran, and its cluster has stopped since"


class NotFound(LookupError):
    """What was asked for does not exist (the handler answers 404 with this one line)."""


def money(amount: Decimal) -> dict[str, str]:
    """An amount: ``{"usd": "$1.23", "exact": "1.2345"}`` (strings: no float rounding)."""
    return {"usd": usd(amount), "exact": str(amount)}


def spend(value: cost.Spend) -> dict[str, Any]:
    """A :class:`~jupyter_burst.store.cost.Spend`: its total, and its notional part apart."""
    return {**money(value.total), "notional": money(value.notional), "shown": value.show()}


# clusters ---------------------------------------------------------------------------------


def clusters_view(
    state_dir: pathlib.Path,
    now: float | None = None,
    live: Iterable[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Running clusters and those stopped in the last day, newest first.

    ``live``: what the clusters themselves said (``driver.cluster.status()`` entries): the idle
    countdown and the current idle setting are only known there; without it they are null.
    """
    now = time.time() if now is None else now
    ledger = shared_ledger(state_dir)
    told = {entry.get("id"): entry for entry in live}
    recorded = {r.get("id"): r for r in records.all_records(state_dir)}
    rows = [
        c
        for c in ledger.clusters()
        if c["stopped"] is None or now - c["stopped"] < RECENT_STOPPED_SECONDS
    ]
    nodes = ledger.nodes(cluster_ids=[c["id"] for c in rows])
    out = []
    for cluster in sorted(rows, key=lambda c: c["started"], reverse=True):
        mine = [n for n in nodes if n["cluster_id"] == cluster["id"]]
        running_nodes = [n for n in mine if n["stopped"] is None]
        info = told.get(cluster["id"], {})
        # The ledger alone can say "running" for a cluster whose head died unseen: it is
        # running only while its record (removed on stop) is still there too.
        running = cluster["stopped"] is None and cluster["id"] in recorded
        if info and "alive" in info:
            running = running and bool(info["alive"])
        ended = cluster["stopped"] if cluster["stopped"] is not None else now
        idle_minutes = info.get("idle", cluster["idle_minutes"])
        devices = _devices(running_nodes if running else mine, cluster)
        remaining = info.get("idle_remaining") if running else None
        so_far = cost.Spend()
        for node in mine:
            so_far += cost.Spend.of(node, cost.node_cost(node, now))
        out.append(
            {
                "id": cluster["id"],
                "name": cluster["name"],
                "provider": cluster["provider"],
                "state": "running" if running else "stopped",
                "stop_reason": cluster["stop_reason"],
                "nodes": len(running_nodes) if running else len(mine),
                "gpus": sum(1 for d in devices if d != "cpu"),
                "cpu_slots": sum(1 for d in devices if d == "cpu"),
                "started": cluster["started"],
                "uptime_seconds": max(0.0, ended - cluster["started"]),
                "idle_minutes": idle_minutes,
                "idle_remaining_seconds": remaining,
                "busy": info.get("busy") if running else None,
                "per_hour": spend(cost.running_rate(running_nodes if running else [])),
                "so_far": spend(so_far),
                "usage": usage_rows(info.get("usage")) if running else [],
                # Dask's dashboard is served (through this server) for a cluster on TLS only.
                "dashboard": running and bool(recorded[cluster["id"]].get("tls")),
            }
        )
    return out


IDLE_GPU_PERCENT = 10.0  # a busy slot's GPU below this is shown as idle: paid for, unused


def usage_rows(samples: Any) -> list[dict[str, Any]]:
    """The cluster's slots as its heartbeats last sampled them (worker/usage.py): one row
    each, a CPU slot labelled as such, a GPU at rest while its slot runs a task flagged."""
    rows = []
    # Dask's messages decode arrays as tuples.
    for s in samples if isinstance(samples, (list, tuple)) else []:
        gpu = s.get("gpu") if isinstance(s.get("gpu"), dict) else None
        busy = bool(s.get("busy"))
        rows.append(
            {
                "worker": s.get("worker"),
                "host": s.get("host"),
                "device": s.get("device"),
                "label": gpu["name"] if gpu else "CPU slot",
                "busy": busy,
                "cpu_percent": s.get("cpu_percent"),
                "rss": s.get("rss"),
                "host_cpu_percent": s.get("host_cpu_percent"),
                "host_memory_used": s.get("host_memory_used"),
                "host_memory_total": s.get("host_memory_total"),
                "gpu_utilization": gpu["utilization"] if gpu else None,
                "gpu_memory_used": gpu["memory_used"] if gpu else None,
                "gpu_memory_total": gpu["memory_total"] if gpu else None,
                "idle_gpu": bool(gpu) and busy and gpu["utilization"] < IDLE_GPU_PERCENT,
            }
        )
    return rows


def _devices(nodes: list[Mapping[str, Any]], cluster: Mapping[str, Any]) -> list[str]:
    """The slots' devices of the nodes (``cuda:N``, or ``cpu`` for a CPU stand-in slot)."""
    found = [d for n in nodes for d in json.loads(n.get("devices") or "[]")]
    if found or nodes:
        return found
    return json.loads(cluster.get("devices") or "[]")


def starts_view(
    state_dir: pathlib.Path, now: float | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Cluster starts of the last day, newest first, each with its phases and their seconds:
    those under way (``state`` ``starting``, the phase under way marked ``current``), those
    that came up (``running``, with their ``cluster_id``), failed or were abandoned."""
    now = time.time() if now is None else now
    ledger = shared_ledger(state_dir)
    starts = start_phases.recent(ledger, now - RECENT_STOPPED_SECONDS, now)
    return [start.as_json(now) for start in starts[:limit]]


# cost -------------------------------------------------------------------------------------


def cost_view(
    state_dir: pathlib.Path,
    now: float | None = None,
    last_jobs: int = 10,
    daily: Decimal | None = None,
) -> dict[str, Any]:
    """The live total of what runs now, the last jobs' cost, today, this month, budget left.

    ``daily``: ``burst.budget.daily`` (None: no budget, and ``budget_left`` is null).
    """
    now = time.time() if now is None else now
    ledger = shared_ledger(state_dir)
    month = cost.month_start(now)
    nodes = ledger.nodes(alive_since=month)
    # The session counts from the month start: the server has no kernel session of its own.
    spent = cost.totals(nodes, now, month)
    budget_left = None
    if daily is not None:
        budget_left = {
            "left": money(max(cost.ZERO, daily - spent.today.total)),
            "daily": money(daily),
        }
    return {
        "now": now,
        "running": {"per_hour": spend(spent.rate), "so_far": spend(spent.running)},
        "jobs": [
            {"id": j["id"], "status": j["status"], "cost": j["cost"]}
            for j in jobs_view(state_dir, now, last_jobs)
        ],
        "today": spend(spent.today),
        "month": spend(spent.month),
        "budget": budget_left,
    }


# jobs and their logs ----------------------------------------------------------------------


def excerpt(source: str) -> str:
    """The cell's first non-blank line, at most 80 characters (an ellipsis marks the cut)."""
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= EXCERPT_CHARS else line[: EXCERPT_CHARS - 1] + "…"


def jobs_view(state_dir: pathlib.Path, now: float | None = None, limit: int = 50) -> list[dict]:
    """The last ``limit`` jobs, newest first, each with what it cost so far."""
    now = time.time() if now is None else now
    ledger = shared_ledger(state_dir)
    jobs = ledger.recent_jobs(limit)
    ran_on = ledger.job_clusters(j["id"] for j in jobs)
    cluster_ids = {c for ids in ran_on.values() for c in ids}
    nodes = ledger.nodes(cluster_ids=cluster_ids)
    stopped = _stop_times(ledger, cluster_ids)
    out = []
    for job in jobs:
        mine = [n for n in nodes if n["cluster_id"] in ran_on.get(job["id"], set())]
        options = _options(job)
        lost_at = _lost_at(job, options, [stopped.get(c) for c in ran_on.get(job["id"], ())], now)
        if lost_at is not None:
            job = {**job, "status": "lost", "ended": lost_at, "error": LOST_ERROR}
        ended = job["ended"] if job["ended"] is not None else now
        out.append(
            {
                "id": job["id"],
                "name": options.get("name"),
                "background": bool(options.get("background")),
                "status": job["status"],
                "stop_reason": job["stop_reason"],
                "error": job["error"],
                "kernel": job["kernel"],
                "notebook": job["notebook"],
                "cell": excerpt(job["source"]),
                # In [n] of the cell in its notebook, and the cluster the cell named: the
                # sidebar titles and groups jobs by them.
                "cell_number": _cell_number(options),
                "cluster": options.get("cluster"),
                "started": job["started"],
                "ended": job["ended"],
                "duration_seconds": max(0.0, ended - job["started"]),
                "cost": spend(cost.job_spend(job, mine, now)),
            }
        )
    return out


def _stop_times(ledger: Any, cluster_ids: set[str]) -> dict[str, float | None]:
    if not cluster_ids:
        return {}
    ids = sorted(cluster_ids)
    rows = ledger.query(
        f"SELECT id, stopped FROM clusters WHERE id IN ({', '.join('?' * len(ids))})", ids
    )
    return {row["id"]: row["stopped"] for row in rows}


def _lost_at(
    job: Mapping[str, Any], options: Mapping[str, Any], stops: list[float | None], now: float
) -> float | None:
    """When a foreground job left 'running' by a kernel that died ended: its last cluster's stop."""
    if job["status"] != "running" or options.get("background") or not stops:
        return None
    if any(stop is None for stop in stops):
        return None
    last = max(s for s in stops if s is not None)
    return last if now - last > LOST_AFTER_SECONDS else None


def _cell_number(options: Mapping[str, Any]) -> int | None:
    number = options.get("cell_number")
    return number if isinstance(number, int) and not isinstance(number, bool) else None


def _options(job: Mapping[str, Any]) -> dict[str, Any]:
    try:
        options = json.loads(job.get("options") or "{}")
    except ValueError:
        return {}
    return options if isinstance(options, dict) else {}


def job_row(state_dir: pathlib.Path, job_id: str) -> dict[str, Any]:
    """The job's ledger row with its options decoded; :class:`NotFound` if there is none."""
    row = shared_ledger(state_dir).job(job_id)
    if row is None:
        raise NotFound(f"no job '{job_id}'")
    return dict(row, options=_options(row))


LOG_COLUMNS = "SELECT id, ts, rank, stream, text FROM log_lines"


def log_lines_after(job_id: str, since: int, rank: int | None) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) of a job's lines after the cursor ``since``."""
    where, params = "job_id = ? AND id > ?", [job_id, int(since)]
    if rank is not None:
        where += " AND rank = ?"
        params.append(int(rank))
    return where, params


def logs_view(
    state_dir: pathlib.Path,
    job_id: str,
    since: int = 0,
    rank: int | None = None,
    limit: int = MAX_LOG_LINES,
) -> dict[str, Any]:
    """The job's output lines after the cursor ``since`` (of ``rank``, else every rank).

    ``next`` is the cursor to ask from next time: lines are never missed nor repeated,
    whatever other jobs write in between (the cursor is the ledger's line id).
    """
    job = job_row(state_dir, job_id)
    where, params = log_lines_after(job_id, since, rank)
    rows = shared_ledger(state_dir).query(
        f"{LOG_COLUMNS} WHERE {where} ORDER BY id LIMIT ?", [*params, int(limit)]
    )
    return {
        "job": job_id,
        "status": job["status"],
        "lines": [{k: r[k] for k in ("ts", "rank", "stream", "text")} for r in rows],
        "next": rows[-1]["id"] if rows else int(since),
        "more": len(rows) == limit,
    }


MAX_METRIC_POINTS = 20_000  # per request: a long run's curves arrive in a few requests


def metrics_view(
    state_dir: pathlib.Path, job_id: str, since: int = 0, limit: int = MAX_METRIC_POINTS
) -> dict[str, Any]:
    """The job's ``burst.log`` points after the cursor ``since``, every rank's, oldest first:
    what the sidebar's charts draw (a curve per metric and rank, over steps). ``next`` is the
    cursor to ask from next time, as for the logs."""
    job = job_row(state_dir, job_id)
    rows = shared_ledger(state_dir).query(
        "SELECT id, ts, rank, step, name, value FROM metrics WHERE job_id = ? AND id > ? "
        "ORDER BY id LIMIT ?",
        (job_id, int(since), int(limit)),
    )
    return {
        "job": job_id,
        "status": job["status"],
        "points": [{k: r[k] for k in ("ts", "rank", "step", "name", "value")} for r in rows],
        "next": rows[-1]["id"] if rows else int(since),
        "more": len(rows) == limit,
    }


def job_usage_view(state_dir: pathlib.Path, job_id: str) -> dict[str, Any]:
    """What the job's slots used while it ran, every rank's samples (about one each
    ``worker/usage.py``'s ``RECORD_SECONDS``, and one at its end): its GPUs' utilisation and
    memory, a CPU slot's CPU and memory."""
    job = job_row(state_dir, job_id)
    columns = ("ts", "rank", "host", "device", "cpu_percent", "rss")
    columns += ("gpu_utilization", "gpu_memory_used", "gpu_memory_total")
    rows = shared_ledger(state_dir).usage(job_id)
    return {
        "job": job_id,
        "status": job["status"],
        "samples": [{k: r[k] for k in columns} for r in rows],
    }


# checkpoints ------------------------------------------------------------------------------


def checkpoints_view(state_dir: pathlib.Path, job: str | None = None) -> list[dict[str, Any]]:
    """Every kept checkpoint (of the job ``job``, its exact id), oldest first."""
    root = checkpoints.default_root(state_dir)
    if job is not None and job not in checkpoints.all_jobs(root):
        raise NotFound(f"job '{job}' has no checkpoints")
    return [
        {
            "job": name,
            "name": c.name,
            "step": c.step,
            "time": c.time,
            "bytes": c.bytes,
            "sha256": c.sha256,
            "format": c.format,
            "cell": excerpt(c.cell),
            "restore": f"%burst restore {name}" + ("" if c.step is None else f" step={c.step}"),
        }
        for name, c in checkpoints.listing(root, job)
    ]


def checkpoint_file(state_dir: pathlib.Path, job: str, name: str) -> checkpoints.Checkpoint:
    """The checkpoint ``name`` of ``job``, found in the job's manifest.

    Both are only ever compared with what the store lists, never joined into a path, so
    ``..`` or a slash in either cannot reach another file.
    """
    root = checkpoints.default_root(state_dir)
    if job not in checkpoints.all_jobs(root):
        raise NotFound(f"job '{job}' has no checkpoints")
    for listed_job, checkpoint in checkpoints.listing(root, job):
        if listed_job == job and checkpoint.name == name:
            return checkpoint
    raise NotFound(f"job '{job}' has no checkpoint '{name}'")


def download_name(checkpoint: checkpoints.Checkpoint) -> str:
    """The file name offered to the browser: the job, the step, and the kind of file."""
    step = "none" if checkpoint.step is None else str(checkpoint.step)
    suffix = ".pt" if checkpoint.format == "torch" else ".pkl"
    return f"{checkpoint.job}-step{step}-{checkpoint.name.rsplit('-', 1)[-1]}{suffix}"


# actions: validation ----------------------------------------------------------------------

MAX_IDLE_MINUTES = 7 * 24 * 60


def idle_minutes(body: Any) -> float:
    """``{"minutes": N}`` checked: a number of minutes, more than 0 and at most a week."""
    if not isinstance(body, dict) or "minutes" not in body:
        raise ValueError('send JSON {"minutes": N}')
    value = body["minutes"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("minutes must be a number")
    if not math.isfinite(value) or not 0 < value <= MAX_IDLE_MINUTES:
        raise ValueError(f"minutes must be more than 0 and at most {MAX_IDLE_MINUTES}")
    return float(value)
