"""Whether a large buffer was written since it was hashed, for far less than hashing it again:
8 bytes of ``/proc/self/pagemap`` per 4 KiB page (2 MiB for 1 GiB) instead of reading every
byte.

How: Linux's userfaultfd in asynchronous write-protect mode (Linux 6.7 and later). A range is
write-protected just before it is hashed; the first write to each of its pages afterwards
lifts that page's protection (no handler runs, the writer does not wait: the page is simply
marked), and pagemap's bit 57 says which pages are still protected. A write the kernel makes
for a system call (``readinto`` a buffer) lifts it too. A buffer whose every page is still
protected holds the bytes it held when it was hashed.

Measured against the other proofs of "unchanged" (issue #21): soft-dirty page bits need a
kernel built with them (this machine's reports none); torch's version counter misses writes
through ``tensor.data`` and ``tensor.numpy()``; ``mprotect`` and a fault handler cannot be
written in Python. The cost is a page fault on the first write to each page after a hash
(an in-place rewrite of a 256 MiB array took 70 ms instead of 41 here), paid only by values
of at least :data:`MIN_BYTES` that travel.

Only memory this process alone writes is watched: private anonymous mappings, in a process
without CUDA (a GPU's copy into pinned memory bypasses page tables). In a child process
(fork), on another OS, an older kernel or a sandbox that refuses the system call, nothing is
watched and buffers are hashed as before.
"""

from __future__ import annotations

import collections
import ctypes
import os
import struct
import sys
import threading

MIN_BYTES = 16 << 20  # below this, hashing costs a few milliseconds at most
_KEPT = 256  # ranges remembered; the oldest are forgotten (and hashed again if met)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_SYS_USERFAULTFD = {"x86_64": 323, "aarch64": 282}
_UFFD_USER_MODE_ONLY = 1
_UFFD_API = 0xAA
_FEATURE_WP_UNPOPULATED = 1 << 13
_FEATURE_WP_ASYNC = 1 << 15
_UFFDIO_API = 0xC018AA3F  # _IOWR(0xAA, 0x3F, struct uffdio_api)
_UFFDIO_REGISTER = 0xC020AA00  # _IOWR(0xAA, 0x00, struct uffdio_register)
_UFFDIO_WRITEPROTECT = 0xC018AA06  # _IOWR(0xAA, 0x06, struct uffdio_writeprotect)
_REGISTER_MODE_WP = 1 << 1
_WRITEPROTECT_MODE_WP = 1 << 0
_PAGEMAP_UFFD_WP = 1 << 57


class WriteWatch:
    """The ranges this process write-protected, and whether each was written since.

    Protecting a range protects its pages again, and so hides what was written on them
    before: every other range that shares a page with it is forgotten then (hashed again
    when next met). :meth:`protect` returns the watch's number for the range, and
    :meth:`untouched` answers only for that number.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0
        self._failed = False
        self._count = 0
        # (first page, end of last page) -> the number of the watch that protected it
        self._ranges: collections.OrderedDict[tuple[int, int], int] = collections.OrderedDict()

    def protect(self, address: int, nbytes: int) -> int | None:
        """Write-protect the pages under ``[address, address + nbytes)``: the watch's number,
        or None if they cannot be watched (the caller then keeps nothing of them)."""
        if nbytes < MIN_BYTES or _cuda_in_use():
            return None
        start, end = _pages(address, nbytes)
        with self._lock:
            fd = self._descriptor()
            # Before anything is protected again: a range sharing a page is no longer proven.
            for low, high in [r for r in self._ranges if r[0] < end and start < r[1]]:
                del self._ranges[(low, high)]
            if fd is None or not _private_anonymous(start, end):
                return None
            import fcntl  # Linux only: there is a descriptor

            try:
                fcntl.ioctl(
                    fd,
                    _UFFDIO_REGISTER,
                    bytearray(struct.pack("QQQQ", start, end - start, _REGISTER_MODE_WP, 0)),
                )
                fcntl.ioctl(
                    fd,
                    _UFFDIO_WRITEPROTECT,
                    bytearray(struct.pack("QQQ", start, end - start, _WRITEPROTECT_MODE_WP)),
                )
            except OSError:
                return None
            self._count += 1
            self._ranges[(start, end)] = self._count
            while len(self._ranges) > _KEPT:
                self._ranges.popitem(last=False)
            return self._count

    def untouched(self, address: int, nbytes: int, watch: int) -> bool:
        """True only if the range is still under the watch numbered ``watch`` (what
        :meth:`protect` returned, in this process) and none of its pages was written since."""
        start, end = _pages(address, nbytes)
        with self._lock:
            if self._ranges.get((start, end)) != watch or self._pid != os.getpid():
                return False
            if _cuda_in_use():
                return False
        try:
            with open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
                pagemap.seek(start // _PAGE * 8)
                entries = pagemap.read((end - start) // _PAGE * 8)
        except OSError:
            return False
        if len(entries) != (end - start) // _PAGE * 8:
            return False
        return _all_protected(entries)

    def _descriptor(self) -> int | None:
        if self._pid != os.getpid():
            # A forked child: the descriptor it inherited acts on its parent's memory.
            self._fd, self._failed, self._pid = None, False, os.getpid()
            self._ranges.clear()
        if self._fd is None and not self._failed:
            self._fd = _open_userfaultfd()
            self._failed = self._fd is None
        return self._fd


def _pages(address: int, nbytes: int) -> tuple[int, int]:
    """The whole pages that hold the range: a write to a neighbour's bytes on its first or last
    page counts as a write to it (it is hashed again), never the other way round."""
    return address // _PAGE * _PAGE, -(-(address + nbytes) // _PAGE) * _PAGE


def _all_protected(entries: bytes) -> bool:
    import numpy

    bits = numpy.frombuffer(entries, dtype=numpy.uint64) & numpy.uint64(_PAGEMAP_UFFD_WP)
    return bool(bits.all())


def _open_userfaultfd() -> int | None:
    number = _SYS_USERFAULTFD.get(os.uname().machine) if sys.platform == "linux" else None
    if number is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        # User-mode faults only: what an unprivileged process may ask for.
        fd = libc.syscall(number, os.O_CLOEXEC | os.O_NONBLOCK | _UFFD_USER_MODE_ONLY)
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    wanted = _FEATURE_WP_ASYNC | _FEATURE_WP_UNPOPULATED
    try:
        import fcntl

        api = bytearray(struct.pack("QQQ", _UFFD_API, wanted, 0))
        fcntl.ioctl(fd, _UFFDIO_API, api)
        if struct.unpack("QQQ", api)[1] & wanted != wanted:
            raise OSError("asynchronous write-protect is not offered")
    except (OSError, ImportError):
        os.close(fd)
        return None
    return fd


def _private_anonymous(start: int, end: int) -> bool:
    """Every page of ``[start, end)`` lies in a private, writable mapping of no file."""
    covered = start
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                low, high = (int(x, 16) for x in fields[0].split("-"))
                if high <= covered:
                    continue
                if low > covered:
                    return False  # a hole
                perms, inode = fields[1], fields[4]
                path = fields[5].strip() if len(fields) > 5 else ""
                if perms[1] != "w" or perms[3] != "p" or inode != "0":
                    return False
                if path and path not in ("[heap]",) and not path.startswith("[anon"):
                    return False
                covered = high
                if covered >= end:
                    return True
    except (OSError, ValueError, IndexError):
        return False
    return False


def _cuda_in_use() -> bool:
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_initialized())
    except Exception:
        return True  # a torch that cannot say: assume a device may write


WATCH = WriteWatch()
