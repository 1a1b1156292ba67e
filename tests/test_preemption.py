"""A spot interruption notice reaches the running cell: burst.preempting, burst.on_preempt, a line.

Against a local stand-in of the instance metadata service (IMDS), bound to 127.0.0.1.
"""

from __future__ import annotations

import json
import pathlib
import pickle
import threading
import time

import pytest

from jupyter_burst.store.ledger import Ledger
from jupyter_burst.worker.helper import Burst
from jupyter_burst.worker.preemption import (
    TOKEN_HEADER,
    TOKEN_TTL_HEADER,
    ImdsSession,
    Notice,
    Watcher,
    parse_notice,
)
from tests.aws_fakes import ImdsStandIn as StandIn
from tests.aws_fakes import free_port
from tests.harness import burst_kernel, wait_for

NOTICE = {"action": "terminate", "time": "2026-11-25T08:22:00Z"}
LINE = "burst: this node will be reclaimed at 2026-11-25T08:22:00Z (spot interruption notice)"


@pytest.fixture
def imds():
    server = StandIn()
    try:
        yield server
    finally:
        server.close()


# the policy, without a network ---------------------------------------------------------


def test_only_a_200_with_a_json_action_is_a_notice():
    assert parse_notice(404, b"") is None
    assert parse_notice(200, json.dumps(NOTICE).encode()) == Notice("terminate", NOTICE["time"])
    assert parse_notice(200, b"<html>captive portal</html>") is None
    assert parse_notice(200, b'{"time": "2026-11-25T08:22:00Z"}') is None
    assert parse_notice(500, json.dumps(NOTICE).encode()) is None
    assert Notice("terminate", NOTICE["time"]).message == LINE


def test_a_token_is_asked_for_once_renewed_before_it_expires_and_dropped_on_401():
    session = ImdsSession(ttl=600)
    assert session.needs_token(0) and session.headers() == {}
    assert session.token_answer(200, b"abc\n", now=0)
    assert session.headers() == {TOKEN_HEADER: "abc"}
    assert not session.needs_token(539) and session.needs_token(540)  # a minute early
    assert session.notice_answer(401, b"") is None
    assert session.needs_token(1) and session.headers() == {}


@pytest.mark.parametrize("status", [403, 404, 405])
def test_an_imds_that_refuses_tokens_is_asked_the_imdsv1_way(status):
    session = ImdsSession()
    assert session.token_answer(status, b"", now=0)
    assert not session.needs_token(0) and session.headers() == {}


@pytest.mark.parametrize("status", [0, 500, 503])
def test_no_answer_to_the_token_request_skips_the_round(status):
    session = ImdsSession()
    assert not session.token_answer(status, b"", now=0)
    assert session.needs_token(0) and not session.v1


# the watcher against the stand-in ------------------------------------------------------


def test_the_watcher_speaks_imdsv2_and_keeps_the_notice(imds):
    heard: list[Notice] = []
    watcher = Watcher(imds.url, interval=1)
    watcher.follow(heard.append)
    assert watcher.check() is None and watcher.check() is None
    puts = [r for r in imds.requests if r[0] == "PUT"]
    gets = [r for r in imds.requests if r[0] == "GET"]
    assert len(puts) == 1 and puts[0][2].get(TOKEN_TTL_HEADER) == "21600"  # one token, reused
    assert len(gets) == 2 and all(g[2].get(TOKEN_HEADER) in imds.issued for g in gets)
    assert heard == []

    imds.notice = NOTICE
    assert watcher.check() == Notice("terminate", NOTICE["time"])
    asked = len(imds.requests)
    assert watcher.check() == watcher.notice == Notice("terminate", NOTICE["time"])
    assert len(imds.requests) == asked  # kept, not asked again
    assert heard == [watcher.notice]  # once

    late: list[Notice] = []
    watcher.follow(late.append)  # after the notice: told at once
    assert late == [watcher.notice]


@pytest.mark.parametrize("refusal", [403, 404, 405])
def test_the_watcher_falls_back_to_imdsv1_when_the_token_request_is_refused(refusal):
    imds = StandIn(tokens=False, refusal=refusal)
    try:
        watcher = Watcher(imds.url)
        assert watcher.check() is None
        imds.notice = NOTICE
        assert watcher.check() == Notice("terminate", NOTICE["time"])
        gets = [r for r in imds.requests if r[0] == "GET"]
        assert gets and all(g[2].get(TOKEN_HEADER) is None for g in gets)
        assert [r[0] for r in imds.requests].count("PUT") == 1  # v1 is remembered
    finally:
        imds.close()


