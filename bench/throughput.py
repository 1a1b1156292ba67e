"""Throughput: a big numpy array and a torch tensor to a cell and back, against raw TCP loopback.

Two cells per value: ``y = x`` as asked, and ``y = x[:]``. In ``y = x`` the worker sends ``y``
back as a reference to the notebook's own ``x`` (the cell did not change it; see
``payload.pack_result``), so only x travels: N bytes. ``y = x[:]`` is new data of the same
size, so N bytes go out and N come back, like the raw TCP echo.

This machine is a VM that hands freed memory back to its host, so the first write to a
fresh buffer can be slow; see ``measure`` for how the runs are ordered because of it.
"""

from __future__ import annotations

import functools
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.common import (
    BenchError,
    Report,
    Row,
    Session,
    Timers,
    collect,
    mb_per_s,
    median,
    p90,
    size,
    suppress_large_graph_warning,
)
from bench.tcp_echo import recv_exactly

TARGET_RATIO = 0.80
FINGERPRINT_TARGET = 0.10  # of the time to send the value


class TcpEcho:
    """A child process that echoes ``data.nbytes`` bytes over loopback TCP (``tcp_echo.py``)."""

    def __init__(self, data: np.ndarray):
        self.data = data
        self.send_view = memoryview(data).cast("B")
        self.back = np.empty(data.nbytes, dtype=np.uint8)
        self.back_view = memoryview(self.back).cast("B")
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(60)
        script = str(pathlib.Path(__file__).with_name("tcp_echo.py"))
        port = str(self.server.getsockname()[1])
        self.process = subprocess.Popen(
            [sys.executable, script, port, str(data.nbytes)], stdin=subprocess.DEVNULL
        )
        try:
            self.conn, _ = self.server.accept()
            self.conn.settimeout(None)
        except BaseException:
            self.close()
            raise

    def round_trip(self) -> float:
        """Seconds to send the data and receive it back (sendall, then recv_into 64 MiB chunks).

        One byte changes first (not timed), as the cells' x does: each round sends new data.
        """
        self.data[0] = (int(self.data[0]) + 1) % 256
        t0 = time.perf_counter()
        self.conn.sendall(self.send_view)
        if not recv_exactly(self.conn, self.back_view):
            raise BenchError("the TCP echo process closed the connection")
        return time.perf_counter() - t0

    def check(self) -> None:
        if not np.array_equal(self.back, self.data):
            raise BenchError("the TCP echo sent back different bytes")

    def close(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()
        self.server.close()
        try:  # the echo process exits once the connection is closed
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.back = self.back_view = None

    def __enter__(self) -> TcpEcho:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Timing:
    first: float  # the first round, reported apart: it pays for cold memory and imports
    times: list[float]  # the rounds after it, the steady state

    @property
    def median(self) -> float:
        return median(self.times)

    def rates(self, nbytes: int) -> tuple[float, float]:
        """MB/s at the median time and at the p90 time (the slow tail) of the steady rounds."""
        return mb_per_s(nbytes, self.median), mb_per_s(nbytes, p90(self.times))


def burst_once(session: Session, value, cell: str, same: Callable, identical: bool) -> float:
    """Run ``cell`` with ``x = value`` in the notebook; check that ``y`` came back right.

    One element of ``x`` changes before each run, so that every run is a first send of new
    bytes (hashed, sent in full) rather than a cache hit (``bench/peers.py`` times those).
    """
    ns = session.user_ns
    ns.pop("y", None)
    value[0] = (int(value[0]) + 1) % 256
    collect()
    elapsed = session.cell(cell)
    y = ns.pop("y")
    if identical and y is not value:
        raise BenchError(f"{cell!r}: y is not the notebook's own x")
    if not identical and y is value:
        raise BenchError(f"{cell!r}: y came back as the notebook's x, not as new data")
    if not same(y, value):
        raise BenchError(f"{cell!r}: y differs from x")
    del y
    collect()
    return elapsed


CELLS = {  # name: (cell, y is the notebook's own x)
    "y = x": ("%%burst\ny = x\n", True),
    "y = x[:]": ("%%burst\ny = x[:]\n", False),
}


def measure(session: Session, value, raw: np.ndarray, same: Callable, reps: int) -> dict:
    """Each of raw echo, ``y = x``, ``y = x[:]``: one warm-up run, then ``reps`` back to back.

    Back to back, because this VM hands freed memory back to its host within seconds
    (free page reporting) and a fresh buffer then costs a slow first touch (see
    ``page_cost``); Dask receives every transfer into a fresh buffer, the raw echo does not.
    The raw echo runs again after the cells, so a drift of the machine shows in both.
    """
    ns = session.user_ns
    ns["x"] = value
    try:
        with TcpEcho(raw) as echo:
            timings = {"raw": Timing(echo.round_trip(), [echo.round_trip() for _ in range(reps)])}
            for name, (cell, identical) in CELLS.items():
                first = burst_once(session, value, cell, same, identical)
                times = [burst_once(session, value, cell, same, identical) for _ in range(reps)]
                timings[name] = Timing(first, times)
            timings["raw"].times += [echo.round_trip() for _ in range(reps)]
            echo.check()
        return timings
    finally:
        ns.pop("x", None)
        ns.pop("y", None)
        collect()


def page_cost(nbytes: int) -> tuple[float, float]:
    """Seconds for the first write to a fresh ``nbytes`` buffer: now, and again right after."""
    out = []
    for _ in range(2):
        t0 = time.perf_counter()
        buffer = np.empty(nbytes, dtype=np.uint8)
        buffer.fill(1)
        out.append(time.perf_counter() - t0)
        del buffer
    return out[0], out[1]


def run(session: Session, quick: bool, profile: bool = False) -> Report:
    nbytes = (256 << 20) if quick else (1 << 30)
    tbytes = (64 << 20) if quick else (256 << 20)
    reps = 2 if quick else 5
    treps = 3 if quick else 8  # the smaller transfers are cheap; more runs, steadier median
    report = Report()
    m = "throughput"
    session.ensure_cluster()
    cold, warm = page_cost(nbytes)
    report.rows.append(
        Row(
            m,
            f"VM page cost: first write to a fresh {size(nbytes)} buffer, "
            "now / again right after freeing one",
            f"{cold:.2f} s / {warm:.2f} s",
        )
    )

    import torch

    x = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    t = torch.randint(
        0, 256, (tbytes,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    results = {
        f"numpy {size(nbytes)}": (nbytes, measure(session, x, x, np.array_equal, reps)),
        f"torch {size(tbytes)}": (tbytes, measure(session, t, t.numpy(), torch.equal, treps)),
    }
    for label, (n, timings) in results.items():
        first_note = "; the worker imports torch" if label.startswith("torch") else ""
        raw = timings["raw"]
        raw_rate, raw_slow = raw.rates(2 * n)
        report.rows.append(
            Row(
                m,
                f"raw TCP loopback, {size(n)} there and back; after the first, "
                f"MB/s at the median / p90 time (N={len(raw.times)})",
                f"{raw_rate:,.0f} / {raw_slow:,.0f} MB/s",
            )
        )
        report.rows.append(
            _ratio_row(
                m,
                f"`y = x`, {label}: x out, y back by reference (N bytes)",
                timings["y = x"],
                n,
                raw_rate,
                quick,
            )
        )
        report.rows.append(
            _ratio_row(
                m,
                f"`y = x[:]`, {label}: x out, y back (2 N bytes)",
                timings["y = x[:]"],
                2 * n,
                raw_rate,
                quick,
            )
        )
        report.rows.append(
            Row(
                m,
                f"{label}, first round (cold memory{first_note}): raw / `y = x` / `y = x[:]`",
                " / ".join(f"{timings[k].first:.2f} s" for k in ("raw", "y = x", "y = x[:]")),
            )
        )
    report.rows.append(fingerprint_row(m, x, results[f"numpy {size(nbytes)}"][1]["y = x"].median))
    report.notes.append(
        f"Throughput: a first round, then {reps} (numpy) / {treps} (torch) back to back, x "
        "changed before each; median and p90 of those after the first "
        "(raw: twice as many, half before and half after the cells); "
        "MB/s = 10^6 bytes moved per second (N for `y = x`, 2 N for `y = x[:]` and the raw echo). "
        "All times after the first round (s): "
        + "; ".join(
            f"{label} {name}: " + " ".join(f"{v:.3f}" for v in timing.times)
            for label, (_, timings) in results.items()
            for name, timing in timings.items()
        )
    )

    # Context: plain Dask on the same cluster, one run each (they are slow).
    client = session.raw_client()
    identity, inband_echo = session.remote["identity"], session.remote["inband_echo"]
    dask_default = functools.partial(_dask_default, client, identity, x)
    inband = functools.partial(_inband, client, inband_echo, x)
    report.rows += [
        Row(
            m,
            f"context: raw `client.submit(lambda a: a, x).result()`, numpy {size(nbytes)} "
            "(Dask's own serialization, via the scheduler), one run",
            f"{mb_per_s(2 * nbytes, dask_default()):,.0f} MB/s",
        ),
        Row(
            m,
            f"context: in-band `cloudpickle.dumps(x)`, `client.submit`, worker loads + dumps, "
            f"`cloudpickle.loads`, numpy {size(nbytes)}, one run",
            f"{mb_per_s(2 * nbytes, inband()):,.0f} MB/s",
        ),
    ]

    if profile or any(row.ok is False for row in report.rows):
        report.notes += breakdown(session, x, f"numpy {size(nbytes)}", "y = x[:]")
        report.notes += breakdown(session, t, f"torch {size(tbytes)}", "y = x")
        report.notes += breakdown(session, t, f"torch {size(tbytes)}", "y = x[:]")
    del x, t
    collect()
    return report


def fingerprint_row(m: str, x: np.ndarray, send_seconds: float, runs: int = 5) -> Row:
    """The kernel's content keys of ``x`` (what decides "send again or not") against sending it.

    ``send_seconds``: the median steady ``y = x``. One element of x changes (untimed) before
    each run: a large buffer whose pages were not written since its last hash keeps its key
    without a hash (wire/write_watch.py), and this row is the price of a changed one.
    """
    from jupyter_burst.wire import digest, payload

    def keys() -> float:
        x.flat[0] += 1
        t0 = time.perf_counter()
        payload.pack_namespace({"x": x}, {}, cache_from=1)
        return time.perf_counter() - t0

    times = [keys() for _ in range(runs)]
    share = median(times) / send_seconds
    return Row(
        m,
        f"content keys of x, numpy {size(x.nbytes)} (`pack_namespace`, xxh3 on "
        f"{digest.threads()} threads), median / p90 (N={runs}); median against the median "
        "`y = x` after the first (x sent)",
        f"{median(times) * 1000:.0f} ms / {p90(times) * 1000:.0f} ms; median = {share:.0%}",
        f"<= {FINGERPRINT_TARGET:.0%}",
        share <= FINGERPRINT_TARGET,
    )


def _dask_default(client, identity, x: np.ndarray) -> float:
    t0 = time.perf_counter()
    with suppress_large_graph_warning():
        y = client.submit(identity, x, pure=False).result()
    elapsed = time.perf_counter() - t0
    if not np.array_equal(y, x):
        raise BenchError("dask default path: wrong bytes back")
    del y
    collect()
    return elapsed


def _inband(client, inband_echo, x: np.ndarray) -> float:
    import cloudpickle

    t0 = time.perf_counter()
    blob = cloudpickle.dumps(x)  # no buffer_callback: the array is copied into the pickle
    with suppress_large_graph_warning():
        back = client.submit(inband_echo, blob, pure=False).result()
    del blob
    y = cloudpickle.loads(back)
    elapsed = time.perf_counter() - t0
    del back
    if not np.array_equal(y, x):
        raise BenchError("in-band path: wrong bytes back")
    del y
    collect()
    return elapsed


def _ratio_row(
    m: str, figure: str, timing: Timing, nbytes: int, raw_rate: float, quick: bool
) -> Row:
    """The steady rate against raw's, medians; with --quick the sizes are too small to judge."""
    rate, slow = timing.rates(nbytes)
    ratio = rate / raw_rate
    return Row(
        m,
        f"{figure}; after the first, MB/s at the median / p90 time (N={len(timing.times)})",
        f"{rate:,.0f} / {slow:,.0f} MB/s; median = {ratio:.0%} of raw's",
        f">= {TARGET_RATIO:.0%} of raw" + (" (full run only)" if quick else ""),
        None if quick else ratio >= TARGET_RATIO,
    )


def breakdown(session: Session, value, label: str, name: str, runs: int = 3) -> list[str]:
    """The cell ``name`` again, each step timed in the kernel and on the worker; the median run.

    The run whose total is the median, not the fastest: its steps are what a run usually costs.
    """
    import jupyter_burst.driver.jobs as jobs
    import jupyter_burst.wire.payload as wire

    cell, identical = CELLS[name]
    client = session.raw_client()
    remote = session.remote
    client.run(remote["bench_patch"])
    handle = session.handle()
    nbytes = value.nbytes
    ns = session.user_ns
    timed: list[tuple[float, dict, dict]] = []  # (wall, kernel steps, worker steps) per run
    try:
        ns["x"] = value
        for _ in range(runs):
            ns.pop("y", None)
            collect()
            with Timers() as timers:
                timers.wrap(wire, "pack_namespace", "kernel: pack_namespace (pickle, out of band)")
                timers.wrap(jobs, "_choose_workers", "kernel: _choose_workers")
                timers.wrap(handle.client, "scatter", "kernel: client.scatter x to the worker")
                timers.wrap(jobs, "submit", "kernel: jobs.submit (pick + scatter + submit)")
                timers.wrap(jobs, "follow", "kernel: jobs.follow (task on the worker + gather)")
                timers.wrap(jobs, "_result", "kernel: future.result() (gather y)")
                timers.wrap(wire, "unpack_result", "kernel: unpack_result")
                client.run(remote["bench_collect"])
                total = burst_once(session, value, cell, lambda a, b: True, identical)
                worker = next(iter(client.run(remote["bench_collect"]).values()))
            timed.append((total, dict(timers.times), worker))
    finally:
        client.run(remote["bench_unpatch"])
        ns.pop("x", None)
        ns.pop("y", None)
        collect()
    total, times, worker = median_run(timed)
    lines = [
        f"Throughput breakdown, `{name}` with {label} "
        f"(the median run of {runs}, wall {total:.3f} s):"
    ]
    for step, values in times.items():
        lines.append(f"  {step:<52} {sum(values):7.3f} s")
    on_worker = worker["_end"][0] - worker["_start"][0] if worker.get("_end") else float("nan")
    for key, step in (
        ("unpack", "worker: unpack_namespace"),
        ("fingerprints", "worker: _fingerprints (before + after)"),
        ("pack", "worker: pack_result"),
    ):
        values = worker.get(key, [])
        lines.append(f"  {step:<52} {sum(values):7.3f} s  (x{len(values)})")
    lines.append(f"  {'worker: run_cell, setup to packed result':<52} {on_worker:7.3f} s")
    scatter = sum(times.get("kernel: client.scatter x to the worker", ()))
    gather = sum(times.get("kernel: future.result() (gather y)", ()))
    rates = f"  one-way rates: scatter {mb_per_s(nbytes, scatter):,.0f} MB/s"
    if not identical:
        rates += f", gather (after the task finished) {mb_per_s(nbytes, gather):,.0f} MB/s"
    lines.append(rates)
    return lines


def median_run(timed: list[tuple[float, dict, dict]]) -> tuple[float, dict, dict]:
    """The run whose wall time is the median (of an even number, the slower middle one)."""
    return sorted(timed, key=lambda run: run[0])[len(timed) // 2]
