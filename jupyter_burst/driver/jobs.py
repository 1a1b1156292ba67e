"""One cell's run on a cluster: submit it as one task per rank, stream its output, wait, stop it.

The kernel's main thread does the waiting (so Ctrl-C / the stop button lands here) and
renders output itself; the Dask client's thread only queues what arrives. When one rank of
several fails, the others are stopped at once: they would otherwise wait forever in a
collective for the rank that is gone.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, NoReturn
from urllib.parse import urlparse

from jupyter_burst import config
from jupyter_burst.driver import cache_plan, workdir_sync
from jupyter_burst.driver.cluster import ClusterHandle, wait_for_workers
from jupyter_burst.driver.timeline import Timeline
from jupyter_burst.errors import (
    BudgetExceeded,
    JobCancelled,
    JobInterrupted,
    JobTimeout,
    WorkerLost,
)
from jupyter_burst.store import budget, cost
from jupyter_burst.store.ledger import Ledger, shared_ledger
from jupyter_burst.wire.contract import CellSpec
from jupyter_burst.wire.payload import (
    Payload,
    SentWithOutput,
    event_count,
    payload_from_event,
)
from jupyter_burst.worker.value_cache import CacheMiss

# Below this a payload rides inside the task message; above it, it goes straight to the
# workers first (scatter), never through the scheduler.
_INLINE_BYTES = 1 << 20
_EVENTS_GRACE_SECONDS = 2.0

OnEvents = Callable[[int, list], None]


@dataclass
class Job:
    id: str
    handle: ClusterHandle
    futures: list[Any]
    events: queue.Queue
    started: float = field(default_factory=time.monotonic)
    received: int = 0
    carried: dict[int, Payload] = field(default_factory=dict)  # results sent with the output
    timeline: Timeline = field(default_factory=Timeline)  # the moments of its cell (profile)

    @property
    def world_size(self) -> int:
        return len(self.futures)


@dataclass
class RankFailure:
    """The first rank that failed: its result (an error) or the loss of its worker."""

    rank: int
    payload: Payload | None = None
    lost: WorkerLost | None = None


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


def notebook_path() -> str | None:
    """The notebook this kernel runs for, as the Jupyter server names it (relative to its
    root), for the sidebar's job list; None outside a server-started kernel."""
    # jupyter_server gives every kernel it starts for a session this variable.
    return os.environ.get("JPY_SESSION_NAME") or None


def _topic(handle: ClusterHandle) -> str:
    """One output topic per kernel and cluster; events carry their job id."""
    topic = f"burst-output-{handle.client.id}"
    if topic not in handle.topic_handlers:
        routes: dict[str, queue.Queue] = {}

        def route(event: tuple[float, dict]) -> None:
            _, message = event
            target = routes.get(message.get("job"))
            if target is not None:
                target.put(("events", message))

        handle.client.subscribe_topic(topic, route)
        handle.topic_handlers[topic] = routes
    return topic


def _runtime() -> Any:
    """The worker's side of a cell, which the tasks name: imported when first needed, so
    that a head node that never runs a background job never imports it (IPython and all)."""
    # Here, not at the top: the head node's start is part of a cold cell's wait.
    from jupyter_burst.worker import runtime

    return runtime


def _place(client: Any, messages: list[Payload], workers: list[str | None]) -> list[Any]:
    """Each rank's message, or a future of it already on its worker when it is big.

    Big messages go straight to their workers (scatter), never through the scheduler; ranks
    whose workers need the same bytes get them in one broadcast.
    """
    placed: list[Any] = list(messages)
    same: dict[int, list[int]] = {}
    for rank, message in enumerate(messages):
        if message.nbytes > _INLINE_BYTES:
            same.setdefault(id(message), []).append(rank)
    for ranks in same.values():
        future = client.scatter(
            messages[ranks[0]],
            workers=[workers[r] for r in ranks],
            broadcast=True,
            direct=True,
            hash=False,
        )
        for rank in ranks:
            placed[rank] = future
    return placed


def _choose_workers(
    handle: ClusterHandle, n: int, cached: dict[str, int] | None = None
) -> list[str]:
    """``n`` distinct worker addresses, least busy first; rank 0 is the first.

    Among workers as busy, those already holding more of the cell's ``cached`` bytes first.
    The cluster was grown to ``n`` slots when it was connected (``driver.cluster.fit``).
    """
    # A cell that asked for bigger GPUs than the cluster started with: its ranks go to those.
    workers = wait_for_workers(handle, n, float(config.get("start-timeout", 60)), handle.fitting)
    # The scheduler's own count, not the workers' heartbeat metrics: those lag by a beat and
    # would show the worker that just ran the previous cell (and holds its values) as busy.
    processing = handle.client.processing()

    def load(addr: str) -> tuple[int, int, str]:
        busy = len(processing.get(addr, ()))
        return (busy, -(cached or {}).get(addr, 0), str(workers[addr].get("name")))

    return sorted(workers, key=load)[:n]


