"""A Dask preload of every slot's worker process: the cell runtime's imports start at once.

The first cell's task names :func:`jupyter_burst.worker.runtime.run_cell`, and a fresh worker
process would import that module (IPython, the wire format, the helper: about 80 ms here)
only when the task arrives, after the cluster's start. Started on a thread as the worker
starts, the imports overlap its registration with the scheduler and the kernel's submit; a
task that comes sooner waits on the import lock for what is left, as it would have.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any


def dask_setup(worker: Any) -> None:
    threading.Thread(target=_import_runtime, name="burst-warm-up", daemon=True).start()


def _import_runtime() -> None:
    try:
        importlib.import_module("jupyter_burst.worker.runtime")
    except Exception:
        pass  # the task's own import says what is wrong, in the cell
