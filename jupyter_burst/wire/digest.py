"""Content keys of buffers: what the namespace cache and the change check compare.

xxh3 runs at memory speed on one core; a large buffer is cut into fixed chunks hashed on
several threads (xxhash releases the GIL), so the kernel and a worker, whatever their core
counts, compute the same key for the same bytes.

The bytes are hashed unless they provably did not change since they were last hashed here:
a large buffer is write-protected page by page just before it is hashed, and its key is
reused while none of its pages was written since (:mod:`jupyter_burst.wire.write_watch`).
torch's version counter would be cheaper, but writes through ``tensor.data`` or
``tensor.numpy()`` do not move it, and a stale key is a wrong result.
"""

from __future__ import annotations

import collections
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import xxhash

from jupyter_burst.wire.write_watch import MIN_BYTES as _WATCHED_FROM
from jupyter_burst.wire.write_watch import WATCH

_CHUNK = 16 << 20
_PARALLEL_FROM = 4 * _CHUNK
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
# (address, size) -> the key of the bytes there, and the number of the watch on them since.
_known: collections.OrderedDict[tuple[int, int], tuple[str, int]] = collections.OrderedDict()
_known_lock = threading.Lock()
_KNOWN = 256


def threads() -> int:
    """How many threads hash one large buffer."""
    return max(1, min(8, os.cpu_count() or 1))


def _pool_of_threads() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(threads(), thread_name_prefix="burst-digest")
        return _pool


def of(buffer: memoryview) -> str:
    """The content key of ``buffer`` (C-contiguous bytes): 32 hex digits, its length folded in."""
    view = _flat(buffer)
    if view.nbytes < _WATCHED_FROM:
        return _hashed(view)
    where = (address(view), view.nbytes)
    with _known_lock:
        known = _known.get(where)
    if known is not None and WATCH.untouched(*where, known[1]):
        return known[0]
    # Protected before it is read: a write while it is hashed shows next time.
    watch = WATCH.protect(*where)
    key = _hashed(view)
    _note(where, key, watch)
    return key


def proven(buffer: memoryview) -> bool:
    """Whether :func:`of` would give ``buffer``'s key without hashing it: the key of its bytes
    is known, and none of its pages was written since."""
    view = _flat(buffer)
    where = (address(view), view.nbytes)
    with _known_lock:
        known = _known.get(where)
    return known is not None and WATCH.untouched(*where, known[1])


def remember(buffer: memoryview, key: str) -> None:
    """``key`` is the content key of ``buffer``'s bytes as they are now (they just arrived,
    under the key they were sent with): watch them, so that :func:`of` needs no hash while
    they stay as they are."""
    view = _flat(buffer)
    if view.nbytes < _WATCHED_FROM:
        return
    where = (address(view), view.nbytes)
    _note(where, key, WATCH.protect(*where))


def _flat(buffer: memoryview) -> memoryview:
    """``buffer`` as one dimension of bytes (the same memory)."""
    return buffer.cast("B") if buffer.format != "B" or buffer.ndim != 1 else buffer


def _note(where: tuple[int, int], key: str, watch: int | None) -> None:
    """The key of the bytes at ``where``, under the watch numbered ``watch``; None: they are
    not watched, forget them."""
    with _known_lock:
        if watch is None:
            _known.pop(where, None)
            return
        _known[where] = (key, watch)
        _known.move_to_end(where)
        while len(_known) > _KNOWN:
            _known.popitem(last=False)


def _hashed(view: memoryview) -> str:
    size = view.nbytes
    if size < _PARALLEL_FROM:
        return xxhash.xxh3_128_hexdigest(view, seed=size)
    parts = _pool_of_threads().map(
        lambda start: xxhash.xxh3_128_digest(view[start : start + _CHUNK]),
        range(0, size, _CHUNK),
    )
    return xxhash.xxh3_128_hexdigest(b"".join(parts), seed=size)


def address(buffer: memoryview) -> int:
    """Where ``buffer``'s bytes start in memory: two views of the same bytes have the same."""
    import numpy

    return numpy.frombuffer(buffer, dtype=numpy.uint8).__array_interface__["data"][0]
