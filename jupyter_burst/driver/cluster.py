"""Find, start, grow, attach to and stop clusters; hand back a connected Dask client.

A cluster is known by its provider and name through its record in the state folder, so a
restarted kernel (or a second kernel) attaches to the one already running instead of
starting another. An unnamed cluster is ``default`` on each provider: local cells and then
``provider=aws`` use two clusters, each found again by the next cell of its provider. A cell
that needs more slots than its running cluster has grows it (:func:`fit`): the local head
starts more worker processes, a cloud provider adds worker nodes (quoted first); what was
added goes by itself after the cluster's idle time of its own idleness.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import pathlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from distributed import Client
from distributed.comm import connect as comm_connect
from distributed.core import send_recv
from distributed.security import Security

from jupyter_burst import config
from jupyter_burst import gpus as gpus_here
from jupyter_burst.clusters import records, start_phases
from jupyter_burst.clusters.choose import announcement
from jupyter_burst.clusters.launch_checks import check_daily_budget, check_hourly_cap
from jupyter_burst.clusters.offers import OfferRequest, Plan
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.clusters.registry import get_provider
from jupyter_burst.clusters.start_phases import LAUNCHING, QUOTE, WORKERS, StartPhases
from jupyter_burst.clusters.tls import ClusterCerts
from jupyter_burst.errors import ClusterError
from jupyter_burst.store.ledger import shared_ledger
from jupyter_burst.wire import prompt_streams
from jupyter_burst.wire.contract import Rpc


@dataclass
class ClusterHandle:
    """A connected cluster as its client (a kernel, a head node) sees it."""

    name: str
    provider: str
    record: dict[str, Any]
    client: Any
    state_dir: pathlib.Path
    topic_handlers: dict[str, Any] = field(default_factory=dict)
    # worker address -> content key -> what this kernel sent it (see cache_plan)
    cached: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The workers (by name) whose GPUs the current cell's gpu_mem= asks for, on a cluster that
    # grew other GPUs for it (fit); None: any slot will do.
    fitting: set[str] | None = None

    @classmethod
    def of(cls, record: dict[str, Any], client: Client, state_dir: pathlib.Path) -> ClusterHandle:
        """The handle of the cluster ``record`` describes, reached through ``client``."""
        return cls(
            name=record["name"],
            provider=record.get("provider", "local"),
            record=dict(record, state_dir=str(state_dir)),
            client=client,
            state_dir=state_dir,
        )

    @property
    def id(self) -> str:
        return self.record["id"]

    def workers(self) -> dict[str, dict]:
        # Right after connecting, the client may not have the scheduler's identity yet.
        return self.client.scheduler_info(n_workers=-1).get("workers", {})

    def info(self) -> dict[str, Any]:
        return rpc(self.client, Rpc.INFO)


def rpc(client: Client, method: Rpc, /, **kwargs: Any) -> Any:
    """Ask the cluster's head one of jupyter-burst's own questions (:class:`Rpc`)."""
    return client.sync(getattr(client.scheduler, method), **kwargs)


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
    return max(gpus_here.cuda_device_count(), gpus)


def open_client(
    address: str,
    timeout: float,
    record: dict[str, Any] | None = None,
    name: str = "jupyter-burst",
    security: Security | None = None,
) -> Client:
    """A Dask client of the scheduler at ``address``, once it has answered within ``timeout``:
    the kernel's (with the cluster's TLS client certificate when ``record`` has one), and the
    head node's own for the background jobs it runs (with the node's ``security``)."""
    security = security if security is not None else _security(record)
    _answers(address, timeout, security)
    client = Client(
        address,
        timeout=timeout,
        direct_to_workers=True,
        set_as_default=False,
        name=name,
        security=security,
    )
    prompt_streams.send_at_once(getattr(client, "scheduler_comm", None))
    return client


def _answers(address: str, timeout: float, security: Any) -> None:
    """Raise OSError unless a Dask scheduler answers at ``address`` within ``timeout``.

    ``Client`` bounds the connection by its timeout but not the first exchange: a scheduler
    that accepts and then never answers (a frozen machine, a stopped process) would hold the
    kernel for ever. The probe runs in a thread of its own (the kernel's has a running loop).
    """

    async def identity() -> None:
        args = security.get_connection_args("client") if security is not None else {}
        comm = await comm_connect(address, timeout=timeout, **args)  # its handshake is unbounded
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
    named: bool = False,
    spot: bool | None = None,
    gpu_mem: float | None = None,
    regions: tuple[str, ...] = (),
    plan: Plan | None = None,
    on_start: Callable[[StartPhases], None] | None = None,
    purpose: str = "cell",
    max_hourly: float | None = None,
) -> ClusterHandle:
    """The cluster ``name`` on ``provider_name``, with at least ``gpus`` slots: reused when this
    kernel has it, attached when it runs (and grown when it is smaller), else started.

    ``named``: the cell named the cluster (``cluster=``); such a name running on another
    provider is refused rather than taken for a second cluster. Unnamed, each provider has
    its own ``default``. ``spot``, ``gpu_mem`` and ``regions`` reach the provider with the
    request (a launch, or nodes added to fit); ``plan`` is an offer chosen across providers
    (driver/placement.py), announced here just before its launch. A start is recorded phase
    by phase in the ledger (clusters/start_phases.py, ``purpose``: ``cell`` or ``prewarm``);
    ``on_start`` gets its recorder as it begins (the cell's status line follows it).
    ``max_hourly``: the cell's agreement to a launch above ``burst.max-hourly``.
    """
    state_dir = config.state_dir()
    key = (provider_name, name)
    request = ClusterRequest(
        name=name,
        slots=gpus,
        idle_minutes=idle,
        state_dir=state_dir,
        spot=spot,
        gpu_mem_gib=gpu_mem,
        regions=regions,
        plan=plan,
        max_hourly=max_hourly,
    )
    with _handles_lock:
        handle = _cached(key, state_dir)
        if handle is None:
            if named:
                _refuse_elsewhere(state_dir, name, provider_name)
            launch = replace(request, slots=_slots_for(provider_name, gpus))
            handle, launched = _find_or_start(key, state_dir, launch, gpus, on_start, purpose)
        else:
            launched = False
            _handles[key] = _handles.pop(key)  # the one used last comes last (running_provider)
        if idle_given and handle.record.get("idle") != idle:
            set_idle(handle, idle)
    if not launched:
        fit(handle, request)
    return handle


def _refuse_elsewhere(state_dir: pathlib.Path, name: str, provider_name: str) -> None:
    """A cluster the cell names, running on another provider: one line, not a second cluster."""
    for other_key in [k for k in _handles if k[1] == name and k[0] != provider_name]:
        if _cached(other_key, state_dir) is not None:
            _refuse_other(name, other_key[0], provider_name)
    for record in records.named(state_dir, name):
        other = record.get("provider", "local")
        if other != provider_name and get_provider(other).is_alive(record):
            _refuse_other(name, other, provider_name)


def _refuse_other(name: str, other: str, provider_name: str) -> None:
    raise ClusterError(
        f"cluster '{name}' runs on provider '{other}', not '{provider_name}'; "
        f"name another cluster (cluster=...) or stop it with %burst down {name}"
    )


def _find_or_start(
    key: tuple[str, str],
    state_dir: pathlib.Path,
    request: ClusterRequest,
    gpus: int,
    on_start: Callable[[StartPhases], None] | None = None,
    purpose: str = "cell",
) -> tuple[ClusterHandle, bool]:
    """The running cluster ``key`` attached, else a new one started; and whether it was started."""
    provider_name, name = key
    plan = request.plan
    provider = get_provider(provider_name)
    if on_start is not None:
        # Another process is starting it (a pre-warm, another kernel): the lock below waits
        # for that start, whose phases the caller may show meanwhile.
        ledger = shared_ledger(state_dir)
        elsewhere = start_phases.under_way(ledger, name, provider_name)
        if elsewhere is not None:
            on_start(StartPhases.resume(ledger, elsewhere.id))
    with records.cluster_lock(state_dir, name, provider_name):
        record = records.read_record(state_dir, name, provider_name)
        client = None
        alive = record is not None and provider.is_alive(record)
        if record is not None and not alive and hasattr(provider, "settle"):
            # Its machines ended by themselves: their ends go in the ledger before it is replaced.
            provider.settle(dict(record, state_dir=str(state_dir)))
        if alive:
            try:
                client = open_client(
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
        if client is not None:
            return _keep(key, record, client, state_dir), False
        with StartPhases(shared_ledger(state_dir), name, provider_name, purpose=purpose) as phases:
            if on_start is not None:
                on_start(phases)
            phases.enter(QUOTE)
            request = replace(request, phases=phases)
            if plan is not None:
                asked = OfferRequest(
                    gpus,
                    gpu_mem_gib=request.gpu_mem_gib,
                    spot=request.spot,
                    regions=request.regions,
                )
                print(announcement(plan, asked), flush=True)
            check_hourly_cap(provider, request)  # refused: nothing started
            check_daily_budget(state_dir, provider, request)
            # Launching, until the provider reports a phase of its own (one that reports
            # none shows as launching until it is up).
            with phases.assuming(LAUNCHING):
                record = provider.launch(request)
            timeout = float(config.get("start-timeout", 60))
            client = open_client(record["scheduler"], timeout, record)
            handle = _keep(key, record, client, state_dir)
            _workers_joined(handle, int(record.get("slots") or request.slots), timeout, phases)
            phases.end(cluster_id=record.get("id"))
    return handle, True


def _workers_joined(handle: ClusterHandle, slots: int, timeout: float, phases: StartPhases) -> None:
    """``workers joined k/N`` until the new cluster's ``slots`` workers have joined its scheduler.

    Worker nodes may still be joining when a provider's launch returns (ssh); a cluster
    whose workers do not all come within ``timeout`` is left to the cell's own wait for the
    ranks it needs, which names the fix.
    """
    deadline = time.monotonic() + timeout
    seen = -1
    while True:
        joined = min(len(handle.workers()), slots)
        if joined != seen:
            phases.enter(WORKERS, done=joined, total=slots)
            seen = joined
        if joined >= slots or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def fit(handle: ClusterHandle, request: ClusterRequest) -> None:
    """Grow the running cluster to ``request.slots`` slots when it has fewer; never refuse a cell
    only because the cluster is smaller.

    The head is asked first (``burst_fit``, one round trip, only for cells of more than one
    rank or that ask for ``gpu_mem=``): the local one starts the missing worker processes
    itself; for a cloud cluster the provider adds worker nodes (``grow``: the cheapest fitting
    plan quoted in one line, the daily budget checked, before anything is billed). A cell
    that asks for GPUs with more memory than the cluster's gets them as an addition where the
    provider can mix machine types, and its ranks go there (``handle.fitting``). A provider
    that cannot add machines refuses in one line that names the fix. What was added goes by
    itself after the cluster's idle time of its own idleness (node/idle.py: ExtrasPolicy).
    """
    slots, gpu_mem = request.slots, request.gpu_mem_gib
    handle.fitting = None
    if slots <= 1 and gpu_mem is None:
        return  # a cluster has a slot: a one-rank cell fits any
    info = _ask_fit(handle, slots, gpu_mem)
    if info is None:  # a head of a version without growth
        have = int(handle.record.get("slots", slots))
        if have < slots:
            raise ClusterError(
                f"cluster '{handle.name}' has {have} slot{'s' if have != 1 else ''} and gpus={slots} "
                f"needs {slots}; it was started by an older jupyter-burst that cannot grow: stop it "
                f"with %burst down {handle.name} (the next cell starts one with {slots})"
            )
        return
    if info.get("added"):
        added = int(info["added"])
        print(
            f"burst: cluster '{handle.name}' grew from {info['slots'] - added} to {info['slots']} "
            f"slots for gpus={slots} ({added} more worker process{'es' if added != 1 else ''}; "
            f"they stop after {float(info.get('idle', 0)):g} min idle)",
            flush=True,
        )
    handle.record.update(slots=info["slots"], devices=info["devices"])
    if int(info.get("short", 0)) > 0:
        info = _grow(handle, request, info)
        handle.record.update(slots=info["slots"], devices=info["devices"])
    if info.get("fitting") is not None:
        handle.fitting = set(info["fitting"])
    wait_for_workers(handle, slots, float(config.get("start-timeout", 60)), among=handle.fitting)


def _ask_fit(
    handle: ClusterHandle, slots: int, gpu_mem: float | None = None, expect: bool = False
) -> dict[str, Any] | None:
    """The head's ``burst_fit`` answer; None if the head does not know the call (older version).

    ``expect``: nodes are about to be added for the shortfall (the head waits for them)."""
    asked: dict[str, Any] = {"slots": slots}
    if gpu_mem is not None:
        asked["gpu_mem"] = gpu_mem
    if expect:
        asked["expect"] = True
    try:
        return rpc(handle.client, Rpc.FIT, **asked)
    except Exception as exc:
        if Rpc.FIT in str(exc):
            return None
        if isinstance(exc, ClusterError | OSError | TimeoutError):
            raise
        # The head could not start the worker processes (memory, a limit of the machine).
        raise ClusterError(
            f"cluster '{handle.name}' could not grow to {slots} slots ({type(exc).__name__}: "
            f"{exc}); ask for fewer gpus=, or see the cluster's log under the state folder"
        ) from None


def _grow(handle: ClusterHandle, request: ClusterRequest, info: dict[str, Any]) -> dict[str, Any]:
    """Add the worker nodes the cluster lacks through its provider; the head's info after."""
    provider = get_provider(handle.provider)
    grow = getattr(provider, "grow", None)
    have, gpu_mem = int(info.get("have", info["slots"])), request.gpu_mem_gib
    if grow is None:
        if gpu_mem is not None:
            raise ClusterError(
                f"cluster '{handle.name}' has {have} GPU{'s' if have != 1 else ''} with >= "
                f"{gpu_mem:g} GiB and the cell needs {request.slots}; the {handle.provider} provider "
                "cannot add other GPUs to a running cluster: ask for less gpu_mem=, or name a "
                "provider that has them (e.g. provider=aws)"
            )
        raise ClusterError(
            f"cluster '{handle.name}' has {have} slot{'s' if have != 1 else ''} and gpus={request.slots} "
            f"needs {request.slots}, and the {handle.provider} provider cannot add machines to a "
            f"running cluster; stop it with %burst down {handle.name} (the next cell starts one "
            f"with {request.slots}), or name another cluster with cluster=NAME"
        )
    state_dir = handle.state_dir
    with records.cluster_lock(state_dir, handle.name, handle.provider):
        # Asked again: another kernel may have grown it meanwhile.
        info = _ask_fit(handle, request.slots, gpu_mem, expect=True) or info
        if int(info.get("short", 0)) > 0:
            record = dict(handle.record, state_dir=str(state_dir))
            try:
                grown = grow(record, request, int(info.get("have", info["slots"])))
            except BaseException:
                with contextlib.suppress(Exception):  # the head stops waiting for the nodes
                    _ask_fit(handle, 1, expect=True)
                raise
            handle.record.update(grown)
    # The nodes have joined; once each has told the head what it is (a moment later), their
    # countdowns start again from now, not from their boot.
    deadline = time.monotonic() + float(config.get("start-timeout", 60))
    while True:
        info = _ask_fit(handle, request.slots, gpu_mem) or info
        if int(info.get("short", 0)) <= 0 or time.monotonic() > deadline:
            return info
        time.sleep(0.1)


def running_provider(name: str) -> str | None:
    """The provider of a running cluster ``name``: the one this kernel used last, else the
    newest one that runs (a name may run on several providers: ``default`` on each)."""
    state_dir = config.state_dir()
    with _handles_lock:
        for key in reversed([key for key in _handles if key[1] == name]):
            if _cached(key, state_dir) is not None:
                return key[0]
    record = newest_running_record(state_dir, name)
    return record.get("provider", "local") if record is not None else None


def newest_running_record(state_dir: pathlib.Path, name: str) -> dict[str, Any] | None:
    """The record of the newest running cluster ``name`` (on any provider); None if none runs."""
    found = sorted(records.named(state_dir, name), key=lambda r: r.get("started", 0), reverse=True)
    for record in found:
        if get_provider(record.get("provider", "local")).is_alive(record):
            return record
    return None


def attach(name: str, provider_name: str) -> ClusterHandle | None:
    """The running cluster ``name``, connected; None if it does not run (nothing is started)."""
    state_dir = config.state_dir()
    key = (provider_name, name)
    with _handles_lock:
        handle = _cached(key, state_dir)
        if handle is not None:
            return handle
        record = records.read_record(state_dir, name, provider_name)
        if record is None:
            return None
        if not get_provider(provider_name).is_alive(record):
            return None
        try:
            client = open_client(
                record["scheduler"], float(config.get("connect-timeout", 5)), record
            )
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
    _handles.pop(key, None)  # kept last: the newest used comes last (running_provider)
    handle = ClusterHandle.of(dict(record, name=name, provider=provider_name), client, state_dir)
    _handles[key] = handle
    return handle


def set_idle(handle: ClusterHandle, minutes: float) -> None:
    info = rpc(handle.client, Rpc.SET_IDLE, minutes=minutes)
    handle.record["idle"] = info["idle"]


def wait_for_workers(
    handle: ClusterHandle, n: int, timeout: float, among: set[str] | None = None
) -> dict[str, dict]:
    """The cluster's workers (those named ``among``, when given), once at least ``n`` are
    connected (a restarted one takes a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        workers = handle.workers()
        if among is not None:
            workers = {a: w for a, w in workers.items() if w.get("name") in among}
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
    found = records.all_records(state_dir)
    # The machine image a cloud cluster's nodes boot lives in the ledger, not the record.
    images = (
        shared_ledger(state_dir).images([r["id"] for r in found if r.get("id")]) if found else {}
    )
    for record in found:
        provider = get_provider(record.get("provider", "local"))
        entry = dict(record, alive=provider.is_alive(record))
        if not entry["alive"] and hasattr(provider, "settle"):
            # Its machines ended unseen, or its head did and they bill on (Lambda without a
            # node key): the provider ends what is left and the ledger learns when. Every
            # look (%burst status, the sidebar's) is a chance to, kernel gone or not.
            try:
                provider.settle(dict(record, state_dir=str(state_dir)))
            except ClusterError as exc:  # the cloud did not answer: still listed, said why
                entry["error"] = str(exc)
        if images.get(record.get("id")):
            entry["images"] = images[record["id"]]
        if entry["alive"]:
            try:
                handle = _handles.get((record.get("provider", "local"), record["name"]))
                if handle is not None and usable(handle):
                    entry.update(handle.info())
                else:
                    entry.update(ask_head(record, Rpc.INFO))
            except Exception as exc:  # a cluster that does not answer is still listed
                entry["error"] = f"{type(exc).__name__}: {exc}"
        out.append(entry)
    return out


def ask_head(record: dict[str, Any], method: Rpc, /, **kwargs: Any) -> Any:
    """One of our questions to the head of the cluster ``record`` describes, over a
    connection of its own (for a process that holds no handle of that cluster)."""
    client = open_client(record["scheduler"], float(config.get("connect-timeout", 5)), record)
    try:
        return rpc(client, method, **kwargs)
    finally:
        client.close(timeout=2)


def down(name: str | None = None, timeout: float = 30.0, provider: str | None = None) -> list[str]:
    """Stop the named cluster (or all; a name on every provider it runs on, unless ``provider``
    says which); returns the names stopped. Waits until they are gone."""
    state_dir = config.state_dir()
    stopped = []
    for record in records.all_records(state_dir):
        if name is not None and record["name"] != name:
            continue
        if provider is not None and record.get("provider", "local") != provider:
            continue
        cloud = get_provider(record.get("provider", "local"))
        if record.get("id"):
            shared_ledger(state_dir).cluster_stop_requested(record["id"])
        handle = _handles.pop((record.get("provider", "local"), record["name"]), None)
        if handle is not None:
            _close_quietly(handle)
        cloud.terminate(record)
        deadline = time.monotonic() + timeout
        while cloud.is_alive(record) and time.monotonic() < deadline:
            time.sleep(0.05)
        if cloud.is_alive(record):
            raise ClusterError(
                f"cluster '{record['name']}' did not stop within {timeout:g} s (pid {record.get('pid')})"
            )
        records.remove_record(
            state_dir, record["name"], record["id"], record.get("provider", "local")
        )
        stopped.append(record["name"])
    if name is not None and not stopped:
        known = sorted({r["name"] for r in records.all_records(state_dir)})
        where = f" on provider '{provider}'" if provider else ""
        raise ClusterError(
            f"no cluster named '{name}'{where}; running: {', '.join(known) or 'none'}"
        )
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
