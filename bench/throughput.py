"""Throughput: a big numpy array and a torch tensor to a cell and back, against raw TCP loopback.

Memory on this machine is the first-touch kind (a VM: the first write to fresh pages is
slow), so every configuration gets one untimed warm-up run, then the best of ``reps``.
"""

from __future__ import annotations

import functools
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from bench.common import (
    BenchError,
    Report,
    Row,
    Session,
    Timers,
    collect,
    mb_per_s,
    size,
    suppress_large_graph_warning,
)
from bench.tcp_echo import recv_exactly

TARGET_RATIO = 0.70


def best_of(reps: int, once: Callable[[], float], warmup: int = 1) -> tuple[float, float]:
    """(first untimed warm-up run, best of ``reps``) in seconds."""
    first = once()
    for _ in range(warmup - 1):
        once()
    return first, min(once() for _ in range(reps))


def tcp_round_trip(data: np.ndarray, reps: int) -> tuple[float, float]:
    """Send ``data`` to a child process over loopback TCP and receive it back: (first, best) s."""
    nbytes = data.nbytes
    send_view = memoryview(data).cast("B")
    back = np.empty(nbytes, dtype=np.uint8)
    back_view = memoryview(back).cast("B")
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(60)
        port = server.getsockname()[1]
        echo = subprocess.Popen(
            [
                sys.executable,
                str(pathlib.Path(__file__).with_name("tcp_echo.py")),
                str(port),
                str(nbytes),
            ],
            stdin=subprocess.DEVNULL,
        )
        try:
            conn, _ = server.accept()
            conn.settimeout(None)
            with conn:

                def once() -> float:
                    t0 = time.perf_counter()
                    conn.sendall(send_view)
                    if not recv_exactly(conn, back_view):
                        raise BenchError("the TCP echo process closed the connection")
                    return time.perf_counter() - t0

                result = best_of(reps, once)
                if not np.array_equal(back, data):
                    raise BenchError("the TCP echo sent back different bytes")
        finally:
            try:  # the echo process exits once the connection is closed
                echo.wait(timeout=30)
            except subprocess.TimeoutExpired:
                echo.kill()
                echo.wait()
    return result


def burst_round_trip(
    session: Session, value, cell: str, reps: int, same: Callable, identical: bool
) -> tuple[float, float]:
    """Time ``cell`` with ``x = value`` in the notebook; check that ``y`` came back right."""
    ns = session.user_ns

    def once() -> float:
        ns.pop("y", None)
        collect()
        elapsed = session.cell(cell)
        y = ns["y"]
        if identical and y is not value:
            raise BenchError(f"{cell!r}: y is not the notebook's own x")
        if not identical and y is value:
            raise BenchError(f"{cell!r}: y came back as the notebook's x, not as new data")
        if not same(y, value):
            raise BenchError(f"{cell!r}: y differs from x")
        del y
        return elapsed

    ns["x"] = value
    try:
        return best_of(reps, once)
    finally:
        ns.pop("x", None)
        ns.pop("y", None)
        collect()


