"""Background bursts, the kernel's side: ``%%burst async name=...`` and the verbs that follow it.

The job itself runs on the cluster's head node (:mod:`jupyter_burst.node.job_runner`), so a
kernel restart loses nothing: ``attach`` finds the job by name on the running clusters, and
``wait`` brings back its results (also after its cluster stopped: they were kept beside its
checkpoints).
"""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from jupyter_burst import config
from jupyter_burst.driver import background_jobs, cluster, jobs, workdir_sync
from jupyter_burst.driver.background_jobs import POLL_SECONDS, Found, call, job_options
from jupyter_burst.errors import BurstError, JobCancelled, JobNotFound
from jupyter_burst.kernel import cell as cells
from jupyter_burst.kernel import output, workdir
from jupyter_burst.kernel.options import CellOptions
from jupyter_burst.kernel.report_table import Column, Row, Table
from jupyter_burst.store import checkpoints, results
from jupyter_burst.store.ledger import shared_ledger
from jupyter_burst.wire.contract import JobRequest, Rpc
from jupyter_burst.worker import node_packages


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
    node_packages.ensure(handle.client, prepared.spec.pip, handle.name)
    _send_workdir(handle, prepared.spec.workdir)
    root = cells.checkpoint_settings(handle.state_dir, prepared.job_id, source, handle.provider)
    prepared.spec.checkpoints = root
    name = options.name or f"job-{prepared.job_id[:6]}"
    request = pickle.dumps(
        JobRequest(
            prepared.message,
            prepared.spec,
            ranks=options.gpus,
            retries=options.retries,
            timeout_minutes=options.timeout,
        ),
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


def _send_workdir(handle: cluster.ClusterHandle, folder: Any) -> None:
    """The working folder onto every node now: the head node serves it from its own copy
    to a node that joins for a later attempt, when this kernel may be gone."""
    if folder is None:
        return
    pushed = workdir_sync.push(handle, None, folder, workdir.NotebookFiles(folder))
    if pushed.files:
        print(pushed.line(handle.name), file=sys.stderr, flush=True)


def _hand_over(
    handle: cluster.ClusterHandle, name: str, job_id: str, ranks: int, root: str, request: bytes
) -> None:
    reply = call(
        handle,
        Rpc.JOB_SUBMIT,
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
    for summary in call(handle, Rpc.JOB_LIST)["jobs"]:
        if summary["name"] == name:
            return Found(name, summary["job"], summary, handle, options=job_options(summary))
    return None


def find(name: str, start_lost: bool = False) -> Found:
    """The job ``name``: asked of every running cluster (its own first, for a job this kernel
    started), then looked up in the ledger. With ``start_lost``, a job of this kernel whose
    cluster was lost is started again."""
    mine = _submitted.get(name)
    found = background_jobs.on_clusters(name, first=(mine.cluster, mine.provider) if mine else None)
    if found is not None:
        return found
    if start_lost and mine is not None:
        again = _start_again(name, mine)
        if again is not None:
            return again
    return background_jobs.kept(name)


def submitted_job(name: str) -> str | None:
    """The job id of the background job ``name`` if this kernel started it."""
    mine = _submitted.get(name)
    return mine.job_id if mine is not None else None


def jobs_table(rows: list[dict[str, Any]]) -> Table:
    """``%burst jobs``: the background jobs, one row each, their data as attributes."""
    now = time.time()
    return Table(
        [Row(**{**r, "seconds": (r["ended"] or now) - r["started"]}) for r in rows],
        [
            Column("name", lambda r: r.name),
            Column("job", lambda r: r.job),
            Column("cluster", lambda r: r.cluster),
            Column("status", lambda r: r.status),
            Column("ranks", lambda r: str(r.ranks)),
            Column("attempts", lambda r: str(r.attempts)),
            Column("time", lambda r: f"{r.seconds:.0f} s"),
            Column("results", lambda r: r.results),
        ],
        empty="burst: no background jobs (%%burst async name=NAME starts one)",
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
            reply = call(found.handle, Rpc.JOB_EVENTS, name=found.name, since=cursor)
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
            time.sleep(POLL_SECONDS)
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
        reply = call(found.handle, Rpc.JOB_RESULT, name=name)
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
