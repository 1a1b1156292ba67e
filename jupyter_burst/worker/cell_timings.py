"""When each step of a cell's rank began, on this worker's clock, for ``%%burst profile``.

Kept for the last few jobs only, and read afterwards by the kernel (``client.run``), so that
a profiled cell pays nothing extra while it runs. The scheduler's side is read from its own
story of the cell's task (:func:`scheduler_story`).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

_KEPT = 32  # jobs: a profile is read right after its cell
_lock = threading.Lock()
_jobs: collections.OrderedDict[tuple[str, int], list[tuple[str, float]]] = collections.OrderedDict()


class RankSteps:
    """The moments one rank of a job reached, in order: ``mark('unpacked')``..."""

    def __init__(self, job: str, rank: int) -> None:
        self.steps: list[tuple[str, float]] = [("started", time.time())]
        with _lock:
            _jobs[(job, rank)] = self.steps
            while len(_jobs) > _KEPT:
                _jobs.popitem(last=False)

    def mark(self, step: str) -> None:
        self.steps.append((step, time.time()))


def job_steps(job: str) -> dict[int, list[tuple[str, float]]]:
    """Each rank of ``job`` that ran in this process, with its steps (``client.run`` reads it)."""
    with _lock:
        return {rank: list(steps) for (name, rank), steps in _jobs.items() if name == job}


def worker_story(job: str, keys: list[str], dask_worker: Any = None) -> dict[str, Any]:
    """This worker's steps of ``job``, and Dask's own record of its ``keys``' transitions here."""
    steps = job_steps(job)
    transitions = []
    if dask_worker is not None and steps:
        transitions = _transitions(dask_worker.state.story(*keys))
    return {"steps": steps, "transitions": transitions}


def scheduler_story(
    keys: list[str], dask_scheduler: Any = None
) -> list[tuple[str, str, str, float]]:
    """The scheduler's transitions of ``keys``: (key, from, to, its clock's time)."""
    if dask_scheduler is None:
        return []
    return _transitions(dask_scheduler.story(*keys))


def _transitions(story: list[tuple]) -> list[tuple[str, str, str, float]]:
    """(key, from, to, time) of each transition in a Dask story, and the message that brought
    a task to a worker as ``(key, message, 'arrived', time)``."""
    found = []
    for entry in story:
        if not entry or not isinstance(entry[-1], float):
            continue
        if len(entry) >= 6 and isinstance(entry[1], str):
            # The scheduler's (key, start, finish, recommendations, stimulus_id, time); a
            # worker's has the state it reached before its recommendations as well.
            found.append((str(entry[0]), entry[1], str(entry[-4]), entry[-1]))
        elif len(entry) == 5 and isinstance(entry[1], str):
            found.append((str(entry[0]), entry[1], "arrived", entry[-1]))
    return found