def run(session: Session, quick: bool, profile: bool = False) -> Report:
    nbytes = (256 << 20) if quick else (1 << 30)
    tbytes = (64 << 20) if quick else (256 << 20)
    reps = 2 if quick else 3
    report = Report()
    m = "throughput"
    session.ensure_cluster()

    x = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    raw_first, raw_best = tcp_round_trip(x, reps)
    raw_rate = mb_per_s(2 * nbytes, raw_best)
    report.rows.append(
        Row(
            m,
            f"raw TCP loopback, {size(nbytes)} there and back (best of {reps})",
            f"{raw_rate:,.0f} MB/s",
        )
    )
    rows_after: list[Row] = []

    # The cell as given: y = x. The worker sends y back as a reference to the notebook's own
    # x (the cell did not change it), so only x travels: N bytes, not 2 N.
    first, best = burst_round_trip(session, x, "%%burst\ny = x\n", reps, np.array_equal, True)
    rate = mb_per_s(nbytes, best)
    report.rows.append(
        _ratio_row(
            m,
            f"`y = x`, numpy {size(nbytes)}: x out, y back by reference (N bytes)",
            rate,
            raw_rate,
        )
    )
    # A cell whose y is new data: x out and a same-sized y back, 2 N bytes.
    first2, best2 = burst_round_trip(session, x, "%%burst\ny = x[:]\n", reps, np.array_equal, False)
    rate2 = mb_per_s(2 * nbytes, best2)
    report.rows.append(
        _ratio_row(
            m, f"`y = x[:]`, numpy {size(nbytes)}: x out, y back (2 N bytes)", rate2, raw_rate
        )
    )
    rows_after.append(
        Row(
            m,
            "first (cold-memory) run: raw TCP / `y = x` / `y = x[:]`",
            f"{raw_first:.2f} s / {first:.2f} s / {first2:.2f} s",
        )
    )

    # torch, the same two cells
    import torch

    t = torch.randint(
        0, 256, (tbytes,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    _, tbest = burst_round_trip(session, t, "%%burst\ny = x\n", reps, torch.equal, True)
    report.rows.append(
        _ratio_row(
            m,
            f"`y = x`, torch {size(tbytes)}: y back by reference (N bytes)",
            mb_per_s(tbytes, tbest),
            raw_rate,
        )
    )
    _, tbest2 = burst_round_trip(session, t, "%%burst\ny = x[:]\n", reps, torch.equal, False)
    report.rows.append(
        _ratio_row(
            m,
            f"`y = x[:]`, torch {size(tbytes)}: x out, y back (2 N bytes)",
            mb_per_s(2 * tbytes, tbest2),
            raw_rate,
        )
    )
    del t
    collect()

    # Context: plain Dask on the same cluster.
    client = session.raw_client()
    identity, inband_echo = session.remote["identity"], session.remote["inband_echo"]

    context_reps = 1 if quick else 2
    _, dbest = best_of(context_reps, functools.partial(_dask_default, client, identity, x))
    rows_after.append(
        Row(
            m,
            f"context: raw `client.submit(lambda a: a, x).result()`, {size(nbytes)} (Dask's own "
            f"serialization, via the scheduler; best of {context_reps})",
            f"{mb_per_s(2 * nbytes, dbest):,.0f} MB/s",
        )
    )
    _, ibest = best_of(context_reps, functools.partial(_inband, client, inband_echo, x))
    rows_after.append(
        Row(
            m,
            f"context: in-band `cloudpickle.dumps(x)` -> `client.submit` -> worker loads+dumps -> "
            f"`cloudpickle.loads`, {size(nbytes)} (best of {context_reps})",
            f"{mb_per_s(2 * nbytes, ibest):,.0f} MB/s",
        )
    )
    report.rows += rows_after

    worst = min(r.ok is not False for r in report.rows)
    if profile or not worst:
        report.notes += breakdown(session, x, raw_best)
    del x
    collect()
    return report


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


def _ratio_row(m: str, figure: str, rate: float, raw_rate: float) -> Row:
    ratio = rate / raw_rate
    return Row(
        m,
        figure,
        f"{rate:,.0f} MB/s = {ratio:.0%} of raw",
        f">= {TARGET_RATIO:.0%} of raw",
        ratio >= TARGET_RATIO,
    )


def breakdown(session: Session, x: np.ndarray, raw_best: float) -> list[str]:
    """One more ``y = x[:]`` with every step timed, in the kernel and on the worker."""
    import jupyter_burst.jobs as jobs
    import jupyter_burst.payload as wire

    client = session.raw_client()
    remote = session.remote
    client.run(remote["bench_patch"])
    handle = session.handle()
    nbytes = x.nbytes
    ns = session.user_ns
    try:
        with Timers() as timers:
            timers.wrap(wire, "pack_namespace", "kernel: pack_namespace (pickle, out of band)")
            timers.wrap(jobs, "_pick_worker", "kernel: _pick_worker")
            timers.wrap(handle.client, "scatter", "kernel: client.scatter x to the worker")
            timers.wrap(jobs, "submit", "kernel: jobs.submit (pick + scatter + submit)")
            timers.wrap(jobs, "follow", "kernel: jobs.follow (task on the worker + gather)")
            timers.wrap(jobs, "_result", "kernel: future.result() (gather y)")
            timers.wrap(wire, "unpack_result", "kernel: unpack_result")
            ns["x"] = x
            ns.pop("y", None)
            collect()
            client.run(remote["bench_collect"])
            total = session.cell("%%burst\ny = x[:]\n")
            worker = next(iter(client.run(remote["bench_collect"]).values()))
    finally:
        client.run(remote["bench_unpatch"])
        ns.pop("x", None)
        ns.pop("y", None)
        collect()
    lines = [f"Throughput breakdown, one `y = x[:]` with {size(nbytes)} (wall {total:.3f} s):"]
    for label, values in timers.times.items():
        lines.append(f"  {label:<52} {sum(values):7.3f} s")
    on_worker = worker["_end"][0] - worker["_start"][0] if worker.get("_end") else float("nan")
    for key, label in (
        ("unpack", "worker: unpack_namespace"),
        ("fingerprints", "worker: _fingerprints (before + after)"),
        ("pack", "worker: pack_result"),
    ):
        values = worker.get(key, [])
        lines.append(f"  {label:<52} {sum(values):7.3f} s  (x{len(values)})")
    lines.append(f"  {'worker: run_cell, setup to packed result':<52} {on_worker:7.3f} s")
    scatter = timers.total("kernel: client.scatter x to the worker")
    gather = timers.total("kernel: future.result() (gather y)")
    one_way = raw_best / 2
    lines.append(
        f"  one-way rates: scatter {mb_per_s(nbytes, scatter):,.0f} MB/s, "
        f"gather (after the task finished) {mb_per_s(nbytes, gather):,.0f} MB/s, "
        f"raw TCP {mb_per_s(nbytes, one_way):,.0f} MB/s"
    )
    return lines
