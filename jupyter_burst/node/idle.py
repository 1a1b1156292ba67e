"""When a node should switch itself off: a pure policy, tested on a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IdlePolicy:
    """Stop after ``idle_seconds`` in a row with nothing running.

    ``observe`` is called every few seconds with whether anything runs; any busy moment
    restarts the countdown. Changing the timeout keeps the time already spent idle.
    """

    idle_seconds: float
    started: float
    last_busy: float = field(init=False)

    def __post_init__(self) -> None:
        self.last_busy = self.started

    def observe(self, busy: bool, now: float) -> bool:
        """Record the state at ``now``; True when the node should stop."""
        if busy:
            self.last_busy = now
            return False
        return now - self.last_busy >= self.idle_seconds

    def remaining(self, now: float) -> float:
        return max(0.0, self.idle_seconds - (now - self.last_busy))


@dataclass
class LifetimePolicy:
    """A node never outlives ``limit_seconds`` (0: no limit), busy or not: a bound on any bill."""

    limit_seconds: float
    started: float

    def expired(self, now: float) -> bool:
        return self.limit_seconds > 0 and now - self.started >= self.limit_seconds


@dataclass
class ReachabilityPolicy:
    """A worker node whose scheduler has not answered for ``limit_seconds`` in a row is orphaned."""

    limit_seconds: float
    last_ok: float

    def observe(self, reachable: bool, now: float) -> bool:
        """Record one look at ``now``; True when the node should stop."""
        if reachable:
            self.last_ok = now
            return False
        return now - self.last_ok >= self.limit_seconds