def submit(
    handle: ClusterHandle,
    job_id: str,
    message: Payload,
    spec: CellSpec,
    ranks: int = 1,
    attempt: int = 1,
    files: workdir_sync.FileSource | None = None,
    on_note: Callable[[int, str], None] | None = None,
) -> Job:
    """Submit one task per rank; first, the working folder's files its nodes lack (``files``:
    where their bytes come from), said in a note (``on_note``) when any were sent."""
    topic = _topic(handle)
    events: queue.Queue = queue.Queue()
    handle.topic_handlers[topic][job_id] = events
    client = handle.client
    spec = replace(spec, job=job_id, topic=topic, world_size=ranks)

    if (
        ranks == 1
        and message.nbytes <= _INLINE_BYTES
        and not message.cached_sizes()
        and handle.fitting is None
        and not (spec.workdir is not None and spec.workdir.files)
    ):
        # The common case stays one scheduler round trip: any free slot will do.
        workers: list[str | None] = [None]
    else:
        workers = list(_choose_workers(handle, ranks, cache_plan.held_bytes(handle, message)))
    if spec.workdir is not None and files is not None:
        _push_workdir(handle, workers, spec, files, on_note)
    owner = (spec.cache or {}).get("owner")
    messages = cache_plan.plan(handle, message, workers, job_id, owner)
    arguments = _place(client, messages, workers)
    if ranks > 1:
        master = workers[0]
        port = client.run(_runtime().free_port, workers=[master])[master]
        spec = replace(spec, master_addr=urlparse(master).hostname, master_port=port)

    futures = []
    hosts: dict[str, int] = {}
    for rank, worker in enumerate(workers):
        host = urlparse(worker).hostname if worker else ""
        local_rank = hosts.get(host, 0)
        hosts[host] = local_rank + 1
        future = client.submit(
            _runtime().run_cell,
            arguments[rank],
            replace(spec, rank=rank, local_rank=local_rank).to_wire(),
            key=f"burst-cell-{job_id}-a{attempt}-r{rank}",
            workers=[worker] if worker else None,
            allow_other_workers=False,
            pure=False,
        )
        future.add_done_callback(lambda _, r=rank: events.put(("done", r)))
        futures.append(future)
    return Job(id=job_id, handle=handle, futures=futures, events=events)


def _push_workdir(
    handle: ClusterHandle,
    workers: list[str | None],
    spec: CellSpec,
    files: workdir_sync.FileSource,
    on_note: Callable[[int, str], None] | None,
) -> None:
    """The working folder's files onto the nodes of ``workers``, before any rank starts."""
    pushed = workdir_sync.push(handle, [w for w in workers if w], spec.workdir, files)
    if pushed.files and on_note is not None:
        on_note(0, pushed.line(handle.name))


