"""On a worker, while a cell runs: the notebook's namespace is ``__main__``, as in the kernel.

In a notebook, ``__main__`` is the notebook's namespace: ``pickle`` finds notebook classes and
functions there by name (``torch.save(model)``, ``DataLoader`` and ``multiprocessing``
handing a notebook function to a child process, anything that pickles by reference). A
Dask worker's ``__main__`` is its own start-up module, so each of those failed. Here the
cell's namespace becomes the worker's ``__main__`` for the time of the cell (one cell runs
at a time per worker process), child processes start the way they start in the notebook
(the kernel's start method), and what a forked child prints reaches the cell's output, as
ipykernel forwards it in a notebook.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator

_forwarding_installed = False


def new_module() -> types.ModuleType:
    """A fresh ``__main__`` for one cell; its ``__dict__`` is the cell's namespace."""
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = __builtins__
    return module


@contextlib.contextmanager
def as_main(module: types.ModuleType) -> Iterator[None]:
    """``sys.modules['__main__']`` is ``module`` within the block."""
    before = sys.modules.get("__main__")
    sys.modules["__main__"] = module
    try:
        yield
    finally:
        if before is None:
            sys.modules.pop("__main__", None)
        else:
            sys.modules["__main__"] = before


@contextlib.contextmanager
def start_method(method: str | None) -> Iterator[None]:
    """Child processes start with ``method`` (the notebook's) within the block."""
    before = multiprocessing.get_start_method(allow_none=True)
    if method and method != before and method in _start_methods():
        multiprocessing.set_start_method(method, force=True)
        try:
            yield
        finally:
            multiprocessing.set_start_method(before, force=True)
    else:
        yield


@functools.lru_cache(maxsize=1)
def _start_methods() -> tuple[str, ...]:
    return tuple(multiprocessing.get_all_start_methods())


class ChildOutput:
    """What forked children of the cell write to ``sys.stdout``/``sys.stderr``, into the cell.

    A child inherits the worker's stream routers, which would write into its own copy of
    the cell's output buffer, never published. Instead a child writes to pipes that a
    thread of the worker reads into the cell's output. The pipes are made at the cell's
    first fork, so a cell that starts no child pays nothing.
    """

    def __init__(self, write: Callable[[str, str], None]):
        self._write = write
        self._lock = threading.Lock()
        self._pipes: dict[str, tuple[int, int]] = {}
        self._threads: list[threading.Thread] = []

    def open(self) -> None:
        """Make the pipes (in the parent, just before a fork)."""
        with self._lock:
            if self._pipes:
                return
            for stream in ("stdout", "stderr"):
                read_fd, write_fd = os.pipe()
                self._pipes[stream] = (read_fd, write_fd)
                thread = threading.Thread(
                    target=self._forward,
                    args=(stream, read_fd),
                    name=f"burst-child-{stream}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)

    def write_fd(self, stream: str) -> int | None:
        pipe = self._pipes.get(stream)
        return pipe[1] if pipe else None

    def _forward(self, stream: str, read_fd: int) -> None:
        import codecs

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with contextlib.suppress(OSError):
            while True:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                text = decoder.decode(chunk)
                if text:
                    self._write(stream, text)
        with contextlib.suppress(OSError):
            os.close(read_fd)

    def close(self, wait: float = 1.0) -> None:
        """Stop taking children's output, after what the children that ended wrote.

        A child still alive (a pool the cell keeps) holds its end open: its later lines
        are not shown, and the cell does not wait for it past ``wait``.
        """
        with self._lock:
            for _, write_fd in self._pipes.values():
                with contextlib.suppress(OSError):
                    os.close(write_fd)
        for thread in self._threads:
            thread.join(wait)


class _ChildStream:
    """A forked child's stdout/stderr: straight into the pipe its parent's cell reads."""

    def __init__(self, name: str, fd: int, original):
        self.name = name
        self._fd = fd
        self._original = original
        self._partial = ""

    def write(self, text: str) -> int:
        # Whole lines at a time: a pipe write of a line is not split up by another child's.
        head, newline, tail = (self._partial + text).rpartition("\n")
        self._partial = tail
        if newline:
            self._send(head + newline)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            text, self._partial = self._partial, ""
            self._send(text)

    def _send(self, text: str) -> None:
        view = memoryview(text.encode("utf-8", "replace"))
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError:  # the cell ended; the parent no longer reads
                return
            view = view[written:]

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._original.fileno()

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str):
        return getattr(self._original, name)


def forward_children(current: Callable[[], ChildOutput | None]) -> None:
    """Once per worker process: a forked child writes to the running cell's ``ChildOutput``."""
    global _forwarding_installed
    if _forwarding_installed:
        return
    _forwarding_installed = True

    def before() -> None:
        children = current()
        if children is not None:
            children.open()

    def in_child() -> None:
        children = current()
        if children is None:
            return
        for name in ("stdout", "stderr"):
            fd = children.write_fd(name)
            if fd is not None:
                original = getattr(sys, f"__{name}__")
                setattr(sys, name, _ChildStream(name, fd, original))

    os.register_at_fork(before=before, after_in_child=in_child)
