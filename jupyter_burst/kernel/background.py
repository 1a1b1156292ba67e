"""Background bursts, the kernel's side: ``%%burst async name=...`` and the verbs that follow it.

The job itself runs on the cluster's head node (:mod:`jupyter_burst.node.job_runner`), so a
kernel restart loses nothing: ``attach`` finds the job by name on the running clusters, and
``wait`` brings back its results (also after its cluster stopped: they were kept beside its
checkpoints).
"""

from __future__ import annotations

import json
import pickle
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters import records
from jupyter_burst.driver import cluster, jobs
from jupyter_burst.errors import BurstError, JobCancelled, JobNotFound
from jupyter_burst.kernel import cell as cells
from jupyter_burst.kernel import output
from jupyter_burst.kernel.options import CellOptions
from jupyter_burst.store import checkpoints, results
from jupyter_burst.store.ledger import shared_ledger
from jupyter_burst.worker import node_packages

_POLL_SECONDS = 0.1
_LISTED_DAYS = 7  # how far back %burst jobs looks for jobs whose cluster has stopped


@dataclass
class _Submitted:
    """What this kernel remembers of a job it started: where, and the namespace it left from."""

    job_id: str
    cluster: str
    provider: str
    snapshot: dict[str, Any]
    cursor: int = 0  # output batches shown so far
    # The packed cell, to start it again should its cluster be lost (None after a restart).
    options: CellOptions | None = None
    root: str = ""
    request: bytes | None = field(default=None, repr=False)


@dataclass
class Found:
    """A background job, located: on a running cluster, or only as results kept on disk."""

    name: str
    job_id: str
    summary: dict[str, Any]
    handle: cluster.ClusterHandle | None = None
    saved: Any = None  # (payloads, failure, error) kept after the cluster stopped
    options: dict[str, Any] = field(default_factory=dict)


_submitted: dict[str, _Submitted] = {}


def start(
    source: str,
    options: CellOptions,
    user_ns: MutableMapping[str, Any],
    filename: str | None = None,
    line_offset: int = 0,
    kernel: str = "",
) -> str:
    """Hand the cell to its cluster's head node and return its name at once."""
    prepared = cells.prepare(source, options, user_ns, filename, line_offset)
    handle = cells.connect(options)
    node_packages.ensure(handle.client, prepared.spec["pip"], handle.name)
    root = cells.checkpoint_settings(handle.state_dir, prepared.job_id, source, handle.provider)
    prepared.spec["checkpoints"] = root
    name = options.name or f"job-{prepared.job_id[:6]}"
    request = pickle.dumps(
        {
            "message": prepared.message,
            "spec": prepared.spec,
            "ranks": options.gpus,
            "retries": options.retries,
            "timeout": options.timeout,
        },
        protocol=5,
    )
    ledger = shared_ledger(handle.state_dir)
    record = dict(cells.options_record(options), name=name)
    ledger.job_started(
        prepared.job_id, handle.id, kernel, source, record, notebook=jobs.notebook_path()
    )
    try:
        _hand_over(handle, name, prepared.job_id, options.gpus, root["root"], request)
    except BurstError as exc:
        ledger.job_ended(prepared.job_id, "failed", str(exc))
        raise
    _submitted[name] = _Submitted(
        prepared.job_id,
        handle.name,
        handle.provider,
        prepared.snapshot,
        options=options,
        root=root["root"],
        request=request,
    )
    return name


def _hand_over(
    handle: cluster.ClusterHandle, name: str, job_id: str, ranks: int, root: str, request: bytes
) -> None:
    reply = _call(
        handle,
        "burst_job_submit",
        name=name,
        job_id=job_id,
        ranks=ranks,
        root=root,
        request=request,
    )
    if "error" in reply:
        raise BurstError(reply["error"])


