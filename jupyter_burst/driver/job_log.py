"""What the notebook's kernel and the head node both do around a job's attempts: send its
output to the ledger beside whoever shows it, and name how it ended."""

from __future__ import annotations

from collections.abc import Callable

from jupyter_burst.errors import BurstError, JobCancelled
from jupyter_burst.store.ledger import JobRecorder, Ledger


class JobLog:
    """One job's output on its way to the ledger and to a viewer: the cell's output area in
    the kernel, the head node's buffer for ``%burst logs``."""

    def __init__(
        self,
        ledger: Ledger,
        job_id: str,
        show_events: Callable[[int, list], None],
        show_note: Callable[[int, str], None],
    ) -> None:
        self.recorder = JobRecorder(ledger, job_id)
        self._show_events = show_events
        self._show_note = show_note

    def events(self, rank: int, events: list) -> None:
        self._show_events(rank, events)
        self.recorder.events(rank, events)

    def note(self, rank: int, text: str) -> None:
        """A line of jupyter-burst's own about the job (a lost node, a resume)."""
        self._show_note(rank, text)
        self.recorder.note(rank, text)

    def close(self) -> None:
        """Keep the last, unterminated line of each stream."""
        self.recorder.close()


def ending(exc: BaseException) -> tuple[str, str | None]:
    """The job's ledger status and error text when its attempts raised ``exc``."""
    if isinstance(exc, JobCancelled):
        return "cancelled", str(exc)  # not a failure: retries and the sidebar leave it be
    if isinstance(exc, BurstError):
        return ("interrupted" if "interrupted" in str(exc) else "failed"), str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", None
    return "failed", f"{type(exc).__name__}: {exc}"
