"""The scheduler dies mid-cell: a clear one-line error within 30 s, the kernel and its
namespace intact, and the next cell starts a new cluster."""

from __future__ import annotations

import os
import signal
import time

import psutil

from tests.harness import burst_processes, cluster_record, wait_for


def test_a_scheduler_killed_mid_cell_is_one_line_within_30s_and_the_next_cell_gets_a_new_cluster(
    kernel, state_dir, workdir
):
    kernel.ok("%%burst\nx = 1\n")
    first = cluster_record(state_dir)
    old_processes = [p.pid for p in burst_processes(state_dir)]
    marker = workdir / "running"
    run_id = kernel.kc.execute(
        "%%burst retries=0\n"
        "import pathlib, time\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "time.sleep(120)\n"
        "x = 2\n"
    )
    wait_for(marker.exists, 60, "the cell to run")
    os.kill(first["pid"], signal.SIGKILL)  # the head node, with its scheduler
    killed = time.monotonic()
    run = kernel.collect(run_id, timeout=60)
    assert time.monotonic() - killed < 30
    assert run.status == "error" and run.traceback == [run.evalue], run.error_text
    assert run.evalue == (
        "burst: the cluster's scheduler was lost mid-cell (its head node stopped or cannot be "
        "reached); the cell did not finish"
    )
    assert kernel.ok("print(x)").stdout.strip() == "1"  # nothing of the lost cell came back

    assert kernel.ok("%%burst\ny = x + 1\n").status == "ok"
    assert kernel.ok("print(y)").stdout.strip() == "2"
    second = cluster_record(state_dir)
    assert second is not None and second["id"] != first["id"]
    # The dead scheduler's workers did not stay behind.
    wait_for(
        lambda: not any(psutil.pid_exists(pid) for pid in old_processes if pid != first["pid"]),
        30,
        "the lost cluster's workers to exit",
    )
