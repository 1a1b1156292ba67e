"""Peers: jupyter-burst against ipyparallel ``%%px`` (with push/pull) and raw Dask, same run.

Three ways to run a notebook cell somewhere else, all on this machine, all over 127.0.0.1:

* jupyter-burst: ``%%burst`` cells on the session's own cluster.
* ipyparallel: a controller and 2 engines started here (``ipyparallel.Cluster``), its magics
  registered on the same IPython shell; a cell is a push of the names it reads to engine 0,
  ``%%px --targets 0`` and a pull of the names it assigns.
* raw Dask: a plain ``distributed.Client`` on the burst cluster's scheduler; a cell is
  ``client.scatter`` of the names it reads, ``client.submit(run_source, ...)``, ``.result()``
  and the names it assigned merged back.

Which names travel comes from ``jupyter_burst.kernel.namespace.analyse`` (``bench/replay.py``), so
the three move the same names. Bytes over loopback are read from the ``lo`` interface's
counters (``/proc/net/dev``), not from any system's own accounting; they count every process
of this network namespace, so another process's traffic shows up in them too.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil

from bench import replay
from bench.common import (
    BenchError,
    Report,
    Row,
    Session,
    collect,
    mb_per_s,
    median,
    ms,
    p90,
    size,
    suppress_large_graph_warning,
)

MEASUREMENT = "peers"
MiB = 1 << 20
ENGINES = 2
TRIVIAL_SOURCE = "z = 1\n"
COPY_SOURCE = "y = x.copy()\n"  # y is new data: N bytes out, N back
READ_SOURCE = "s = float(x[::4096].sum())\n"  # reads x, sends back a float
# jupyter-burst's targets (issue #8).
TARGET_RERUN_BYTES = 1 * MiB
TARGET_RERUN_FRACTION = 0.05

# Runs on the Dask worker. Defined as a notebook defines it (module ``__main__``) so that it
# travels by value: the workers cannot import ``bench``.
_RUN_SOURCE = """
def run_source(source, names, values):
    namespace = dict(values)
    exec(compile(source, "<cell>", "exec"), namespace)
    return {name: namespace[name] for name in names if name in namespace}
