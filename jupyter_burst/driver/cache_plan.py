"""The kernel's side of the namespace cache: send each large value once per worker.

A value of at least ``burst.cache.min-bytes`` travels with a content key per buffer
(:func:`jupyter_burst.wire.payload.pack_namespace`); the worker keeps those buffers
(:mod:`jupyter_burst.worker.value_cache`). Here the kernel remembers which keys it gave which
worker. Before a cell that reads some of them again, it asks those workers which they still
hold — the answer also pins them there until the cell has run — and sends every other
buffer in full. A belief that went stale (the worker restarted, evicted the entry, or the
cell changed the bytes in place) costs one question, never a wrong value.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from dask.utils import format_bytes, parse_bytes

from jupyter_burst import config
from jupyter_burst.driver import workdir_sync
from jupyter_burst.wire.payload import Payload
from jupyter_burst.worker import value_cache

# This kernel process, as the workers' caches know it: entries of other kernels are never used.
OWNER = uuid.uuid4().hex


@dataclass
class Held:
    """One buffer this kernel sent a worker."""

    name: str
    nbytes: int
    sent: float = field(default_factory=time.time)


@dataclass
class LastCell:
    """What the latest cell sent, and what its workers had already."""

    sent: int = 0
    reused: int = 0
    reused_names: list[str] = field(default_factory=list)


last_cell = LastCell()


def threshold() -> int | None:
    """``burst.cache.min-bytes`` in bytes; None when the cache is off."""
    value = config.get("cache.min-bytes", "1 MiB")
    if value in (None, False, "off"):
        return None
    return int(parse_bytes(str(value)))


def settings() -> dict[str, Any] | None:
    """What a worker needs to know of the cache for a job (the ``cache`` entry of its spec)."""
    if threshold() is None:
        return None
    return {
        "owner": OWNER,
        "limit": str(config.get("cache.max-bytes", "25%")),
        "min_bytes": threshold(),
    }


def held_bytes(handle: Any, message: Payload) -> dict[str, int]:
    """For each worker, how many of ``message``'s bytes it was given before."""
    sizes = message.cached_sizes()
    return {
        worker: sum(size for key, size in sizes.items() if key in held)
        for worker, held in handle.cached.items()
    }


def plan(
    handle: Any, message: Payload, workers: list[Any], job: str, owner: str | None
) -> list[Payload]:
    """For each worker (in order), ``message`` less the buffers that worker still holds.

    The workers are asked first, in one call: each forgets the earlier bytes of the
    variables this message sends anew (before the new bytes arrive, so that a changed value
    never takes twice its room), and pins what it holds of the rest for ``job``.
    ``owner``: the kernel the job is for (a background job is submitted by its cluster's
    head node, for the kernel that started it); None: no cache.
    """
    sizes = message.cached_sizes() if owner is not None else {}
    if not sizes:
        last_cell.sent, last_cell.reused, last_cell.reused_names = message.nbytes, 0, []
        return [message] * len(workers)
    names = set(message.names.values())
    asks: dict[str, tuple[list[str], list[str]]] = {}
    for worker in workers:
        held = handle.cached.setdefault(worker, {})
        believed = [k for k in sizes if k in held]
        old = [k for k, h in held.items() if h.name in names and k not in sizes]
        for key in old:
            del held[key]
        if believed or old:
            asks[worker] = (believed, old)
    missing: dict[str, list[str]] = {}
    if asks:
        missing = handle.client.run(_hold, owner, asks, job, workers=list(asks))
    variants = []
    reused, reused_names = 0, set()
    for worker in workers:
        believed = asks.get(worker, ([], []))[0]
        have = set(believed) - set(missing.get(worker, ()))
        variants.append(message.without(have))
        reused += sum(sizes[k] for k in have)
        reused_names.update(message.names[k] for k in have)
        handle.cached[worker].update({k: Held(message.names[k], n) for k, n in sizes.items()})
    last_cell.sent = sum(v.nbytes for v in variants)
    last_cell.reused = reused
    last_cell.reused_names = sorted(reused_names)
    return variants


def learn(handle: Any, results: list[Payload | None]) -> None:
    """Note the large values the ranks' workers kept of what they sent back."""
    for result in results:
        if result is None:
            continue
        kept = result.result_meta().cached
        if kept and kept["worker"]:
            held = handle.cached.setdefault(kept["worker"], {})
            for key, (name, size) in kept["keys"].items():
                held[key] = Held(name, size)


def _hold(
    owner: str, asks: dict[str, tuple[list[str], list[str]]], job: str, dask_worker=None
) -> list[str]:
    """On each worker asked: forget the superseded keys, pin the others; those it lacks."""
    keys, superseded = asks[dask_worker.address]
    value_cache.cache.forget(owner, superseded)
    return value_cache.hold(owner, keys, job)


def describe(handle: Any) -> str:
    """``%burst cache``: this notebook's values kept on each worker of the cluster."""
    listings = handle.client.run(value_cache.listing, OWNER)
    names = {key: held.name for held_by in handle.cached.values() for key, held in held_by.items()}
    lines = []
    total = 0
    for worker in sorted(listings):
        listing = listings[worker]
        entries = listing["entries"]
        mine = sum(e["nbytes"] for e in entries.values())
        total += mine
        limit = format_bytes(listing["limit"]) if listing["limit"] else "no cells yet"
        lines.append(
            f"  {worker}: {format_bytes(mine)} of this notebook's values "
            f"({format_bytes(listing['nbytes'])} in all, limit {limit})"
        )
        by_name: dict[str, list[dict]] = {}
        for key, entry in entries.items():
            by_name.setdefault(names.get(key, "(a value of an earlier cell)"), []).append(entry)
        for name in sorted(by_name):
            group = by_name[name]
            size = format_bytes(sum(e["nbytes"] for e in group))
            ago = time.time() - max(e["used"] for e in group)
            parts = f", {len(group)} buffers" if len(group) > 1 else ""
            lines.append(f"    {name}: {size}{parts}, used {_ago(ago)} ago")
    head = (
        f"burst: cluster '{handle.name}' keeps {format_bytes(total)} of this notebook's values; "
        "a cell that reads one unchanged sends its key, not its bytes"
    )
    if last_cell.sent or last_cell.reused:
        reused = ", ".join(last_cell.reused_names) or "nothing"
        head += (
            f"\n  last cell: sent {format_bytes(last_cell.sent)}; "
            f"found on the cluster {format_bytes(last_cell.reused)} ({reused})"
        )
    folder = workdir_sync.describe(handle)
    if folder:
        head += "\n" + folder
    return "\n".join([head, *lines]) if lines else head


def clear(handle: Any) -> str:
    """``%burst cache clear``: forget this notebook's values on every worker."""
    freed = handle.client.run(value_cache.clear, OWNER)
    handle.cached.clear()
    return (
        f"burst: freed {format_bytes(sum(freed.values()))} of this notebook's values on cluster "
        f"'{handle.name}'; the next cell sends what it reads in full"
    )


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
