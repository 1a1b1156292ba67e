"""The trivial cell as a user meets it: through a real kernel, spaced as cells are.

A kernel started with jupyter_client (its own state folder), timed from the
``execute_request`` to the kernel's ``idle`` for it, as a notebook sees a cell end. Four
kinds of cell, each N times, interleaved one by one so that drift hits all alike, with a
pause between cells (a user does not fire cells back to back, and Dask batches messages
sent back to back, which a spaced cell never waits for):

- a plain cell, ``z = 1``: what the kernel itself costs;
- ``%%burst`` ``z = 1`` on a warm local cluster;
- raw Dask from the same kernel: ``client.submit(f).result()`` on a ``LocalCluster`` of one
  worker process of its own;
- ipyparallel: ``%%px`` ``z = 1`` on 2 engines of a cluster the kernel started (when
  ipyparallel is installed: ``make bench``).

Targets (issue #21): the burst median ≤ the ``%%px`` median, and ≤ 1.5 × the raw Dask median.

Then a large array ``big`` (1 GiB of float32, 256 MiB with ``--quick``) read by a cell, in
the same kernel, N rounds each: given new values by a plain cell before each round (not
timed), then read by ``%%burst`` or by raw Dask (``scatter(direct=True)`` and a task, the
way a Dask user sends a fresh array); and read again unchanged by ``%%burst``. The first
round of each is reported apart from the rounds after it (the steady state). Targets: a
changed value's steady state ≤ 1.2 × raw Dask's; an unchanged re-run ≤ 5% of a warm send of
new bytes (the first round pays one-off costs, and would flatter any re-run). The resident
size of the kernel and of the burst worker is read after each ``%%burst`` read: the largest,
against each one's size before any large value plus one copy (within 10%).

Then the cold start as a user meets it: a fresh kernel (the extension loaded, no cluster
running), timed from its first ``%%burst`` ``z = 1`` to the kernel's ``idle``: the local
cluster's start and the cell. N fresh kernels, one after the other. Target: median ≤ 1 s.

Where a trivial-cell target is missed (or with ``--profile``), N more warm trivial cells run
as ``%%burst profile`` in the same kernel, and the median of each line of their profiles
goes into the notes: where the milliseconds go, on each side, in the run that missed.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import tempfile
import time
from typing import Any

from bench.common import Report, Row, Session, median, ms, p90

TARGET_RAW_RATIO = 1.5
PAUSE_SECONDS = 0.1  # between cells, as a user's cells are spaced
CELLS = {
    "plain cell `z = 1`": "z = 1",
    "`%%burst` `z = 1` (warm)": "%%burst\nz = 1",
    "raw Dask `client.submit(f).result()`": "raw.submit(f, pure=False).result()",
    "ipyparallel `%%px` `z = 1` (2 engines)": "%%px\nz = 1",
}
RAW_SETUP = """
from distributed import Client, LocalCluster
raw_cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
raw = Client(raw_cluster)
def f():
    return 1
"""
PX_SETUP = """
import ipyparallel as ipp
px_cluster = ipp.Cluster(n=2, log_level=40)
px = px_cluster.start_and_connect_sync()
px.wait_for_engines(2, timeout=120)
px.activate()
"""
TARGET_CHANGED_RATIO = 1.2
TARGET_COLD_SECONDS = 1.0
MEMORY_SLACK = 0.10  # one copy of the working set, + 10%
WORKER_PID = "%%burst\nimport os\nburst_worker_pid = os.getpid()"
TARGET_UNCHANGED_SHARE = 0.05
DATA_SETUP = """
import os
import numpy as np
def first_of(a):
    return float(a[0])
"""
NEW_VALUES = "big = np.full({n}, {i}, dtype=np.float32)"
BURST_READS = "%%burst\nfirst = float(big[0])"
RAW_READS = (
    "_sent = raw.scatter(big, direct=True)\nfirst = raw.submit(first_of, _sent).result()\ndel _sent"
)


# Also after a failure part-way: whatever was started is stopped, nothing is left running.
TEARDOWN = """
%burst down
for _stop in ("raw.close", "raw_cluster.close", "px_cluster.stop_cluster_sync"):
    try:
        eval(_stop)()
    except NameError:
        pass