"""


def loopback_bytes() -> int:
    """Bytes received so far on the loopback interface (``lo`` RX bytes in /proc/net/dev).

    On ``lo`` every byte sent is also received, so this is what went over loopback.
    """
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, counters = line.partition(":")
            if name.strip() == "lo":
                return int(counters.split()[0])
    raise BenchError("no lo interface in /proc/net/dev")


@dataclass
class Run:
    seconds: float
    loopback: int  # bytes

    def text(self) -> str:
        return f"{self.seconds:.2f} s, {mib(self.loopback)}"


def measured(action: Callable[[], Any]) -> Run:
    """Run ``action``; its wall time and the bytes that went over loopback meanwhile."""
    before = loopback_bytes()
    t0 = time.perf_counter()
    action()
    seconds = time.perf_counter() - t0
    return Run(seconds, loopback_bytes() - before)


def random_bytes(nbytes: int, seed: int = 0) -> np.ndarray:
    """``nbytes`` random bytes as a writable uint8 array (drawn 8 at a time: seconds faster
    for 1 GiB than drawing bytes; random, so that nothing on the way can compress them)."""
    words = np.random.default_rng(seed).integers(
        0, np.iinfo(np.uint64).max, nbytes // 8, dtype=np.uint64, endpoint=True
    )
    return words.view(np.uint8)


def mib(nbytes: int) -> str:
    return f"{nbytes / MiB:,.1f} MiB"


# ipyparallel -----------------------------------------------------------------------------


class IpyparallelCluster:
    """ipyparallel's controller and engines on 127.0.0.1, with ``%px``/``%%px`` registered on
    ``shell``; ``close`` stops them and checks that no process is left."""

    def __init__(self, shell, profile_dir: pathlib.Path, engines: int = ENGINES) -> None:
        import ipyparallel

        self.processes: dict[tuple[int, float], psutil.Process] = {}
        self.client = None
        # A profile of its own inside the run's temp folder: no ~/.ipython config is read,
        # nothing is left behind. The logger keeps its start/stop messages off stdout.
        self.cluster = ipyparallel.Cluster(
            n=engines,
            profile_dir=str(profile_dir),
            controller_ip="127.0.0.1",
            log=_quiet_logger(),
            parent=shell,
        )
        try:
            self.cluster.start_cluster_sync()
            self._note_processes()
            self.client = self.cluster.connect_client_sync()
            self.client.wait_for_engines(engines, timeout=120, interactive=False)
            # A blocking DirectView on all engines whose %px magics go to get_ipython(),
            # which is ``shell``.
            self.client.activate()
            self.engine0 = self.client[0]
            self.engine0.block = True
            self._note_processes()
        except BaseException:
            self.close()
            raise

    def forget(self) -> None:
        """Drop what the engines and the controller's record hold (the push/pull workflow's
        leftovers) so that the next measurement starts clean; not timed."""
        self.client.clear(block=True)
        self.client.purge_everything()

    def _note_processes(self) -> None:
        """Remember the controller (and its scheduler processes), the engines and their nannies."""
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "ipyparallel" in " ".join(child.cmdline()):
                    for proc in [child, *child.children(recursive=True)]:
                        self.processes[(proc.pid, proc.create_time())] = proc

    def close(self) -> list[int]:
        """Stop the cluster; returns the pids that were still running and had to be killed."""
        self._note_processes()
        try:
            if self.client is not None:
                # ipyparallel's own shutdown first: stop_cluster's SIGTERM alone leaves it
                # waiting seconds longer for the engines to go.
                with contextlib.suppress(Exception):
                    self.client.shutdown(hub=True, block=True)
                with contextlib.suppress(Exception):
                    self.client.close()
        finally:
            with contextlib.suppress(Exception):
                self.cluster.stop_cluster_sync()
        _, alive = psutil.wait_procs(list(self.processes.values()), timeout=15)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        return [proc.pid for proc in alive]


def _quiet_logger() -> logging.Logger:
    log = logging.getLogger("bench.peers.ipyparallel")
    log.setLevel(logging.WARNING)
    return log


# The three systems, each running a plain cell source against its own notebook namespace ----


class BurstCells:
    """``%%burst`` cells; the namespace is the shell's own."""

    label = "jupyter-burst"

    def __init__(self, session: Session) -> None:
        self.session = session
        self.namespace = session.user_ns

    def run(self, source: str) -> None:
        self.session.cell("%%burst\n" + source)

    def forget(self) -> None:
        pass


class IpyparallelCells:
    """Push what the cell reads to engine 0, ``%%px --targets 0`` the cell, pull what it assigns."""

    label = "ipyparallel"

    def __init__(self, session: Session, ipp: IpyparallelCluster) -> None:
        self.session = session
        self.ipp = ipp
        self.engine = ipp.engine0
        self.namespace: dict[str, Any] = {}

    def run(self, source: str) -> None:
        values = {name: self.namespace[name] for name in replay.names_in(source, self.namespace)}
        if values:
            self.engine.push(values)
        # No progress bar: it is display only, and would fill the output of a long cell.
        self.session.cell("%%px --targets 0 --progress-after=-1\n" + source)
        names = replay.names_out(source)
        if names:
            self.namespace.update(zip(names, self.engine.pull(names), strict=True))
        _drop_deleted(self.namespace, source)

    def run_in_background(self, source: str):
        """``source`` on engine 0 without waiting; ``.get()`` on what it returns waits."""
        return self.engine.execute(source, block=False)

    def forget(self) -> None:
        self.ipp.forget()


