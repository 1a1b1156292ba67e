"""Background jobs as any client of a cluster finds them: the notebook's kernel, or the
Jupyter server when the sidebar cancels one.

A background job runs on its cluster's head node (:mod:`jupyter_burst.node.job_runner`),
which answers the ``burst_job_*`` RPCs; a job whose cluster has stopped is found in the
ledger, with its results kept beside its checkpoints (:mod:`jupyter_burst.store.results`).
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters import records
from jupyter_burst.driver import cluster
from jupyter_burst.errors import BurstError, JobNotFound
from jupyter_burst.store import checkpoints, results
from jupyter_burst.store.ledger import shared_ledger
from jupyter_burst.wire.contract import Rpc

POLL_SECONDS = 0.1
_LISTED_DAYS = 7  # how far back %burst jobs looks for jobs whose cluster has stopped


@dataclass
class Found:
    """A background job, located: on a running cluster, or only as results kept on disk."""

    name: str
    job_id: str
    summary: dict[str, Any]
    handle: cluster.ClusterHandle | None = None
    saved: Any = None  # (payloads, failure, error) kept after the cluster stopped
    options: dict[str, Any] = field(default_factory=dict)


def call(handle: cluster.ClusterHandle, method: Rpc, **kwargs: Any) -> dict[str, Any]:
    """Ask the head node's job runner; its replies are pickles (they hold output events)."""
    return pickle.loads(cluster.rpc(handle.client, method, **kwargs))


def on_clusters(name: str, first: tuple[str, str] | None = None) -> Found | None:
    """The job ``name`` on a running cluster (``first``, a (cluster, provider), asked first)."""
    for handle, summary in live_jobs(first):
        if summary["name"] == name:
            return Found(name, summary["job"], summary, handle, options=job_options(summary))
    return None


def kept(name: str) -> Found:
    """The job ``name`` on no running cluster: its results kept on disk, or why there are none."""
    row = _ledger_job(name)
    if row is None:
        raise JobNotFound(f"no background job named '{name}'; %burst jobs lists them")
    saved = results.load(checkpoints.default_root(config.state_dir()), row["id"])
    summary = {"name": name, "job": row["id"], "status": row["status"], "error": row["error"]}
    if saved is None:
        if row["status"] == "running":
            reason = "was lost with its cluster while it ran; run its cell again"
        elif row["status"] == "done":
            reason = "is on no running cluster and its results were fetched already"
        else:
            error = f" ({row['error']})" if row["error"] else ""
            reason = f"is on no running cluster and it ended as {row['status']}{error}"
        raise JobNotFound(
            f"job '{name}' ({row['id']}) {reason}; its checkpoints: %burst checkpoints {row['id']}"
        )
    return Found(name, row["id"], summary, saved=saved, options=json.loads(row["options"]))


def find(name: str) -> Found:
    """The job ``name``: asked of every running cluster, then looked up in the ledger."""
    return on_clusters(name) or kept(name)


def live_jobs(
    first: tuple[str, str] | None = None,
) -> Iterator[tuple[cluster.ClusterHandle, dict[str, Any]]]:
    """(cluster, job summary) for the jobs of every running cluster, ``first``'s first."""
    known = [first] if first else []
    known += [
        (r["name"], r.get("provider", "local"))
        for r in records.all_records(config.state_dir())
        if (r["name"], r.get("provider", "local")) != first
    ]
    for name, provider in known:
        handle = cluster.attach(name, provider)
        if handle is not None:
            for summary in call(handle, Rpc.JOB_LIST)["jobs"]:
                yield handle, summary


def _ledger_job(name: str) -> dict[str, Any] | None:
    ledger = shared_ledger(config.state_dir())
    rows = ledger.query(
        "SELECT * FROM jobs WHERE options LIKE ? ORDER BY started DESC",
        (f'%"name": {json.dumps(name)}%',),
    )
    return next((r for r in rows if json.loads(r["options"]).get("name") == name), None)


def job_options(summary: dict[str, Any]) -> dict[str, Any]:
    """The options the job's cell was run with, as the ledger recorded them."""
    row = shared_ledger(config.state_dir()).job(summary["job"])
    return json.loads(row["options"]) if row else {}


def list_jobs() -> list[dict[str, Any]]:
    """The background jobs of the running clusters, and those whose cluster has stopped:
    with their results kept on disk, or lost with it while they ran."""
    out = [dict(summary, cluster=handle.name) for handle, summary in live_jobs()]
    live = {row["job"] for row in out}
    root = checkpoints.default_root(config.state_dir())
    ledger = shared_ledger(config.state_dir())
    since = time.time() - _LISTED_DAYS * 86400
    for row in ledger.query(
        "SELECT * FROM jobs WHERE options LIKE '%\"background\": true%' AND started > ?", (since,)
    ):
        if row["id"] in live or (
            row["status"] != "running" and not results.exists(root, row["id"])
        ):
            continue
        options = json.loads(row["options"])
        out.append(
            {
                "name": options.get("name", row["id"]),
                "job": row["id"],
                "cluster": f"{options.get('cluster', '?')} (stopped)",
                "status": "lost" if row["status"] == "running" else row["status"],
                "ranks": options.get("gpus", 1),
                "attempts": "-",
                "started": row["started"],
                "ended": row["ended"] or row["started"],
                "results": "kept" if row["status"] != "running" else "none",
            }
        )
    return sorted(out, key=lambda s: s["started"])


def cancel(name: str, timeout: float = 10.0) -> dict[str, Any]:
    """Stop the job's remote work; returns once it has stopped (or raises after ``timeout``)."""
    found = find(name)
    if found.handle is None or found.summary["status"] != "running":
        raise JobNotFound(f"job '{name}' is not running (it ended as {found.summary['status']})")
    call(found.handle, Rpc.JOB_CANCEL, name=name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = call(found.handle, Rpc.JOB_EVENTS, name=name, since=1 << 62)
        if reply["job"]["status"] != "running":
            return reply["job"]
        time.sleep(POLL_SECONDS)
    raise BurstError(
        f"job '{name}' did not stop within {timeout:g} s; %burst down stops its cluster"
    )
