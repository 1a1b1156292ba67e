"""Where a cluster's start spends its time: the recorder providers call, kept in the ledger,
and the phases of real local starts (issue #17: start-up is visible)."""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

import dask.config
import pytest

from jupyter_burst.clusters import registry, start_phases
from jupyter_burst.clusters.local import LocalProvider
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.clusters.start_phases import (
    BOOTING,
    ENVIRONMENT,
    LAUNCHING,
    QUOTE,
    WORKERS,
    StartPhases,
)
from jupyter_burst.driver import cluster
from jupyter_burst.errors import ClusterError
from jupyter_burst.kernel.magic import format_starts
from jupyter_burst.store.ledger import Ledger
from tests.harness import cluster_record, wait_for


@pytest.fixture
def ledger(tmp_path: pathlib.Path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    yield ledger
    ledger.close()


def labels(start: start_phases.Start) -> list[str]:
    return [p.label() for p in start.phases]


def test_a_phase_entered_again_is_progress_and_another_ends_it(ledger):
    heard: list[str] = []
    phases = StartPhases(ledger, "exp", "aws")
    phases.watch(lambda: heard.append("told"))
    phases.enter(QUOTE)
    phases.enter(LAUNCHING, done=0, total=3)
    first = phases.read().phases[-1]
    phases.enter(LAUNCHING, done=2, total=3)
    phases.enter(BOOTING, "i-0abc")
    phases.enter(ENVIRONMENT, "building", done=3, total=10)
    phases.enter(ENVIRONMENT, done=7)  # the detail and the total stay
    start = phases.read()
    assert start.state == "starting" and start.cluster_id is None
    assert labels(start) == [
        "quote",
        "launching 2/3",
        "booting i-0abc",
        "environment building 7/10",
    ]
    assert start.phases[1].started == first.started  # progress: its clock ran on
    assert [p.ended is None for p in start.phases] == [False, False, False, True]
    assert start.current == start.phases[-1]
    assert heard == ["told"] * 6

    phases.enter(WORKERS, done=4, total=4)
    phases.end(cluster_id="exp-1")
    phases.end(error="later calls do nothing")
    phases.enter(BOOTING)  # nor does a phase after the end
    start = phases.read()
    assert start.state == "running" and start.cluster_id == "exp-1" and start.error is None
    assert labels(start)[-1] == "workers joined 4/4" and start.current is None
    assert all(p.ended is not None for p in start.phases)
    assert start.describe(time.time()).startswith("started in ")
    assert start.describe(time.time()).endswith(
        "quote 0.0 s · launching 2/3 0.0 s · booting i-0abc 0.0 s · environment building 7/10 "
        "0.0 s · workers joined 4/4 0.0 s → running"
    )
    assert heard == ["told"] * 8


def test_what_the_driver_assumed_gives_way_to_the_providers_first_phase(ledger):
    phases = StartPhases(ledger, "onprem", "ssh")
    phases.enter(QUOTE)
    with phases.assuming(LAUNCHING):
        assumed = phases.read().phases[-1]
        phases.enter(ENVIRONMENT, "cached")  # the provider's first word: not launching
        phases.enter(LAUNCHING, done=1, total=2)  # launching, its own this time
    phases.enter(WORKERS, done=2, total=2)  # the driver's again, after the launch
    phases.end(cluster_id="onprem-1")
    start = phases.read()
    assert labels(start) == ["quote", "environment cached", "launching 1/2", "workers joined 2/2"]
    assert start.phases[1].started == assumed.started  # its time counts as the environment's

    # A provider whose first word is the phase assumed: the same row, its progress.
    phases = StartPhases(ledger, "here", "local")
    with phases.assuming(LAUNCHING):
        phases.enter(LAUNCHING, done=1, total=1)
        phases.enter(BOOTING)
    assert labels(phases.read()) == ["launching 1/1", "booting"]


def test_a_failed_start_keeps_its_error_and_a_malformed_call_says_what_to_give(ledger):
    with pytest.raises(ClusterError):
        with StartPhases(ledger, "exp", "aws") as phases:
            phases.enter(LAUNCHING, done=0, total=2)
            raise ClusterError("the cloud refused: InsufficientInstanceCapacity\nmore detail")
    start = phases.read()
    assert start.state == "failed" and labels(start) == ["launching 0/2"]
    assert start.error == "burst: the cloud refused: InsufficientInstanceCapacity"

    phases = StartPhases(ledger, "exp", "aws")
    for call, message in [
        (lambda: phases.enter(""), "a start phase is a short name"),
        (lambda: phases.enter("running"), "the driver's: it calls end"),
        (lambda: phases.enter(LAUNCHING, done=3, total=2), "done=3 is more than total=2"),
        (lambda: phases.enter(LAUNCHING, done=-1), "done=-1: give a whole number"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()
    assert phases.read().phases == ()


def test_a_provider_called_without_a_recorder_reports_into_nothing(ledger, tmp_path):
    request = ClusterRequest("x", 1, 1.0, tmp_path)
    quiet = start_phases.of(request)
    quiet.enter(LAUNCHING, done=1, total=1)
    quiet.end()
    assert quiet.read() is None and ledger.starts() == []
    phases = StartPhases(ledger, "x", "local")
    assert start_phases.of(replace(request, phases=phases)) is phases
    # The recorder is no part of what was asked: a quote made for the request still holds.
    assert replace(request, phases=phases) == request


def _resume_and_count(path: str, start_id: str) -> None:
    phases = StartPhases.resume(Ledger(path), start_id)
    for joined in range(3):
        phases.enter(WORKERS, done=joined, total=2)


def test_another_process_of_the_ledger_continues_the_start_and_a_gone_one_abandons_it(
    ledger, tmp_path
):
    phases = StartPhases(ledger, "default", "local")
    phases.enter(BOOTING)
    process = multiprocessing.get_context("spawn").Process(
        target=_resume_and_count, args=(str(ledger.path), phases.start_id)
    )
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert labels(phases.read()) == ["booting", "workers joined 2/2"]

    # Begun by a process that has ended without ending it: a killed kernel's start.
    code = (
        "import sys; from jupyter_burst.store.ledger import Ledger; "
        "from jupyter_burst.clusters.start_phases import StartPhases; "
        "StartPhases(Ledger(sys.argv[1]), 'orphan', 'local').enter('booting')"
    )
    subprocess.run([sys.executable, "-c", code, str(ledger.path)], check=True, timeout=60)
    orphan = next(s for s in start_phases.recent(ledger, 0) if s.name == "orphan")
    assert orphan.state == "abandoned" and orphan.current is None
    assert start_phases.under_way(ledger, "orphan", "local") is None
    assert start_phases.under_way(ledger, "default", "local").id == phases.start_id


def test_an_older_ledger_gets_the_start_tables_on_open(tmp_path):
    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '2');"
    )
    db.close()
    ledger = Ledger(path)
    phases = StartPhases(ledger, "default", "local")
    phases.enter(QUOTE)
    phases.end(cluster_id="c")
    assert labels(phases.read()) == ["quote"]
    assert ledger.query("SELECT value FROM meta WHERE key = 'schema_version'")[0]["value"] == "3"


@pytest.fixture
def local_state(state_dir: pathlib.Path, no_leaks):
    """This process starts local clusters on the test's state folder; all are stopped after."""
    with dask.config.set({"burst.state-dir": str(state_dir), "burst.local.slots": None}):
        try:
            yield state_dir
        finally:
            cluster.forget_all()
            cluster.down()


def test_a_local_start_shows_each_phase_with_its_seconds(local_state):
    begun: list[StartPhases] = []
    handle = cluster.connect("default", "local", 2, 5.0, False, on_start=begun.append)
    ledger = Ledger(local_state / "ledger.sqlite")
    (start,) = start_phases.recent(ledger, 0)
    assert begun[0].start_id == start.id
    assert start.state == "running" and start.cluster_id == handle.id
    assert start.purpose == "cell" and start.error is None
    assert labels(start) == ["quote", "launching 1/1", "booting", "workers joined 2/2"]
    # Workers joined is the head node's own record (written as its worker processes joined),
    # before the cluster's record said it was ready; the driver only confirmed the count.
    record = cluster_record(local_state, "default")
    assert start.phases[-1].started < record["started"]
    phases_total = sum(p.seconds(time.time()) for p in start.phases)
    assert abs(phases_total - start.seconds(time.time())) < 0.1
    # %burst status: where the last start of each listed cluster spent its time.
    text = format_starts(cluster.status(), start_phases.recent(ledger, 0))
    assert text.startswith("default (local) started in "), text
    assert "quote 0.0 s · launching 1/1 " in text and text.endswith("→ running")

    # Attached, not started: no new start.
    cluster.forget_all()
    cluster.connect("default", "local", 1, 5.0, False, on_start=begun.append)
    assert len(begun) == 1 and len(ledger.starts()) == 1


class _Silent:
    """A third-party provider of the shape before phases: it never looks at request.phases."""

    name = "silent"

    def __init__(self) -> None:
        self._machine = LocalProvider()
        self._machine.name = self.name

    def launch(self, request: ClusterRequest) -> dict[str, Any]:
        return self._machine.launch(replace(request, phases=None))

    def is_alive(self, record: dict[str, Any]) -> bool:
        return self._machine.is_alive(record)

    def terminate(self, record: dict[str, Any]) -> None:
        self._machine.terminate(record)


class _Broken(_Silent):
    name = "broken"

    def launch(self, request: ClusterRequest) -> dict[str, Any]:
        start_phases.of(request).enter(BOOTING)
        raise ClusterError("no machine of that kind today; ask for another with gpu_mem=")


def test_a_provider_that_reports_nothing_still_starts_and_a_failure_is_kept(
    monkeypatch, local_state
):
    monkeypatch.setitem(registry._cache, "silent", _Silent())
    monkeypatch.setitem(registry._cache, "broken", _Broken())
    handle = cluster.connect("quiet", "silent", 1, 5.0, False, purpose="prewarm")
    ledger = Ledger(local_state / "ledger.sqlite")
    start = start_phases.latest(start_phases.recent(ledger, 0))[("quiet", "silent")]
    assert start.state == "running" and start.purpose == "prewarm"
    assert start.cluster_id == handle.id
    assert labels(start) == ["quote", "launching", "workers joined 1/1"]

    with pytest.raises(ClusterError, match="no machine of that kind"):
        cluster.connect("bad", "broken", 1, 5.0, False)
    failed = start_phases.latest(start_phases.recent(ledger, 0))[("bad", "broken")]
    # Its first phase took the place of the launching the driver assumed.
    assert failed.state == "failed" and labels(failed) == ["quote", "booting"]
    assert failed.error.startswith("burst: no machine of that kind today")
    assert failed.describe(time.time()).startswith("failed after ")


def test_a_cell_that_finds_its_cluster_starting_elsewhere_follows_that_start(local_state):
    """A pre-warm (its own process) is starting the cluster: the cell waits for that start,
    its status line given that start's phases, and attaches; nothing starts twice."""
    env = dict(
        os.environ,
        DASK_BURST__STATE_DIR=str(local_state),
        DASK_BURST__PREWARM="true",
        DASK_BURST__LOCAL__SLOTS="3",  # three worker processes: a start that takes a while
    )
    command = [sys.executable, "-m", "jupyter_burst.tools.prewarm", "--json", "--", "gpus=1"]
    warming = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        ledger = Ledger(local_state / "ledger.sqlite")
        under_way = wait_for(
            lambda: start_phases.under_way(ledger, "default", "local"),
            60,
            "the pre-warm's start to begin",
            interval=0.01,
        )
        begun: list[StartPhases] = []
        handle = cluster.connect("default", "local", 1, 5.0, False, on_start=begun.append)
        assert [p.start_id for p in begun] == [under_way.id]
        (start,) = start_phases.recent(ledger, 0)
        assert start.purpose == "prewarm" and start.cluster_id == handle.id
        assert labels(start)[-1] == "workers joined 3/3"
    finally:
        out, _ = warming.communicate(timeout=60)
    assert warming.returncode == 0, out
