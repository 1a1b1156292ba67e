"""The one-line live status a ``%%burst`` cell shows while it runs, with a Cancel button.

``burst: cluster default · 1 rank · running · 3 s · $0.00``: the cluster, its ranks, the
state (starting, running, then done, failed, cancelled or interrupted), the time the cell
has taken and what its job cost so far (read from the ledger). While the cell starts its
cluster, the state is the start's phase under way with its seconds (``starting: booting
2 s``); afterwards the line keeps what each phase took (``cluster started in 3.1 s (quote
0.0 s, launching 1/1 0.1 s, booting 2.0 s, workers joined 1/1 0.9 s)``), read from the
ledger, where :mod:`jupyter_burst.clusters.start_phases` records them.

A cell that ends within :data:`SHOW_AFTER_SECONDS` shows only its final line, once: a quick
cell does not pay for widgets it would show for a few milliseconds. A longer one shows its
line from then on. In JupyterLab that is an ipywidgets line whose elapsed time and cost
tick once a second from a daemon thread. Its Cancel button cannot reach the kernel, busy
running the cell: the JupyterLab extension catches the click (``.jp-BurstCell-cancel``),
reads the job id from the ``jp-BurstCell-job-<id>`` class and asks the server, which
records the request in the ledger for :class:`jupyter_burst.driver.jobs.CancelWatch` to act
on. The line is published as a raw bundle with a ``text/plain`` twin, so a frontend without
widgets (nbclient, a console) shows plain text, updated once with the final state when the
cell ends, and once per phase while the cell starts a cluster. The final line of a quick
cell is plain text with an HTML twin that carries the same classes (the job's, the line's)
as the widget line.
"""

from __future__ import annotations

import contextlib
import contextvars
import html
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from jupyter_burst.clusters.start_phases import Start, StartPhases, seconds_text
from jupyter_burst.store import cost
from jupyter_burst.store.ledger import Ledger

STATUS_CLASS = "jp-BurstCell-status"
CANCEL_CLASS = "jp-BurstCell-cancel"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_TICK_SECONDS = 1.0
_JOIN_SECONDS = 5.0
# A cell quicker than this shows only its final line (widgets cost milliseconds to build).
SHOW_AFTER_SECONDS = 0.3


def job_class(job_id: str) -> str:
    """The DOM class that names the job a status line (and its Cancel button) belongs to."""
    return f"jp-BurstCell-job-{job_id}"


