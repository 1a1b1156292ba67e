"""Eight notebooks bursting to one cluster at once: each result lands in its own notebook."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

from jupyter_burst.store.ledger import open_ledger
from tests.harness import Kernel, burst_kernel

KERNELS = 8
CELL = (
    "%%burst\n"
    "import os, time\n"
    "time.sleep(0.2)\n"
    "print('kernel', x, 'on worker', os.getpid())\n"
    "y = x * 1000 + 7\n"
)


def test_eight_kernels_bursting_at_once_each_get_their_own_results(state_dir, workdir):
    env = {"DASK_BURST__LOCAL__SLOTS": "2"}
    with contextlib.ExitStack() as stack:
        # One after another: jupyter_client picks each kernel's ports by binding and letting
        # go, so kernels started at the same moment can be handed the same ports.
        kernels: list[Kernel] = [
            stack.enter_context(burst_kernel(state_dir, workdir, env)) for _ in range(KERNELS)
        ]
        for i, kernel in enumerate(kernels):
            kernel.ok(f"x = {i}")

        def burst_twice(i: int) -> list[str]:
            return [kernels[i].ok(CELL, timeout=180).stdout for _ in range(2)]

        # Each thread talks to its own kernel only; the cells run at the same time.
        with ThreadPoolExecutor(KERNELS) as pool:
            outputs = list(pool.map(burst_twice, range(KERNELS)))
        for i, (kernel, printed) in enumerate(zip(kernels, outputs, strict=True)):
            assert all(f"kernel {i} on worker" in text for text in printed), (i, printed)
            assert kernel.ok("print(y)").stdout.strip() == str(i * 1000 + 7)

    # Every job and every line it printed is in the ledger, each with its own kernel's value.
    ledger = open_ledger(state_dir)
    jobs = ledger.query("SELECT id, status FROM jobs")
    assert len(jobs) == 2 * KERNELS and {job["status"] for job in jobs} == {"done"}
    seen = sorted(
        line["text"].split()[1]
        for job in jobs
        for line in ledger.lines(job["id"])
        if line["text"].startswith("kernel ")
    )
    assert seen == sorted(str(i) for i in range(KERNELS) for _ in range(2))