class DaskCells:
    """``client.scatter`` what the cell reads, ``client.submit(run_source, ...)``, merge back."""

    label = "raw Dask"

    def __init__(self, client) -> None:
        self.client = client
        namespace: dict[str, Any] = {"__name__": "__main__"}
        exec(compile(_RUN_SOURCE, "<bench-peers>", "exec"), namespace)
        self.run_source = namespace["run_source"]
        self.namespace: dict[str, Any] = {}
        self.held: dict[str, Any] = {}  # key: Future, every value scattered since forget()

    def run(self, source: str) -> None:
        reads = replay.names_in(source, self.namespace)
        # A list, so the keys are content hashes (hash=True, Dask's default); a dict's keys
        # would be the names themselves.
        futures = (
            self.client.scatter([self.namespace[name] for name in reads], direct=True, hash=True)
            if reads
            else []
        )
        # The values go as one dict argument (Dask resolves the futures in it), not as
        # keyword arguments, which could collide with submit's own (key=, workers=...).
        with suppress_large_graph_warning():
            result = self.client.submit(
                self.run_source,
                source,
                replay.names_out(source),
                dict(zip(reads, futures, strict=True)),
                pure=False,
            ).result()
        self.namespace.update(result)
        _drop_deleted(self.namespace, source)
        # Keep every scattered value's future until forget(): the same content gets the same
        # key, and when a future is dropped shortly before its content is scattered again,
        # the release can reach the scheduler after the new scatter, and the task that needs
        # it fails with "lost dependencies". Holding does not save a transfer: scatter sends
        # the bytes again all the same.
        self.held.update((future.key, future) for future in futures)

    def forget(self) -> None:
        self.held = {}


def _drop_deleted(namespace: dict, source: str) -> None:
    for name in replay.names_deleted(source):
        namespace.pop(name, None)


# 1. trivial cell round trip ---------------------------------------------------------------


def trivial_round_trip(
    session: Session, dask: DaskCells, n: int, warmup: int = 5
) -> dict[str, list[float]]:
    """``z = 1`` on each system, ``warmup`` times each, then ``n`` times each, interleaved one
    by one so that drift on this shared machine hits them alike. Seconds per run."""

    def dask_cell() -> float:
        t0 = time.perf_counter()
        dask.run(TRIVIAL_SOURCE)
        return time.perf_counter() - t0

    runners = {
        "burst": lambda: session.cell("%%burst\n" + TRIVIAL_SOURCE),
        "px": lambda: session.cell("%%px\n" + TRIVIAL_SOURCE),
        "px0": lambda: session.cell("%%px --targets 0\n" + TRIVIAL_SOURCE),
        "dask": dask_cell,
    }
    for _ in range(warmup):
        for runner in runners.values():
            runner()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(n):
        for name, runner in runners.items():
            times[name].append(runner())
    for namespace in (session.user_ns, dask.namespace):
        namespace.pop("z", None)
    return times


def trivial_rows(times: dict[str, list[float]]) -> tuple[list[Row], list[str]]:
    n = len(times["burst"])
    labels = {
        "burst": "jupyter-burst `%%burst`",
        "px": f"ipyparallel `%%px` ({ENGINES} engines)",
        "px0": "ipyparallel `%%px --targets 0` (context)",
        "dask": "raw Dask `client.submit(run_source, 'z = 1', ...).result()`",
    }
    rows = [
        Row(
            MEASUREMENT,
            f"trivial cell `z = 1`, median / p90 (N={n}): {label}",
            f"{ms(median(times[name]))} / {ms(p90(times[name]))}",
        )
        for name, label in labels.items()
    ]
    ratio = median(times["burst"]) / median(times["px"])
    rows.append(
        Row(
            MEASUREMENT,
            f"trivial cell: `%%burst` median / `%%px` ({ENGINES} engines) median",
            f"{ratio:.2f}x",
            "<= 1x",
            ratio <= 1.0,
        )
    )
    notes = [
        "Peers, trivial cell `z = 1`, every run in order (ms): "
        + "; ".join(
            f"{name}: " + " ".join(f"{t * 1e3:.1f}" for t in values)
            for name, values in times.items()
        )
    ]
    return rows, notes


# 2. a big array in and out ----------------------------------------------------------------


def copy_in_and_out(system, x: np.ndarray) -> Run:
    """``y = x.copy()`` with the notebook's ``x``; checks that y came back equal, as new data."""
    namespace = system.namespace
    namespace["x"] = x
    try:
        run = measured(lambda: system.run(COPY_SOURCE))
        _check_copy(system.label, namespace.pop("y"), x)
        return run
    finally:
        namespace.pop("x", None)
        namespace.pop("y", None)
        collect()