def elapsed(seconds: float) -> str:
    """``3 s``, ``4 min 05 s``, ``1 h 02 min``: short enough for one line."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def line_text(cluster: str, ranks: int, state: str, seconds: float, spent: cost.Spend) -> str:
    """The status line as plain text (also what a frontend without widgets shows)."""
    plural = "" if ranks == 1 else "s"
    return (
        f"burst: cluster {cluster} · {ranks} rank{plural} · {state} · {elapsed(seconds)} "
        f"· {spent.show()}"
    )


def start_text(start: Start, now: float) -> str:
    """How the cell's cluster start went, for the end of the line: each phase's seconds."""
    took = seconds_text(start.seconds(now))
    phases = start.summary(now, separator=", ")
    if start.state == "running":
        return f"cluster started in {took} ({phases})"
    return f"cluster start {start.state} after {took} ({phases})"


def job_spend(ledger: Ledger, job_id: str, now: float) -> cost.Spend:
    """What the job cost so far: the node time of the clusters it ran on, as the sidebar counts it."""
    row = ledger.job(job_id)
    if row is None:
        return cost.Spend()
    ran_on = ledger.job_clusters([job_id])[job_id]
    return cost.job_spend(row, ledger.nodes(cluster_ids=ran_on), now)


# views: where the line is shown -----------------------------------------------------------


class _PrintView:
    """An IPython without a kernel (a terminal): one plain line when the cell has ended."""

    live = False  # shows the line as it changes, every second
    phases = False  # shows each phase of a cluster start as it begins

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def show(self, text: str) -> None:
        pass

    def update(self, text: str) -> None:
        pass

    def allow_cancel(self) -> None:
        pass

    def finish(self, text: str) -> None:
        print(text, flush=True)


class _TextView(_PrintView):
    """A kernel without ipywidgets: a plain-text display, replaced by the final line at the end
    (and by the line of each phase while the cell starts a cluster: a few updates, not one a
    second, so that a saved notebook's output is not rewritten for nothing)."""

    phases = True

    def show(self, text: str) -> None:
        _display({"text/plain": text}, self.job_id)

    def update(self, text: str) -> None:
        _display({"text/plain": text}, self.job_id, update=True)

    def finish(self, text: str) -> None:
        _display({"text/plain": text}, self.job_id, update=True)


class _WidgetView(_PrintView):
    """The ipywidgets line: a label kept current from the ticker thread, and a Cancel button."""

    live = True
    phases = True

    def __init__(self, job_id: str) -> None:
        import ipywidgets

        super().__init__(job_id)
        self.label = ipywidgets.Label(value="")
        self.button = ipywidgets.Button(
            description="Cancel",
            icon="stop",
            tooltip="Stop this cell's remote work; the notebook keeps the values it had",
            disabled=True,  # until the job is in the ledger: only then can the server cancel it
            layout=ipywidgets.Layout(width="auto"),
            _dom_classes=(CANCEL_CLASS, job_class(job_id)),
        )
        self.box = ipywidgets.HBox(
            [self.label, self.button],
            layout=ipywidgets.Layout(align_items="center"),
            _dom_classes=(STATUS_CLASS, job_class(job_id)),
        )

    def bundle(self, text: str) -> dict[str, Any]:
        view = {"model_id": self.box.model_id, "version_major": 2, "version_minor": 0}
        return {WIDGET_VIEW: view, "text/plain": text}

    def show(self, text: str) -> None:
        self.label.value = text
        _display(self.bundle(text), self.job_id)

    def update(self, text: str) -> None:
        self.label.value = text

    def allow_cancel(self) -> None:
        self.button.disabled = False

    def finish(self, text: str) -> None:
        self.label.value = text
        self.button.disabled = True
        self.button.layout.display = "none"
        _display(self.bundle(text), self.job_id, update=True)


def final_bundle(text: str, job_id: str) -> dict[str, Any]:
    """The line of a cell that ended before it was shown: text, and HTML with the classes the
    widget line has (the sidebar and the tests find a cell's line by them)."""
    classes = f"{STATUS_CLASS} {job_class(job_id)}"
    return {"text/plain": text, "text/html": f'<div class="{classes}">{html.escape(text)}</div>'}


def _display(bundle: dict[str, Any], job_id: str, update: bool = False) -> None:
    from IPython.display import display, update_display

    display_id = f"burst-status-{job_id}"
    if update:
        update_display(bundle, raw=True, display_id=display_id)
    else:
        display(bundle, raw=True, display_id=display_id)


def _view_kind() -> type[_PrintView] | None:
    """How this process can show the line: None outside IPython (a script's ``run``)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None:
        return None
    if getattr(shell, "kernel", None) is None:
        return _PrintView
    try:
        import ipywidgets  # noqa: F401 - only whether it is there
    except ImportError:
        return _TextView
    return _WidgetView


# the status line --------------------------------------------------------------------------


class StatusLine:
    """A cell's status line that shows nothing: the default of :func:`jupyter_burst.kernel.cell.run_cell`."""

    def begin(self, job_id: str) -> None:
        """The cell was read and packed as job ``job_id``; its cluster is being reached."""

    def starting(self, phases: StartPhases) -> None:
        """The cell starts its cluster; ``phases`` records where the start spends its time."""

    def started(self, cluster: str, ledger: Ledger) -> None:
        """The job is in the ledger (so it can be cancelled, and has a cost) on ``cluster``."""

    def running(self) -> None:
        """The cell was handed to the cluster."""

    def end(self, state: str) -> None:
        """The cell ended as ``state`` (the job's ledger status)."""


class CellStatus(StatusLine):
    """The live line of one foreground cell; :meth:`end` always stops its ticker thread.

    Whatever goes wrong in showing it is left there: the line is a courtesy, and it never
    turns the cell's own outcome into an error.
    """

    def __init__(self, cluster: str, ranks: int, kind: type[_PrintView]) -> None:
        self.cluster = cluster
        self.ranks = ranks
        self.state = "starting"
        self._kind = kind
        self._view: _PrintView | None = None
        self._job_id = ""
        self._ledger: Ledger | None = None
        self._start: StartPhases | None = None
        self._start_ended: Start | None = None  # once over, it no longer changes
        self._phase_shown = ""  # the phase a view without ticks last showed
        self._began = time.monotonic()
        # The ticker and the cell's own thread both change the widgets: one at a time.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._ticker: threading.Event | None = None  # set once the line's ticking is over

    def text(self) -> str:
        return self._read()[0]

    def _read(self) -> tuple[str, str]:
        """The line as it is now, and the label of the start's phase under way ('' if none)."""
        now = time.time()
        spent = cost.Spend()
        if self._ledger is not None:
            spent = job_spend(self._ledger, self._job_id, now)
        state, phase, tail = self.state, "", ""
        start = self._start_now()
        if start is not None and start.state == "starting":
            current = start.current
            if current is not None and self.state == "starting":
                phase = current.label()
                state = f"starting: {phase} {elapsed(current.seconds(now))}"
        elif start is not None:
            tail = f" · {start_text(start, now)}"
        text = line_text(self.cluster, self.ranks, state, time.monotonic() - self._began, spent)
        return text + tail, phase

    def _start_now(self) -> Start | None:
        """The cell's cluster start as the ledger has it (another process, the local head
        node, records its workers joining): read while it is under way, kept once over."""
        if self._start_ended is not None or self._start is None:
            return self._start_ended
        start = self._start.read()
        if start is not None and start.state != "starting":
            self._start_ended = start
        return start

    def begin(self, job_id: str) -> None:
        self._job_id = job_id
        self._began = time.monotonic()
        if self._kind is _PrintView:
            self._view = _PrintView(job_id)  # a terminal: one line at the end, nothing before
            return
        with contextlib.suppress(Exception):  # the line is a courtesy: the cell goes on
            self._start_ticker()

    def _start_ticker(self) -> None:
        # Run in a copy of the cell's context, so its widget updates carry the cell's parent.
        self._ticker = _TICKERS.run(contextvars.copy_context(), self._tick)

    def starting(self, phases: StartPhases) -> None:
        with self._lock:
            self._start, self._start_ended, self._phase_shown = phases, None, ""
        # A phase this process enters is shown at once; the ticker reads the others.
        phases.watch(self._wake.set)
        self._wake.set()

    def started(self, cluster: str, ledger: Ledger) -> None:
        with self._lock:
            self.cluster, self._ledger = cluster, ledger
            if self._view is not None:
                with contextlib.suppress(Exception):
                    self._view.allow_cancel()
        self._wake.set()

    def running(self) -> None:
        with self._lock:
            self.state = "running"
        # The ticker shows it: reading the cost from the ledger here would delay the cell.
        self._wake.set()

    def end(self, state: str) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            shown = self._view is not None
        if self._ticker is not None and shown:
            # A line not shown yet never will be (the ticker checks the stop under the lock):
            # only a shown one is waited for, until its last tick is over.
            self._ticker.wait(_JOIN_SECONDS)
        self._ticker = None
        with self._lock:
            self.state = state
            with contextlib.suppress(Exception):
                if self._view is not None:
                    self._view.finish(self.text())
                elif self._job_id:
                    # Ended before it was shown: its final line, once.
                    _display(final_bundle(self.text(), self._job_id), self._job_id)

    def _refresh(self) -> bool:
        """Show the line as it is now (a view without ticks: when a new phase began); False
        if it could not be."""
        with self._lock:
            if self._view is None:
                return False
            try:
                text, phase = self._read()
                if self._view.live:
                    self._view.update(text)
                elif phase and phase != self._phase_shown:
                    self._view.update(text)
                self._phase_shown = phase or self._phase_shown
            except Exception:
                return False
            return True

    def _tick(self) -> None:
        if self._stop.wait(SHOW_AFTER_SECONDS):
            return  # a quick cell: end() shows its final line
        with self._lock:
            if self._stop.is_set():
                return
            self._view = _shown(self._kind, self._job_id, self.text())
            if self._view is None or not (self._view.live or self._view.phases):
                return
            if self._ledger is not None:  # the job is in the ledger: the server can cancel it
                self._view.allow_cancel()
        while not self._stop.is_set():
            self._wake.wait(_TICK_SECONDS)
            self._wake.clear()
            if self._stop.is_set() or not self._refresh():
                return


class _TickerThread:
    """The thread that keeps the running cell's line current, kept from cell to cell: starting
    a thread costs a few tenths of a millisecond, a quick cell's whole budget."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self, context: contextvars.Context, tick: Callable[[], None]) -> threading.Event:
        """Run ``tick`` in ``context`` on the thread; the event is set once it has returned.

        The thread is started on first use, and again if it died (a fork's child has none).
        A line still ticking past its end (a ledger busy for seconds) keeps its thread, and
        this one gets a thread of its own."""
        done = threading.Event()
        if self._thread is None or not self._thread.is_alive() or not self._idle.is_set():
            self._work = queue.SimpleQueue()
            self._thread = threading.Thread(
                target=self._serve, args=(self._work,), name=TICKER_THREAD, daemon=True
            )
            self._thread.start()
        self._idle.clear()
        self._work.put((context, tick, done))
        return done

    def _serve(self, work: queue.SimpleQueue) -> None:
        while True:
            context, tick, done = work.get()
            try:
                context.run(tick)
            except Exception:
                pass  # the line is a courtesy: it never takes the thread down
            finally:
                if work is self._work:
                    self._idle.set()
                done.set()
            if work is not self._work:
                return  # replaced while it ticked past its end: the new thread serves now


TICKER_THREAD = "burst-cell-status"
_TICKERS = _TickerThread()


def for_cell(cluster: str, ranks: int) -> StatusLine:
    """The status line a ``%%burst`` cell shows where it runs (nothing outside IPython)."""
    kind = _view_kind()
    return StatusLine() if kind is None else CellStatus(cluster, ranks, kind)


def show_background(cluster: str, ranks: int, name: str, job_id: str) -> None:
    """The line of a ``%%burst async`` cell: what was started, and its Cancel button.

    It does not tick (the cell has ended, its job runs on): the button works through the
    server, which cancels a background job on its cluster.
    """
    kind = _view_kind()
    if kind is None or kind is _PrintView:
        return  # a terminal has the magic's own line already
    plural = "" if ranks == 1 else "s"
    text = f"burst: cluster {cluster} · {ranks} rank{plural} · {name} started in the background"
    view = _shown(kind, job_id, text)
    if view is not None:
        view.allow_cancel()


def _shown(kind: type[_PrintView], job_id: str, text: str) -> _PrintView | None:
    """The line, shown: as widgets, else as plain text; None if it cannot be shown at all."""
    for make in (kind, _TextView):
        try:
            view = make(job_id)
            view.show(text)
        except Exception:
            continue  # the line is a courtesy: it never stops the cell from running
        return view
    return None
