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
from collections.abc import Callable

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
# Two looks in a row: a task the scheduler takes back and gives out again in one moment
# (it does, for a key submitted anew) is not mistaken for one nobody wants.
_LOOKS = 2
# A cell gets this long to unwind from the interrupt before its process is ended.
GRACE_SECONDS = 5.0
EXIT_CODE = 76


def watch(job: str, interrupt: Callable[[], bool]) -> Callable[[], None]:
    """Watch the task running this cell from here on; the returned function ends the watch.

    ``interrupt`` raises KeyboardInterrupt in the cell's thread. Outside a Dask worker
    (a test calling the runtime directly) there is nothing to watch.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
        key = worker.get_current_task()
    except (ValueError, AttributeError):
        return lambda: None
    if key is None:
        return lambda: None
    done = threading.Event()

    def wanted() -> bool:
        task = worker.state.tasks.get(key)
        return task is not None and task.state != "cancelled"

    def run() -> None:
        unwanted = 0
        while not done.wait(CHECK_SECONDS):
            unwanted = 0 if wanted() else unwanted + 1
            if unwanted < _LOOKS:
                continue
            log.warning(
                "burst: job %s: nobody waits for this cell any more (its kernel stopped or "
                "lost its connection): interrupting it",
                job,
            )
            interrupt()
            if not done.wait(GRACE_SECONDS):
                log.warning("burst: job %s did not stop when interrupted: ending its worker", job)
                sys.stderr.flush()
                os._exit(EXIT_CODE)
            return

    thread = threading.Thread(target=run, name=f"burst-orphan-watch-{job}", daemon=True)
    thread.start()

    def stop_watching() -> None:
        done.set()
        if thread is not threading.current_thread():
            thread.join()

    return stop_watching
