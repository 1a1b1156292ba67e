"""A worker node: one Dask worker process per GPU, joined to the head node's scheduler.

Once its workers have joined, it reports to the head (``burst_node_joined``): its workers,
their devices, and, with ``--extra``, that it was added to fit a cell. It needs neither the
kernel nor the head to switch itself off: it stops when the head says so (the cluster went
idle, or, for an added node, the node itself was idle for the cluster's idle time: the head
sees every task, so it judges), when the scheduler has not answered for ``--unreachable``
minutes (the head is gone), or at its maximum lifetime.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pathlib
import time

from jupyter_burst import gpus
from jupyter_burst.node.idle import LifetimePolicy, ReachabilityPolicy
from jupyter_burst.node.slots import slot_nannies
from jupyter_burst.wire.contract import Rpc

log = logging.getLogger("jupyter_burst.node")

_LOOK_SECONDS = 2.0


class WorkerNode:
    def __init__(self, args: argparse.Namespace, security=None):
        self.args = args
        self.security = security
        self.state_dir = pathlib.Path(args.state_dir)
        now = time.monotonic()
        self.reach = ReachabilityPolicy(args.unreachable * 60, now)
        self.lifetime = LifetimePolicy(args.max_lifetime * 60, now)
        self.stop_requested = asyncio.Event()
        self.stop_reason = "stopped"
        self.nannies: list = []

    async def start(self) -> None:
        devices = gpus.slot_devices(self.args.slots, gpus.cuda_device_count())
        self.nannies = slot_nannies(
            self.args, self.args.scheduler, devices, self.security, f"{self.args.node_name}-"
        )
        for nanny in self.nannies:
            nanny.handlers[Rpc.POWER_OFF] = self._told_to_stop
        await asyncio.gather(*(nanny.start() for nanny in self.nannies))
        log.info(
            "worker node %s joined %s with %s", self.args.node_name, self.args.scheduler, devices
        )
        await self.report(devices)

    async def report(self, devices: list[str]) -> None:
        """Tell the head this node's workers (and whether it is an addition) once they joined."""
        from distributed.core import rpc

        kwargs = self.security.get_connection_args("worker") if self.security else {}
        try:
            async with rpc(self.args.scheduler, connection_args=kwargs, timeout=30) as scheduler:
                await getattr(scheduler, Rpc.NODE_JOINED)(
                    node=self.args.node_name,
                    workers=[nanny.name for nanny in self.nannies],
                    devices=devices,
                    extra=bool(getattr(self.args, "extra", False)),
                    gpu_mem_gib=getattr(self.args, "gpu_mem", 0.0) or None,
                )
        except Exception as exc:  # the head still sees the workers; it just cannot tell them apart
            log.warning("could not report to the head: %s: %s", type(exc).__name__, exc)

    def _told_to_stop(self, reason: str = "the cluster stopped") -> str:
        self.stop(reason)
        return "OK"

    def stop(self, reason: str) -> None:
        if not self.stop_requested.is_set():
            self.stop_reason = reason
            self.stop_requested.set()

    async def reachable(self) -> bool:
        from distributed.comm import connect

        kwargs = self.security.get_connection_args("worker") if self.security else {}
        try:
            comm = await connect(self.args.scheduler, timeout=3, **kwargs)
        except (OSError, TimeoutError):
            return False
        await comm.close()
        return True

    async def watch(self) -> None:
        while not self.stop_requested.is_set():
            now = time.monotonic()
            if self.lifetime.expired(now):
                self.stop(f"reached its maximum lifetime of {self.args.max_lifetime:g} min")
                break
            if self.reach.observe(await self.reachable(), time.monotonic()):
                self.stop(f"its scheduler has not answered for {self.args.unreachable:g} min")
                break
            try:
                await asyncio.wait_for(self.stop_requested.wait(), _LOOK_SECONDS)
            except TimeoutError:
                pass

    async def close(self) -> None:
        log.info("stopping worker node %s: %s", self.args.node_name, self.stop_reason)
        await asyncio.gather(*(n.close(timeout=10) for n in self.nannies), return_exceptions=True)


def node_name(args: argparse.Namespace) -> str:
    """The node's name: given, or the machine's with this process's id (machines that share a
    host name, as in the tests' VM emulator, still give their workers names of their own)."""
    return args.node_name or f"{args.cluster}-{os.uname().nodename}-{os.getpid()}"
