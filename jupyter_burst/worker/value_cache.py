"""A worker's cache of the large buffers notebooks sent it, by content key.

Runs inside a Dask worker process. Each entry belongs to one notebook kernel (its owner):
two kernels sharing a cluster never reach each other's entries, even for equal bytes. The
cache is bounded in bytes and forgets the least recently used entry first; an entry that a
job about to start was promised (pinned by :func:`hold`) is not forgotten until that job
ends, or until the pin is old enough that the job evidently never came.

A cell gets its values rebuilt over the cached bytes themselves (no copy), so it can change
them; the cell's runtime checks the bytes afterwards and drops what no longer matches its key.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil
from dask.utils import parse_bytes

from jupyter_burst.wire import digest
from jupyter_burst.wire.payload import content_keys

_PIN_SECONDS = 600.0


@dataclass
class Entry:
    buffer: memoryview
    nbytes: int
    used: float = field(default_factory=time.time)
    pins: dict[str, float] = field(default_factory=dict)  # job id -> when it was pinned


class CacheMiss(Exception):
    """A key the kernel was told this worker holds is gone (the worker was restarted)."""

    def __init__(self, keys: list[str]):
        super().__init__(f"{len(keys)} cached value buffer(s) are no longer on this worker")
        self.keys = keys


class ValueCache:
    def __init__(self) -> None:
        self._entries: collections.OrderedDict[tuple[str, str], Entry] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.limit = 0

    def hold(self, owner: str, keys: list[str], job: str) -> list[str]:
        """Pin ``owner``'s entries among ``keys`` for ``job``; the keys that are missing."""
        now = time.time()
        missing = []
        with self._lock:
            for key in keys:
                entry = self._entries.get((owner, key))
                if entry is None:
                    missing.append(key)
                else:
                    entry.pins[job] = now
        return missing

    def take(self, owner: str, key: str) -> memoryview:
        with self._lock:
            entry = self._entries.get((owner, key))
            if entry is None:
                raise CacheMiss([key])
            entry.used = time.time()
            self._entries.move_to_end((owner, key))
            return entry.buffer

    def put(self, owner: str, key: str, buffer: memoryview, limit: int, job: str) -> None:
        """Keep ``buffer`` (pinned for ``job``), then forget old entries past ``limit`` bytes."""
        nbytes = buffer.nbytes
        with self._lock:
            self.limit = limit
            if nbytes > limit:
                return
            if (owner, key) not in self._entries:
                self._entries[(owner, key)] = Entry(buffer, nbytes)
                self.nbytes += nbytes
            entry = self._entries[(owner, key)]
            entry.pins[job] = entry.used = time.time()
            self._entries.move_to_end((owner, key))
            self._shrink(limit)

    def _shrink(self, limit: int) -> None:
        stale = time.time() - _PIN_SECONDS
        for ident in list(self._entries):
            if self.nbytes <= limit:
                return
            entry = self._entries[ident]
            if any(when > stale for when in entry.pins.values()):
                continue
            del self._entries[ident]
            self.nbytes -= entry.nbytes

    def release(self, job: str) -> None:
        with self._lock:
            for entry in self._entries.values():
                entry.pins.pop(job, None)
            self._shrink(self.limit)

    def forget(self, owner: str, keys: Iterable[str]) -> None:
        """Drop ``owner``'s entries among ``keys`` that no job is using.

        Their memory is given back on another thread: freeing a GiB takes tens of
        milliseconds, which the new bytes of the same variable, on their way now, need not
        wait for."""
        dropped = []
        with self._lock:
            for key in keys:
                entry = self._entries.get((owner, key))
                if entry is not None and not entry.pins:
                    del self._entries[(owner, key)]
                    self.nbytes -= entry.nbytes
                    dropped.append(entry)
        if dropped:
            _FREER.put(dropped)

    def discard(self, owner: str, key: str) -> None:
        with self._lock:
            entry = self._entries.pop((owner, key), None)
            if entry is not None:
                self.nbytes -= entry.nbytes

    def listing(self, owner: str) -> dict[str, Any]:
        with self._lock:
            mine = {
                key: {"nbytes": e.nbytes, "used": e.used}
                for (who, key), e in self._entries.items()
                if who == owner
            }
            return {"entries": mine, "nbytes": self.nbytes, "limit": self.limit}

    def clear(self, owner: str) -> int:
        """Forget ``owner``'s entries that no job is using; the bytes freed."""
        freed = 0
        with self._lock:
            for ident in [i for i, e in self._entries.items() if i[0] == owner and not e.pins]:
                freed += self._entries.pop(ident).nbytes
            self.nbytes -= freed
        return freed