def follow(
    job: Job, on_events: OnEvents, timeout_minutes: float | None
) -> tuple[list[Payload], RankFailure | None]:
    """Render output as it arrives until every rank ended; their results, rank by rank.

    On the first failing rank the others are stopped and the failure is returned with the
    results gathered so far. Raises JobInterrupted on Ctrl-C, JobTimeout past ``timeout``,
    BudgetExceeded before the job's cost passes its ``budget=`` and JobCancelled when a
    cancel is requested through the ledger (all after stopping the remote work; the budget
    first asks the cell to checkpoint, see :class:`BudgetStop`).
    """
    deadline = None if timeout_minutes is None else job.started + timeout_minutes * 60
    results: dict[int, Payload] = {}
    pending = set(range(job.world_size))
    watch = BudgetStop.of(job)
    cancel = CancelWatch.of(job)
    try:
        while pending:
            cancel.check(on_events)
            if watch is not None:
                watch.check(on_events)
            wait = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
            try:
                kind, item = job.events.get(timeout=wait)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    stop(job, on_events)
                    raise JobTimeout(
                        f"the cell ran past timeout={timeout_minutes:g} min and was stopped; "
                        "raise timeout= if it needs longer"
                    ) from None
                continue
            if kind == "events":
                _deliver(job, item, on_events)
                rank = item.get("rank", 0)
                if rank not in job.carried or rank not in pending:
                    continue
                # Its result came with its last output: no need to wait for Dask's notice.
            elif kind == "cancel":
                stop(job, on_events)
                raise JobCancelled(f"cancelled{item}: the remote work was stopped")
            else:
                rank = item
                if rank not in pending:
                    continue  # its result came with its output, moments before this notice
            pending.discard(rank)
            job.timeline.mark(f"done {rank}")
            try:
                results[rank] = _rank_result(job, rank, on_events)
            except WorkerLost as lost:
                failure = RankFailure(rank, lost=lost)
            else:
                job.timeline.mark(f"{'carried' if rank in job.carried else 'fetched'} {rank}")
                _deliver_usage(rank, results[rank], on_events)
                if not _failed(results[rank]):
                    continue
                unjoined = _could_not_join(results[rank])
                if unjoined is not None:
                    failure = RankFailure(rank, lost=unjoined)
                else:
                    failure = RankFailure(rank, payload=results[rank])
            lost = failure if failure.lost is not None else None
            if pending:
                stop(job, on_events, ranks=sorted(pending))
                # A peer fails moments after the rank that caused it (its collective breaks);
                # read every rank that ended, so the earliest failure is the one reported.
                for other in sorted(pending):
                    ended = job.futures[other].status in ("finished", "error")
                    if not ended and other not in job.carried:
                        continue
                    try:
                        results[other] = _rank_result(job, other, on_events)
                    except WorkerLost as exc:
                        lost = lost or RankFailure(other, lost=exc)
                    else:
                        _deliver_usage(other, results[other], on_events)
            # A lost worker explains its peers' errors (a broken collective, our own stop):
            # it is the failure, and one that a rerun from the checkpoint may get past.
            if lost is not None:
                return [results.get(r) for r in range(job.world_size)], lost
            return [results.get(r) for r in range(job.world_size)], _earliest(failure, results)
        if watch is not None:
            watch.ended_by_itself(on_events)
        return [results[r] for r in range(job.world_size)], None
    except KeyboardInterrupt:
        stop(job, on_events)
        raise JobInterrupted("interrupted: the remote work was stopped") from None
    finally:
        if watch is not None:
            watch.record()
        job.handle.topic_handlers.get(f"burst-output-{job.handle.client.id}", {}).pop(job.id, None)


_CANCEL_CHECK_SECONDS = 0.5
CANCELLED_FROM_LAB = "cancelled from JupyterLab: the remote work was stopped"


class CancelWatch:
    """A cancel request recorded in the ledger for the job, read from :func:`follow`.

    The kernel is busy running the cell, so the sidebar's Cancel (and the cell's own Cancel
    button, which the browser sends to the server) cannot reach it: the server records the
    request (:meth:`~jupyter_burst.store.ledger.Ledger.request_cancel`) and this reads it at most
    every half second, so that it is acted on within about a second.
    """

    def __init__(self, job: Job, ledger: Ledger):
        self.job = job
        self.ledger = ledger
        self._next_check = 0.0

    @classmethod
    def of(cls, job: Job) -> CancelWatch:
        return cls(job, shared_ledger(job.handle.state_dir))

    def requested(self) -> bool:
        try:
            return self.ledger.cancel_requested(self.job.id) is not None
        except sqlite3.Error:
            return False  # a ledger busy past its timeout: read again at the next check

    def check(self, on_events: OnEvents) -> None:
        """Stop the job and raise JobCancelled if a cancel was requested."""
        clock = time.monotonic()
        if clock < self._next_check:
            return
        self._next_check = clock + _CANCEL_CHECK_SECONDS
        if self.requested():
            stop(self.job, on_events)
            drain(self.job, self.job.received, on_events)
            raise JobCancelled(CANCELLED_FROM_LAB)


_BUDGET_CHECK_SECONDS = 1.0
# Stopping takes the interrupt's grace, then up to this long to replace a stuck worker.
_STOP_SECONDS = 5.0


