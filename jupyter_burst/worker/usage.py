"""What one slot's worker process is using now: its CPU and memory, its machine's, and its
GPU's utilisation and memory (NVML) where the slot has one.

Sampled by the cluster itself: each worker's heartbeat to its scheduler carries a sample
(a Dask worker metric, :func:`metric`), so one question to the head answers for every
machine; a running job's ranks also send one every :data:`RECORD_SECONDS` with their output,
which the ledger keeps for the job after it ends.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import psutil

from jupyter_burst import gpus

RECORD_SECONDS = 30.0  # a finished job's history: coarse, a few rows an hour per rank

_lock = threading.Lock()
_process: psutil.Process | None = None


def sample() -> dict[str, Any]:
    """This slot now. ``device`` is ``cuda:N`` or ``cpu`` (a CPU slot: no GPU row)."""
    global _process
    device = os.environ.get("JUPYTER_BURST_DEVICE", "cpu")
    with _lock:
        # cpu_percent() measures since the previous call on the same object: keep it.
        if _process is None or _process.pid != os.getpid():
            _process = psutil.Process()
        process = _process
        cpu = process.cpu_percent(None)
        rss = process.memory_info().rss
    memory = psutil.virtual_memory()
    out: dict[str, Any] = {
        "device": device,
        "host": socket.gethostname(),
        "cpu_percent": cpu,
        "rss": rss,
        "host_cpu_percent": psutil.cpu_percent(None),
        "host_memory_used": memory.total - memory.available,
        "host_memory_total": memory.total,
        "gpu": None,
    }
    if device.startswith("cuda"):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        found = gpus.use(visible or device.split(":", 1)[1])
        if found is not None:
            out["gpu"] = found._asdict()
    return out


def metric(worker: Any) -> dict[str, Any]:
    """The Dask worker metric (``Worker(metrics=...)``): a sample with every heartbeat."""
    return sample()
