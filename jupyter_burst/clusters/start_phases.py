"""Where a cluster's start spends its time, phase by phase, kept in the ledger.

A start goes through phases: ``quote`` → ``launching`` (k/N machines) → ``booting`` →
``environment`` (``cached``, or ``building`` with progress) → ``workers joined`` (k/N) →
``running``. The cell's status line, ``%burst status`` and the JupyterLab sidebar show them
as they happen, each with its seconds, and the ledger keeps them for later.

The driver (:func:`jupyter_burst.driver.cluster.connect`) makes one :class:`StartPhases` per
start: it enters ``quote`` (the plan announced, the daily budget asked), assumes
``launching`` until the provider says otherwise (the provider's first phase takes that one's
place and time), hands the recorder to the provider as ``request.phases``, and ends the start
(``running``, or failed with its error) once the scheduler answers and its workers have
joined. A provider reports what only it knows, from its ``launch(request)``::

    from jupyter_burst.clusters import start_phases
    from jupyter_burst.clusters.start_phases import BOOTING, ENVIRONMENT, LAUNCHING, WORKERS

    def launch(self, request):
        phases = start_phases.of(request)  # does nothing when the caller gave none
        phases.enter(LAUNCHING, done=0, total=3)  # 3 machines asked for
        phases.enter(LAUNCHING, done=2, total=3)  # the phase under way again: progress
        phases.enter(BOOTING)  # another phase ends the one under way
        phases.enter(ENVIRONMENT, "cached")  # or "building", done=/total= as it goes
        phases.enter(WORKERS, done=1, total=4)  # workers joined the scheduler so far
        return record  # the driver counts the workers again, enters running, ends it

Rules: enter a phase when it begins; entering the phase under way again updates its detail
and counts (an empty detail or a None count keeps what it had) and its clock runs on; a
provider never calls :meth:`StartPhases.end` (the driver does). Entering is one short
ledger write; a ledger that cannot be written is logged and the start goes on (it matters
more than its account of itself), while a malformed call (an empty phase, ``done`` past
``total``) raises ValueError. A phase other than the six above is shown as it is named. A
process that shares the ledger but not the object (the local head node reports its workers
joining) continues the same start with :meth:`StartPhases.resume` and ``phases.start_id``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil

from jupyter_burst.store.ledger import Ledger

log = logging.getLogger("jupyter_burst.start_phases")

QUOTE = "quote"
LAUNCHING = "launching"
BOOTING = "booting"
ENVIRONMENT = "environment"
WORKERS = "workers joined"
RUNNING = "running"  # what a start that ended well reached; entered by end(), not enter()
PHASES = (QUOTE, LAUNCHING, BOOTING, ENVIRONMENT, WORKERS, RUNNING)

_MAX_NAME = 40
_MAX_DETAIL = 120
# A start whose process is gone, or older than this, was abandoned (a killed kernel).
ABANDONED_AFTER_SECONDS = 6 * 3600.0
_CLOCK_SLACK = 2.0  # seconds a process's start time may trail the clock reading it took


class StartPhases:
    """The phases of one cluster start, written to the ledger as they are entered.

    ``StartPhases(ledger, cluster_name, provider, purpose="cell")`` begins a start (a
    ``purpose`` of ``prewarm`` marks one the JupyterLab extension asked for ahead of its
    cell). Also a context manager: leaving the block ends the start, failed if it raised.
    """

    def __init__(
        self,
        ledger: Ledger,
        cluster_name: str,
        provider: str,
        *,
        purpose: str = "cell",
        start_id: str | None = None,
    ) -> None:
        self.ledger = ledger
        self.cluster_name = cluster_name
        self.provider = provider
        self._ended = False
        self._assumed: str | None = None
        self._listeners: list[Callable[[], None]] = []
        if start_id is not None:
            self.start_id = start_id
            return
        self.start_id = uuid.uuid4().hex[:16]
        self._write(
            ledger.start_begun,
            self.start_id,
            cluster_name,
            provider,
            purpose,
            os.getpid(),
            socket.gethostname(),
        )

    @classmethod
    def resume(cls, ledger: Ledger, start_id: str) -> StartPhases:
        """The start ``start_id`` that another process of this ledger began."""
        return cls(ledger, "", "", start_id=start_id)

    def enter(
        self, phase: str, detail: str = "", done: int | None = None, total: int | None = None
    ) -> None:
        """``phase`` is now under way (``detail``: ``cached``, ``building``, a host; ``done``
        of ``total``: machines launched, workers joined, packages built)."""
        if not isinstance(phase, str) or not phase.strip() or len(phase) > _MAX_NAME:
            raise ValueError(f"a start phase is a short name such as {LAUNCHING!r}, not {phase!r}")
        if phase == RUNNING:
            raise ValueError("the 'running' phase is the driver's: it calls end() instead")
        for name, count in (("done", done), ("total", total)):
            if count is not None and (not isinstance(count, int) or count < 0):
                raise ValueError(f"{name}={count!r}: give a whole number >= 0, or None")
        if done is not None and total is not None and done > total:
            raise ValueError(f"done={done} is more than total={total}; count what is done of it")
        if self._ended:
            return
        # What the driver assumed is replaced by the provider's first word, if it differs.
        replace, self._assumed = self._assumed not in (None, phase), None
        detail = str(detail)[:_MAX_DETAIL]
        self._write(self.ledger.start_phase, self.start_id, phase, detail, done, total, replace)
        self._tell()

    @contextlib.contextmanager
    def assuming(self, phase: str) -> Iterator[None]:
        """The driver's, around a provider's launch: ``phase`` is under way unless the
        provider says otherwise; the first other phase it enters takes this one's place and
        time (a provider that reports nothing shows this one until its launch returns)."""
        self.enter(phase)
        self._assumed = phase
        try:
            yield
        finally:
            self._assumed = None

    def end(self, cluster_id: str | None = None, error: str | None = None) -> None:
        """The start is over: ``running`` (its ``cluster_id``), or failed with ``error``.
        Called once by the driver; later calls do nothing."""
        if self._ended:
            return
        self._ended = True
        self._write(self.ledger.start_ended, self.start_id, cluster_id, error)
        self._tell()

    def watch(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each phase this object enters (the cell's status line
        shows it at once); a phase another process writes is seen by reading the ledger."""
        self._listeners.append(listener)

    def read(self) -> Start | None:
        """This start as the ledger has it now."""
        return read(self.ledger, self.start_id)

    def __enter__(self) -> StartPhases:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None:
            self.end()
        elif isinstance(exc, KeyboardInterrupt):
            self.end(error="interrupted")
        else:
            text = str(exc).strip().splitlines()
            self.end(error=(text[0] if text else type(exc).__name__)[:300])

    def _write(self, method: Callable[..., Any], *args: Any) -> None:
        try:
            method(*args)
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not record a start phase of %s: %s", self.cluster_name, exc)

    def _tell(self) -> None:
        for listener in list(self._listeners):
            with contextlib.suppress(Exception):  # a display's trouble never stops a start
                listener()


