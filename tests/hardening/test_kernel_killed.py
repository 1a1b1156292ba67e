"""The kernel is killed mid-cell: the cell stops on the cluster by itself, and the cluster
switches itself off once idle, with no kernel left to ask it to."""

from __future__ import annotations

import time

import psutil

from jupyter_burst.server import api
from jupyter_burst.store.ledger import Ledger
from tests.harness import Kernel, burst_processes, cluster_record, stop_clusters, wait_for

CELL = """%%burst idle=5s
import itertools, pathlib, time
beats, ended = pathlib.Path({beats!r}), pathlib.Path({ended!r})
try:
    for i in itertools.count():
        beats.write_text(str(i))
        time.sleep(0.05)
finally:
    ended.write_text(f'stopped after {{i}} beats')
"""


def _kill_the_kernel_mid_cell(state_dir, workdir, cell: str, running) -> float:
    """Send ``cell`` from a new kernel, wait for ``running()``, SIGKILL the kernel; when."""
    kernel = Kernel(state_dir, workdir)
    try:
        kernel.ok("%load_ext jupyter_burst")
        kernel.kc.execute(cell)
        wait_for(running, 60, "the cell to run")
        assert cluster_record(state_dir) is not None
        kernel.kill()  # a laptop closed: the kernel tells nobody
        return time.monotonic()
    finally:
        kernel.shutdown()


def test_a_kernel_killed_mid_cell_stops_its_cell_and_nothing_runs_past_idle(
    state_dir, workdir, no_leaks
):
    beats, ended = workdir / "beats", workdir / "ended"
    killed = _kill_the_kernel_mid_cell(
        state_dir,
        workdir,
        CELL.format(beats=str(beats), ended=str(ended)),
        lambda: beats.exists() and int(beats.read_text() or 0) > 10,
    )
    # The cell was interrupted (its `finally` ran), not left computing for nobody...
    wait_for(ended.exists, 15, "the orphaned cell to stop")
    assert ended.read_text().startswith("stopped after")
    stopped_at = int(beats.read_text())
    # ...and the cluster, idle from then on, switched itself off after its 5 s.
    wait_for(lambda: not burst_processes(state_dir), 30, "the cluster's processes to exit")
    assert time.monotonic() - killed < 40
    assert int(beats.read_text()) == stopped_at
    cluster = Ledger(state_dir / "ledger.sqlite").clusters()[0]
    assert cluster["stopped"] is not None and cluster["stop_reason"].startswith("idle")
    # The sidebar: no kernel will write the job's end; once its cluster has been gone for
    # longer than a live kernel takes to start another, the job shows as lost, not running.
    soon, later = cluster["stopped"] + 1, cluster["stopped"] + api.LOST_AFTER_SECONDS + 1
    assert api.jobs_view(state_dir, now=soon)[0]["status"] == "running"
    job = api.jobs_view(state_dir, now=later)[0]
    assert (job["status"], job["ended"], job["error"]) == (
        "lost",
        cluster["stopped"],
        api.LOST_ERROR,
    )


def test_a_kernel_killed_while_its_cell_is_stuck_in_c_code_ends_that_worker_process(
    state_dir, workdir, no_leaks
):
    """An interrupt cannot stop `time.sleep(600)`: the worker process goes instead, freeing
    its slot (its GPU) at once, long before the cluster's idle time is up."""
    pid_file = workdir / "pid"
    _kill_the_kernel_mid_cell(
        state_dir,
        workdir,
        "%%burst idle=10\n"
        "import os, pathlib, time\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\n"
        "time.sleep(600)\n",
        lambda: pid_file.exists() and pid_file.read_text(),
    )
    worker = psutil.Process(int(pid_file.read_text()))
    try:
        wait_for(lambda: not worker.is_running(), 20, "the stuck worker process to end")
        head = cluster_record(state_dir)
        assert head is not None and psutil.pid_exists(head["pid"])  # the cluster idles on
    finally:
        stop_clusters(state_dir)
        wait_for(lambda: not burst_processes(state_dir), 30, "the cluster's processes to exit")