class BudgetStop:
    """A job's ``budget=``, checked from :func:`follow` about once a second.

    The job's cost so far is read from the ledger (the node time its run overlapped, at the
    prices in force when the nodes started), the rate from the nodes of its cluster.
    :class:`jupyter_burst.store.budget.JobBudget` decides; here it is acted on: the cell is asked
    to checkpoint as a spot notice would ask it (its ``on_preempt`` callbacks run,
    ``burst.preempting`` turns True), then, after its grace, stopped. A cell that ends by
    itself within its grace brings its results back as usual.
    """

    def __init__(self, job: Job, amount: Decimal, ledger: Any):
        self.job = job
        self.ledger = ledger
        self.policy = budget.JobBudget(
            amount,
            grace=float(config.get("budget.grace", 30)),
            interval=_BUDGET_CHECK_SECONDS,
            stopping=float(config.get("interrupt-grace", 1)) + _STOP_SECONDS,
        )
        self._next_check = 0.0

    @classmethod
    def of(cls, job: Job) -> BudgetStop | None:
        """The job's budget, from its options in the ledger; None without one."""
        ledger = shared_ledger(job.handle.state_dir)
        row = ledger.job(job.id)
        if row is None:
            return None
        if row["cluster_id"] != job.handle.id:
            ledger.job_ran_on(job.id, job.handle.id)  # a rerun on a new cluster: its cost too
        amount = json.loads(row["options"] or "{}").get("budget")
        if amount is None:
            return None
        return cls(job, Decimal(str(amount)), ledger)

    @property
    def asked(self) -> bool:
        return self.policy.asked_at is not None

    def spend(self, now: float) -> tuple[Decimal, Decimal]:
        """The job's cost so far, and the $/hour of its cluster's running nodes."""
        row = self.ledger.job(self.job.id)
        ran_on = self.ledger.job_clusters([self.job.id])[self.job.id] | {self.job.handle.id}
        nodes = self.ledger.nodes(cluster_ids=ran_on)
        current = [n for n in nodes if n["cluster_id"] == self.job.handle.id]
        return cost.job_cost(row, nodes, now), cost.running_rate(current).total

    def check(self, on_events: OnEvents) -> None:
        clock = time.monotonic()
        if clock < self._next_check:
            return
        self._next_check = clock + _BUDGET_CHECK_SECONDS
        try:
            spent, rate = self.spend(time.time())
        except Exception:
            stop(self.job, on_events)  # a budget that cannot be read must not run on unwatched
            raise
        action = self.policy.decide(spent, rate, clock)
        if action == budget.ASK:
            try:
                self.job.handle.client.run(
                    _runtime().ask_to_checkpoint,
                    self.job.id,
                    self.policy.notice(spent, rate),
                    on_error="return",
                )
            except Exception:
                pass  # unreachable workers: the job is still stopped when its grace is over
        elif action == budget.STOP:
            self.stop_now(on_events)

    def stop_now(self, on_events: OnEvents) -> NoReturn:
        stop(self.job, on_events)
        drain(self.job, self.job.received, on_events)
        spent, _ = self.spend(time.time())
        saved = self.ledger.checkpoints(self.job.id)
        self.record()
        raise BudgetExceeded(
            self.policy.stopped(
                spent, self.job.id, saved[-1]["step"] if saved else None, saved=bool(saved)
            )
        )

    def ended_by_itself(self, on_events: OnEvents) -> None:
        """The cell ended within its grace after it was asked to save its work."""
        if not self.asked:
            return
        spent, _ = self.spend(time.time())
        on_events(
            0,
            [
                [
                    "stderr",
                    f"burst: the cell ended by itself at {budget.usd(spent)} of its budget="
                    f"{budget.usd(self.policy.budget)}, after it was asked to save its work\n",
                ]
            ],
        )

    def record(self) -> None:
        """The ledger says the job was ended for its budget (once it was asked to stop)."""
        if self.asked:
            self.ledger.job_stop_reason(self.job.id, "budget")


@dataclass
class Outcome:
    """How a job ended: each rank's result (None where a rank was stopped) and the failure."""

    job: Job
    payloads: list[Payload | None]
    failure: RankFailure | None
    attempts: int


