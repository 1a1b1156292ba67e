"""A cluster machine's slots: one Dask worker process (under its nanny) per GPU, or per share
of the CPUs where there is none; the head's and every worker node's alike."""

from __future__ import annotations

import argparse
import os
from typing import Any

from distributed import Nanny
from distributed.worker import DEFAULT_METRICS

from jupyter_burst.worker import usage

# The scheduler's heartbeat from each worker carries its slot's use (bootstrap.py answers it
# to the sidebar): the cluster samples itself, the laptop asks once.
USAGE_METRIC = "burst_usage"
WARM_UP = "jupyter_burst.worker.warm_up"  # a preload: the cell runtime's imports, on a thread


def slot_environment(args: argparse.Namespace, i: int, device: str, devices: list[str]) -> dict:
    """The environment of slot ``i``'s worker process: its one GPU, or a share of the CPUs."""
    cpu_slots = max(1, sum(1 for d in devices if not d.startswith("cuda")))
    env = {
        "MPLBACKEND": "module://jupyter_burst.worker.mpl_backend",
        "JUPYTER_BURST_SLOT": str(i),
        "JUPYTER_BURST_DEVICE": device,
        "JUPYTER_BURST_CLUSTER": args.cluster,
        # lets tests (and `ps e`) tell which state folder a worker process belongs to
        "JUPYTER_BURST_STATE_DIR": str(args.state_dir),
    }
    if device.startswith("cuda"):
        env["CUDA_VISIBLE_DEVICES"] = device.split(":")[1]
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(max(1, (os.cpu_count() or 1) // cpu_slots))
    return env


def slot_nanny(
    args: argparse.Namespace,
    scheduler: str,
    i: int,
    device: str,
    devices: list[str],
    security,
    name_prefix: str,
) -> Any:
    """The nanny (and so the worker process) of slot ``i``: its one GPU, or a share of the CPUs."""
    return Nanny(
        scheduler,
        nthreads=1,
        host=args.host,
        name=f"{name_prefix}slot-{i}",
        env=slot_environment(args, i, device, devices),
        memory_limit=args.memory_limit,
        dashboard=False,
        dashboard_address=None,
        resources={"slot": 1},
        security=security,
        metrics={**DEFAULT_METRICS, USAGE_METRIC: usage.metric},
        preload=[WARM_UP],
    )


def slot_nannies(
    args: argparse.Namespace, scheduler: str, devices: list[str], security, name_prefix: str
) -> list:
    """One nanny (and so one worker process) per slot: one GPU each, or a share of the CPUs."""
    return [
        slot_nanny(args, scheduler, i, device, devices, security, name_prefix)
        for i, device in enumerate(devices)
    ]


def slot_index(name: str) -> int:
    """``slot-3`` (or ``NODE-slot-3``) -> 3."""
    return int(name.rsplit("-", 1)[1])
