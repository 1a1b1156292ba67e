"""Find, start, attach to and stop clusters; hand back a connected Dask client.

A cluster is known by name through its record in the state folder, so a restarted kernel
(or a second kernel) attaches to the one already running instead of starting another.
"""

from __future__ import annotations

import pathlib
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters import records
from jupyter_burst.clusters.offers import OfferRequest, Plan
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.clusters.registry import get_provider
from jupyter_burst.cost import check_daily_budget
from jupyter_burst.errors import ClusterError
from jupyter_burst.ledger import shared_ledger


@dataclass
class ClusterHandle:
    """A connected cluster as this kernel sees it."""

    name: str
    provider: str
    record: dict[str, Any]
    client: Any
    state_dir: pathlib.Path
    topic_handlers: dict[str, Any] = field(default_factory=dict)
    # worker address -> content key -> what this kernel sent it (see namespace_cache)
    cached: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.record["id"]

    def workers(self) -> dict[str, dict]:
        # Right after connecting, the client may not have the scheduler's identity yet.
        return self.client.scheduler_info(n_workers=-1).get("workers", {})

    def info(self) -> dict[str, Any]:
        return self.client.sync(self.client.scheduler.burst_info)


_handles: dict[tuple[str, str], ClusterHandle] = {}
_handles_lock = threading.Lock()


def _slots_for(provider_name: str, gpus: int) -> int:
    """The worker processes a new cluster gets: a remote one exactly the GPUs asked for; the
    local one every GPU of this machine (or burst.local.slots), so later cells can use more."""
    if provider_name != "local":
        return gpus
    configured = config.get("local.slots")
    if configured:
        return max(int(configured), gpus)
    from jupyter_burst.node.bootstrap import cuda_device_count

    return max(cuda_device_count(), gpus)


def _connect(address: str, timeout: float, record: dict[str, Any] | None = None):
    from distributed import Client

    security = _security(record)
    _answers(address, timeout, security)
    return Client(
        address,
        timeout=timeout,
        direct_to_workers=True,
        set_as_default=False,
        name="jupyter-burst",
        security=security,
    )


def _answers(address: str, timeout: float, security: Any) -> None:
    """Raise OSError unless a Dask scheduler answers at ``address`` within ``timeout``.

    ``Client`` bounds the connection by its timeout but not the first exchange: a scheduler
    that accepts and then never answers (a frozen machine, a stopped process) would hold the
    kernel for ever. The probe runs in a thread of its own (the kernel's has a running loop).
    """
    import asyncio
    import concurrent.futures

    from distributed.comm import connect
    from distributed.core import send_recv

    async def identity() -> None:
        args = security.get_connection_args("client") if security is not None else {}
        comm = await connect(address, timeout=timeout, **args)  # its handshake is unbounded
        try:
            await send_recv(comm, op="identity")
        finally:
            comm.abort()

    async def bounded() -> None:
        await asyncio.wait_for(identity(), timeout)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="burst-probe") as pool:
        try:
            pool.submit(asyncio.run, bounded()).result()
        except TimeoutError:  # also asyncio's and concurrent.futures' (aliases)
            raise TimeoutError(
                f"the scheduler at {address} did not answer within {timeout:g} s"
            ) from None
        except OSError:
            raise
        except Exception as exc:
            raise OSError(
                f"what answers at {address} is not a Dask scheduler ({type(exc).__name__})"
            ) from None


def _security(record: dict[str, Any] | None):
    """A remote cluster's TLS client certificate (made when it was launched); None for local."""
    if not record or not record.get("tls"):
        return None
    from jupyter_burst.clusters.tls import ClusterCerts

    return ClusterCerts(pathlib.Path(record["tls"])).client_security()


def usable(handle: ClusterHandle) -> bool:
    client = handle.client
    return (
        client.status == "running"
        and client.scheduler_comm is not None
        and not client.scheduler_comm.closed()
    )


