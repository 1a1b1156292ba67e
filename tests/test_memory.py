"""A superseded value is freed when it is superseded: in the kernel and on the worker.

The loop a notebook runs all day: a 256 MiB array ``big`` is given new values in a plain
cell, then read by a ``%%burst`` cell. Twenty rounds of it, through a real kernel and a real
local cluster, the resident size of each process read with psutil after every round: the
kernel holds one ``big`` (plus what it held before), and so does the worker (its cache keeps
the latest version's bytes; the cell's values are rebuilt over them). Before the fix the
kernel grew by one array per round until the cyclic collector happened to run (the pickler
that sent it was in a reference cycle), and the worker by one array every other round (each
cell's namespace was).
"""

from __future__ import annotations

import psutil

MiB = 2**20
ARRAY = 256 * MiB
ROUNDS = 20
SLACK = 0.10  # the working set + 10%


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def test_twenty_new_versions_of_a_256_mib_array_keep_one_copy_in_the_kernel_and_on_the_worker(
    kernel,
):
    kernel.ok("import os, numpy as np")
    kernel.ok("%%burst\nimport os\nworker_pid = os.getpid()")
    kernel_pid = int(kernel.ok("print(os.getpid())").stdout)
    worker_pid = int(kernel.ok("print(worker_pid)").stdout)
    # Before any big value: what both processes hold of their own.
    kernel_before, worker_before = _rss(kernel_pid), _rss(worker_pid)

    seen = []
    for i in range(ROUNDS):
        kernel.ok(f"big = np.full({ARRAY // 4}, {i}, dtype=np.float32)")  # new values
        read = kernel.ok("%%burst\nfirst = float(big[0])\nlast = float(big[-1])")
        assert read.stderr == "", read.stderr
        assert kernel.ok("print(first, last)").stdout.split() == [f"{i}.0", f"{i}.0"]
        seen.append((i, _rss(kernel_pid) // MiB, _rss(worker_pid) // MiB))

    kernel_limit = (kernel_before + ARRAY) * (1 + SLACK)
    worker_limit = (worker_before + ARRAY) * (1 + SLACK)
    over = [(i, k, w) for i, k, w in seen if k * MiB > kernel_limit or w * MiB > worker_limit]
    assert not over, (
        f"rounds over the limits (kernel {kernel_limit / MiB:.0f} MiB, worker "
        f"{worker_limit / MiB:.0f} MiB): {over}; every round (i, kernel MiB, worker MiB): {seen}"
    )