"""


class KernelCells:
    """A real kernel; :meth:`run` times one cell as the notebook sees it."""

    def __init__(self, state_dir: str) -> None:
        from jupyter_client import KernelManager

        env = dict(os.environ, DASK_BURST__STATE_DIR=state_dir)
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    def run(self, code: str, timeout: float = 300) -> float:
        """Seconds from sending the cell to the kernel's ``idle`` for it; raises if it failed."""
        return self._execute(code, timeout)[0]

    def stdout(self, code: str, timeout: float = 120) -> str:
        """What the cell printed; raises if it failed."""
        return self._execute(code, timeout)[1]

    def pids(self) -> tuple[int, int]:
        """The kernel's process id, and the burst worker's (after :data:`WORKER_PID` ran)."""
        kernel_pid, worker_pid = self.stdout("print(os.getpid(), burst_worker_pid)").split()
        return int(kernel_pid), int(worker_pid)

    def _execute(self, code: str, timeout: float) -> tuple[float, str]:
        """The cell's seconds to the kernel's ``idle`` for it, and what it printed."""
        started = time.perf_counter()
        msg_id = self.client.execute(code)
        printed, error = [], None
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.client.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"cell did not finish within {timeout:g} s: {code!r}") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream" and msg["content"]["name"] == "stdout":
                printed.append(msg["content"]["text"])
            elif kind == "error":
                error = f"{msg['content']['ename']}: {msg['content']['evalue']}"
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                elapsed = time.perf_counter() - started
                break
        if error:
            raise RuntimeError(f"cell failed: {error}: {code!r}")
        return elapsed, "".join(printed)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


def _has_ipyparallel() -> bool:
    try:
        import ipyparallel  # noqa: F401
    except ImportError:
        return False
    return True


def run(session: Session, quick: bool, profile: bool = False) -> Report:
    n = 30 if quick else 100
    warmup = 5
    cells = dict(CELLS)
    peers = _has_ipyparallel()
    if not peers:
        del cells["ipyparallel `%%px` `z = 1` (2 engines)"]
    state_dir = tempfile.mkdtemp(prefix="burst-bench-kernel-")
    kernel = KernelCells(state_dir)
    times: dict[str, list[float]] = {label: [] for label in cells}
    try:
        kernel.run("%load_ext jupyter_burst")
        kernel.run(RAW_SETUP)
        if peers:
            kernel.run(PX_SETUP)
        for round_ in range(warmup + n):
            for label, code in cells.items():
                time.sleep(PAUSE_SECONDS)
                elapsed = kernel.run(code)
                if round_ >= warmup:
                    times[label].append(elapsed)
        profiled = _profiled(kernel, 20 if quick else 40) if profile or _slow(times) else []
        data = _data_rounds(kernel, (256 << 20) if quick else (1 << 30), 5 if quick else 10)
    finally:
        try:
            kernel.run(TEARDOWN, timeout=120)
        finally:
            kernel.close()
            shutil.rmtree(state_dir, ignore_errors=True)

    m = "through a kernel"
    report = Report()
    for label, values in times.items():
        report.rows.append(
            Row(m, f"{label}, median / p90 (N={n})", f"{ms(median(values))} / {ms(p90(values))}")
        )
    burst = median(times["`%%burst` `z = 1` (warm)"])
    raw = median(times["raw Dask `client.submit(f).result()`"])
    ratio = burst / raw
    report.rows.append(
        Row(
            m,
            "burst / raw Dask (medians)",
            f"{ratio:.2f}x",
            f"<= {TARGET_RAW_RATIO}x",
            ratio <= TARGET_RAW_RATIO,
        )
    )
    if peers:
        px = median(times["ipyparallel `%%px` `z = 1` (2 engines)"])
        report.rows.append(
            Row(m, "burst / `%%px` (medians)", f"{burst / px:.2f}x", "<= 1.00x", burst <= px)
        )
    else:
        report.notes.append("through a kernel: ipyparallel is not installed (make bench)")
    report.rows += _data_rows(data)
    report.rows += _cold_rows(_cold_rounds(3 if quick else 5))
    report.notes += _profile_notes(profiled)
    return report


