"""What the measurements share: one burst session (state folder, shell, raw client), result rows.

Nothing here imports jupyter_burst at module level: the session sets ``DASK_BURST__*`` first.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import pathlib
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil

TRIVIAL_CELL = "%%burst\nz = 1\n"
REPO = pathlib.Path(__file__).resolve().parents[1]


class BenchError(RuntimeError):
    pass


@dataclass
class Row:
    """One line of the results table."""

    measurement: str
    figure: str
    value: str
    target: str = ""
    ok: bool | None = None  # None: context only, no target


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # breakdowns, printed under the table


def median(values: list[float]) -> float:
    return statistics.median(values)


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def mb_per_s(nbytes: float, seconds: float) -> float:
    return nbytes / seconds / 1e6


def size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}"
    return f"{nbytes} B"


def collect() -> None:
    """Free what the last run held before timing the next one."""
    gc.collect()


# Functions the raw Dask client runs. Defined as a notebook defines them (module ``__main__``)
# so that they travel by value: the workers cannot import ``bench``.
_REMOTE_SOURCE = '''
def trivial():
    return 1


def identity(a):
    return a


def inband_echo(blob):
    import cloudpickle

    return cloudpickle.dumps(cloudpickle.loads(blob))


def bench_patch():
    """Wrap the worker-side steps of a cell with timers (undone by bench_unpatch)."""
    import collections
    import time

    import jupyter_burst.wire.payload as wire
    import jupyter_burst.worker.runtime as runtime

    if getattr(runtime, "_bench_undo", None):
        return False
    times = collections.defaultdict(list)
    undo = []

    def wrap(owner, name, label, mark=None):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            if mark == "start":
                times["_start"].append(t0)
            try:
                return original(*args, **kwargs)
            finally:
                t1 = time.perf_counter()
                times[label].append(t1 - t0)
                if mark == "end":
                    times["_end"].append(t1)

        setattr(owner, name, timed)
        undo.append((owner, name, original))

    wrap(runtime, "_setup_process", "setup", mark="start")
    wrap(wire, "unpack_namespace", "unpack")
    wrap(runtime, "_fingerprints", "fingerprints")
    wrap(wire, "pack_result", "pack", mark="end")
    runtime._bench_times = times
    runtime._bench_undo = undo
    return True


def bench_collect():
    import jupyter_burst.worker.runtime as runtime

    times = getattr(runtime, "_bench_times", None) or {}
    out = {k: list(v) for k, v in times.items()}
    times.clear()
    return out


def bench_unpatch():
    import jupyter_burst.worker.runtime as runtime

    for owner, name, original in reversed(getattr(runtime, "_bench_undo", None) or []):
        setattr(owner, name, original)
    runtime._bench_undo = None
    runtime._bench_times = None
    return True
'''


def remote_functions() -> dict[str, Callable]:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(_REMOTE_SOURCE, "<bench-remote>", "exec"), namespace)
    return namespace


class Timers:
    """Wrap functions of the core with timers for a breakdown run; undone on exit.

    Instrumentation lives here, in the benchmark: the core is not changed.
    """

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name, None)
        if original is None:  # the core changed its insides: time what is still there
            return
        times = self.times[label]

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                times.append(time.perf_counter() - t0)

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def total(self, label: str) -> float:
        return sum(self.times.get(label, ()))

    def __enter__(self) -> Timers:
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


class Session:
    """One run's state folder, IPython shell and cluster; ``close`` leaves nothing behind."""

    def __init__(self) -> None:
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="burst-bench-"))
        self.state_dir = self.root / "state"
        self.state_dir.mkdir()
        # Before jupyter_burst is imported (config.refresh() re-reads them for every cell too).
        os.environ["DASK_BURST__STATE_DIR"] = str(self.state_dir)
        os.environ["DASK_BURST__IDLE"] = "5"
        self._shell = None
        self._raw = None
        self._raw_address: str | None = None
        self.remote = remote_functions()
        self.seen: dict[tuple, psutil.Process] = {}  # the cluster processes, checked at the end

    # the notebook side ---------------------------------------------------------------

    @property
    def shell(self):
        if self._shell is None:
            from IPython.core.interactiveshell import InteractiveShell

            self._shell = InteractiveShell.instance()
            self._shell.run_line_magic("load_ext", "jupyter_burst")
        return self._shell

    @property
    def user_ns(self) -> dict:
        return self.shell.user_ns

    def cell(self, source: str) -> float:
        """Run a ``%%burst`` cell through the shell; its wall time in seconds."""
        shell = self.shell
        t0 = time.perf_counter()
        result = shell.run_cell(source)
        elapsed = time.perf_counter() - t0
        if not result.success:
            error = result.error_in_exec or result.error_before_exec
            raise BenchError(f"cell failed: {source!r}: {type(error).__name__}: {error}")
        return elapsed

    def ensure_cluster(self) -> None:
        """A warm cluster, and imports done: one trivial cell."""
        self.cell(TRIVIAL_CELL)
        self._note_processes()

    def record(self) -> dict:
        """The local cluster ``default``'s record (``clusters/default@local.json`` since names
        are per provider; ``records`` also reads the older ``default.json``)."""
        from jupyter_burst.clusters import records

        record = records.read_record(self.state_dir, "default")
        if record is None:
            raise BenchError(f"no record of the cluster 'default' in {self.state_dir}")
        return record

    def handle(self):
        from jupyter_burst.driver import cluster

        return next(h for h in cluster._handles.values() if h.name == "default")

    # a plain Dask client on the same cluster -----------------------------------------------

    def raw_client(self):
        record = self.record()
        address = record["scheduler"]
        if self._raw is not None and self._raw_address == address and self._raw.status == "running":
            return self._raw
        self.close_raw()
        from distributed import Client

        from jupyter_burst.clusters.tls import ClusterCerts

        # The cluster's own client certificate: the local provider's clusters are mutual TLS.
        security = ClusterCerts(pathlib.Path(record["tls"])).client_security()
        self._raw = Client(
            address,
            security=security,
            direct_to_workers=True,
            set_as_default=False,
            name="burst-bench-raw",
        )
        self._raw_address = address
        return self._raw

    def close_raw(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.close(timeout=5)
        self._raw = None
        self._raw_address = None

    # stopping --------------------------------------------------------------------------

    def _note_processes(self) -> None:
        """Remember the cluster's processes, to check at the end that they are gone."""
        try:
            node = psutil.Process(self.record()["pid"])
            for proc in [node, *node.children(recursive=True)]:
                self.seen[(proc.pid, proc.create_time())] = proc
        except (BenchError, OSError, KeyError, ValueError, psutil.Error):
            pass

    def down(self) -> None:
        """``%burst down``, quietly: every cluster of this state folder stops."""
        self.close_raw()
        if self._shell is None and not (self.state_dir / "clusters").exists():
            return
        from jupyter_burst.driver import cluster

        self._note_processes()
        cluster.down()

    def close(self) -> list[int]:
        """Stop everything; returns the pids that had to be killed (a leak; should be empty)."""
        killed: list[int] = []
        try:
            with contextlib.suppress(Exception):
                self.down()
            killed = reap(list(self.seen.values()), self.state_dir)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
        return killed


def burst_processes(state_dir: pathlib.Path) -> list[psutil.Process]:
    """Live processes that belong to clusters of ``state_dir``."""
    marker = str(state_dir)
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid == os.getpid():
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            if ("jupyter_burst.node" in cmdline and marker in cmdline) or proc.environ().get(
                "JUPYTER_BURST_STATE_DIR"
            ) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def reap(seen: list[psutil.Process], state_dir: pathlib.Path, timeout: float = 30.0) -> list[int]:
    """Wait for the cluster processes seen to exit; kill any still there after ``timeout``.

    psutil.Process objects remember their start time, so a reused pid is never signalled.
    """
    procs = {(p.pid, p.create_time()): p for p in seen}
    for proc in burst_processes(state_dir):
        with contextlib.suppress(psutil.Error):
            procs[(proc.pid, proc.create_time())] = proc
    alive = [p for p in procs.values() if _running(p)]
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _running(p)]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    return [p.pid for p in alive]


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@contextlib.contextmanager
def suppress_large_graph_warning() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ll]arge graph.*")
        warnings.filterwarnings("ignore", message=".*[Ll]arge object.*")
        yield