def _check_copy(label: str, y, x: np.ndarray) -> None:
    if y is x or not np.array_equal(y, x):
        raise BenchError(f"{label}: y is not an equal copy of x")


# 3. the same cell again, its input unchanged -----------------------------------------------


def rerun_unchanged(system, x: np.ndarray) -> tuple[Run, Run]:
    """``READ_SOURCE`` twice in a row with ``x`` unchanged in between."""
    namespace = system.namespace
    namespace["x"] = x
    expected = float(x[::4096].sum())
    try:
        runs = []
        for _ in range(2):
            namespace.pop("s", None)
            runs.append(measured(lambda: system.run(READ_SOURCE)))
            if namespace.get("s") != expected:
                raise BenchError(f"{system.label}: s = {namespace.get('s')!r}, not {expected}")
        return runs[0], runs[1]
    finally:
        namespace.pop("x", None)
        namespace.pop("s", None)
        collect()


# 4. a notebook session ----------------------------------------------------------------------


def replay_session(system, dataset: dict[str, np.ndarray]) -> tuple[Run, list[float], dict]:
    """The cells of ``replay.CELLS`` in order, from a fresh copy of the dataset (after
    ``warm_up``). Returns the whole run, each cell's seconds and the session's ``summary``.
    """
    namespace = system.namespace
    before = set(namespace)
    for name, value in dataset.items():
        namespace[name] = value.copy()  # cell 15 changes data: each system gets its own
    cell_times: list[float] = []

    def all_cells() -> None:
        for number, source in enumerate(replay.CELLS, 1):
            t0 = time.perf_counter()
            try:
                system.run(source)
            except Exception as error:
                raise BenchError(
                    f"replay, {system.label}: cell {number} failed: {error}"
                ) from error
            cell_times.append(time.perf_counter() - t0)

    try:
        run = measured(all_cells)
        if namespace["data"][0, 0] != 0.0:
            raise BenchError(f"{system.label}: the changed data did not come back")
        return run, cell_times, dict(namespace["summary"])
    finally:
        for name in set(namespace) - before:
            namespace.pop(name, None)
        collect()


def warm_up(systems) -> None:
    """``replay.WARM_UP`` on every remote side before any replay is timed, so that no system
    pays for a first torch import the others have had already. The ipyparallel engine runs
    it meanwhile (nothing to push or pull): the imports overlap, the run is shorter."""
    background = [s.run_in_background(replay.WARM_UP) for s in systems if _has_background(s)]
    for system in systems:
        if not _has_background(system):
            before = set(system.namespace)
            system.run(replay.WARM_UP)
            for name in set(system.namespace) - before:  # the modules it imported
                system.namespace.pop(name, None)
    for pending in background:
        pending.get()


def _has_background(system) -> bool:
    return hasattr(system, "run_in_background")


def same_summaries(summaries: dict[str, dict]) -> None:
    """All systems computed the same thing (losses to float tolerance: each process may
    split torch's CPU work into threads differently)."""
    first_label, first = next(iter(summaries.items()))
    for label, summary in summaries.items():
        for key, value in first.items():
            if not np.isclose(summary[key], value, rtol=1e-3):
                raise BenchError(
                    f"replay: {label} got {key} = {summary[key]!r}, {first_label} {value!r}"
                )


# the measurement ------------------------------------------------------------------------------


def run(session: Session, quick: bool, profile: bool = False) -> Report:
    session.ensure_cluster()
    with phase("ipyparallel start"):
        ipp = IpyparallelCluster(session.shell, session.root / "ipyparallel" / "profile_peers")
    left_behind: list[int] = []
    try:
        report = measure(session, ipp, quick)
    finally:
        with phase("ipyparallel stop"):
            left_behind = ipp.close()
        if left_behind:
            print(f"bench: peers: killed ipyparallel processes {left_behind}", file=sys.stderr)
    if left_behind:
        report.rows.append(
            Row(
                MEASUREMENT,
                "ipyparallel processes still running after `stop_cluster`, killed",
                ", ".join(map(str, left_behind)),
                "none",
                False,
            )
        )
    return report