PROFILE_ROW = re.compile(
    r"^ {2,4}(?P<side>kernel|scheduler|worker \d+) +(?P<what>.+?) +(?P<ms>\d+\.\d) ms$"
)
PROFILE_TOTAL = re.compile(r"(?P<ms>\d+\.\d) ms in the kernel from the magic's start")


def _slow(times: dict[str, list[float]]) -> bool:
    """A trivial-cell target missed: say where the cell's time goes."""
    burst = median(times["`%%burst` `z = 1` (warm)"])
    raw = median(times["raw Dask `client.submit(f).result()`"])
    px = times.get("ipyparallel `%%px` `z = 1` (2 engines)")
    return burst > TARGET_RAW_RATIO * raw or (px is not None and burst > median(px))


def _profiled(kernel: KernelCells, n: int) -> list[str]:
    """``%%burst profile`` of N warm trivial cells, spaced as the timed ones, in the same
    kernel (the peers' clients still in it): each cell's printed profile."""
    outputs = []
    for _ in range(n):
        time.sleep(PAUSE_SECONDS)
        outputs.append(kernel.stdout("%%burst profile\nz = 1"))
    return outputs


def _profile_notes(outputs: list[str]) -> list[str]:
    """The median of each profile line over the cells, in the order a profile prints them."""
    if not outputs:
        return []
    steps: dict[tuple[str, str], list[float]] = {}
    totals = []
    for text in outputs:
        total = PROFILE_TOTAL.search(text)
        if total:
            totals.append(float(total["ms"]))
        for line in text.splitlines():
            row = PROFILE_ROW.match(line)
            if row:
                steps.setdefault((row["side"], row["what"]), []).append(float(row["ms"]))
    notes = [
        f"Where a warm trivial cell's time goes, through the kernel (`%%burst profile`, medians "
        f"of {len(outputs)} cells, the peers' clients in the same kernel): the magic "
        f"{median(totals):.1f} ms from its start to its end (each side on its own clock)"
    ]
    for (side, what), values in steps.items():
        notes.append(f"  {side:<10} {what:<60} {median(values):5.1f} ms (N={len(values)})")
    return notes


def _memory_rows(data: dict[str, Any]) -> list[Row]:
    """The largest resident size of the kernel and of the worker over the rounds, against
    the one copy each should hold: its size before any large value, plus the value."""
    m = "through a kernel"
    nbytes, rounds = data["nbytes"], len(data["resident"])
    rows = []
    for side, index in (("kernel", 0), ("worker", 1)):
        before = data["before"][index]
        most = max(r[index] for r in data["resident"])
        limit = (before + nbytes) * (1 + MEMORY_SLACK)
        rows.append(
            Row(
                m,
                f"{nbytes >> 20} MiB given new values {rounds} times: the {side}'s largest "
                "resident size / its size before + one copy",
                f"{most >> 20} MiB / {(before + nbytes) >> 20} MiB",
                f"<= +{MEMORY_SLACK:.0%}",
                most <= limit,
            )
        )
    return rows


def _cold_rounds(rounds: int) -> list[float]:
    """Each round: a fresh kernel and state folder; its first ``%%burst`` cell, timed."""
    times = []
    for _ in range(rounds):
        state_dir = tempfile.mkdtemp(prefix="burst-bench-cold-")
        kernel = KernelCells(state_dir)
        try:
            kernel.run("%load_ext jupyter_burst")
            time.sleep(PAUSE_SECONDS)
            times.append(kernel.run("%%burst\nz = 1"))
        finally:
            try:
                kernel.run("%burst down", timeout=120)
            finally:
                kernel.close()
                shutil.rmtree(state_dir, ignore_errors=True)
    return times


