"""The policy that stops a cell nobody waits for, on a fake worker and a fake clock."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from jupyter_burst.worker import orphans


class _Exited(Exception):
    pass


@pytest.fixture
def cell(monkeypatch):
    def exit_(code: int) -> None:
        raise _Exited(code)

    monkeypatch.setattr(orphans.os, "_exit", exit_)
    task = SimpleNamespace(state="executing")
    worker = SimpleNamespace(state=SimpleNamespace(tasks={"key": task}))
    interrupts: list[int] = []
    watched = orphans._Watched(worker, "key", lambda: interrupts.append(1) or True)
    monkeypatch.setitem(orphans._watched, "job", watched)
    return SimpleNamespace(watched=watched, task=task, worker=worker, interrupts=interrupts)


def test_a_released_task_is_interrupted_at_the_second_look_in_a_row(cell):
    orphans._look("job", cell.watched, 0)
    cell.task.state = "cancelled"
    orphans._look("job", cell.watched, 1)
    cell.task.state = "executing"  # taken back and given out again: still wanted
    orphans._look("job", cell.watched, 2)
    assert cell.interrupts == []
    del cell.worker.state.tasks["key"]  # forgotten: nobody wants it
    orphans._look("job", cell.watched, 3)
    assert cell.interrupts == []
    orphans._look("job", cell.watched, 4)
    assert cell.interrupts == [1]


def test_a_cell_still_running_after_the_grace_ends_its_process(cell):
    cell.task.state = "cancelled"
    for now in (0, 1):
        orphans._look("job", cell.watched, now)
    orphans._look("job", cell.watched, 1 + orphans.GRACE_SECONDS - 0.1)
    with pytest.raises(_Exited):
        orphans._look("job", cell.watched, 1 + orphans.GRACE_SECONDS)
    assert cell.interrupts == [1]  # interrupted once, not again at each look


def test_a_cell_that_stopped_within_the_grace_leaves_its_process_alone(cell):
    cell.task.state = "cancelled"
    for now in (0, 1):
        orphans._look("job", cell.watched, now)
    orphans._forget("job")  # the cell unwound and its run_cell ended the watch
    orphans._look("job", cell.watched, 100)
