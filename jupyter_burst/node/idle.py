"""When a node, or the slots a cluster grew by, should switch off: pure policies, tested on a fake clock."""

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


@dataclass
class ExtrasPolicy:
    """Slots a cluster grew by go after ``idle_seconds`` of their own idleness, one unit at a time.

    A unit is what is added and removed together: one worker process on the head's own
    machine, or one worker node. Each counts its idle time from its last busy moment, or from
    when it joined; the slots a cluster started with are never units here (they stop with the
    whole cluster, by :class:`IdlePolicy`, the head last). The rule is the watchdog's, per
    unit: any busy moment restarts that unit's countdown, and a changed timeout keeps the time
    already spent idle.
    """

    idle_seconds: float
    last_busy: dict[str, float] = field(default_factory=dict)

    def add(self, unit: str, now: float) -> None:
        """A unit joined at ``now``: its countdown starts there."""
        self.last_busy[unit] = now

    def forget(self, unit: str) -> None:
        self.last_busy.pop(unit, None)

    def touch(self, now: float) -> None:
        """Every unit is about to be used (a cell that needs them is on its way)."""
        for unit in self.last_busy:
            self.last_busy[unit] = now

    def observe(self, busy: set[str], now: float) -> list[str]:
        """Record which units are busy at ``now``; the units whose idle time is up, oldest first."""
        for unit in busy & self.last_busy.keys():
            self.last_busy[unit] = now
        due = [u for u, t in self.last_busy.items() if now - t >= self.idle_seconds]
        return sorted(due, key=lambda u: (self.last_busy[u], u))

    def remaining(self, unit: str, now: float) -> float:
        return max(0.0, self.idle_seconds - (now - self.last_busy.get(unit, now)))
