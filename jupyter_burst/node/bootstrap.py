"""Bring up a head node: a Dask scheduler, one worker process per slot, and the idle watchdog.

Run as ``python -m jupyter_burst.node --cluster NAME --slots N --idle MINUTES --state-dir DIR``.
The process is the node: when the watchdog decides the cluster is idle, or it is told to
stop, it closes the workers and the scheduler and exits. It never needs the kernel.

The cluster grows to fit a cell (``burst_fit``): with ``--grow-here`` (the local provider)
the head starts more worker processes on its own machine; elsewhere the kernel adds worker
nodes through the provider, and they report to the head as they join (``burst_node_joined``).
Either way, what was added goes again after the cluster's idle time of its own idleness
(:class:`~jupyter_burst.node.idle.ExtrasPolicy`): a worker process is closed, a worker node
told to power off. The slots the cluster started with, and the head, go with the whole
cluster's idle watchdog, last.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import pathlib
import shutil
import signal
import socket
import time
import uuid
from typing import Any

import dask.config
import psutil

from jupyter_burst import gpus
from jupyter_burst.clusters import records
from jupyter_burst.clusters.start_phases import WORKERS, StartPhases
from jupyter_burst.clusters.tls import node_security
from jupyter_burst.node import dashboard
from jupyter_burst.node.idle import ExtrasPolicy, IdlePolicy, LifetimePolicy
from jupyter_burst.node.job_runner import BackgroundJobs
from jupyter_burst.node.power import power_off
from jupyter_burst.node.slots import USAGE_METRIC, slot_index, slot_nannies, slot_nanny
from jupyter_burst.node.worker_node import WorkerNode, node_name
from jupyter_burst.store import store_key
from jupyter_burst.store.ledger import open_ledger
from jupyter_burst.wire.contract import Rpc
from jupyter_burst.wire.prompt_streams import PromptStreams
from jupyter_burst.worker.node_packages import node_folder

log = logging.getLogger("jupyter_burst.node")

_CHECK_SECONDS = 1.0
# A worker of this node silent for this long is hung (a heartbeat is due every 0.5 s).
_SILENT_SECONDS = 15.0
_BUSY_STATES = frozenset({"processing", "queued", "no-worker", "waiting"})
# Tasks that wait for a slot: while any does, no slot the cluster grew by is idle.
_WAITING_STATES = frozenset({"queued", "no-worker"})
_RETIRE_AGAIN_SECONDS = 30.0  # a worker node told to power off and still here is told again

# Dask settings for our clusters: a lost worker fails the cell at once (a retry would run the
# cell twice behind the user's back), output batches are not hoarded by the scheduler, and
# loopback needs no compression.
NODE_DASK_CONFIG: dict[str, Any] = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.events-log-length": 200,
    "distributed.comm.compression": None,
    "distributed.worker.daemon": False,
    "distributed.admin.tick.limit": "30s",
    # A machine that vanishes without closing its connections, or a worker process that
    # hangs, is noticed by its missed heartbeats (checked every 15 s: within 30 s); its nanny
    # restarts a hung process, and the cell is rerun from its checkpoint.
    "distributed.scheduler.worker-ttl": "15s",
    # The scheduler and each worker also serve HTTP (Dask's info pages, call stacks,
    # metrics), with no authentication, on 127.0.0.1 for a local cluster: where another
    # user of the machine could read them. The health check is all that is served.
    "distributed.scheduler.http.routes": ["distributed.http.health"],
    "distributed.worker.http.routes": ["distributed.http.health"],
}


class HeadNode:
    def __init__(self, args: argparse.Namespace, security=None):
        self.args = args
        self.security = security
        self.state_dir = pathlib.Path(args.state_dir)
        self.cluster_id = args.cluster_id or f"{args.cluster}-{uuid.uuid4().hex[:8]}"
        self.node_id = f"{self.cluster_id}-head"
        self.policy = IdlePolicy(args.idle * 60, time.monotonic())
        self.lifetime = LifetimePolicy(args.max_lifetime * 60, time.monotonic())
        # What the cluster grew by: worker processes here (by worker name) and worker nodes
        # (by node name); the slots it started with are never among them.
        self.extras = ExtrasPolicy(args.idle * 60)
        self.added: dict[str, Any] = {}  # worker name -> the nanny of a slot added here
        self.nodes: dict[str, dict[str, Any]] = {}  # worker nodes, as they reported joining
        self.retired: dict[str, float] = {}  # worker node -> when it was told to power off
        self._grow_lock = asyncio.Lock()
        # (slots, gpu_mem, since): the kernel is adding worker nodes for that many slots in all
        self.expected: tuple[int, float | None, float] | None = None
        self.stop_requested = asyncio.Event()
        self.stop_reason = "stopped"
        self.scheduler = None
        self.nannies: list = []
        self._slot_devices: dict[int, str] = {}  # this machine's slots: index -> device
        self.ledger = open_ledger(self.state_dir)
        self.background: BackgroundJobs | None = None
        self._last_look = time.time()
        self.formed = False
        self.ready_at = time.monotonic()

    async def start(self) -> None:
        from distributed import Scheduler

        on_tls = self.security is not None and bool(self.args.tls_dir)
        with dask.config.set(dashboard.tls_config(self.args.tls_dir) if on_tls else {}):
            self.scheduler = Scheduler(
                host=self.args.host,
                port=self.args.port,
                dashboard=False,  # its pages are added when first asked for (node/dashboard.py)
                dashboard_address=None,
                security=self.security,
                protocol="tls" if self.security is not None else None,
            )
        if on_tls:
            dashboard.require_client_certificates(self.scheduler)
        self.dashboard = dashboard.Dashboard(self.scheduler, has_tls=on_tls)
        await self.scheduler
        self.scheduler.add_plugin(PromptStreams())
        self.scheduler.handlers[Rpc.SET_IDLE] = self._set_idle
        self.scheduler.handlers[Rpc.INFO] = self._info
        self.scheduler.handlers[Rpc.STOP] = self._stop
        self.scheduler.handlers[Rpc.FIT] = self._fit
        self.scheduler.handlers[Rpc.NODE_JOINED] = self._node_joined
        self.scheduler.handlers[Rpc.DASHBOARD] = self._dashboard

        devices = gpus.slot_devices(self.args.slots, gpus.cuda_device_count())
        self._slot_devices = dict(enumerate(devices))
        self.nannies = slot_nannies(
            self.args, self.scheduler.address, devices, self.security, name_prefix=""
        )
        await self._start_slots()
        # Idle counts from ready: a slow start (a loaded machine, a cold import) must not use
        # up the idle time before the kernel that asked for the cluster could send it anything.
        self.policy = IdlePolicy(self.args.idle * 60, time.monotonic())
        self.ready_at = time.monotonic()
        self.record = {
            "id": self.cluster_id,
            "name": self.args.cluster,
            "provider": self.args.provider,
            "scheduler": self.scheduler.address,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "slots": self.args.slots,
            "devices": devices,
            "idle": self.args.idle,
            "started": time.time(),
        }
        if self.args.tls_dir:  # this machine's folder of the cluster's TLS (a local kernel's)
            self.record["tls"] = str(pathlib.Path(self.args.tls_dir).resolve())
        self.ledger.cluster_started(
            self.cluster_id,
            self.args.cluster,
            self.args.provider,
            self.scheduler.address,
            self.args.slots,
            devices,
            self.args.idle,
        )
        self.ledger.node_started(
            self.node_id,
            self.cluster_id,
            self.args.provider,
            "head",
            self.args.slots,
            devices,
            os.getpid(),
            price_per_hour=self.args.price_per_hour,
        )
        self.background = BackgroundJobs(
            self.scheduler.address, self.record, self.state_dir, self.ledger, self.security
        )
        self.scheduler.handlers.update(self.background.handlers())
        records.write_record(self.state_dir, self.args.cluster, self.record)
        if self.args.announce:
            await asyncio.to_thread(announce, self.args.announce, self.record)
        log.info(
            "cluster %s ready at %s with %s", self.args.cluster, self.scheduler.address, devices
        )

    async def _start_slots(self) -> None:
        """Start this machine's worker processes; with ``--start-id`` (a local cluster, whose
        kernel shares this ledger), each one that joins is a step of the start's
        ``workers joined k/N`` (clusters/start_phases.py)."""
        if not self.args.start_id:
            await asyncio.gather(*(nanny.start() for nanny in self.nannies))
            return
        phases = StartPhases.resume(self.ledger, self.args.start_id)
        total = len(self.nannies)
        joined = 0
        phases.enter(WORKERS, done=0, total=total)

        async def start(nanny: Any) -> None:
            nonlocal joined
            await nanny.start()
            joined += 1
            await asyncio.to_thread(phases.enter, WORKERS, "", joined, total)

        await asyncio.gather(*(start(nanny) for nanny in self.nannies))

    # scheduler RPC handlers (called by kernels through client.scheduler.<name>) ---------

    async def _dashboard(self, prefix: str) -> dict:
        return await self.dashboard.open(prefix)

    def _set_idle(self, minutes: float) -> dict:
        self.policy.idle_seconds = float(minutes) * 60
        self.extras.idle_seconds = float(minutes) * 60
        self.record["idle"] = float(minutes)
        records.write_record(self.state_dir, self.args.cluster, self.record)
        self.ledger.cluster_idle_changed(self.cluster_id, float(minutes))
        return self._info()

    def _info(self) -> dict:
        now = time.monotonic()
        nodes = [n for name, n in self.nodes.items() if name not in self.retired]
        return {
            **self.record,
            "slots": self.cluster_slots(),
            "devices": [*self.record["devices"], *(d for n in nodes for d in n["devices"])],
            "started_slots": self.args.slots + sum(n["slots"] for n in nodes if not n["extra"]),
            # what the cluster grew by, and the seconds each has left before it goes
            "extras": {u: self.extras.remaining(u, now) for u in sorted(self.extras.last_busy)},
            "busy": self.busy(),
            "idle_remaining": self.policy.remaining(now),
            "workers": len(self.scheduler.workers),
            "usage": self._usage(),
        }

    def _usage(self) -> list[dict]:
        """Each worker's last heartbeat sample (worker/usage.py), with its name and whether
        it runs a task now: a GPU at rest while its slot is busy is the waste to show."""
        out = []
        for ws in self.scheduler.workers.values():
            sample = ws.metrics.get(USAGE_METRIC)
            if isinstance(sample, dict):
                out.append({**sample, "worker": str(ws.name), "busy": bool(ws.processing)})
        return sorted(out, key=lambda s: s["worker"])

    async def _fit(self, slots: int, gpu_mem: float | None = None, expect: bool = False) -> dict:
        """Make the cluster at least ``slots`` slots (of GPUs with ``gpu_mem`` GiB or more, when
        given), as far as this machine can; its info after.

        With ``--grow-here`` the missing slots are started here as worker processes (answered
        once they have joined); otherwise ``short`` says how many the kernel must add as
        worker nodes; ``expect``: the kernel is about to add them (the cluster is forming, not
        idle, until they join; asked again with ``slots=1`` when that failed). ``fitting``:
        the workers whose GPUs have ``gpu_mem`` (None when any slot fits). Either way a cell is
        on its way: every countdown starts again, so that nothing goes between this answer and
        the cell's arrival.
        """
        slots = int(slots)
        added = 0
        async with self._grow_lock:
            short = slots - self.slots_fitting(gpu_mem)
            if short > 0 and self.args.grow_here:
                if gpu_mem is not None:  # only this machine's free GPUs, if they are enough
                    used = sum(d != "cpu" for d in self._slot_devices.values())
                    free = gpus.cuda_device_count() - used
                    short = min(short, free) if self.args.gpu_mem >= gpu_mem else 0
                if short > 0:
                    added = await self._add_slots(short)
        now = time.monotonic()
        have = self.slots_fitting(gpu_mem)
        if expect:
            # Nodes the kernel adds take minutes to boot: the cluster is forming meanwhile,
            # not idle (until they have joined, or the forming timeout).
            self.expected = (slots, gpu_mem, now) if have < slots else None
        self.extras.touch(now)
        self.policy.observe(True, now)
        fitting = self.fitting(gpu_mem)
        return {
            **self._info(),
            "added": added,
            "have": have,
            "short": max(0, slots - have),
            "fitting": None if fitting is None else sorted(fitting),
        }

    def fitting(self, gpu_mem: float | None) -> set[str] | None:
        """The workers (by name) whose GPU has ``gpu_mem`` GiB or more; None: any slot fits."""
        if gpu_mem is None:
            return None
        names: set[str] = set()
        if self.args.gpu_mem >= gpu_mem:
            # This machine's GPU slots (where no GPU shows, as in the tests' VM emulator, the
            # memory it was launched with is taken at its word).
            seen = gpus.cuda_device_count() > 0
            names |= {n.name for n in self.nannies if self._device_of(n.name) != "cpu" or not seen}
        present = {ws.name for ws in self.scheduler.workers.values()}
        for node, info in self.nodes.items():
            if node not in self.retired and (info["gpu_mem_gib"] or 0) >= gpu_mem:
                names |= present & set(info["workers"])
        return names

    def slots_fitting(self, gpu_mem: float | None) -> int:
        fitting = self.fitting(gpu_mem)
        return self.cluster_slots() if fitting is None else len(fitting)

    def _device_of(self, name: str) -> str:
        return self._slot_devices.get(slot_index(name), "cpu")

    def _node_joined(
        self,
        node: str,
        workers: list[str],
        devices: list[str],
        extra: bool = False,
        gpu_mem_gib: float | None = None,
    ) -> str:
        """A worker node says it has joined: its workers' names, devices, and whether it is an
        addition (which then goes after its own idle time) or one the cluster started with."""
        self.nodes[node] = {
            "workers": list(workers),
            "slots": len(workers),
            "devices": list(devices),
            "extra": bool(extra),
            "gpu_mem_gib": gpu_mem_gib,
        }
        if extra:
            self.extras.add(node, time.monotonic())
        log.info("worker node %s joined with %s%s", node, devices, " (added)" if extra else "")
        return "OK"

    def _stop(self, reason: str = "stopped by the user") -> None:
        self.stop_reason = reason
        self.stop_requested.set()

    # growing and shrinking ----------------------------------------------------------------

    def cluster_slots(self) -> int:
        """The cluster's slots: this machine's, and those of the worker nodes joined (and not
        told to go). A worker restarting by its nanny still counts; a lost node does not."""
        own = {n.name for n in self.nannies}
        going = {w for node in self.retired for w in self.nodes.get(node, {}).get("workers", ())}
        remote = [
            ws
            for ws in self.scheduler.workers.values()
            if ws.name not in own and ws.name not in going
        ]
        return len(self.nannies) + len(remote)

    def _own_devices(self) -> list[str]:
        return [d for _, d in sorted(self._slot_devices.items())]

    async def _add_slots(self, count: int) -> int:
        """Start ``count`` more worker processes here; each its own GPU while there are, else CPU."""
        gpu_count = gpus.cuda_device_count()
        taken = set(self._slot_devices)
        indices: list[int] = []
        i = 0
        while len(indices) < count:
            if i not in taken:
                indices.append(i)
            i += 1
        devices = dict(self._slot_devices)
        devices.update({i: f"cuda:{i}" if i < gpu_count else "cpu" for i in indices})
        every = [d for _, d in sorted(devices.items())]
        nannies = [
            slot_nanny(self.args, self.scheduler.address, i, devices[i], every, self.security, "")
            for i in indices
        ]
        started = await asyncio.gather(*(n.start() for n in nannies), return_exceptions=True)
        failed = [r for r in started if isinstance(r, BaseException)]
        if failed:
            await asyncio.gather(*(n.close(timeout=10) for n in nannies), return_exceptions=True)
            raise RuntimeError(
                f"could not start {count} more worker processes: {type(failed[0]).__name__}: "
                f"{failed[0]}"
            )
        now = time.monotonic()
        for i, nanny in zip(indices, nannies, strict=True):
            self.nannies.append(nanny)
            self.added[nanny.name] = nanny
            self._slot_devices[i] = devices[i]
            self.extras.add(nanny.name, now)
        self._slots_changed()
        log.info("grew by %d worker processes to %d slots", count, len(self.nannies))
        return count

    def _slots_changed(self) -> None:
        """The record, the ledger and the background jobs see this machine's slots as they are."""
        devices = self._own_devices()
        self.record["slots"] = len(devices)
        self.record["devices"] = devices
        records.write_record(self.state_dir, self.args.cluster, self.record)
        self.ledger.cluster_resized(self.cluster_id, self.cluster_slots(), devices)
        self.ledger.node_resized(self.node_id, len(devices), devices)

    def _unit(self, worker_name: str) -> str | None:
        """The extra unit a worker belongs to: its own name (a slot added here) or its node."""
        if worker_name in self.added:
            return worker_name
        for node, info in self.nodes.items():
            if info["extra"] and worker_name in info["workers"]:
                return node
        return None

    async def retire_idle_extras(self) -> None:
        """Let go of what the cluster grew by once it has been idle for the idle time."""
        if not self.extras.last_busy and not self.retired:
            return
        now = time.monotonic()
        waiting = any(ts.state in _WAITING_STATES for ts in self.scheduler.tasks.values())
        busy = set(self.extras.last_busy) if waiting else set()
        for ws in self.scheduler.workers.values():
            unit = self._unit(ws.name)
            if unit is not None and ws.processing:
                busy.add(unit)
        for unit in self.extras.observe(busy, now):
            self.extras.forget(unit)
            if unit in self.added:
                await self._close_added(unit)
            else:
                self.retired[unit] = -_RETIRE_AGAIN_SECONDS
        await self._power_off_retired(now)

    async def _close_added(self, name: str) -> None:
        nanny = self.added.pop(name)
        self.nannies.remove(nanny)
        self._slot_devices.pop(slot_index(name), None)
        self._slots_changed()
        minutes = self.extras.idle_seconds / 60
        log.info("worker process %s was idle for %g min: closing it", name, minutes)
        await nanny.close(timeout=10)

    async def _power_off_retired(self, now: float) -> None:
        """Tell each retired worker node to power off (again, while its workers are still here)."""
        present = {ws.name: ws.address for ws in self.scheduler.workers.values()}
        for node, told in list(self.retired.items()):
            addresses = [present[w] for w in self.nodes[node]["workers"] if w in present]
            if not addresses:
                del self.retired[node]
                self.nodes.pop(node, None)
                continue
            if now - told < _RETIRE_AGAIN_SECONDS:
                continue
            minutes = self.extras.idle_seconds / 60
            log.info("worker node %s was idle for %g min: powering it off", node, minutes)
            self.retired[node] = now
            await self.scheduler.broadcast(
                msg={"op": Rpc.POWER_OFF, "reason": f"idle for {minutes:g} min"},
                workers=addresses,
                nanny=True,
                on_error="ignore",
            )

    # the watchdog -----------------------------------------------------------------------

    def forming(self) -> bool:
        """Whether worker nodes the launch asked for (``--expect-slots``), or that the kernel is
        adding to fit a cell (``burst_fit``), are still joining.

        A forming cluster is not idle: its head must not switch off while the provider waits
        for the other machines to boot. Once formed, it stays formed (a worker lost later is
        the watchdog's and the resume's business); a launch whose nodes never come is given
        up after ``--forming-timeout`` (the lifetime ends it in any case).
        """
        if self.scheduler is None:
            return False
        if self.expected is not None:
            slots, gpu_mem, since = self.expected
            waited = time.monotonic() - since
            if self.slots_fitting(gpu_mem) < slots and waited < self.args.forming_timeout:
                return True
            self.expected = None
        if self.formed:
            return False
        wanted = max(self.args.expect_slots, self.args.slots)
        if len(self.scheduler.workers) >= wanted:
            self.formed = True
            return False
        return time.monotonic() - self.ready_at < self.args.forming_timeout

    def busy(self) -> bool:
        if self.forming():
            return True
        if self.background is not None and self.background.busy():
            return True
        return any(ts.state in _BUSY_STATES for ts in self.scheduler.tasks.values())

    def replace_silent_workers(self) -> None:
        """End this node's worker processes that stopped answering; their nannies start new ones.

        Dask's own worker-ttl does the same for any node, but only at its next check (up to
        twice the ttl) and after asking the hung process to close first.
        """
        now = time.time()
        late, self._last_look = now - self._last_look, now
        if late > 5 * _CHECK_SECONDS:
            return  # this process itself was stalled: the heartbeats wait unread, not missing
        for nanny in self.nannies:
            ws = self.scheduler.workers.get(nanny.worker_address or "")
            if ws is None or now - ws.last_seen < _SILENT_SECONDS or not nanny.pid:
                continue
            log.warning(
                "worker %s has not answered for %.0f s: replacing it", ws.name, now - ws.last_seen
            )
            # SIGKILL on POSIX, TerminateProcess on Windows (a local cluster may run there)
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(nanny.pid).kill()

    async def watch(self) -> None:
        while not self.stop_requested.is_set():
            if self.lifetime.expired(time.monotonic()):
                self._stop(f"reached its maximum lifetime of {self.args.max_lifetime:g} min")
                break
            self.replace_silent_workers()
            await self.retire_idle_extras()
            if self.policy.observe(self.busy(), time.monotonic()):
                self.stop_reason = f"idle for {self.args.idle:g} min"
                self._stop(f"idle for {self.policy.idle_seconds / 60:g} min")
                break
            if self.scheduler.status.name in ("closed", "closing", "failed"):
                self._stop("scheduler closed")
                break
            try:
                await asyncio.wait_for(self.stop_requested.wait(), _CHECK_SECONDS)
            except TimeoutError:
                pass

    async def close(self) -> None:
        log.info("stopping cluster %s: %s", self.args.cluster, self.stop_reason)
        records.remove_record(  # its TLS keys go once its scheduler has closed (below)
            self.state_dir, self.args.cluster, self.cluster_id, self.args.provider, keys=False
        )
        if self.background is not None:
            await asyncio.to_thread(self.background.close)
        if self.scheduler is not None:
            # Worker nodes switch themselves off at once rather than after missing us.
            await self.scheduler.broadcast(
                msg={"op": Rpc.POWER_OFF, "reason": self.stop_reason},
                nanny=True,
                on_error="ignore",
            )
        await asyncio.gather(*(n.close(timeout=10) for n in self.nannies), return_exceptions=True)
        if self.scheduler is not None:
            # What %pip installed for this cluster on this machine goes with it.
            folder = node_folder(self.scheduler.address, self.args.cluster)
            await asyncio.to_thread(shutil.rmtree, folder, True)
            await self.scheduler.close()
        if self.args.provider == "local" and self.args.tls_dir:
            # The kernel made this cluster's keys in its own state folder: they end with it.
            await asyncio.to_thread(shutil.rmtree, self.args.tls_dir, True)
        self.ledger.cluster_stopped(self.cluster_id, self.stop_reason)
        self.ledger.close()