def test_an_expired_token_is_replaced(imds):
    watcher = Watcher(imds.url)
    assert watcher.check() is None
    imds.issued.clear()  # IMDS forgot it: the next GET gets 401
    assert watcher.check() is None
    assert watcher.check() is None
    assert [r[0] for r in imds.requests] == ["PUT", "GET", "GET", "PUT", "GET"]


def test_an_unreachable_metadata_service_is_silent_and_never_crashes_the_thread():
    heard: list[Notice] = []
    watcher = Watcher(f"http://127.0.0.1:{free_port()}", interval=0.05)
    started = time.monotonic()
    assert watcher.check() is None
    assert time.monotonic() - started < 2.5  # short timeouts
    watcher.follow(heard.append)
    watcher.start()
    try:
        wait_for(lambda: time.monotonic() - started > 0.5, 5, "a few polling rounds")
        assert watcher._thread is not None and watcher._thread.is_alive() and heard == []
    finally:
        watcher.stop()
    assert not watcher._thread.is_alive()


def test_the_polling_thread_tells_each_listener_once_and_an_unfollowed_one_never(imds):
    heard: list[Notice] = []
    gone: list[Notice] = []
    watcher = Watcher(imds.url, interval=0.05)
    watcher.follow(heard.append)
    watcher.follow(gone.append)()  # unfollowed at once
    watcher.start()
    try:
        wait_for(lambda: len(imds.requests) >= 3, 10, "the watcher to poll")
        assert heard == []
        imds.notice = NOTICE
        wait_for(lambda: heard, 10, "the listener to hear the notice")
        wait_for(lambda: not watcher._thread.is_alive(), 5, "the watcher to stop polling")
        assert heard == [Notice("terminate", NOTICE["time"])] and gone == []
    finally:
        watcher.stop()


def test_unfollowing_waits_for_a_callback_under_way(imds):
    """A cell does not end while its on_preempt checkpoint is still being written."""
    entered, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def slow(_notice: Notice) -> None:
        entered.set()
        release.wait(10)
        finished.append(True)

    watcher = Watcher(imds.url, interval=0.05)
    unfollow = watcher.follow(slow)
    imds.notice = NOTICE
    watcher.start()
    try:
        assert entered.wait(10)
        done = threading.Event()
        threading.Thread(target=lambda: (unfollow(), done.set()), daemon=True).start()
        assert not done.wait(0.3)  # still inside the callback: unfollow waits
        release.set()
        assert done.wait(10) and finished == [True]
    finally:
        release.set()
        watcher.stop()


# the helper ----------------------------------------------------------------------------


def test_outside_a_burst_on_preempt_only_registers():
    helper = Burst()
    calls: list[int] = []
    assert helper.on_preempt(lambda: calls.append(1)) is not None
    assert helper.preempting is False and calls == []


def test_the_helper_flags_preempting_runs_callbacks_once_and_late_ones_at_once(capsys):
    helper = Burst()
    calls: list[str] = []
    helper.on_preempt(lambda: calls.append("first"))
    helper.on_preempt(lambda: 1 / 0)  # a failing callback does not stop the others
    helper.on_preempt(lambda: calls.append("third"))
    notice = Notice("terminate", NOTICE["time"])
    helper._preempted(notice)
    helper._preempted(notice)
    assert helper.preempting and calls == ["first", "third"]
    helper.on_preempt(lambda: calls.append("late"))
    assert calls == ["first", "third", "late"]
    err = capsys.readouterr().err
    assert err.count(LINE) == 1
    assert "burst: an on_preempt callback raised; the cell goes on:" in err
    assert "ZeroDivisionError" in err

    other_rank = Burst(rank=1, world_size=2, local_rank=1)
    other_rank._preempted(notice)
    assert other_rank.preempting and LINE not in capsys.readouterr().err  # one line per node


def test_a_helper_travels_without_its_callbacks():
    helper = Burst()
    helper.on_preempt(lambda: None)
    copy = pickle.loads(pickle.dumps(helper))
    assert copy._on_preempt == [] and len(helper._on_preempt) == 1


