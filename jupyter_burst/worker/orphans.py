"""A cell that nobody waits for any more stops, on the worker, by itself.

The kernel that sent a cell may go mid-cell: killed, its laptop closed, its network cut.
The scheduler then drops that client (at once for a closed connection; after the TCP
keep-alive of ``distributed.comm.timeouts.tcp`` for a silent one) and releases the cell's
task. Dask cannot stop a task that is running: the worker would go on computing for
nobody, holding its GPU, while the scheduler, with nothing left to run, counts the cluster
idle, so that the idle watchdog would end the machine under the cell anyway. Instead the
cell is interrupted as soon as its task is released, as a Ctrl-C in the notebook would
(its checkpoints so far are kept), and a cell stuck in C code ends with its worker
process, which the nanny starts anew. The cluster then idles away as usual.

A cell of ``%%burst async`` belongs to the head node's own client, which lives as long as
the cluster, so the same rule never stops it while its cluster runs.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
# Two looks in a row: a task the scheduler takes back and gives out again in one moment
# (it does, for a key submitted anew) is not mistaken for one nobody wants.
_LOOKS = 2
# A cell gets this long to unwind from the interrupt before its process is ended.
GRACE_SECONDS = 5.0
EXIT_CODE = 76


@dataclass
class _Watched:
    worker: Any
    key: Any
    interrupt: Callable[[], bool]
    unwanted: int = 0
    interrupted_at: float | None = None

    def wanted(self) -> bool:
        task = self.worker.state.tasks.get(self.key)
        return task is not None and task.state != "cancelled"


# One thread per worker process looks at every running cell: a cell costs a dict entry,
# not a thread of its own.
_watched: dict[str, _Watched] = {}
_lock = threading.Lock()
_thread: threading.Thread | None = None


def watch(job: str, interrupt: Callable[[], bool]) -> Callable[[], None]:
    """Watch the task running this cell from here on; the returned function ends the watch.

    ``interrupt`` raises KeyboardInterrupt in the cell's thread. Outside a Dask worker
    (a test calling the runtime directly) there is nothing to watch.
    """
    global _thread
    try:
        from distributed import get_worker

        worker = get_worker()
        key = worker.get_current_task()
    except (ValueError, AttributeError):
        return lambda: None
    if key is None:
        return lambda: None
    with _lock:
        _watched[job] = _Watched(worker, key, interrupt)
        if _thread is None:
            _thread = threading.Thread(target=_run, name="burst-orphan-watch", daemon=True)
            _thread.start()
    return lambda: _forget(job)


def _forget(job: str) -> None:
    with _lock:
        _watched.pop(job, None)


def _run() -> None:
    while True:
        time.sleep(CHECK_SECONDS)
        with _lock:
            watched = list(_watched.items())
        for job, cell in watched:
            try:
                _look(job, cell, time.monotonic())
            except Exception:  # a worker closing under us: the next look, or none, decides
                log.exception("burst: could not look at job %s", job)


def _look(job: str, cell: _Watched, now: float) -> None:
    if cell.interrupted_at is not None:
        with _lock:
            still_running = _watched.get(job) is cell
        if still_running and now - cell.interrupted_at >= GRACE_SECONDS:
            log.warning("burst: job %s did not stop when interrupted: ending its worker", job)
            sys.stderr.flush()
            os._exit(EXIT_CODE)
        return
    cell.unwanted = 0 if cell.wanted() else cell.unwanted + 1
    if cell.unwanted >= _LOOKS:
        log.warning(
            "burst: job %s: nobody waits for this cell any more (its kernel stopped or lost "
            "its connection): interrupting it",
            job,
        )
        cell.interrupted_at = now
        cell.interrupt()