def run_attempts(
    connect: Callable[[int], ClusterHandle],
    job_id: str,
    message: Payload,
    spec: CellSpec,
    *,
    ranks: int,
    retries: int,
    timeout_minutes: float | None,
    on_events: OnEvents,
    on_note: Callable[[int, str], None],
    on_job: Callable[[Job], None] | None = None,
    files: workdir_sync.FileSource | None = None,
    timeline: Timeline | None = None,
) -> Outcome:
    """Run the job, and run it again (up to ``retries`` times) when a worker of it is lost.

    A lost worker is not the cell's fault: every rank starts again (the survivors would
    wait forever in a collective for the rank that is gone) and ``burst.restore()`` hands
    the cell its latest checkpoint. An error the cell raises is never retried.
    ``connect(attempt)`` gives the cluster for each attempt: a new one if the last is gone.
    ``files``: where the working folder's bytes come from, for the nodes of each attempt
    that lack some (:mod:`jupyter_burst.driver.workdir_sync`). ``timeline``: where the
    moments of each attempt are marked (submitted, each rank done and fetched).
    """
    attempts = retries + 1
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        job = submit(
            connect(attempt),
            job_id,
            message,
            spec,
            ranks=ranks,
            attempt=attempt,
            files=files,
            on_note=on_note,
        )
        job.started = started  # timeout= counts from the first attempt
        if timeline is not None:
            job.timeline = timeline
        job.timeline.mark("submitted")
        job.timeline.tasks = [future.key for future in job.futures]
        if on_job is not None:
            on_job(job)
        payloads, failure = follow(job, on_events, timeout_minutes)
        cache_plan.learn(job.handle, payloads)
        if failure is None or failure.lost is None or attempt == attempts:
            break
        if CancelWatch.of(job).requested():
            raise JobCancelled("cancelled from JupyterLab before its next attempt")
        on_note(
            failure.rank,
            f"burst: {lost_rank(failure, ranks)}; running the cell again from its latest "
            f"checkpoint (attempt {attempt + 1} of {attempts})",
        )
    drain(job, sum(event_count(p) for p in payloads if p is not None), on_events)
    job.timeline.mark("drained")
    if failure is not None and failure.lost is not None:
        if attempts > 1:
            text = (
                f"{lost_rank(failure, ranks)}, on each of {attempts} attempts; stopped after "
                f"retries={retries}. A cell that kills its worker every time (os._exit, a crash, "
                "running out of memory) needs a fix, not more retries"
            )
        else:
            text = lost_rank(failure, ranks) + (
                "; the other ranks were stopped" if ranks > 1 else ""
            )
        failure = RankFailure(failure.rank, lost=WorkerLost(text))
    return Outcome(job=job, payloads=payloads, failure=failure, attempts=attempt)


def lost_rank(failure: RankFailure, world_size: int) -> str:
    """What was lost, without the ``burst:`` prefix; with the rank when there are several."""
    reason = str(failure.lost.args[0] if failure.lost else "").removeprefix("burst: ")
    return f"rank {failure.rank} of {world_size}: {reason}" if world_size > 1 else reason


def _failed(payload: Payload) -> bool:
    return payload.result_meta().failed


def _could_not_join(payload: Payload) -> WorkerLost | None:
    """A rank that failed to join its peers before the cell ran: the cluster's fault, not the
    cell's (a peer's worker was being replaced), so it is retried like a lost worker."""
    reason = payload.result_meta().could_not_join
    return None if reason is None else WorkerLost(f"it could not join its peers ({reason})")


def _earliest(first_seen: RankFailure, results: dict[int, Payload]) -> RankFailure:
    """Of the ranks that raised, the one that raised first: the others mostly fail because of it."""
    best, best_time = first_seen, float("inf")
    if first_seen.payload is not None:
        best_time = _failed_at(first_seen.payload)
    for rank, payload in results.items():
        if payload is None:
            continue
        if payload.result_meta().failed and _failed_at(payload) < best_time:
            best, best_time = RankFailure(rank, payload=payload), _failed_at(payload)
    return best


def _failed_at(payload: Payload) -> float:
    at = payload.result_meta().failed_at
    return float("inf") if at is None else at


def drain(job: Job, expected: int, on_events: OnEvents) -> None:
    """Render the output batches still in flight after the results arrived."""
    _deliver_until(job, lambda: job.received >= expected, _EVENTS_GRACE_SECONDS, on_events)
    while True:  # anything already queued
        try:
            kind, item = job.events.get_nowait()
        except queue.Empty:
            return
        if kind == "events":
            _deliver(job, item, on_events)


def _deliver_usage(rank: int, payload: Payload, on_events: OnEvents) -> None:
    """The rank's slot at its end, which its result carries, as the usage event it was."""
    sample = payload.result_meta().usage
    if sample is not None:
        on_events(rank, [["usage", sample]])


def _deliver(job: Job, message: dict, on_events: OnEvents) -> None:
    rank = message.get("rank", 0)
    result = message.get("result")
    if (
        result is not None
        and rank < job.world_size
        and message.get("task") == job.futures[rank].key
    ):
        job.carried[rank] = payload_from_event(result)
    if message["events"]:
        job.received += 1
        on_events(rank, message["events"])


