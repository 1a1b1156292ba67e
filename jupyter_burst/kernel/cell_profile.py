"""``%%burst profile``: where one cell's milliseconds went, in the kernel, the scheduler and
each worker, printed under the cell once it ended.

Each side is read on its own clock (a remote machine's clock may differ from the kernel's by
more than a cell takes), so each line is a duration measured where it happened. The cluster's
lines are read after the cell, so profiling a cell does not slow it: the kernel marks its
moments on every cell (:class:`jupyter_burst.driver.timeline.Timeline`), the workers theirs
(:mod:`jupyter_burst.worker.cell_timings`), and the scheduler and workers keep Dask's own
record of each task's transitions.
"""

from __future__ import annotations

import re
from typing import Any

from jupyter_burst.driver.cluster import ClusterHandle
from jupyter_burst.driver.timeline import Timeline
from jupyter_burst.worker import cell_timings

# The kernel's moments (driver/timeline.py marks), as what the time before each was spent on.
_KERNEL_STEPS = {
    "packed": "read the cell, pack what it reads",
    "status shown": "show the status line",
    "connected": "reach the cluster",
    "recorded": "record the job in the ledger",
    "submitted": "submit the task",
    "drained": "take the output still in flight",
    "output shown": "show the last output",
    "merged": "unpack and merge the values",
    "figures shown": "show the value and figures",
    "end recorded": "record the end in the ledger",
    "status ended": "end the status line",
}
_RANK_STEP = re.compile(r"^(done|fetched|carried) (\d+)$")
_WORKER_STEPS = {
    "unpacked": "unpack the values",
    "ready": "set up the rank (folder, peers, random state)",
    "ran": "run the cell",
    "packed": "find what changed, pack the result",
}


def show(timeline: Timeline, handle: ClusterHandle, job_id: str) -> None:
    """Print the profile of the cell ``timeline`` followed; the cluster is asked for its side."""
    print(
        "\n".join(
            lines(timeline, *cluster_side(handle, job_id, timeline.tasks), job_id, handle.name)
        )
    )


def cluster_side(
    handle: ClusterHandle, job_id: str, tasks: list[str]
) -> tuple[list[tuple[str, str, str, float]], dict[str, dict[str, Any]]]:
    """The scheduler's transitions of the cell's tasks, and each worker's story of them."""
    if not tasks:
        return [], {}
    client = handle.client
    try:
        scheduler = client.run_on_scheduler(cell_timings.scheduler_story, tasks)
    except Exception:
        scheduler = []  # a profile is a courtesy: a cluster that does not answer shows less
    try:
        workers = client.run(cell_timings.worker_story, job_id, tasks, on_error="return")
    except Exception:
        workers = {}
    return scheduler, {
        addr: story
        for addr, story in workers.items()
        if isinstance(story, dict) and story.get("steps")
    }


def lines(
    timeline: Timeline,
    scheduler: list[tuple[str, str, str, float]],
    workers: dict[str, dict[str, Any]],
    job_id: str,
    cluster: str,
) -> list[str]:
    """The profile as text: one line per step, the cluster's under the kernel's wait for it."""
    out = [
        f"burst profile of job {job_id} on cluster {cluster}: {_ms(timeline.total())} in the "
        "kernel from the magic's start to its end (each side on its own clock)"
    ]
    for step, seconds in timeline.spans():
        found = _RANK_STEP.match(step)
        if found and found[1] == "done":
            rank = int(found[2])
            out.append(_row("kernel", f"wait until rank {rank} ended", seconds))
            out += _cluster_rows(rank, scheduler, workers)
        elif found and found[1] == "carried":
            out.append(
                _row("kernel", f"read rank {found[2]}'s result (it came with its output)", seconds)
            )
        elif found:
            out.append(_row("kernel", f"fetch rank {found[2]}'s result from its worker", seconds))
        else:
            out.append(_row("kernel", _KERNEL_STEPS.get(step, step), seconds))
    return out


def _cluster_rows(
    rank: int,
    scheduler: list[tuple[str, str, str, float]],
    workers: dict[str, dict[str, Any]],
) -> list[str]:
    suffix = f"-r{rank}"
    rows = []
    on_scheduler = [t for t in scheduler if t[0].endswith(suffix)]
    arrived = _first(on_scheduler)
    sent = _entered(on_scheduler, "processing")
    finished = _entered(on_scheduler, "memory") or _entered(on_scheduler, "erred")
    if arrived is not None and sent is not None:
        rows.append(_row("scheduler", "from the task's arrival to a worker", sent - arrived, 1))
    for story in workers.values():
        steps = story["steps"].get(rank) or story["steps"].get(str(rank))
        if not steps:
            continue
        mine = [t for t in story.get("transitions", ()) if t[0].endswith(suffix)]
        side = f"worker {rank}"
        came, executing = _first(mine), _entered(mine, "executing")
        if came is not None and executing is not None:
            rows.append(_row(side, "from the task's arrival until it ran", executing - came, 1))
        if executing is not None:
            rows.append(_row(side, "start the task (its arguments)", steps[0][1] - executing, 1))
        for (_, before), (step, at) in zip(steps, steps[1:], strict=False):
            rows.append(_row(side, _WORKER_STEPS.get(step, step), at - before, 1))
        done = _entered(mine, "memory") or _entered(mine, "error")
        if done is not None:
            rows.append(_row(side, "hand the result to Dask", done - steps[-1][1], 1))
    if sent is not None and finished is not None:
        rows.append(
            _row(
                "scheduler",
                "from sending it to hearing it ended (the worker's above)",
                finished - sent,
                1,
            )
        )
    return rows


def _first(transitions: list[tuple[str, str, str, float]]) -> float | None:
    return min((t[3] for t in transitions), default=None)


def _entered(transitions: list[tuple[str, str, str, float]], state: str) -> float | None:
    return next((t[3] for t in transitions if t[2] == state), None)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _row(side: str, what: str, seconds: float, depth: int = 0) -> str:
    indent = "  " * (depth + 1)
    return f"{indent}{side:<{12 - 2 * depth}} {what:<58} {seconds * 1000:8.1f} ms"