def announce(url: str, record: dict[str, Any]) -> None:
    """Tell the kernel where the scheduler listens: a PUT to a presigned URL that only takes that."""
    import json
    import urllib.request

    body = json.dumps({"scheduler": record["scheduler"], "started": record["started"]}).encode()
    # A form content type (urllib's default) would have some servers parse the body away.
    request = urllib.request.Request(
        url, data=body, method="PUT", headers={"Content-Type": "application/octet-stream"}
    )
    for attempt in range(5):
        try:
            with urllib.request.urlopen(request, timeout=10):
                return
        except OSError as exc:
            log.warning("could not announce the scheduler (attempt %d): %s", attempt + 1, exc)
            time.sleep(2**attempt)
    raise RuntimeError("could not announce the scheduler's address")


async def run(args: argparse.Namespace) -> str:
    """Run the node until its watchdog or a signal stops it; why it stopped."""
    security = None
    if args.tls_dir:
        security = node_security(pathlib.Path(args.tls_dir))
    if args.role == "worker":
        args.node_name = node_name(args)
        node = WorkerNode(args, security)
        stop = node.stop
    else:
        node = HeadNode(args, security)
        stop = node._stop
    _on_signals(asyncio.get_running_loop(), stop)
    try:
        await node.start()
        await node.watch()
    finally:
        await node.close()
    return node.stop_reason