def connect(
    name: str,
    provider_name: str,
    gpus: int,
    idle: float,
    idle_given: bool,
    *,
    spot: bool | None = None,
    gpu_mem: float | None = None,
    regions: tuple[str, ...] = (),
    plan: Plan | None = None,
) -> ClusterHandle:
    """The cluster ``name``: reused when this kernel has it, attached when it runs, else started.

    ``spot``, ``gpu_mem`` and ``regions`` reach the provider with the request; ``plan`` is an
    offer chosen across providers (clusters/choose.py), announced here just before its launch.
    """
    state_dir = config.state_dir()
    key = (provider_name, name)
    with _handles_lock:
        handle = _cached(key, state_dir)
        if handle is not None:
            if idle_given and handle.record.get("idle") != idle:
                set_idle(handle, idle)
            return handle

        provider = get_provider(provider_name)
        with records.cluster_lock(state_dir, name):
            record = records.read_record(state_dir, name)
            client = None
            if record is not None and record.get("provider") != provider_name:
                raise ClusterError(
                    f"cluster '{name}' runs on provider '{record.get('provider')}', not '{provider_name}'; "
                    f"name another cluster (cluster=...) or stop it with %burst down {name}"
                )
            alive = record is not None and provider.is_alive(record)
            if record is not None and not alive and hasattr(provider, "settle"):
                # Its machines ended by themselves: their ends go in the ledger before it is replaced.
                provider.settle(dict(record, state_dir=str(state_dir)))
            if alive:
                try:
                    client = _connect(
                        record["scheduler"], float(config.get("connect-timeout", 5)), record
                    )
                except OSError as exc:
                    print(
                        f"burst: cluster '{name}' did not answer ({exc}); it is stopped and a "
                        "new one started",
                        file=sys.stderr,
                        flush=True,
                    )
                    provider.terminate(record)
                    client = None
            if client is None:
                request = ClusterRequest(
                    name=name,
                    slots=_slots_for(provider_name, gpus),
                    idle_minutes=idle,
                    state_dir=state_dir,
                    spot=spot,
                    gpu_mem_gib=gpu_mem,
                    regions=regions,
                    plan=plan,
                )
                if plan is not None:
                    from jupyter_burst.clusters.choose import announcement

                    asked = OfferRequest(gpus, gpu_mem_gib=gpu_mem, spot=spot, regions=regions)
                    print(announcement(plan, asked), flush=True)
                check_daily_budget(state_dir, provider, request)  # refused: nothing started
                record = provider.launch(request)
                client = _connect(
                    record["scheduler"], float(config.get("start-timeout", 60)), record
                )
        handle = _keep(key, record, client, state_dir)
        if idle_given and record.get("idle") != idle:
            set_idle(handle, idle)
        return handle


def running_provider(name: str) -> str | None:
    """The provider of the cluster ``name`` while it runs (this kernel's handle, else its record)."""
    state_dir = config.state_dir()
    with _handles_lock:
        for key in [key for key in _handles if key[1] == name]:
            if _cached(key, state_dir) is not None:
                return key[0]
    record = records.read_record(state_dir, name)
    if record is None:
        return None
    provider_name = record.get("provider", "local")
    return provider_name if get_provider(provider_name).is_alive(record) else None


def attach(name: str, provider_name: str) -> ClusterHandle | None:
    """The running cluster ``name``, connected; None if it does not run (nothing is started)."""
    state_dir = config.state_dir()
    key = (provider_name, name)
    with _handles_lock:
        handle = _cached(key, state_dir)
        if handle is not None:
            return handle
        record = records.read_record(state_dir, name)
        if record is None or record.get("provider", "local") != provider_name:
            return None
        if not get_provider(provider_name).is_alive(record):
            return None
        try:
            client = _connect(record["scheduler"], float(config.get("connect-timeout", 5)), record)
        except OSError:
            return None
        return _keep(key, record, client, state_dir)


