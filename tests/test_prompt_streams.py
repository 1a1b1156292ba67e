"""A burst cluster's message streams send at once (wire/prompt_streams.py): the kernel's
client, the scheduler's streams to its clients and workers, each worker's to the scheduler.

Dask's default batching holds a message that follows another within 2 to 10 ms; "Run All"
sends each cell just after the last one's messages, and measured here a trivial cell back
to back took 15.7 ms with it and 5.7 ms without (python -m bench --only roundtrip).
"""

from __future__ import annotations

import json


def test_every_stream_of_a_burst_cluster_sends_at_once_and_cells_run_back_to_back(kernel):
    kernel.ok("%%burst\nz = 1")
    intervals = kernel.ok(
        "import json\n"
        "from jupyter_burst.kernel.cell import connect\n"
        "from jupyter_burst.kernel.options import parse\n"
        "_c = connect(parse('')).client\n"
        "def _scheduler(dask_scheduler):\n"
        "    streams = [*dask_scheduler.stream_comms.values(), *dask_scheduler.client_comms.values()]\n"
        "    return [s.interval for s in streams]\n"
        "def _worker(dask_worker):\n"
        "    return dask_worker.batched_stream.interval\n"
        "print(json.dumps({'client': _c.scheduler_comm.interval,\n"
        "    'scheduler': _c.run_on_scheduler(_scheduler),\n"
        "    'workers': list(_c.run(_worker).values())}))"
    )
    seen = json.loads(intervals.stdout)
    assert seen["client"] == 0
    assert seen["scheduler"] and set(seen["scheduler"]) == {0}, seen
    assert seen["workers"] and set(seen["workers"]) == {0}, seen

    # Cells sent one right after the other, as Run All sends them: each gets its own result.
    kernel.ok("zs = []")
    for i in range(20):
        kernel.kc.execute(f"%%burst\nz = {i}\nzs = zs + [z]")
    assert kernel.ok("print(z, zs == list(range(20)))").stdout.split() == ["19", "True"]
