"""Showing a worker's output in the notebook: text streams, rich displays, clear_output.

With several ranks, each line starts with its rank (``[rank 1] ...``).

What a cell shows is bounded: a browser's output area stalls long before a kernel does
(10,000 lines a second is about 1 MB/s of text, re-laid out on every update), so past
``LINES_PER_SECOND`` / ``CHARS_PER_SECOND`` lines are left out of the view, and one note
per left-out stretch says how many. Only the view is cut: the caller records every line
in the ledger separately (cell.run_cell's ``on_events``). Rich displays and clear_output
are never dropped.
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Callable
from typing import TextIO

from jupyter_burst.kernel.metrics_chart import MetricsChart
from jupyter_burst.wire.payload import AFTER_CELL

# Sustained rate shown per cell (all ranks together). A training log prints tens to a few
# hundred lines a second (a line per step, tqdm redraws ~10 times a second), so these are
# several times what a normal cell writes and only a runaway print loop is cut.
LINES_PER_SECOND = 1_000
CHARS_PER_SECOND = 256 * 1024
# What may be shown at once after a quiet spell: a model summary or a long table printed
# in one go is never cut, and the first lines of any flood are shown whole.
BURST_LINES = 2_000
BURST_CHARS = 512 * 1024
# While lines are being left out, the most recent ones are shown this often (each time
# after one note), so a flooding cell still shows where it is, a second behind at most.
TICK_SECONDS = 1.0

Key = tuple[int, str]  # (rank, "stdout" | "stderr")


def renderer(world_size: int = 1, job_id: str | None = None) -> Renderer:
    """A function that shows one rank's batch of output events in the cell's output.

    Call its ``close()`` when the job has ended, so that the last lines held back during a
    flood are shown.
    """
    return Renderer(world_size, job_id)


class Renderer:
    """Writes output events into the cell, within a rate; holds back and counts the rest.

    Called from one thread (the kernel's main thread, which follows the job). ``clock``,
    ``stdout``/``stderr``, ``publish`` and ``clear`` are for tests; the streams default to
    whatever ``sys.stdout``/``sys.stderr`` are when written to (IPython swaps them).
    """

    def __init__(
        self,
        world_size: int = 1,
        job_id: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        publish: Callable[[dict, dict], None] | None = None,
        clear: Callable[[bool], None] | None = None,
    ):
        self.world_size = world_size
        self.job_id = job_id
        self._clock = clock
        self._streams = {"stdout": stdout, "stderr": stderr}
        self._publish = publish or _publish
        self._clear = clear or _clear
        self._now = clock()
        self._lines = float(BURST_LINES)
        self._chars = float(BURST_CHARS)
        self._at_line_start: dict[Key, bool] = {}
        # A line the view has begun (a prompt, a progress bar): the rest of it is shown.
        self._begun: set[Key] = set()
        # The part of each stream's current line not shown yet (no newline seen so far).
        self._partial: dict[Key, str] = {}
        self._held: collections.deque[tuple[Key, str]] = collections.deque()
        self._held_chars = 0
        self._dropped = 0
        self._holding_since: float | None = None
        self._out: list[list[str]] = []  # [stream, text] to write, in order
        # The figures a cell leaves open, shown after its result as the inline backend does.
        self.after_cell: list[tuple[dict, dict]] = []
        self._mid_line = False  # the last text written ended without a newline
        # What the ranks burst.log, drawn under the cell as it comes (kernel/metrics_chart.py).
        self.chart = MetricsChart(job_id)

    def __call__(self, rank: int, events: list) -> None:
        self._refill()
        for event in events:
            kind = event[0]
            if kind in ("stdout", "stderr"):
                self._text((rank, kind), event[1])
            elif kind == "display":
                self._write_out()
                if event[2].get(AFTER_CELL):
                    self.after_cell.append((event[1], _without(event[2], AFTER_CELL)))
                else:
                    self._publish(event[1], event[2])
            elif kind == "metrics":
                self.chart.add(rank, event[1], event[2])
            elif kind == "clear_output":
                # What is held back predates the clear: it would be cleared with the rest.
                self._held.clear()
                self._held_chars = self._dropped = 0
                self._holding_since = None
                self._write_out()
                self._clear(event[1])
        if self._holding_since is not None and self._now - self._holding_since >= TICK_SECONDS:
            self._show_held(int(self._lines), int(self._chars))
        self._write_out()
        self.chart.tick()

    def close(self) -> None:
        """The job ended: show what is held back (its last lines) and the unfinished lines."""
        self._refill()
        if self._holding_since is not None or self._dropped:
            # Users read the end of a log: it is shown whatever the rate (at most what the
            # hold keeps, BURST_LINES / BURST_CHARS).
            self._show_held(len(self._held), BURST_CHARS)
        for key in list(self._partial):
            self._write(key, _last_redraw(self._partial.pop(key)))
        self._holding_since = None
        self._write_out()
        self.chart.tick(final=True)

    # -- text ----------------------------------------------------------------------------

    def _text(self, key: Key, text: str) -> None:
        pieces = (self._partial.pop(key, "") + text).split("\n")
        rest = pieces.pop()
        for piece in pieces:
            self._line(key, piece + "\n")
        if not rest:
            return
        if self._holding_since is None and self._fits(0, len(rest)):
            self._write(key, rest)
            self._begun.add(key)
        else:
            # Shown at the next tick; a line that never ends keeps only its last part.
            self._partial[key] = _last_redraw(rest)[-BURST_CHARS:]
            self._start_holding()

    def _line(self, key: Key, line: str) -> None:
        if key in self._begun:
            # The view shows the start of this line; an unended line would glue the next
            # one to it, so its end is shown, or cut short when it alone is over the rate.
            self._begun.discard(key)
            line = _last_redraw(line)
            if self._fits(0, len(line)):
                self._write(key, line)
            else:
                self._write(key, " [...]\n")
            return
        if self._holding_since is None and self._fits(1, len(line)):
            self._write(key, line)
            return
        self._start_holding()
        line = _last_redraw(line)
        self._held.append((key, line))
        self._held_chars += len(line)
        while len(self._held) > BURST_LINES or self._held_chars > BURST_CHARS:
            self._held_chars -= len(self._held.popleft()[1])
            self._dropped += 1

    def _start_holding(self) -> None:
        if self._holding_since is None:
            self._holding_since = self._now

    def _show_held(self, max_lines: int, max_chars: int) -> None:
        """One note for the lines left out since the last lines shown, then the latest ones."""
        shown: list[tuple[Key, str]] = []
        chars = 0
        for key, line in reversed(self._held):
            if len(shown) >= max_lines or chars + len(line) > max_chars:
                break
            shown.append((key, line))
            chars += len(line)
        self._dropped += len(self._held) - len(shown)
        if self._dropped:
            self._note(self._dropped)
        for key, line in reversed(shown):
            self._write(key, line)
        self._lines -= len(shown)
        self._chars -= chars
        self._held.clear()
        self._held_chars = self._dropped = 0
        self._holding_since = None
        # An unended line (a progress bar) is shown at each tick too, so it does not look
        # stuck; one over the rate waits for the next tick.
        for key in list(self._partial):
            if self._fits(0, len(self._partial[key])):
                self._write(key, self._partial.pop(key))
                self._begun.add(key)
            else:
                self._start_holding()

    def _note(self, count: int) -> None:
        where = "the jupyter-burst sidebar"
        if self.job_id:
            where = f"job {self.job_id} in {where}"
        lines = "line" if count == 1 else "lines"
        note = (
            f"burst: {count:,} {lines} not shown here (too fast to display); "
            f"all are kept in the ledger: {where}\n"
        )
        mid_line = [key for key in self._begun if key[1] == "stderr"]
        if mid_line:
            note = "\n" + note
            self._begun.difference_update(mid_line)
        for key in mid_line:
            self._at_line_start[key] = True
        self._append("stderr", note)

    # -- the budget ----------------------------------------------------------------------

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._now)
        self._now = now
        self._lines = min(BURST_LINES, self._lines + elapsed * LINES_PER_SECOND)
        self._chars = min(BURST_CHARS, self._chars + elapsed * CHARS_PER_SECOND)

    def _fits(self, lines: int, chars: int) -> bool:
        if self._lines < lines or self._chars < chars:
            return False
        self._lines -= lines
        self._chars -= chars
        return True

    # -- writing -------------------------------------------------------------------------

    def _write(self, key: Key, text: str) -> None:
        self._append(key[1], self._prefixed(key, text))

    def _prefixed(self, key: Key, text: str) -> str:
        if self.world_size == 1:
            return text
        label = f"[rank {key[0]}] "
        out = []
        for piece in text.splitlines(keepends=True):
            if self._at_line_start.get(key, True):
                out.append(label)
            out.append(piece)
            self._at_line_start[key] = piece.endswith(("\n", "\r"))
        return "".join(out)

    def _append(self, stream: str, text: str) -> None:
        # One write per stream run, not one per event or line: fewer, larger messages.
        if self._out and self._out[-1][0] == stream:
            self._out[-1][1] += text
        else:
            self._out.append([stream, text])

    def _write_out(self) -> None:
        out, self._out = self._out, []
        for stream, text in out:
            target = self._stream(stream)
            target.write(text)
            # Flushed at each change of stream, so stdout and stderr keep their order.
            target.flush()
            self._mid_line = text[-1:] not in ("\n", "")  # a bar's redraw, a prompt

    def note(self, text: str) -> None:
        """One of our own lines on stderr, after the cell's output, on a line of its own."""
        self._write_out()
        target = self._stream("stderr")
        target.write(("\n" if self._mid_line else "") + text + "\n")
        target.flush()
        self._mid_line = False

    def _stream(self, name: str) -> TextIO:
        given = self._streams[name]
        if given is not None:
            return given
        return sys.stdout if name == "stdout" else sys.stderr

    def show_after_cell(self) -> None:
        """The figures the cell left open (:data:`AFTER_CELL`), now."""
        shown, self.after_cell = self.after_cell, []
        for data, metadata in shown:
            self._publish(data, metadata)


def _without(mapping: dict, key: str) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


def prepare_to_show(value: object) -> None:
    """A matplotlib figure that is a cell's result is shown as an image, as in a plain cell.

    IPython's image formatter for figures comes with the inline backend, which the kernel
    loads only when it makes a figure itself; a figure made on a worker would show as text.
    """
    figure = sys.modules.get("matplotlib.figure")
    if figure is None or not isinstance(value, figure.Figure):
        return
    try:
        import matplotlib_inline.backend_inline  # noqa: F401 - registers the formatter
    except ImportError:
        pass


def show_after_result(renderer: Renderer, result_shown: bool) -> None:
    """The cell's left-open figures: after IPython shows its result (post_execute), else now."""
    if not renderer.after_cell:
        return
    shell = None
    if result_shown:
        try:
            from IPython import get_ipython

            shell = get_ipython()
        except ImportError:
            shell = None
    if shell is None:
        renderer.show_after_cell()
        return

    def once() -> None:
        shell.events.unregister("post_execute", once)
        renderer.show_after_cell()

    shell.events.register("post_execute", once)


def _last_redraw(text: str) -> str:
    """A progress bar's text reduced to its latest redraw (what ``\\r`` leaves visible)."""
    # A \r at the very end (or \r\n) redraws nothing yet.
    cut = text.rfind("\r", 0, len(text.rstrip("\r\n")))
    return text[cut:] if cut > 0 else text


def _publish(data: dict, metadata: dict) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import publish_display_data
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        publish_display_data(data, metadata)
    else:
        print(data.get("text/plain", ""))


def _clear(wait: bool) -> None:
    try:
        from IPython.display import clear_output
    except ImportError:
        return
    clear_output(wait=wait)
