"""Named moments of one cell on the kernel's clock, for ``%%burst profile``.

Always kept (a mark is one clock read), so that profiling a cell does not change what it
costs; printed only when the cell asked (:mod:`jupyter_burst.kernel.cell_profile`).
"""

from __future__ import annotations

import time


class Timeline:
    """The moments a cell reached in the kernel, in order: ``mark('packed')``..."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = [("began", time.perf_counter())]
        self.tasks: list[str] = []  # the Dask keys of its last attempt, one per rank

    def mark(self, step: str, at: float | None = None) -> None:
        """``step`` ended now (or at ``at``, a ``time.perf_counter()`` read earlier)."""
        self.marks.append((step, time.perf_counter() if at is None else at))

    def spans(self) -> list[tuple[str, float]]:
        """Each step with the seconds it took since the moment before it."""
        ordered = sorted(self.marks, key=lambda mark: mark[1])
        return [(step, at - ordered[i][1]) for i, (step, at) in enumerate(ordered[1:])]

    def total(self) -> float:
        return max(at for _, at in self.marks) - self.marks[0][1]
