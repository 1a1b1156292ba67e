"""The errors a user can fix. Each message is one line: the problem, then the fix.

A bug of ours is any other exception and keeps its traceback.
"""


class BurstError(Exception):
    """Something the user can fix; the magic shows only this one line."""

    def __str__(self) -> str:
        text = super().__str__()
        return text if text.startswith("burst: ") else f"burst: {text}"

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback: the one line is the whole message.
        return [str(self)]


class OptionError(BurstError):
    """A ``%%burst`` option that is unknown, mistyped, repeated or out of range."""


class NotYetAvailable(BurstError):
    """An option or verb that a later issue implements; it is refused, never ignored."""


class SendError(BurstError):
    """A value the cell reads cannot travel to the cluster."""


class ClusterError(BurstError):
    """A cluster could not be started, reached or stopped."""


class JobInterrupted(BurstError):
    """The user stopped the cell (kernel interrupt); the remote work was stopped."""


class JobTimeout(BurstError):
    """The cell ran past its ``timeout=`` and was stopped."""


class WorkerLost(BurstError):
    """The process running the cell died."""


class JobCancelled(JobInterrupted):
    """A background job was cancelled (``%burst cancel``); the remote work was stopped."""


class JobNotFound(BurstError):
    """No background job of that name on the clusters this state folder knows."""


class CheckpointError(BurstError):
    """A checkpoint could not be written or read, or its store cannot be reached."""


class BudgetExceeded(BurstError):
    """A job stopped for its ``budget=``, or a launch refused by ``burst.budget.daily``."""
