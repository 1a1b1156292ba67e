"""The ledger keeps every write from several processes at once."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap

import pytest

from jupyter_burst.store.ledger import LONGEST_LINE, Ledger, LineSplitter
from tests.harness import REPO


def _writer(path: str, worker: int, n: int) -> None:
    ledger = Ledger(path)
    ledger.job_started(f"job-{worker}", None, "k", "pass", {})
    for i in range(n):
        ledger.add_lines(f"job-{worker}", [(0.0, 0, "stdout", f"{worker}:{i}")])
    ledger.job_ended(f"job-{worker}", "done")


@pytest.mark.hardening
def test_concurrent_writers_from_several_processes_lose_nothing(tmp_path):
    path = str(tmp_path / "ledger.sqlite")
    Ledger(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 200)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ledger = Ledger(path)
    assert ledger.query("SELECT count(*) AS n FROM log_lines")[0]["n"] == 800
    assert {j["status"] for j in ledger.query("SELECT status FROM jobs")} == {"done"}
    assert ledger.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"


def test_lines_are_split_and_progress_bars_keep_their_last_state():
    splitter = LineSplitter()
    assert splitter.feed(0, "stdout", "a\nb") == [(0, "stdout", "a")]
    assert splitter.feed(0, "stderr", "\r 10%\r 50%\r100%\n") == [(0, "stderr", "100%")]
    assert splitter.feed(0, "stdout", "c\n") == [(0, "stdout", "bc")]
    assert splitter.rest() == []


def test_an_interrupt_during_a_write_neither_loses_it_nor_leaves_the_ledger_locked(tmp_path):
    # A kernel's Ctrl-C raises KeyboardInterrupt (ipykernel sees to it). Signal handlers are
    # the process's: in a test process that earlier tests shared (an xdist worker, with
    # their threads and libraries), what SIGINT does is not this test's to know. So the
    # write runs in a process of its own, with the kernel's handler, as a kernel's would.
    script = textwrap.dedent(
        """
        import signal, sys
        from jupyter_burst.store.ledger import Ledger

        signal.signal(signal.SIGINT, signal.default_int_handler)
        ledger = Ledger(sys.argv[1])
        try:
            with ledger._write() as db:
                # The kernel's stop button, mid-write: delivered to this thread before
                # raise_signal returns (os.kill may hand it to another thread).
                signal.raise_signal(signal.SIGINT)
                db.execute("INSERT INTO meta(key, value) VALUES ('k', 'v')")
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted after the write")
        print(ledger.query("SELECT value FROM meta WHERE key = 'k'"))
        ledger.job_started("after", None, "k", "pass", {})  # would wait forever on a held lock
        print(ledger.job("after")["status"])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "ledger.sqlite")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.stdout.splitlines() == [
        "interrupted after the write",
        "[{'value': 'v'}]",
        "running",
    ], done.stdout + done.stderr


@pytest.mark.hardening
def test_a_line_that_never_ends_is_held_bounded_and_a_progress_bar_keeps_its_last_state():
    splitter = LineSplitter()
    # An hour of a progress bar that never prints a newline: only its last state is held.
    for k in range(20_000):
        assert splitter.feed(0, "stderr", f"\r{k / 200:5.1f}%|{'#' * (k % 50)}") == []
    assert splitter.feed(0, "stderr", "\n") == [(0, "stderr", f"{19_999 / 200:5.1f}%|{'#' * 49}")]
    # Text with neither: cut into lines of the longest length the ledger keeps, none lost.
    out = [line for _ in range(300) for _, _, line in splitter.feed(1, "stdout", "x" * 1000)]
    out += [line for _, _, line in splitter.rest()]
    assert all(len(line) <= LONGEST_LINE for line in out) and "".join(out) == "x" * 300_000


@pytest.mark.hardening
def test_the_output_of_jobs_older_than_the_kept_days_goes_and_their_records_stay(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    day = 86400.0
    for job in ("old", "recent", "running"):
        ledger.job_started(job, None, "k", "print(1)", {})
        ledger.add_lines(job, [(0.0, 0, "stdout", f"{job} line")])
        ledger.add_metrics(job, 0.0, 0, 1, {"loss": 0.5})
    ledger.job_ended("old", "done")
    ledger.job_ended("recent", "done")
    ledger.query("UPDATE jobs SET ended = ? WHERE id = 'old'", (1_000 * day,))
    assert ledger.forget_old_output(90, now=1_000 * day + 91 * day) == 1
    assert [r["text"] for r in ledger.query("SELECT text FROM log_lines ORDER BY id")] == [
        "recent line",
        "running line",
    ]
    assert {r["job_id"] for r in ledger.query("SELECT job_id FROM metrics")} == {
        "recent",
        "running",
    }
    assert ledger.job("old")["status"] == "done"  # the job, its source and cost stay