class _Unrecorded(StartPhases):
    """What :func:`of` gives a provider called without a recorder: it records nothing."""

    def __init__(self) -> None:
        self.ledger = None  # type: ignore[assignment]
        self.cluster_name = self.provider = ""
        self.start_id = ""
        self._ended = True
        self._assumed = None
        self._listeners = []

    def enter(
        self, phase: str, detail: str = "", done: int | None = None, total: int | None = None
    ) -> None:
        pass

    def end(self, cluster_id: str | None = None, error: str | None = None) -> None:
        pass

    def read(self) -> Start | None:
        return None


NOT_RECORDED: StartPhases = _Unrecorded()


def of(request: Any) -> StartPhases:
    """The recorder a ``ClusterRequest`` carries (``request.phases``), else one that records
    nothing: a provider calls it the same way either way."""
    phases = getattr(request, "phases", None)
    return phases if isinstance(phases, StartPhases) else NOT_RECORDED


# reading ----------------------------------------------------------------------------------


def seconds_text(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``4 min 05 s``: tenths while they matter."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


@dataclass(frozen=True)
class Phase:
    """One phase of a start: when it began and ended (None: under way), and its progress."""

    phase: str
    detail: str
    done: int | None
    total: int | None
    started: float
    ended: float | None

    def seconds(self, now: float) -> float:
        return max(0.0, (self.ended if self.ended is not None else now) - self.started)

    def label(self) -> str:
        """``booting``, ``environment cached``, ``workers joined 1/2``, ``launching 3/4``."""
        words = [self.phase]
        if self.detail:
            words.append(self.detail)
        if self.total is not None:
            words.append(f"{self.done or 0}/{self.total}")
        elif self.done is not None:
            words.append(str(self.done))
        return " ".join(words)


@dataclass(frozen=True)
class Start:
    """A cluster start as the ledger keeps it."""

    id: str
    name: str
    provider: str
    purpose: str
    started: float
    ended: float | None
    outcome: str | None  # running or failed; None while under way
    cluster_id: str | None
    error: str | None
    phases: tuple[Phase, ...]
    abandoned: bool  # never ended, and the process that began it is gone

    @property
    def state(self) -> str:
        """``starting``, ``running`` (it came up), ``failed`` or ``abandoned``."""
        if self.ended is None:
            return "abandoned" if self.abandoned else "starting"
        return self.outcome or "failed"

    @property
    def current(self) -> Phase | None:
        """The phase under way, while the start is."""
        if self.state != "starting" or not self.phases or self.phases[-1].ended is not None:
            return None
        return self.phases[-1]

    def seconds(self, now: float) -> float:
        end = self.ended
        if end is None and self.abandoned:
            end = max([self.started] + [p.ended or p.started for p in self.phases])
        return max(0.0, (end if end is not None else now) - self.started)

    def summary(self, now: float, separator: str = " · ") -> str:
        """Each phase with its seconds: ``quote 0.0 s · launching 1/1 0.1 s · booting 2.3 s``."""
        return separator.join(f"{p.label()} {seconds_text(p.seconds(now))}" for p in self.phases)

    def describe(self, now: float) -> str:
        """One line: ``started in 3.1 s: quote 0.0 s · ... → running``, or the phase under way."""
        parts = self.summary(now)
        if self.state == "starting":
            return f"starting for {seconds_text(self.seconds(now))}: {parts or 'under way'}"
        if self.state == "abandoned":
            return f"abandoned after {seconds_text(self.seconds(now))}: {parts}".rstrip(": ")
        if self.state == "failed":
            why = f": {self.error}" if self.error else ""
            return f"failed after {seconds_text(self.seconds(now))} ({parts}){why}"
        return f"started in {seconds_text(self.seconds(now))}: {parts} → running"

    def as_json(self, now: float) -> dict[str, Any]:
        """What the server sends the sidebar."""
        current = self.current
        return {
            "id": self.id,
            "name": self.name,
            "provider": self.provider,
            "purpose": self.purpose,
            "state": self.state,
            "cluster_id": self.cluster_id,
            "error": self.error,
            "started": self.started,
            "ended": self.ended,
            "seconds": self.seconds(now),
            "phases": [
                {
                    "phase": p.phase,
                    "label": p.label(),
                    "detail": p.detail,
                    "done": p.done,
                    "total": p.total,
                    "started": p.started,
                    "seconds": p.seconds(now),
                    "current": p is current,
                }
                for p in self.phases
            ],
        }


def read(ledger: Ledger, start_id: str) -> Start | None:
    """The start ``start_id``; None if the ledger has none."""
    rows = ledger.starts(start_ids=[start_id])
    return _start(rows[0], time.time()) if rows else None


def recent(ledger: Ledger, since: float, now: float | None = None) -> list[Start]:
    """The starts begun at ``since`` or later, newest first."""
    now = time.time() if now is None else now
    return [_start(row, now) for row in reversed(ledger.starts(since=since))]


def latest(starts: Iterable[Start]) -> dict[tuple[str, str], Start]:
    """The newest start of each cluster (by name and provider) among ``starts``."""
    found: dict[tuple[str, str], Start] = {}
    for start in starts:
        key = (start.name, start.provider)
        if key not in found or start.started > found[key].started:
            found[key] = start
    return found


def under_way(ledger: Ledger, name: str, provider: str, now: float | None = None) -> Start | None:
    """A start of the cluster ``name`` on ``provider`` still under way (another process's)."""
    now = time.time() if now is None else now
    for start in recent(ledger, now - ABANDONED_AFTER_SECONDS, now):
        if start.name == name and start.provider == provider and start.state == "starting":
            return start
    return None


def _start(row: dict[str, Any], now: float) -> Start:
    phases = tuple(
        Phase(p["phase"], p["detail"] or "", p["done"], p["total"], p["started"], p["ended"])
        for p in row["phases"]
    )
    return Start(
        id=row["id"],
        name=row["name"],
        provider=row["provider"],
        purpose=row["purpose"] or "cell",
        started=row["started"],
        ended=row["ended"],
        outcome=row["outcome"],
        cluster_id=row["cluster_id"],
        error=row["error"],
        phases=phases,
        abandoned=row["ended"] is None and _owner_gone(row, now),
    )


def _owner_gone(row: dict[str, Any], now: float) -> bool:
    """Whether the process that began an unfinished start is gone (or it is far too old)."""
    if now - row["started"] > ABANDONED_AFTER_SECONDS:
        return True
    if row["host"] != socket.gethostname() or not row["pid"]:
        return False  # another machine's process: only its age tells
    try:
        process = psutil.Process(row["pid"])
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        # A process created after the start began is not the one that began it.
        return process.create_time() > row["started"] + _CLOCK_SLACK
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False