def _cached(key: tuple[str, str], state_dir: pathlib.Path) -> ClusterHandle | None:
    """This kernel's handle for ``key`` while it works (for this state folder); a dead one is closed."""
    handle = _handles.get(key)
    if handle is None:
        return None
    if usable(handle) and handle.record.get("state_dir", str(state_dir)) == str(state_dir):
        return handle
    _close_quietly(handle)
    del _handles[key]
    return None


def _keep(key: tuple[str, str], record: dict, client, state_dir: pathlib.Path) -> ClusterHandle:
    provider_name, name = key
    handle = ClusterHandle(
        name=name,
        provider=provider_name,
        record=dict(record, state_dir=str(state_dir)),
        client=client,
        state_dir=state_dir,
    )
    _handles[key] = handle
    return handle


def set_idle(handle: ClusterHandle, minutes: float) -> None:
    info = handle.client.sync(handle.client.scheduler.burst_set_idle, minutes=minutes)
    handle.record["idle"] = info["idle"]


def wait_for_workers(handle: ClusterHandle, n: int, timeout: float) -> dict[str, dict]:
    """The cluster's workers, once at least ``n`` are connected (a restarted one takes a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        workers = handle.workers()
        if len(workers) >= n:
            return workers
        if time.monotonic() > deadline:
            raise ClusterError(
                f"cluster '{handle.name}' has {len(workers)} of the {n} workers it needs after {timeout:g} s; "
                f"restart it with %burst down {handle.name}"
            )
        time.sleep(0.05)


def status() -> list[dict[str, Any]]:
    """Every cluster with a record in the state folder, with its live state where reachable."""
    state_dir = config.state_dir()
    out = []
    for record in records.all_records(state_dir):
        provider = get_provider(record.get("provider", "local"))
        entry = dict(record, alive=provider.is_alive(record))
        if entry["alive"]:
            try:
                handle = _handles.get((record.get("provider", "local"), record["name"]))
                if handle is not None and usable(handle):
                    entry.update(handle.info())
                else:
                    entry.update(_query_info(record))
            except Exception as exc:  # a cluster that does not answer is still listed
                entry["error"] = f"{type(exc).__name__}: {exc}"
        out.append(entry)
    return out


def _query_info(record: dict[str, Any]) -> dict[str, Any]:
    client = _connect(record["scheduler"], float(config.get("connect-timeout", 5)), record)
    try:
        return client.sync(client.scheduler.burst_info)
    finally:
        client.close(timeout=2)


def down(name: str | None = None, timeout: float = 30.0) -> list[str]:
    """Stop the named cluster (or all); returns the names stopped. Waits until they are gone."""
    state_dir = config.state_dir()
    stopped = []
    for record in records.all_records(state_dir):
        if name is not None and record["name"] != name:
            continue
        provider = get_provider(record.get("provider", "local"))
        if record.get("id"):
            shared_ledger(state_dir).cluster_stop_requested(record["id"])
        handle = _handles.pop((record.get("provider", "local"), record["name"]), None)
        if handle is not None:
            _close_quietly(handle)
        provider.terminate(record)
        deadline = time.monotonic() + timeout
        while provider.is_alive(record) and time.monotonic() < deadline:
            time.sleep(0.05)
        if provider.is_alive(record):
            raise ClusterError(
                f"cluster '{record['name']}' did not stop within {timeout:g} s (pid {record.get('pid')})"
            )
        records.remove_record(state_dir, record["name"], record["id"])
        stopped.append(record["name"])
    if name is not None and not stopped:
        known = [r["name"] for r in records.all_records(state_dir)]
        raise ClusterError(f"no cluster named '{name}'; running: {', '.join(known) or 'none'}")
    return stopped


def _close_quietly(handle: ClusterHandle) -> None:
    try:
        handle.client.close(timeout=2)
    except Exception:
        pass


def forget_all() -> None:
    """Close this kernel's clients (the clusters keep running)."""
    with _handles_lock:
        for handle in _handles.values():
            _close_quietly(handle)
        _handles.clear()
