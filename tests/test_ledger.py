"""The ledger keeps every write from several processes at once."""

from __future__ import annotations

import multiprocessing

import pytest

from jupyter_burst.store.ledger import Ledger, LineSplitter


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
    import signal

    # A kernel's Ctrl-C raises KeyboardInterrupt (ipykernel sees to it). pytest started in
    # the background by a shell without job control inherits SIGINT ignored, and Python then
    # installs no handler of its own: give the test the kernel's.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        with pytest.raises(KeyboardInterrupt):
            with ledger._write() as db:
                # The kernel's stop button, mid-write: delivered to this thread before
                # raise_signal returns (os.kill may hand it to another thread of the process).
                signal.raise_signal(signal.SIGINT)
                db.execute("INSERT INTO meta(key, value) VALUES ('k', 'v')")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert ledger.query("SELECT value FROM meta WHERE key = 'k'") == [{"value": "v"}]
    ledger.job_started("after", None, "k", "pass", {})  # would wait forever on a held lock
    assert ledger.job("after")["status"] == "running"