def limit_bytes(setting: str | int | float) -> int:
    """``burst.cache.max-bytes`` on this worker: bytes, or a share of its memory ("25%")."""
    text = str(setting).strip()
    if not text.endswith("%"):
        return int(parse_bytes(text))
    return int(float(text[:-1]) / 100 * _worker_memory())


def _worker_memory() -> int:
    """The memory this worker may use: its Dask memory limit, else the machine's."""
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
    except (ValueError, AttributeError):
        limit = None
    return int(limit or psutil.virtual_memory().total)


class _Freer:
    """A thread that drops the last references to forgotten buffers, so that their memory
    is given back while the caller goes on."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, entries: list) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():  # first, or after a fork
                self._thread = threading.Thread(target=self._run, name="burst-free", daemon=True)
                self._thread.start()
        self._work.put(entries)

    def _run(self) -> None:
        while True:
            entries = self._work.get()
            entries.clear()  # the memory goes here, off the caller's thread
            del entries


_FREER = _Freer()


class JobCache:
    """One job's use of this worker's cache, from its message's arrival to its result."""

    def __init__(self, owner: str, limit: int, min_bytes: int, job: str):
        self.owner, self.limit, self.min_bytes, self.job = owner, limit, min_bytes, job
        self.used: dict[str, memoryview] = {}  # key -> the bytes the cell's values lie on
        self.after: dict[tuple[int, int], str] = {}  # digests taken after the cell ran

    def fill(self, payload: Any) -> list:
        """The message's buffers: those that did not travel from the cache, the others kept."""
        buffers = list(payload.buffers)
        missing = []
        for i, key in enumerate(payload.keys):
            if key is None:
                continue
            if i in payload.omitted:
                try:
                    buffers[i] = cache.take(self.owner, key)
                except CacheMiss:
                    missing.append(key)
                    continue
            else:
                cache.put(self.owner, key, buffers[i], self.limit, self.job)
                # Just arrived, untouched: the change check after the cell proves it
                # unchanged by its pages instead of hashing it (wire/write_watch.py).
                digest.remember(buffers[i], key)
            self.used[key] = buffers[i]
        if missing:
            raise CacheMiss(missing)
        return buffers

    def arrived(self) -> dict[tuple[int, int], str]:
        """The digests of the bytes as they arrived, by (address, size): no need to hash them."""
        return {(digest.address(b), b.nbytes): key for key, b in self.used.items()}

    def check(self) -> None:
        """After the cell: forget the entries whose bytes it changed in place.

        The change check of the values that go back fills :attr:`after` first; only the
        buffers it did not reach are hashed here.
        """
        for key, buffer in self.used.items():
            where = (digest.address(buffer), buffer.nbytes)
            now = self.after.get(where)
            if now is None:
                now = self.after[where] = digest.of(buffer)
            if now != key:
                cache.discard(self.owner, key)

    def keep(self, buffer_values: list[str | None], buffers: list[memoryview]) -> dict[str, Any]:
        """Keep the large values going back to the notebook; what the kernel should know."""

        kept = content_keys(buffer_values, buffers, self.min_bytes, self.after)
        for i, (key, _) in kept.items():
            cache.put(self.owner, key, buffers[i], self.limit, self.job)
        return {
            "worker": _worker_address(),
            "keys": {key: (name, buffers[i].nbytes) for i, (key, name) in kept.items()},
        }

    def release(self) -> None:
        cache.release(self.job)


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:
        return None


# One per worker process; the functions below are what the kernel calls through client.run.
cache = ValueCache()


def hold(owner: str, keys: list[str], job: str) -> list[str]:
    return cache.hold(owner, keys, job)


def listing(owner: str) -> dict[str, Any]:
    return cache.listing(owner)


def clear(owner: str) -> int:
    return cache.clear(owner)
