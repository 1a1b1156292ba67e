"""A cell that crashes its worker every time ends after its retries, in one line; no restart loop."""

from __future__ import annotations

import time

from jupyter_burst.store.ledger import open_ledger


def test_a_segfaulting_cell_fails_after_its_retries_and_the_next_cell_works(kernel, state_dir):
    kernel.ok("%%burst\nwarm = True\n")  # the cluster is up: what follows times the cell alone
    started = time.monotonic()
    run = kernel.execute("%%burst retries=1\nimport ctypes\nctypes.string_at(0)\n", timeout=120)
    assert time.monotonic() - started < 60
    assert run.status == "error" and run.traceback == [run.evalue]
    assert run.evalue.startswith("burst: the worker running the cell was lost")
    assert "on each of 2 attempts; stopped after retries=1" in run.evalue
    assert "needs a fix, not more retries" in run.evalue
    assert kernel.ok("%%burst\nfine = True\n").status == "ok"
    ledger = open_ledger(state_dir)
    statuses = [job["status"] for job in ledger.query("SELECT status FROM jobs ORDER BY started")]
    assert statuses == ["done", "failed", "done"]  # one job for the poison cell, not a loop


def test_a_cell_that_kills_its_whole_cluster_every_time_starts_at_most_retries_plus_one(
    kernel, state_dir
):
    """The worst case of a launch loop: each attempt loses the cluster itself, so each retry
    starts a new one. Retries are bounded (at most 10), so the launches are too."""
    run = kernel.execute(
        "%%burst retries=2\nimport os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
        timeout=240,
    )
    assert run.status == "error" and run.traceback == [run.evalue], run.error_text
    assert "on each of 3 attempts; stopped after retries=2" in run.evalue, run.evalue
    ledger = open_ledger(state_dir)
    clusters = ledger.query("SELECT id FROM clusters")
    assert len(clusters) == 3, clusters  # the first, and one per retry: then no more
    (job,) = ledger.query("SELECT status FROM jobs")
    assert job["status"] == "failed"
    assert kernel.ok("%%burst\nfine = True\n").status == "ok"  # and the next cell works
