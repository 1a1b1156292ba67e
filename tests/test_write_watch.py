"""The proof that a large value is unchanged without hashing it again (wire/write_watch.py),
on this machine's real kernel: every kind of write shows, and a kernel and a worker never
trust a key for bytes that changed.
"""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest

from jupyter_burst.wire import digest, write_watch
from jupyter_burst.wire.write_watch import MIN_BYTES, WATCH

pytestmark = pytest.mark.skipif(
    WATCH._descriptor() is None, reason="this kernel offers no asynchronous write-protect"
)


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def test_a_key_is_reused_until_any_byte_is_written_by_any_means():
    big = np.arange(MIN_BYTES * 2 // 8, dtype=np.int64)
    view = memoryview(big)
    key = digest.of(view)
    assert digest.proven(view)
    assert digest.of(view) == key
    reader, writer = os.pipe()
    try:
        for write in (
            lambda: big.__setitem__(0, -1),  # its first byte
            lambda: big.__setitem__(-1, -1),  # its last
            lambda: big.__setitem__(len(big) // 2, -1),
            # a system call writing into it: the kernel's own write counts as one
            lambda: (os.write(writer, b"\xff" * 8), os.readv(reader, [view.cast("B")[8:16]])),
        ):
            before = bytes(view.cast("B"))
            write()
            assert not digest.proven(view)
            changed = digest.of(view)
            assert changed != key and bytes(view.cast("B")) != before
            assert digest.proven(view)  # watched again from its hash
            key = changed
    finally:
        os.close(reader)
        os.close(writer)
    # The same bytes again: the same key as any buffer holding them.
    assert digest.of(memoryview(big.copy())) == digest.of(view)


def test_a_write_to_a_page_two_buffers_share_is_not_hidden_by_watching_the_other():
    # Two views of one array meet in the middle of a page: protecting the second after the
    # first was written on that page must not make the first look untouched.
    whole = np.zeros(MIN_BYTES * 2 // 8 + 4096, dtype=np.int64)
    cut = MIN_BYTES // 8 + 10  # not on a page boundary
    first, second = memoryview(whole[:cut]), memoryview(whole[cut:])
    first_key = digest.of(first)
    whole[cut - 1] = 7  # the last element of `first`, on the page `second` starts in
    digest.of(second)  # protects that page again
    assert not digest.proven(first)
    assert digest.of(first) != first_key
    assert digest.of(first) == digest.of(memoryview(whole[:cut].copy()))


def test_small_shared_and_forked_buffers_are_never_trusted():
    small = np.ones(MIN_BYTES // 8 - 1, dtype=np.int64)
    assert not WATCH.protect(_address(small), small.nbytes)
    # Another process may write a shared mapping through its own pages: not watched.
    shared = mmap.mmap(-1, MIN_BYTES * 2)
    as_array = np.frombuffer(shared, dtype=np.uint8)
    assert not WATCH.protect(_address(as_array), as_array.nbytes)
    del as_array
    shared.close()

    big = np.zeros(MIN_BYTES * 2 // 8, dtype=np.int64)
    key = digest.of(memoryview(big))
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child (a DataLoader worker, a Pool): its inherited watch is not its own
        ok = not digest.proven(memoryview(big))
        big[5] = 9  # its own copy
        ok = ok and digest.of(memoryview(big)) != key and digest.proven(memoryview(big))
        os.write(writer, b"1" if ok else b"0")
        os._exit(0)
    os.close(writer)
    answer = os.read(reader, 1)
    os.waitpid(pid, 0)
    os.close(reader)
    assert answer == b"1"
    # The child's protecting its copy left the parent's watch as it was.
    assert digest.proven(memoryview(big)) and digest.of(memoryview(big)) == key
    big[7] = 1
    assert digest.of(memoryview(big)) != key


def test_without_the_system_call_everything_is_hashed(monkeypatch):
    watch = write_watch.WriteWatch()
    monkeypatch.setattr(write_watch, "_open_userfaultfd", lambda: None)
    big = np.zeros(MIN_BYTES // 8 * 2, dtype=np.int64)
    assert watch.protect(_address(big), big.nbytes) is None
    assert not watch.untouched(_address(big), big.nbytes, 1)


def test_a_large_value_changed_in_place_on_either_side_is_never_taken_for_unchanged(kernel):
    """Through a real kernel and a local cluster: the kernel and the worker both watch it."""
    kernel.ok(f"import numpy as np\nbig = np.zeros({MIN_BYTES * 2 // 8}, dtype=np.float64)")

    def burst_sum() -> float:
        kernel.ok("%%burst\ntotal = float(big.sum())")
        return float(kernel.ok("print(total)").stdout)

    assert burst_sum() == 0.0
    assert burst_sum() == 0.0  # unchanged: its key is proven, not hashed
    kernel.ok("big[123] = 1.5")  # the notebook writes in place
    assert burst_sum() == 1.5
    kernel.ok("before = id(big)")
    kernel.ok("%%burst\nbig[7] = 2.0")  # the cell writes in place: it comes back
    assert kernel.ok("print(float(big.sum()), id(big) == before)").stdout.split() == ["3.5", "True"]
    assert burst_sum() == 3.5
    kernel.ok("big[-1] = 4.0")
    assert burst_sum() == 7.5