def _start_again(name: str, mine: _Submitted) -> Found | None:
    """The job's cluster was lost while it ran: run it on a new one, from its latest checkpoint.

    Only a kernel that still holds the packed cell can; a job stopped on purpose
    (``%burst down``) or that ended is left alone.
    """
    ledger = shared_ledger(config.state_dir())
    row = ledger.job(mine.job_id)
    if mine.request is None or mine.options is None or row is None or row["status"] != "running":
        return None
    note = (
        f"burst: the cluster running {name} was lost; starting {name} again on cluster "
        f"'{mine.options.cluster}' from its latest checkpoint"
    )
    print(note, file=sys.stderr, flush=True)
    handle = cells.connect(mine.options)
    ledger.add_lines(mine.job_id, [(time.time(), 0, "burst", note)])
    _hand_over(handle, name, mine.job_id, mine.options.gpus, mine.root, mine.request)
    mine.cluster, mine.provider, mine.cursor = handle.name, handle.provider, 0
    for summary in _call(handle, "burst_job_list")["jobs"]:
        if summary["name"] == name:
            return Found(name, summary["job"], summary, handle, options=_options(summary))
    return None


def _call(handle: cluster.ClusterHandle, method: str, **kwargs: Any) -> dict[str, Any]:
    client = handle.client
    return pickle.loads(client.sync(getattr(client.scheduler, method), **kwargs))


def find(name: str, start_lost: bool = False) -> Found:
    """The job ``name``: asked of every running cluster, then looked up in the ledger.

    With ``start_lost``, a job of this kernel whose cluster was lost is started again.
    """
    mine = _submitted.get(name)
    for handle, summary in _live_jobs(first=(mine.cluster, mine.provider) if mine else None):
        if summary["name"] == name:
            return Found(name, summary["job"], summary, handle, options=_options(summary))
    if start_lost and mine is not None:
        again = _start_again(name, mine)
        if again is not None:
            return again
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


def _live_jobs(first: tuple[str, str] | None = None):
    """(cluster, job summary) for the jobs of every running cluster, ``first``'s first."""
    clusters_known = [first] if first else []
    clusters_known += [
        (r["name"], r.get("provider", "local"))
        for r in records.all_records(config.state_dir())
        if (r["name"], r.get("provider", "local")) != first
    ]
    for name, provider in clusters_known:
        handle = cluster.attach(name, provider)
        if handle is not None:
            for summary in _call(handle, "burst_job_list")["jobs"]:
                yield handle, summary


def _ledger_job(name: str) -> dict[str, Any] | None:
    ledger = shared_ledger(config.state_dir())
    rows = ledger.query(
        "SELECT * FROM jobs WHERE options LIKE ? ORDER BY started DESC",
        (f'%"name": {json.dumps(name)}%',),
    )
    return next((r for r in rows if json.loads(r["options"]).get("name") == name), None)


def _options(summary: dict[str, Any]) -> dict[str, Any]:
    row = shared_ledger(config.state_dir()).job(summary["job"])
    return json.loads(row["options"]) if row else {}


def list_jobs() -> list[dict[str, Any]]:
    """The background jobs of the running clusters, and those whose cluster has stopped:
    with their results kept on disk, or lost with it while they ran."""
    out = [dict(summary, cluster=handle.name) for handle, summary in _live_jobs()]
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


