"""Background jobs (``%%burst async``), run by the head node: the kernel may go away meanwhile.

The kernel hands the packed cell to the head node and returns at once. Here a thread runs
it with the same code a foreground cell uses (:func:`jupyter_burst.driver.jobs.run_attempts`:
one task per rank, a rerun from the latest checkpoint when a worker is lost), keeps its
output for ``%burst logs`` and its results until a kernel fetches them. A cluster that
stops before they are fetched writes them beside the job's checkpoints
(:mod:`jupyter_burst.store.results`).

Every RPC reply is a pickle: output events and results hold values msgpack cannot carry.
"""

from __future__ import annotations

import pathlib
import pickle
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from distributed.security import Security

from jupyter_burst import config
from jupyter_burst.driver import jobs, workdir_sync
from jupyter_burst.driver.cluster import ClusterHandle, open_client, usable
from jupyter_burst.driver.job_log import JobLog, ending
from jupyter_burst.errors import BurstError, JobCancelled
from jupyter_burst.store import results
from jupyter_burst.store.ledger import Ledger
from jupyter_burst.wire import contract
from jupyter_burst.wire import payload as wire
from jupyter_burst.wire.contract import JobRequest, Rpc

_BATCHES_PER_REPLY = 2000


@dataclass
class BackgroundJob:
    name: str
    job_id: str
    ranks: int
    root: str  # the checkpoint store: where results go if the cluster stops first
    started: float = field(default_factory=time.time)
    status: str = "running"  # running, done, failed, cancelled
    ended: float | None = None
    attempts: int = 0
    error: str | None = None
    batches: list = field(default_factory=list)  # (rank, events), oldest dropped past the cap
    dropped: int = 0
    outcome: bytes | None = None  # pickled (payloads, failure, error) until fetched
    fetched: bool = False
    cancel_requested: bool = False
    current: jobs.Job | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "job": self.job_id,
            "ranks": self.ranks,
            "status": self.status,
            "attempts": self.attempts,
            "started": self.started,
            "ended": self.ended,
            "error": self.error,
            "results": "fetched" if self.fetched else ("held" if self.outcome else "none"),
            "lines_dropped": self.dropped,
        }