def measure(session: Session, ipp: IpyparallelCluster, quick: bool) -> Report:
    burst = BurstCells(session)
    dask = DaskCells(session.raw_client())
    systems = (burst, IpyparallelCells(session, ipp), dask)
    big = (256 << 20) if quick else (1 << 30)
    report = Report()
    parts = [
        lambda: trivial_part(session, dask, n=20 if quick else 100),
        # A first round apart, then the steady rounds: at least 2 of those for a median.
        lambda: big_value_parts(systems, big, copy_reps=3 if quick else 5, quick=quick),
        lambda: replay_part(systems, (64 << 20) if quick else (256 << 20)),
    ]
    for part in parts:
        rows, notes = part()
        report.rows += rows
        report.notes += notes
    return report


def trivial_part(session: Session, dask: DaskCells, n: int) -> tuple[list[Row], list[str]]:
    with phase("trivial cells"):
        return trivial_rows(trivial_round_trip(session, dask, n))


def big_value_parts(
    systems, nbytes: int, copy_reps: int, quick: bool
) -> tuple[list[Row], list[str]]:
    """Parts 2 and 3, which share one big array (making it takes seconds)."""
    x = random_bytes(nbytes)
    copies: dict[str, list[Run]] = {system.label: [] for system in systems}
    with phase(f"{size(nbytes)} in and out"):
        for _ in range(copy_reps):
            # New content for every repetition: a copy of a value the remote side already
            # has (from the last repetition) would not be "x goes out" any more.
            x += 1
            for system in systems:  # interleaved, so that the machine's drift hits all alike
                copies[system.label].append(copy_in_and_out(system, x))
                _forget(system)
    x += 1  # and new content for the re-runs, for the same reason
    reruns: dict[str, tuple[Run, Run]] = {}
    with phase("re-runs"):
        for system in systems:
            reruns[system.label] = rerun_unchanged(system, x)
            _forget(system)
    del x
    collect()
    rows = copy_rows(copies, nbytes) + rerun_rows(reruns, nbytes, quick)
    notes = [
        f"Peers, `{COPY_SOURCE.strip()}` ({size(nbytes)}), every run (seconds, loopback): "
        + "; ".join(
            f"{label}: " + " / ".join(run.text() for run in runs) for label, runs in copies.items()
        ),
        f"Peers, `{READ_SOURCE.strip()}` ({size(nbytes)}), run 1 / run 2 (seconds, loopback): "
        + "; ".join(f"{label}: {a.text()} / {b.text()}" for label, (a, b) in reruns.items()),
    ]
    return rows, notes


def replay_part(systems, dataset_bytes: int) -> tuple[list[Row], list[str]]:
    # The notebook imports torch now: the first system to bring a model back would pay
    # for that import otherwise.
    import torch  # noqa: F401

    dataset = replay.notebook_namespace(dataset_bytes)
    with phase("replay warm-up"):
        warm_up(systems)
    replays = {}
    for system in systems:
        with phase(f"replay, {system.label}"):
            replays[system.label] = replay_session(system, dataset)
            _forget(system)
    del dataset
    collect()
    same_summaries({label: summary for label, (_, _, summary) in replays.items()})
    notes = [
        "Peers, replay, seconds per cell (1-20): "
        + "; ".join(
            f"{label}: " + " ".join(f"{t:.2f}" for t in times)
            for label, (_, times, _) in replays.items()
        )
    ]
    return replay_rows(replays, dataset_bytes), notes


