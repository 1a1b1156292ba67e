"""A cell that prints 10,000 lines a second: the cell's view is bounded, the ledger keeps every line."""

from __future__ import annotations

import re
import time

from jupyter_burst.kernel import output
from jupyter_burst.kernel.output import Renderer
from jupyter_burst.store.ledger import Ledger

_NOTE = re.compile(r"burst: ([\d,]+) lines? not shown here \(too fast to display\)")


def _dropped(text: str) -> list[int]:
    return [int(n.replace(",", "")) for n in _NOTE.findall(text)]


def test_a_flood_of_lines_is_cut_in_the_view_and_kept_whole_in_the_ledger(kernel, state_dir):
    total = 30_000  # 10,000 lines a second for 3 s
    msg_id = kernel.kc.execute(
        "%%burst\n"
        "import time\n"
        "start = time.time()\n"
        f"for i in range({total}):\n"
        "    print(f'line {i}')\n"
        "    if i % 1000 == 999:\n"
        "        time.sleep(max(0.0, start + (i + 1) / 10_000 - time.time()))\n"
        "print('remote work ended at', time.time())\n"
    )
    result = kernel.collect(msg_id, timeout=120)
    idle_at = time.time()
    assert result.status == "ok", result.evalue

    # (a) the cell ends with its remote work, not seconds of rendering later
    ended_at = float(re.search(r"remote work ended at (\S+)", result.stdout).group(1))
    assert idle_at - ended_at < 5.0, idle_at - ended_at

    # (b) the view is bounded, says how many lines it left out, and shows the end
    stream_text = "".join(text for _, _, text in result.stream_times)
    shown_lines = stream_text.count("\n")
    assert shown_lines < total / 2, shown_lines
    shown = [int(n) for n in re.findall(r"^line (\d+)$", result.stdout, re.M)]
    assert shown[:10] == list(range(10))  # the first lines of the burst
    assert shown == sorted(set(shown))  # none repeated, none out of order, none broken
    assert shown[-1] == total - 1  # the last line printed
    assert result.stdout.rstrip().splitlines()[-1].startswith("remote work ended at")
    dropped = _dropped(result.stderr)
    assert dropped and len(shown) + sum(dropped) == total, (len(shown), dropped)

    # (c) the ledger has every line, in order
    ledger = Ledger(state_dir / "ledger.sqlite")
    job = ledger.query("SELECT * FROM jobs ORDER BY started DESC LIMIT 1")[0]
    assert job["status"] == "done"
    texts = [row["text"] for row in ledger.lines(job["id"])]
    assert texts[:total] == [f"line {i}" for i in range(total)]
    assert len(texts) == total + 1 and texts[-1].startswith("remote work ended at")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _View:
    """What the cell receives: (time, stream, text) for each write, and the rich events."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.writes: list[tuple[float, str, str]] = []
        self.events: list[tuple] = []

    def stream(self, name: str):
        view = self

        class _Stream:
            def write(self, text: str) -> int:
                view.writes.append((view.clock.now, name, text))
                return len(text)

            def flush(self) -> None:
                pass

        return _Stream()

    def renderer(self, world_size: int = 1, job_id: str | None = None) -> Renderer:
        return Renderer(
            world_size,
            job_id,
            clock=self.clock,
            stdout=self.stream("stdout"),
            stderr=self.stream("stderr"),
            publish=lambda data, metadata: self.events.append(("display", data)),
            clear=lambda wait: self.events.append(("clear", wait)),
        )

    def text(self, name: str, since: float = float("-inf"), until: float = float("inf")) -> str:
        return "".join(t for at, s, t in self.writes if s == name and since <= at < until)


def _flood(render: Renderer, clock: _Clock, text: str, seconds: float, rank: int = 0) -> None:
    """``text`` arrives in 50 ms batches over ``seconds``, cut at arbitrary characters."""
    batches = round(seconds / 0.05)
    size = len(text) // batches + 1
    start = clock.now
    for b in range(batches):
        clock.now = start + b * 0.05
        render(rank, [["stdout", text[b * size : (b + 1) * size]]])
    clock.now = start + seconds


def test_a_training_log_at_hundreds_of_lines_a_second_is_never_cut():
    clock = _Clock()
    view = _View(clock)
    render = view.renderer()
    text = "".join(
        f"step {i} loss {1 / (i + 1):.6f} lr 0.001 grad-norm 1.2345\n" for i in range(9_000)
    )
    _flood(render, clock, text, seconds=10)  # 900 lines a second
    render.close()
    assert view.text("stdout") == text
    assert view.text("stderr") == ""


def test_a_flood_shows_its_start_then_its_latest_lines_each_second_and_its_end():
    clock = _Clock()
    view = _View(clock)
    render = view.renderer(job_id="abc123")
    total = 50_000
    _flood(render, clock, "".join(f"line {i}\n" for i in range(total)), seconds=5)
    render.close()

    out = view.text("stdout")
    shown = [int(n) for n in re.findall(r"^line (\d+)$", out, re.M)]
    assert out.count("\n") == len(shown)  # whole lines only, never a piece of one
    assert shown[: output.BURST_LINES] == list(range(output.BURST_LINES))
    assert shown == sorted(set(shown)) and shown[-1] == total - 1
    notes = view.text("stderr")
    assert len(_dropped(notes)) <= 5 + 1  # one note a second, and one at the end
    assert len(shown) + sum(_dropped(notes)) == total
    assert "all are kept in the ledger: job abc123 in the jupyter-burst sidebar" in notes
    for second in range(1, 5):  # past the first burst, about the rate and no more
        lines = view.text("stdout", second, second + 1).count("\n")
        assert 0 < lines <= output.LINES_PER_SECOND * 1.1, (second, lines)


def test_each_rank_keeps_its_prefix_and_displays_and_clears_are_never_dropped():
    clock = _Clock()
    view = _View(clock)
    render = view.renderer(world_size=2)
    for b in range(100):  # 2 ranks x 5,000 lines a second, a display every 10th batch
        clock.now = b * 0.05
        for rank in (0, 1):
            render(rank, [["stdout", "".join(f"r{rank} {b}.{k}\n" for k in range(250))]])
        if b % 10 == 0:
            render(0, [["display", {"text/plain": f"figure {b}"}, {}]])
    render(0, [["clear_output", True], ["stdout", "after the clear\n"]])
    render.close()

    assert [e for e in view.events if e[0] == "display"] == [
        ("display", {"text/plain": f"figure {b}"}) for b in range(0, 100, 10)
    ]
    assert view.events[-1] == ("clear", True)
    out = view.text("stdout").splitlines()
    assert out and all(re.fullmatch(r"\[rank (\d)\] r\1 \d+\.\d+", line) for line in out[:-1])
    assert out[-1] == "[rank 0] after the clear"
    assert "[rank" not in view.text("stderr") and _dropped(view.text("stderr"))


def test_a_progress_bar_keeps_redrawing_during_a_flood_and_shows_its_end():
    clock = _Clock()
    view = _View(clock)
    render = view.renderer()
    for b in range(60):
        clock.now = b * 0.05
        render(0, [["stdout", "".join(f"line {b}.{k}\n" for k in range(500))]])
        render(0, [["stderr", f"\r{b:3d}%|{'#' * (b // 6)}"]])
    render(0, [["stderr", "\r100%|##########\n"]])
    render.close()

    err = view.text("stderr")
    bars = [piece for piece in re.split(r"[\r\n]", err) if "%|" in piece]
    assert len(bars) < 15  # redrawn about once a second in the flood, not every batch
    assert bars[-1] == "100%|##########" and "\r100%|##########\n" in err
    # A note never lands in the middle of the bar's line.
    assert _dropped(err)
    assert all("%|" not in line or "burst:" not in line for line in err.split("\n"))


def test_long_lines_are_bounded_by_characters_a_second_too():
    clock = _Clock()
    view = _View(clock)
    render = view.renderer()
    total = 2_000  # 500 lines of 2,000 characters a second: 1 MB/s
    text = "".join(f"row {i} " + "x" * 2_000 + "\n" for i in range(total))
    _flood(render, clock, text, seconds=4)
    render.close()

    out = view.text("stdout")
    shown = re.findall(r"^row (\d+) x+$", out, re.M)
    assert len(shown) + sum(_dropped(view.text("stderr"))) == total
    assert shown[-1] == str(total - 1)
    for second in (2, 3):
        chars = len(view.text("stdout", second, second + 1))
        assert 0 < chars <= output.CHARS_PER_SECOND * 1.1, (second, chars)
