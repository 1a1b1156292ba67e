"""One cell's run on a cluster: submit it to a worker, stream its output, wait, stop it on demand.

The kernel's main thread does the waiting (so Ctrl-C / the stop button lands here) and
renders output itself; the Dask client's thread only queues what arrives.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jupyter_burst import config, runtime
from jupyter_burst.clusters import ClusterHandle, wait_for_workers
from jupyter_burst.errors import JobInterrupted, JobTimeout, WorkerLost
from jupyter_burst.payload import Payload

# Below this a payload rides inside the task message; above it, it goes straight to the
# worker first (scatter), never through the scheduler.
_INLINE_BYTES = 1 << 20
_DONE = object()
_EVENTS_GRACE_SECONDS = 2.0


@dataclass
class Job:
    id: str
    handle: ClusterHandle
    future: Any
    events: queue.Queue
    started: float = field(default_factory=time.monotonic)
    received: int = 0


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


def _topic(handle: ClusterHandle) -> str:
    """One output topic per kernel and cluster; events carry their job id."""
    topic = f"burst-output-{handle.client.id}"
    if topic not in handle.topic_handlers:
        routes: dict[str, queue.Queue] = {}

        def route(event: tuple[float, dict]) -> None:
            _, message = event
            target = routes.get(message.get("job"))
            if target is not None:
                target.put(message)

        handle.client.subscribe_topic(topic, route)
        handle.topic_handlers[topic] = routes
    return topic


def _pick_worker(handle: ClusterHandle) -> tuple[str, str]:
    """(address, name) of the slot to run on; the name outlives a restart of the slot's process."""
    workers = wait_for_workers(handle, 1, float(config.get("start-timeout", 60)))

    def load(addr: str) -> tuple[int, str]:
        counts = workers[addr].get("metrics", {}).get("task_counts", {})
        return (counts.get("executing", 0) + counts.get("ready", 0), str(workers[addr].get("name")))

    address = min(workers, key=load)
    return address, str(workers[address].get("name", address))


def submit(handle: ClusterHandle, job_id: str, message: Payload, spec: dict[str, Any]) -> Job:
    topic = _topic(handle)
    events: queue.Queue = queue.Queue()
    handle.topic_handlers[topic][job_id] = events
    spec = dict(spec, job=job_id, topic=topic)
    client = handle.client
    argument: Any = message
    restrictions = None
    if message.nbytes > _INLINE_BYTES:
        # Big values go straight to one worker, and the cell runs where they are.
        worker, _ = _pick_worker(handle)
        argument = client.scatter(message, workers=[worker], direct=True, hash=False)
        restrictions = [worker]
    future = client.submit(
        runtime.run_cell,
        argument,
        spec,
        key=f"burst-cell-{job_id}",
        workers=restrictions,
        allow_other_workers=False,
        pure=False,
    )
    future.add_done_callback(lambda _: events.put(_DONE))
    return Job(id=job_id, handle=handle, future=future, events=events)


def follow(job: Job, on_events: Callable[[list], None], timeout_minutes: float | None) -> Payload:
    """Render output as it arrives until the job ends; return its result payload.

    Raises JobInterrupted on Ctrl-C and JobTimeout past ``timeout`` (both after stopping the
    remote work), and WorkerLost if the worker died.
    """
    deadline = None if timeout_minutes is None else job.started + timeout_minutes * 60
    try:
        while True:
            wait = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
            try:
                item = job.events.get(timeout=wait)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    stop(job, on_events)
                    raise JobTimeout(
                        f"the cell ran past timeout={timeout_minutes:g} min and was stopped; "
                        "raise timeout= if it needs longer"
                    ) from None
                continue
            if item is _DONE:
                break
            _deliver(job, item, on_events)
        result = _result(job)
        return result
    except KeyboardInterrupt:
        stop(job, on_events)
        raise JobInterrupted("interrupted: the remote work was stopped") from None
    finally:
        job.handle.topic_handlers.get(f"burst-output-{job.handle.client.id}", {}).pop(job.id, None)


def drain(job: Job, expected: int, on_events: Callable[[list], None]) -> None:
    """Render the output batches still in flight after the result arrived."""
    deadline = time.monotonic() + _EVENTS_GRACE_SECONDS
    while job.received < expected and time.monotonic() < deadline:
        try:
            item = job.events.get(timeout=0.05)
        except queue.Empty:
            continue
        if item is not _DONE:
            _deliver(job, item, on_events)
    while True:  # anything already queued
        try:
            item = job.events.get_nowait()
        except queue.Empty:
            return
        if item is not _DONE:
            _deliver(job, item, on_events)


def _deliver(job: Job, message: dict, on_events: Callable[[list], None]) -> None:
    job.received += 1
    on_events(message["events"])


def _result(job: Job) -> Payload:
    future = job.future
    if future.status == "error":
        exc = future.exception()
        if not _is_lost_worker(exc):
            raise exc  # a bug in jupyter-burst's own worker code: keep its traceback
        raise WorkerLost(
            f"the worker running the cell was lost ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "the cell did not finish (automatic resume arrives with issue #4)"
        )
    if future.status == "cancelled":
        raise WorkerLost(
            "the cell's task was cancelled on the cluster (the cluster may have stopped)"
        )
    result = future.result()
    future.release()
    return result


def _is_lost_worker(exc: BaseException) -> bool:
    from distributed.scheduler import KilledWorker

    return isinstance(exc, KilledWorker) or "worker" in type(exc).__name__.lower()


def stop(job: Job, on_events: Callable[[list], None]) -> None:
    """Stop the remote work: interrupt the cell's thread, and restart its worker if it won't stop."""
    client = job.handle.client
    grace = float(config.get("interrupt-grace", 2))
    running_on: list[str] = []
    try:
        # Every slot is asked; the one running the job answers True.
        answers = client.run(runtime.interrupt_job, job.id, wait=True, on_error="return")
        running_on = [addr for addr, hit in answers.items() if hit is True]
    except Exception:
        pass
    deadline = time.monotonic() + grace
    while not job.future.done() and time.monotonic() < deadline:
        try:
            item = job.events.get(timeout=0.05)
        except queue.Empty:
            continue
        if item is not _DONE:
            _deliver(job, item, on_events)
    if not job.future.done():
        # Stuck in C code (time.sleep, a blocking read): only ending the process stops it.
        # Its nanny starts a fresh one for the slot; the next cell waits for it.
        try:
            if running_on:
                client.run(runtime.exit_worker, workers=running_on, wait=False)
        except Exception:
            pass
        deadline = time.monotonic() + 5
        while not job.future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
    try:
        job.future.cancel()
    except Exception:
        pass