@contextlib.contextmanager
def phase(label: str) -> Iterator[None]:
    """Say on stderr how long a part took: the whole measurement takes minutes."""
    t0 = time.monotonic()
    yield
    print(f"bench: peers: {label} took {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)


def _forget(system) -> None:
    system.forget()
    collect()


# rows -------------------------------------------------------------------------------------------

HOW_BIG_MOVES = {
    "jupyter-burst": "`%%burst`",
    "ipyparallel": "push x to engine 0, `%%px --targets 0`, pull y",
    "raw Dask": "`client.scatter(x, direct=True)`, `client.submit(run_source, ...)`, `.result()`",
}


def copy_rows(copies: dict[str, list[Run]], nbytes: int) -> list[Row]:
    """Per system, the first round apart (the worker's first big allocations, ipyparallel's
    first push), then the median / p90 of the rounds after it."""
    rows = []
    for label, runs in copies.items():
        what = (
            f"`{COPY_SOURCE.strip()}`, numpy {size(nbytes)} in and out (2 N bytes): "
            f"{label} ({HOW_BIG_MOVES[label]})"
        )
        first, steady = runs[0], runs[1:]
        rows.append(
            Row(
                MEASUREMENT,
                f"{what}; {'one run' if not steady else 'first round'}: time, MB/s, loopback",
                f"{first.seconds:.2f} s, {mb_per_s(2 * nbytes, first.seconds):,.0f} MB/s, "
                f"{mib(first.loopback)}",
            )
        )
        if steady:
            rows.append(_steady_copy_row(what, steady, nbytes))
    return rows


def _steady_copy_row(what: str, runs: list[Run], nbytes: int) -> Row:
    """The rounds after the first: median / p90 of the time (MB/s at each) and of the bytes."""
    seconds = [run.seconds for run in runs]
    loopback = [run.loopback for run in runs]
    fast, slow = median(seconds), p90(seconds)
    return Row(
        MEASUREMENT,
        f"{what}; after the first, median / p90 (N={len(runs)}): time, MB/s, loopback",
        f"{fast:.2f} s / {slow:.2f} s, {mb_per_s(2 * nbytes, fast):,.0f} / "
        f"{mb_per_s(2 * nbytes, slow):,.0f} MB/s, {mib(median(loopback))} / {mib(p90(loopback))}",
    )


HOW_RERUNS_MOVE = {
    "jupyter-burst": "`%%burst`",
    "ipyparallel": "push x before each run (the push/pull workflow), `%%px --targets 0`, pull s",
    "raw Dask": "`client.scatter(x, direct=True, hash=True)` before each run, submit, result",
}


def rerun_rows(reruns: dict[str, tuple[Run, Run]], nbytes: int, quick: bool) -> list[Row]:
    rows = [
        Row(
            MEASUREMENT,
            f"`{READ_SOURCE.strip()}` twice, x (numpy {size(nbytes)}) unchanged between: "
            f"{label} ({HOW_RERUNS_MOVE[label]}); run 1 / run 2: time, loopback",
            f"{first.text()} / {second.text()}",
        )
        for label, (first, second) in reruns.items()
    ]
    first, second = reruns["jupyter-burst"]
    fraction = second.seconds / first.seconds
    rows += [
        Row(
            MEASUREMENT,
            "jupyter-burst, the same cell again with x unchanged: loopback bytes of the second run",
            mib(second.loopback),
            f"<= {mib(TARGET_RERUN_BYTES)}",
            second.loopback <= TARGET_RERUN_BYTES,
        ),
        # With --quick's smaller x, 5 % of the first run is less than a trivial cell takes.
        Row(
            MEASUREMENT,
            "jupyter-burst, the same cell again with x unchanged: second run's time / first run's",
            f"{fraction:.0%}",
            f"<= {TARGET_RERUN_FRACTION:.0%}" + (" (full run only)" if quick else ""),
            None if quick else fraction <= TARGET_RERUN_FRACTION,
        ),
    ]
    return rows


HOW_REPLAY_MOVES = {
    "jupyter-burst": "`%%burst` cells",
    "ipyparallel": "push what each cell reads, `%%px --targets 0`, pull what it assigns",
    "raw Dask": "scatter what each cell reads, `client.submit(run_source, ...)`, merge back",
}


def replay_rows(replays: dict[str, tuple[Run, list[float], dict]], nbytes: int) -> list[Row]:
    return [
        Row(
            MEASUREMENT,
            f"20-cell session replay (`bench/replay.py`, {size(nbytes)} float32 dataset): "
            f"{label} ({HOW_REPLAY_MOVES[label]}); one run: total time, loopback",
            run.text(),
        )
        for label, (run, _, _) in replays.items()
    ]