def _rank_result(job: Job, rank: int, on_events: OnEvents) -> Payload:
    """The rank's result: carried by its last output batch, or fetched from its worker."""
    if rank in job.carried:
        return job.carried[rank]
    result = _result(job.futures[rank])
    if not isinstance(result, SentWithOutput):
        return result
    # Its output batch is ahead of Dask's notice on the same streams: only a notice read out
    # of turn (a peer's failure reads every ended rank) gets here before it.
    _deliver_until(job, lambda: rank in job.carried, _EVENTS_GRACE_SECONDS, on_events)
    if rank not in job.carried:
        raise WorkerLost("its result, sent with its last output, did not arrive")
    return job.carried[rank]


def _result(future) -> Payload:
    if future.status == "error":
        exc = future.exception()
        if isinstance(exc, CacheMiss):
            # Promised by the worker moments before (see cache_plan.plan): it restarted.
            raise WorkerLost(f"the worker running the cell restarted before it began ({exc})")
        if not _is_lost_worker(exc):
            raise exc  # a bug in jupyter-burst's own worker code: keep its traceback
        raise WorkerLost(
            f"the worker running the cell was lost ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "the cell did not finish"
        )
    if future.status == "cancelled":
        # distributed keeps why (FutureCancelledError.reason) on the future's private state.
        why = getattr(getattr(getattr(future, "_state", None), "exception", None), "reason", None)
        if why == "scheduler-connection-lost":
            raise WorkerLost(
                "the cluster's scheduler was lost mid-cell (its head node stopped or cannot "
                "be reached); the cell did not finish"
            )
        raise WorkerLost(
            "the cell's task was cancelled on the cluster (the cluster may have stopped)"
        )
    result = future.result()
    future.release()
    return result


def _is_lost_worker(exc: BaseException) -> bool:
    from distributed.scheduler import KilledWorker

    return isinstance(exc, KilledWorker) or "worker" in type(exc).__name__.lower()


def stop(job: Job, on_events: OnEvents, ranks: list[int] | None = None) -> None:
    """Stop the remote work of ``ranks`` (all by default): interrupt, then end stuck workers."""
    client = job.handle.client
    ranks = list(range(job.world_size)) if ranks is None else ranks
    futures = [job.futures[r] for r in ranks]
    grace = float(config.get("interrupt-grace", 1))
    running_on: list[str] = []
    try:
        # Every slot is asked; those running the job answer True.
        answers = client.run(_runtime().interrupt_job, job.id, wait=True, on_error="return")
        running_on = [addr for addr, hit in answers.items() if hit is True]
    except Exception:
        pass
    _wait_done(job, futures, grace, on_events)
    if not all(f.done() for f in futures) and running_on:
        # Stuck in C code (time.sleep, a blocking read, a collective waiting for a dead
        # peer): only ending the process stops it. Its nanny starts a fresh one for the slot.
        try:
            client.run(_runtime().exit_worker, workers=running_on, wait=False)
        except Exception:
            pass
        _wait_done(job, futures, 5, on_events)
        # A worker told to exit may take a moment under load; until it has left, the next
        # cell could be given it and lose a rank mid-start (gloo: "connection closed").
        _wait_gone(job.handle, running_on, _STOP_SECONDS * 2)
    for future in futures:
        if future.done():
            continue  # its result (an error, mostly) is still worth reading
        try:
            future.cancel()
        except Exception:
            pass


def _wait_gone(handle: ClusterHandle, addresses: list[str], seconds: float) -> None:
    """Until none of ``addresses`` is among the cluster's workers (or ``seconds`` passed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if not set(handle.workers()) & set(addresses):
                return
        except Exception:
            return  # a cluster that does not answer: the next cell finds out for itself
        time.sleep(0.05)


def _wait_done(job: Job, futures: list, seconds: float, on_events: OnEvents) -> None:
    _deliver_until(job, lambda: all(f.done() for f in futures), seconds, on_events)


def _deliver_until(job: Job, done: Callable[[], bool], seconds: float, on_events: OnEvents) -> None:
    """Render the job's output batches as they arrive until ``done()`` or ``seconds`` pass;
    the other notices read meanwhile (a rank done, a cancel) are queued again, in order."""
    deadline = time.monotonic() + seconds
    held = []
    while not done() and time.monotonic() < deadline:
        try:
            kind, item = job.events.get(timeout=0.05)
        except queue.Empty:
            continue
        if kind == "events":
            _deliver(job, item, on_events)
        else:
            held.append((kind, item))
    for entry in held:
        job.events.put(entry)
