"""``%%burst profile``: where one cell's milliseconds went, in the kernel, the scheduler and
the worker, printed under the cell. A real kernel on a real local cluster.
"""

from __future__ import annotations

import re

ROW = re.compile(
    r"^ {2,4}(?P<side>kernel|scheduler|worker \d+) +(?P<what>.+?) +(?P<ms>\d+\.\d) ms$"
)


def _rows(text: str) -> list[tuple[str, str, float]]:
    return [
        (m["side"], m["what"], float(m["ms"]))
        for line in text.splitlines()
        if (m := ROW.match(line))
    ]


def _one(rows: list[tuple[str, str, float]], side: str, what: str) -> float:
    found = [ms for s, w, ms in rows if s == side and w.startswith(what)]
    assert len(found) == 1, (side, what, rows)
    return found[0]


def test_a_profiled_cell_says_where_its_time_went_on_each_side(kernel):
    kernel.ok("%%burst\nwarm = 1")  # the cluster's start is not what is profiled below
    run = kernel.ok("%%burst profile\nimport time\ntime.sleep(0.3)\nsmall = list(range(10))")
    head = re.search(
        r"^burst profile of job (\w+) on cluster default: (\d+\.\d) ms in the kernel",
        run.stdout,
        re.M,
    )
    assert head, run.stdout
    rows = _rows(run.stdout)
    total = float(head[2])
    # The kernel's steps add up to its total; the cell's own 0.3 s is the worker's "run the
    # cell", inside the kernel's wait for the rank, and nowhere else.
    kernel_rows = [ms for side, _, ms in rows if side == "kernel"]
    assert abs(sum(kernel_rows) - total) <= 0.1 * len(kernel_rows) + 0.5, (kernel_rows, total)
    ran = _one(rows, "worker 0", "run the cell")
    waited = _one(rows, "kernel", "wait until rank 0 ended")
    assert 300 <= ran < 1000 and ran <= waited, run.stdout
    # Only the lines that hold the cell's run hold its 0.3 s.
    holding = ("run the cell", "wait until rank 0 ended", "from sending it to hearing it ended")
    assert all(ms < 100 for _, what, ms in rows if not what.startswith(holding)), run.stdout
    for side, what in [
        ("kernel", "read the cell, pack what it reads"),
        ("kernel", "submit the task"),
        ("scheduler", "from the task's arrival to a worker"),
        ("worker 0", "unpack the values"),
        ("worker 0", "find what changed, pack the result"),
        ("kernel", "record the end in the ledger"),
    ]:
        _one(rows, side, what)
    # A small result came with the cell's last output; a large one is fetched from the worker.
    _one(rows, "kernel", "read rank 0's result (it came with its output)")
    assert kernel.ok("print(len(small))").stdout.strip() == "10"
    big = kernel.ok("%%burst profile\nbig = bytes(200_000)")
    _one(_rows(big.stdout), "kernel", "fetch rank 0's result from its worker")
    assert kernel.ok("print(len(big))").stdout.strip() == "200000"

    # Without the option, nothing of it is printed.
    assert "burst profile" not in kernel.ok("%%burst\nz = 1").stdout


def test_two_ranks_and_a_failing_cell_are_profiled_too_and_async_is_refused(kernel):
    run = kernel.ok("%%burst gpus=2 profile\nimport time\ntime.sleep(0.2)\nr = burst.rank")
    rows = _rows(run.stdout)
    for rank in (0, 1):
        assert _one(rows, "kernel", f"wait until rank {rank} ended") >= 0, run.stdout
        assert _one(rows, f"worker {rank}", "run the cell") >= 200, run.stdout

    failed = kernel.execute("%%burst profile\nimport time\ntime.sleep(0.2)\nraise ValueError('no')")
    assert failed.status == "error" and failed.ename == "ValueError", failed.error_text
    assert _one(_rows(failed.stdout), "worker 0", "run the cell") >= 200, failed.stdout

    refused = kernel.execute("%%burst async profile\nz = 1")
    assert refused.status == "error"
    assert refused.evalue == (
        "burst: profile times a cell the notebook waits for, not an async one; drop one of the two"
    ), refused.error_text