def format_jobs(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "burst: no background jobs (%%burst async name=NAME starts one)"
    now = time.time()
    table = [("name", "job", "cluster", "status", "ranks", "attempts", "time", "results")]
    for r in rows:
        seconds = (r["ended"] or now) - r["started"]
        table.append(
            (
                r["name"],
                r["job"],
                r["cluster"],
                r["status"],
                str(r["ranks"]),
                str(r["attempts"]),
                f"{seconds:.0f} s",
                r["results"],
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    )


def logs(name: str, follow: bool = False, since: int = 0) -> int:
    """Show the job's output from batch ``since``; with ``follow``, until the job ends.

    Ctrl-C stops the following, never the job. Returns the next batch to show.
    """
    found = find(name)
    if found.handle is None:
        raise JobNotFound(
            f"job '{name}' is on no running cluster; its output is in the ledger "
            f"(job {found.job_id}), its results: %burst wait {name}"
        )
    try:
        return _show(found, since, follow)
    except KeyboardInterrupt:
        _stopped_following(name)
        return since


def _stopped_following(name: str) -> None:
    print(
        f"burst: stopped following; {name} keeps running "
        f"(%burst wait {name} picks it up, %burst cancel {name} stops it)",
        file=sys.stderr,
    )


def _show(found: Found, cursor: int, follow: bool) -> int:
    render = output.renderer(int(found.summary.get("ranks", 1)))
    try:
        while True:
            reply = _call(found.handle, "burst_job_events", name=found.name, since=cursor)
            if "error" in reply:
                raise JobNotFound(reply["error"])
            if reply["missed"]:
                print(
                    f"burst: {reply['missed']} earlier output batches were dropped from the "
                    "cluster's buffer (the ledger keeps every line)",
                    file=sys.stderr,
                )
            for rank, events in reply["batches"]:
                render(rank, events)
            cursor = reply["next"]
            if reply["more"]:
                continue
            if not follow or reply["job"]["status"] != "running":
                return cursor
            time.sleep(_POLL_SECONDS)
    finally:
        render.close()  # the last lines a flood held back


def wait(name: str, user_ns: MutableMapping[str, Any]) -> dict[str, Any]:
    """Show the job's output until it ends, then put its results into ``user_ns``."""
    found = find(name, start_lost=True)
    mine = _submitted.get(name)
    if mine is not None and mine.job_id != found.job_id:
        mine = None
    if found.handle is not None:
        try:
            cursor = _show(found, mine.cursor if mine else 0, follow=True)
        except KeyboardInterrupt:
            _stopped_following(name)
            return found.summary
        if mine is not None:
            mine.cursor = cursor
        reply = _call(found.handle, "burst_job_result", name=name)
        if "error" in reply:
            raise JobNotFound(reply["error"])
        summary = reply["job"]
        if summary["status"] == "cancelled":
            raise JobCancelled(
                f"job '{name}' was cancelled; its checkpoints: %burst checkpoints {found.job_id}"
            )
        outcome = pickle.loads(reply["outcome"]) if reply.get("outcome") else None
    else:
        summary, outcome = found.summary, found.saved
    if outcome is None:
        raise JobNotFound(f"job '{name}' ended as {summary['status']} without results")
    payloads, failure, error = outcome
    if error is not None:
        raise error
    cells.apply_outcome(
        payloads,
        failure,
        int(found.options.get("gpus", summary.get("ranks", 1))),
        bool(found.options.get("gather", False)),
        user_ns,
        mine.snapshot if mine is not None else {},
    )
    if found.handle is None:
        results.remove(checkpoints.default_root(config.state_dir()), found.job_id)
    _submitted.pop(name, None)
    return summary


def cancel(name: str, timeout: float = 10.0) -> dict[str, Any]:
    """Stop the job's remote work; returns once it has stopped (or raises after ``timeout``)."""
    found = find(name)
    if found.handle is None or found.summary["status"] != "running":
        raise JobNotFound(f"job '{name}' is not running (it ended as {found.summary['status']})")
    _call(found.handle, "burst_job_cancel", name=name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = _call(found.handle, "burst_job_events", name=name, since=1 << 62)
        if reply["job"]["status"] != "running":
            return reply["job"]
        time.sleep(_POLL_SECONDS)
    raise BurstError(
        f"job '{name}' did not stop within {timeout:g} s; %burst down stops its cluster"
    )


def attach(name: str, user_ns: MutableMapping[str, Any]) -> dict[str, Any]:
    """After a kernel restart: the job's output so far, and its results if it has ended."""
    found = find(name, start_lost=True)
    if found.handle is None or found.summary["status"] != "running":
        return wait(name, user_ns)
    cursor = _show(found, 0, follow=False)
    _submitted[name] = _Submitted(
        found.job_id, found.handle.name, found.handle.provider, {}, cursor
    )
    return found.summary
