"""The sidebar's actions: stop a cluster, change its idle timeout, cancel a job.

Each one blocks (it talks to a cluster, waits for processes to end), so the handlers run
them in a thread, never on the server's event loop. They act on the state folder the
server is configured with (``config.state_dir()``), as the cluster functions they call do.
"""

from __future__ import annotations

from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters import records
from jupyter_burst.driver import background_jobs, cluster
from jupyter_burst.errors import JobNotFound
from jupyter_burst.server.api import NotFound, job_row
from jupyter_burst.store.ledger import shared_ledger


class Refused(Exception):
    """The action cannot be done in the cluster's or job's present state (answered 409)."""


def _records(name: str) -> list[dict[str, Any]]:
    """The running clusters a request names, matched among those listed (a name from a request
    is never made into a path: ``../x`` matches nothing): by cluster id, or by name (a name
    may run on several providers: ``default`` on each)."""
    listed = records.all_records(config.state_dir())
    found = [r for r in listed if r.get("id") == name] or [
        r for r in listed if r.get("name") == name
    ]
    if not found:
        raise NotFound(f"no running cluster named '{name}'")
    return found


def stop_cluster(name: str) -> dict[str, Any]:
    """Stop the cluster ``name`` (an id, or a name on every provider) now; returns once its
    processes are gone."""
    stopped: list[str] = []
    for record in _records(name):
        stopped += cluster.down(record["name"], provider=record.get("provider", "local"))
    return {"stopped": stopped}


def set_idle(name: str, minutes: float) -> dict[str, Any]:
    """Change the cluster's idle timeout through its scheduler (it restarts the countdown
    there, and records the new value in the ledger and the cluster record)."""
    idle = None
    for record in _records(name):
        handle = cluster.attach(record["name"], record.get("provider", "local"))
        if handle is None:
            raise Refused(f"cluster '{name}' does not answer; it may be stopping")
        cluster.set_idle(handle, minutes)
        idle = handle.record["idle"]
    return {"name": name, "idle_minutes": idle}


def cancel_job(job_id: str) -> dict[str, Any]:
    """Cancel a running job: a background one on its cluster, a foreground one through its kernel.

    A foreground cell's kernel is busy running it and cannot be reached: the request is
    recorded in the ledger, which that kernel reads within about a second while it follows
    the job (:class:`jupyter_burst.driver.jobs.CancelWatch`); it then stops the remote work and
    the job ends as ``cancelled``. The answer comes at once, with status ``cancelling``.
    """
    job = job_row(config.state_dir(), job_id)
    if job["status"] != "running":
        raise Refused(f"job '{job_id}' is not running (it ended as {job['status']})")
    name = job["options"].get("name")
    if job["options"].get("background") and name:
        try:
            ended = background_jobs.cancel(name)
        except JobNotFound as exc:
            raise Refused(str(exc).splitlines()[0]) from None
        return {"id": job_id, "status": ended.get("status")}
    if not shared_ledger(config.state_dir()).request_cancel(job_id):
        ended = job_row(config.state_dir(), job_id)["status"]
        raise Refused(f"job '{job_id}' is not running (it ended as {ended})")
    return {"id": job_id, "status": "cancelling"}
