"""The sidebar's actions: stop a cluster, change its idle timeout, cancel a job.

Each one blocks (it talks to a cluster, waits for processes to end), so the handlers run
them in a thread, never on the server's event loop. They act on the state folder the
server is configured with (``config.state_dir()``), as the cluster functions they call do.
"""

from __future__ import annotations

from typing import Any

from jupyter_burst import background, clusters, config
from jupyter_burst.clusters import records
from jupyter_burst.server.api import NotFound, job_row


class Refused(Exception):
    """The action cannot be done in the cluster's or job's present state (answered 409)."""


def _record(name: str) -> dict[str, Any]:
    """The running cluster's record, matched by name among those listed (a name from a
    request is never made into a path: ``../x`` matches nothing)."""
    for record in records.all_records(config.state_dir()):
        if record.get("name") == name:
            return record
    raise NotFound(f"no running cluster named '{name}'")


def stop_cluster(name: str) -> dict[str, Any]:
    """Stop the cluster ``name`` now; returns once its processes are gone."""
    _record(name)
    return {"stopped": clusters.down(name)}


def set_idle(name: str, minutes: float) -> dict[str, Any]:
    """Change the cluster's idle timeout through its scheduler (it restarts the countdown
    there, and records the new value in the ledger and the cluster record)."""
    record = _record(name)
    handle = clusters.attach(name, record.get("provider", "local"))
    if handle is None:
        raise Refused(f"cluster '{name}' does not answer; it may be stopping")
    clusters.set_idle(handle, minutes)
    return {"name": name, "idle_minutes": handle.record["idle"]}


def cancel_job(job_id: str) -> dict[str, Any]:
    """Cancel a background job (``%%burst async name=...``) on its cluster.

    A cell run in the foreground belongs to its kernel: only that kernel can stop it
    (interrupt it), so that is refused with the way to do it.
    """
    job = job_row(config.state_dir(), job_id)
    if job["status"] != "running":
        raise Refused(f"job '{job_id}' is not running (it ended as {job['status']})")
    name = job["options"].get("name")
    if not job["options"].get("background") or not name:
        raise Refused(
            f"job '{job_id}' runs in the foreground of its kernel; interrupt the kernel "
            "(or stop its cluster) to end it"
        )
    try:
        ended = background.cancel(name)
    except background.JobNotFound as exc:
        raise Refused(str(exc).splitlines()[0]) from None
    return {"id": job_id, "status": ended.get("status")}