def _on_signals(loop: asyncio.AbstractEventLoop, stop) -> None:
    """Stop the node on SIGTERM, SIGINT and (where there is one) SIGHUP.

    Windows has no SIGHUP and its event loop no add_signal_handler: there a plain handler
    hands the stop to the loop.
    """
    names = ("SIGTERM", "SIGINT", "SIGHUP")
    for sig in [getattr(signal, name) for name in names if hasattr(signal, name)]:
        reason = f"signal {signal.Signals(sig).name}"
        try:
            loop.add_signal_handler(sig, stop, reason)
        except NotImplementedError:
            signal.signal(sig, lambda *_, r=reason: loop.call_soon_threadsafe(stop, r))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jupyter_burst.node")
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--cluster-id")
    parser.add_argument("--provider", default="local")
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--idle", type=float, default=20.0, help="minutes")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--memory-limit", default="auto")
    parser.add_argument("--price-per-hour", type=float, default=0.0)
    parser.add_argument("--role", choices=("head", "worker"), default="head")
    parser.add_argument(
        "--grow-here", action="store_true",
        help="head: a cell that needs more slots gets more worker processes on this machine",
    )  # fmt: skip
    parser.add_argument(
        "--extra", action="store_true",
        help="worker: added to fit a cell; the head powers it off after its own idle time",
    )  # fmt: skip
    parser.add_argument("--gpu-mem", type=float, default=0.0, help="GiB per GPU of this machine")
    parser.add_argument("--scheduler", help="the head's scheduler address (worker role)")
    parser.add_argument("--node-name")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on and advertise")
    parser.add_argument("--port", type=int, default=0, help="the scheduler's port (head role)")
    parser.add_argument("--announce", default="", help="a URL to PUT the scheduler's address to")
    parser.add_argument(
        "--start-id", default="",
        help="head: the start (in --state-dir's ledger) whose workers-joined phase this node records",
    )  # fmt: skip
    parser.add_argument("--tls-dir", help="ca.pem, node.pem and node.key: TLS for every connection")
    parser.add_argument("--max-lifetime", type=float, default=0.0, help="minutes; 0: no limit")
    parser.add_argument(
        "--expect-slots", type=int, default=0,
        help="head: worker slots of the whole cluster (its own and other nodes'); idle waits for them",
    )  # fmt: skip
    parser.add_argument(
        "--forming-timeout", type=float, default=1800.0,
        help="seconds the head waits for --expect-slots before idle counts anyway",
    )  # fmt: skip
    parser.add_argument(
        "--unreachable", type=float, default=2.0, help="minutes without the scheduler (worker role)"
    )
    parser.add_argument(
        "--power-off", default="", help="the command that switches the machine off at the end"
    )
    args = parser.parse_args(argv)
    if args.role == "worker" and not args.scheduler:
        parser.error("--role worker needs --scheduler ADDRESS")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    dask.config.set(NODE_DASK_CONFIG)
    # Workers inherit this through their environment, so they share the same settings.
    os.environ["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "0"
    os.environ["DASK_DISTRIBUTED__COMM__COMPRESSION"] = "None"
    # In the environment the worker processes start with (a nanny's env= is only applied
    # inside them, after the start), so that `ps e`, gc and tests can tell whose they are.
    os.environ["JUPYTER_BURST_STATE_DIR"] = str(args.state_dir)
    # A remote node's store key came in its key bundle: its workers sign checkpoints with it.
    bundled = pathlib.Path(args.tls_dir or ".") / store_key.FILE
    if args.tls_dir and bundled.is_file():
        os.environ[store_key.ENV] = str(bundled.resolve())
    try:
        reason = asyncio.run(run(args))
    except Exception as exc:
        # A node that cannot start (its scheduler gone while it joined, a port taken) must
        # still end its machine: nothing else would before the dead-man timer.
        log.exception("the node failed")
        reason = f"the node failed: {type(exc).__name__}: {exc}"
    if not reason.startswith("signal"):  # a signal means someone else is ending the machine
        power_off(args.power_off, reason)