# end to end: a real kernel, a real cluster, the stand-in as the node's IMDS ---------------


@pytest.fixture
def watched_kernel(state_dir: pathlib.Path, workdir: pathlib.Path, imds: StandIn):
    """A kernel whose cluster's workers poll the stand-in every 0.2 s (one worker)."""
    env = {
        "DASK_BURST__PREEMPTION__URL": imds.url,
        "DASK_BURST__PREEMPTION__INTERVAL": "0.2",
        "DASK_BURST__LOCAL__SLOTS": "1",
    }
    with burst_kernel(state_dir, workdir, env) as k:
        yield k


_TRAINING = (
    "%%burst\n"
    "import time\n"
    "state = {'step': 0}\n"
    "saved = []\n"
    "def save_now():\n"
    "    step = state['step']\n"
    "    burst.checkpoint(dict(state), step=step)\n"
    "    saved.append(step)\n"
    "burst.on_preempt(save_now)\n"
    "print('running', flush=True)\n"
    "deadline = time.monotonic() + 60\n"
    "while not burst.preempting and time.monotonic() < deadline:\n"
    "    state['step'] += 1\n"
    "    time.sleep(0.01)\n"
    "saw_preempting = burst.preempting\n"
)


def test_a_spot_notice_reaches_the_running_cell_which_checkpoints_at_once(
    watched_kernel, state_dir, imds
):
    msg_id = watched_kernel.kc.execute(_TRAINING)

    def watch(msg: dict) -> None:
        if msg["msg_type"] == "stream" and "running" in msg["content"]["text"]:
            imds.notice = NOTICE  # only once the cell runs: the notice arrives mid-cell

    run = watched_kernel.collect(msg_id, timeout=120, on_message=watch)
    assert run.status == "ok", run.error_text
    assert LINE in run.stderr
    # The callback ran before the cell ended (the cell does not wait for it itself).
    shown = watched_kernel.ok("import json; print(json.dumps([saw_preempting, saved]))").stdout
    saw, saved = json.loads(shown)
    assert saw is True and len(saved) == 1 and saved[0] >= 1, shown
    step = saved[0]

    ledger = Ledger(state_dir / "ledger.sqlite")
    job = ledger.query("SELECT id FROM jobs ORDER BY started DESC LIMIT 1")[0]["id"]
    assert any(LINE in line["text"] and line["stream"] == "stderr" for line in ledger.lines(job))
    listing = watched_kernel.ok("%burst checkpoints").text
    assert any(job in row and f" {step} " in row for row in listing.splitlines()), listing
    # The worker spoke IMDSv2 to the stand-in: a token, then GETs that carry it.
    assert any(r[0] == "PUT" and r[2].get(TOKEN_TTL_HEADER) == "21600" for r in imds.requests)
    assert any(r[0] == "GET" and r[2].get(TOKEN_HEADER) in imds.issued for r in imds.requests)

    # A cell that starts after the notice knows at once, and its callbacks run when registered.
    later = watched_kernel.ok(
        "%%burst\n"
        "early = burst.preempting\n"
        "fired = []\n"
        "burst.on_preempt(lambda: fired.append(burst.preempting))\n"
    )
    assert LINE in later.stderr
    assert watched_kernel.ok("print(early, fired)").stdout.strip() == "True [True]"


def test_on_gcp_the_watcher_asks_instance_preempted_as_google_wants_and_true_is_the_notice():
    from tests.gcp_fake import PREEMPTED_PATH, ComputeFake

    metadata = ComputeFake().start()
    try:
        heard: list[Notice] = []
        watcher = Watcher(metadata.url, interval=1, kind="gcp")
        watcher.follow(heard.append)
        assert watcher.check() is None and heard == []  # FALSE: not preempted
        metadata.preempted = True
        notice = watcher.check()
        assert notice is not None and notice.action == "terminate" and heard == [notice]
        assert notice.message.startswith("burst: this node will be reclaimed at 20")
        asked = [r for r in metadata.requests if r[1] == PREEMPTED_PATH]
        assert [r[2] for r in asked] == [200, 200]  # with Metadata-Flavor: Google, or a 403
    finally:
        metadata.stop()