def _cold_rows(times: list[float]) -> list[Row]:
    m = "through a kernel"
    value = median(times)
    return [
        Row(
            m,
            f"cold local cluster -> first result: a fresh kernel's first `%%burst` `z = 1`, "
            f"median / p90 (N={len(times)})",
            f"{value:.2f} s / {p90(times):.2f} s",
            f"<= {TARGET_COLD_SECONDS:g} s",
            value <= TARGET_COLD_SECONDS,
        )
    ]


def _data_rounds(kernel: KernelCells, nbytes: int, rounds: int) -> dict[str, Any]:
    """Each round: new values (untimed), then ``%%burst`` reads them, then raw Dask does.

    The resident memory of the kernel and of the burst worker is read after each ``%%burst``
    read, against each one's before any large value (issue #21: one copy each, + 10%).
    """
    kernel.run(DATA_SETUP)
    kernel.run(WORKER_PID)
    kernel_pid, worker_pid = kernel.pids()
    before = (_rss(kernel_pid), _rss(worker_pid))
    changed: list[float] = []
    raw: list[float] = []
    resident: list[tuple[int, int]] = []
    for i in range(rounds):
        kernel.run(NEW_VALUES.format(n=nbytes // 4, i=i))
        time.sleep(PAUSE_SECONDS)
        changed.append(kernel.run(BURST_READS))
        resident.append((_rss(kernel_pid), _rss(worker_pid)))
        time.sleep(PAUSE_SECONDS)
        raw.append(kernel.run(RAW_READS))
    unchanged = []
    for _ in range(rounds):
        time.sleep(PAUSE_SECONDS)
        unchanged.append(kernel.run(BURST_READS))
    kernel.run("del big")
    return {
        "nbytes": nbytes,
        "changed": changed,
        "raw": raw,
        "unchanged": unchanged,
        "before": before,
        "resident": resident,
    }


def _rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def _data_rows(data: dict[str, Any]) -> list[Row]:
    m = "through a kernel"
    size = f"{data['nbytes'] >> 20} MiB"
    changed, raw, unchanged = data["changed"], data["raw"], data["unchanged"]
    steady = len(changed) - 1

    def spread(values: list[float]) -> str:
        return f"{ms(median(values))} / {ms(p90(values))}"

    rows = [
        Row(m, f"{size} changed, `%%burst` reads it: first round", ms(changed[0])),
        Row(
            m,
            f"{size} changed, `%%burst`: after the first, median / p90 (N={steady})",
            spread(changed[1:]),
        ),
        Row(m, f"{size} new, raw Dask scatter + task: first round", ms(raw[0])),
        Row(
            m, f"{size} new, raw Dask: after the first, median / p90 (N={steady})", spread(raw[1:])
        ),
        Row(
            m,
            f"{size} unchanged, `%%burst` again: median / p90 (N={len(unchanged)})",
            spread(unchanged),
        ),
    ]
    rows += _memory_rows(data)
    ratio = median(changed[1:]) / median(raw[1:])
    rows.append(
        Row(
            m,
            f"{size} changed: burst / raw Dask (steady medians)",
            f"{ratio:.2f}x",
            f"<= {TARGET_CHANGED_RATIO}x",
            ratio <= TARGET_CHANGED_RATIO,
        )
    )
    # Against a warm send of new bytes: the first round also pays one-off costs (the worker's
    # first allocations and imports), which would make any re-run look cheap.
    share = median(unchanged) / median(changed[1:])
    rows.append(
        Row(
            m,
            f"{size} unchanged re-run / a changed one's (steady medians)",
            f"{share:.1%}",
            f"<= {TARGET_UNCHANGED_SHARE:.0%}",
            share <= TARGET_UNCHANGED_SHARE,
        )
    )
    return rows