class BackgroundJobs:
    """The head node's background jobs, by name; the scheduler's ``burst_job_*`` handlers."""

    def __init__(
        self,
        address: str,
        record: dict,
        state_dir: pathlib.Path,
        ledger: Ledger,
        security: Security | None = None,
    ):
        self.address = address
        self.security = security  # the node's own: a TLS cluster's head is a client too
        self.record = record
        self.state_dir = state_dir
        self.ledger = ledger
        self.jobs: dict[str, BackgroundJob] = {}
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()
        self._handle: ClusterHandle | None = None
        self._max_batches = int(config.get("jobs.log-events", 100_000))

    def handlers(self) -> dict[str, Any]:
        return {
            Rpc.JOB_SUBMIT: self.submit,
            Rpc.JOB_EVENTS: self.events,
            Rpc.JOB_RESULT: self.result,
            Rpc.JOB_CANCEL: self.cancel,
            Rpc.JOB_LIST: self.list,
        }

    def busy(self) -> bool:
        """A job between two attempts has no task running, yet the cluster is not idle."""
        with self._lock:
            return any(job.status == "running" for job in self.jobs.values())

    # RPC handlers: called on the scheduler's event loop, so none of them blocks ---------

    def submit(self, name: str, job_id: str, ranks: int, root: str, request: bytes) -> bytes:
        """``request``: the pickled cell, unpickled in the job's thread (it may be large)."""
        with self._lock:
            old = self.jobs.get(name)
            if old is not None and old.status == "running":
                return _reply(
                    error=f"a job named '{name}' is running on this cluster; "
                    f"pick another name= or stop it with %burst cancel {name}"
                )
            if old is not None and old.outcome is not None:
                return _reply(
                    error=f"job '{name}' finished and its results were not fetched yet; "
                    f"%burst wait {name} brings them back, or pick another name="
                )
            job = BackgroundJob(name=name, job_id=job_id, ranks=ranks, root=root)
            self.jobs[name] = job
        threading.Thread(
            target=self._run, args=(job, request), name=f"burst-job-{name}", daemon=True
        ).start()
        return _reply(job=job.summary())

    def events(self, name: str, since: int = 0) -> bytes:
        with self._lock:
            job = self.jobs.get(name)
            if job is None:
                return _reply(error=f"no job named '{name}' on this cluster")
            start = max(0, since - job.dropped)
            batches = job.batches[start : start + _BATCHES_PER_REPLY]
            return _reply(
                batches=batches,
                next=job.dropped + start + len(batches),
                missed=max(0, job.dropped - since),
                more=start + len(batches) < len(job.batches),
                job=job.summary(),
            )

    def result(self, name: str) -> bytes:
        with self._lock:
            job = self.jobs.get(name)
            if job is None:
                return _reply(error=f"no job named '{name}' on this cluster")
            if job.status == "running":
                return _reply(job=job.summary())
            if job.fetched:
                return _reply(error=f"the results of job '{name}' were fetched already")
            outcome, job.outcome = job.outcome, None
            job.fetched = outcome is not None
            return _reply(job=job.summary(), outcome=outcome)

    def cancel(self, name: str) -> bytes:
        with self._lock:
            job = self.jobs.get(name)
            if job is None:
                return _reply(error=f"no job named '{name}' on this cluster")
            if job.status == "running":
                job.cancel_requested = True
                if job.current is not None:
                    job.current.events.put(("cancel", " by %burst cancel"))
            return _reply(job=job.summary())

    def list(self) -> bytes:
        with self._lock:
            return _reply(jobs=[job.summary() for job in self.jobs.values()])

    # the job's own thread -----------------------------------------------------------

    def _cluster(self) -> ClusterHandle:
        with self._client_lock:
            if self._handle is None or not usable(self._handle):
                client = open_client(
                    self.address, 30, name="jupyter-burst-head", security=self.security
                )
                self._handle = ClusterHandle.of(self.record, client, self.state_dir)
            return self._handle

    def _keep(self, job: BackgroundJob, rank: int, events: list) -> None:
        with self._lock:
            job.batches.append((rank, events))
            if len(job.batches) > self._max_batches:
                del job.batches[0]
                job.dropped += 1

    def _run(self, job: BackgroundJob, pickled: bytes) -> None:
        log = JobLog(
            self.ledger,
            job.job_id,
            lambda rank, events: self._keep(job, rank, events),
            lambda rank, text: self._keep(job, rank, [["stderr", text + "\n"]]),
        )

        def connect(attempt: int) -> ClusterHandle:
            if job.cancel_requested:
                raise JobCancelled("cancelled by %burst cancel before its next attempt")
            job.attempts = attempt
            return self._cluster()

        def on_job(current: jobs.Job) -> None:
            with self._lock:
                job.current = current
                if job.cancel_requested:
                    current.events.put(("cancel", " by %burst cancel"))

        error: str | None = None
        outcome: bytes | None = None
        try:
            request: JobRequest = pickle.loads(pickled)
            contract.check(request, "the kernel that started the job")
            done = jobs.run_attempts(
                connect,
                job.job_id,
                request.message,
                request.spec,
                ranks=request.ranks,
                retries=request.retries,
                timeout_minutes=request.timeout_minutes,
                on_events=log.events,
                on_note=log.note,
                on_job=on_job,
                # The kernel put the working folder on every node, this one included: a node
                # that joins for a later attempt gets it from here.
                files=workdir_sync.HeadStore(self.state_dir, self.record["name"])
                if request.spec.workdir is not None
                else None,
            )
            status = "done" if done.failure is None else "failed"
            if done.failure is not None:
                error = _failure_text(done.failure)
            outcome = pickle.dumps((done.payloads, done.failure, None), protocol=5)
        except BaseException as exc:  # noqa: B036 - reported to whoever waits for the job
            status, error = ending(exc)
            if status != "cancelled":
                status = "failed"  # nobody interrupts a background job but %burst cancel
                try:
                    outcome = pickle.dumps(([], None, exc), protocol=5)
                except Exception:
                    outcome = pickle.dumps(([], None, BurstError(str(error))), protocol=5)
        finally:
            log.close()
        with self._lock:
            job.status, job.error, job.outcome = status, error, outcome
            job.ended, job.current = time.time(), None
        self.ledger.job_ended(job.job_id, status, error)

    def close(self) -> None:
        """The cluster stops: results not fetched yet go beside the job's checkpoints."""
        with self._lock:
            held = [job for job in self.jobs.values() if job.outcome is not None]
            running = [job for job in self.jobs.values() if job.status == "running"]
        for job in held:
            try:
                results.save(job.root, job.job_id, job.outcome)
            except Exception as exc:  # noqa: BLE001 - the node is stopping; say so in its log
                print(f"burst: could not keep the results of job {job.name}: {exc}")
        for job in running:
            self.ledger.job_ended(job.job_id, "failed", "the cluster stopped while it ran")
        if self._handle is not None:
            try:
                self._handle.client.close(timeout=2)
            except Exception:
                pass


def _reply(**fields: Any) -> bytes:
    return pickle.dumps(fields, protocol=5)


def _failure_text(failure: jobs.RankFailure) -> str:
    if failure.lost is not None:
        return str(failure.lost)
    try:
        error = wire.loads(failure.payload.data, failure.payload.buffers, {}, {})["error"]
        return f"{error['type']}: {error['message']}"
    except Exception:
        return "the cell raised an error"
