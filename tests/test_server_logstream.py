"""The live log websocket ``jobs/<id>/logs/stream``, against a real ``jupyter server``.

The test process plays the kernel: it writes lines into the ledger, as ``JobRecorder``
does, while a websocket client reads them from the server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
import tornado.httpclient
import tornado.websocket

from jupyter_burst.server import logstream
from jupyter_burst.store.ledger import Ledger
from tests.jupyter_server_fixture import API, RunningServer, jupyter_server, server_env
from tests.test_server_api import UNAUTHENTICATED_ENDPOINT

DEADLINE = 5.0  # seconds any one wait may take before the test fails


@dataclass
class Served:
    server: RunningServer
    ledger: Ledger

    def ws_url(self, job: str, query: str = "") -> str:
        base = self.server.url.replace("http://", "ws://", 1)
        return f"{base}{API}jobs/{job}/logs/stream" + (f"?{query}" if query else "")

    def add(self, job: str, texts: list[str], rank: int = 0) -> None:
        self.ledger.add_lines(job, [(time.time(), rank, "stdout", t) for t in texts])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("logstream")
    state_dir = home / "state"
    state_dir.mkdir(mode=0o700)
    ledger = Ledger(state_dir / "ledger.sqlite")
    try:
        with jupyter_server(home, server_env(home, state_dir)) as server:
            yield Served(server, ledger)
    finally:
        ledger.close()


async def connect(
    served: Served,
    url: str,
    token: bool = True,
    origin: str | None = None,
    cookie: str | None = None,
) -> tornado.websocket.WebSocketClientConnection:
    headers = {"Authorization": f"token {served.server.token}"} if token else {}
    if cookie:
        headers["Cookie"] = cookie
    if origin:
        headers["Origin"] = origin
    request = tornado.httpclient.HTTPRequest(url, headers=headers, request_timeout=DEADLINE)
    return await asyncio.wait_for(tornado.websocket.websocket_connect(request), DEADLINE)


async def receive(ws: tornado.websocket.WebSocketClientConnection) -> tuple[dict | None, int]:
    """The next message (None once closed) and its size in bytes."""
    raw = await asyncio.wait_for(ws.read_message(), DEADLINE)
    if raw is None:
        return None, 0
    assert isinstance(raw, str)
    return json.loads(raw), len(raw.encode())


async def until_text(ws, text: str) -> tuple[list[dict], float]:
    """Messages up to the one with a line ``text``; the time that one arrived."""
    seen = []
    while True:
        message, _ = await receive(ws)
        assert message is not None, f"closed before {text!r} arrived"
        seen.append(message)
        if any(line["text"] == text for line in message["lines"]):
            return seen, time.monotonic()


def test_the_stream_is_authenticated_and_not_in_the_servers_warning(served):
    log = served.server.log_path.read_text()
    unguarded = [m["path"] for m in UNAUTHENTICATED_ENDPOINT.finditer(log)]
    assert not [path for path in unguarded if "jupyter-burst" in path], unguarded


def test_backfill_then_a_new_line_arrives_within_a_second(served):
    served.ledger.job_started("live", None, "k", "print(1)", {})
    served.add("live", ["old 1", "old 2"])
    served.add("live", ["rank1 old"], rank=1)

    async def scenario() -> float:
        ws = await connect(served, served.ws_url("live"))
        try:
            first, _ = await receive(ws)
            assert [line["text"] for line in first["lines"]] == ["old 1", "old 2", "rank1 old"]
            assert first["dropped"] == 0 and first["status"] == "running"
            served.add("live", ["new line"])
            # From the commit on, the line is the stream's to deliver: the ledger write is
            # the kernel's (under a loaded suite, it once took most of the second alone).
            written = time.monotonic()
            messages, arrived = await until_text(ws, "new line")
            assert [line["text"] for m in messages for line in m["lines"]] == ["new line"]
            assert messages[-1]["next"] == messages[-1]["lines"][-1]["id"]
            # From a cursor and for one rank: only that rank's lines after it.
            ws_rank = await connect(
                served, served.ws_url("live", f"since={first['lines'][0]['id']}&rank=0")
            )
            try:
                page, _ = await receive(ws_rank)
                assert [line["text"] for line in page["lines"]] == ["old 2", "new line"]
            finally:
                ws_rank.close()
            return arrived - written
        finally:
            ws.close()

    latency = asyncio.run(scenario())
    print(f"latency of a new line: {latency * 1000:.0f} ms")
    assert latency < 1.0


def test_without_a_token_the_upgrade_is_refused(served):
    async def scenario() -> None:
        with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
            await connect(served, served.ws_url("live"), token=False)
        assert refused.value.code == 403

    asyncio.run(scenario())


def test_a_foreign_origin_is_refused_and_the_servers_own_accepted(served):
    # A job of its own: the tests of this file may run in other processes (xdist).
    served.ledger.job_started("origin-check", None, "k", "print(1)", {})
    # A browser's session: the token once in the URL, then only the login cookie.
    session = requests.Session()
    status = session.get(f"{served.server.url}{API}status?token={served.server.token}")
    assert status.status_code == 200
    cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
    own = served.server.url.rstrip("/")  # the Origin a page of this server sends
    evil = "http://evil.example"

    async def refused(**kw) -> int:
        with pytest.raises(tornado.httpclient.HTTPClientError) as refusal:
            await connect(served, served.ws_url("origin-check"), **kw)
        return refusal.value.code

    async def scenario() -> None:
        assert await refused(token=False, cookie=cookie, origin=evil) == 403
        assert await refused(token=True, origin=evil) == 403
        (
            await connect(
                served, served.ws_url("origin-check"), token=False, cookie=cookie, origin=own
            )
        ).close()
        (await connect(served, served.ws_url("origin-check"), origin=own)).close()

    asyncio.run(scenario())
    assert "Blocking Cross Origin WebSocket Attempt" in served.server.log_path.read_text()


def test_bad_arguments_and_unknown_jobs_are_answered_before_the_upgrade(served):
    async def code(url: str) -> int:
        with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
            await connect(served, url)
        return refused.value.code

    async def scenario() -> None:
        assert await code(served.ws_url("nope")) == 404
        assert await code(served.ws_url("live", "since=-1")) == 400
        assert await code(served.ws_url("live", "rank=x")) == 400

    asyncio.run(scenario())


def test_a_flood_of_10000_lines_a_second_is_bounded_and_the_stream_keeps_up(served):
    served.ledger.job_started("flood", None, "k", "for i in range(10**4): print(i)", {})
    total = 10_000

    async def scenario() -> tuple[list[tuple[dict, int]], float]:
        ws = await connect(served, served.ws_url("flood"))
        messages: list[tuple[dict, int]] = []

        async def read_all() -> None:
            while True:
                message, size = await receive(ws)
                if message is None:
                    return
                messages.append((message, size))

        reader = asyncio.ensure_future(read_all())
        try:
            started = time.monotonic()
            # As the kernel does: one write per batch the workers publish every 0.05 s.
            for batch in range(20):
                served.add("flood", [f"line {batch * 500 + i}" for i in range(500)])
                served.add("flood", [] if batch else ["x" * 100_000])  # one huge line
                await asyncio.sleep(max(0.0, started + (batch + 1) * 0.05 - time.monotonic()))
            assert time.monotonic() - started < 1.5
            written = time.monotonic()
            served.add("flood", ["after the flood"])
            deadline = written + DEADLINE
            while not any(
                line["text"] == "after the flood" for m, _ in messages[-3:] for line in m["lines"]
            ):
                assert time.monotonic() < deadline and not reader.done()
                await asyncio.sleep(0.01)
            return messages, time.monotonic() - written
        finally:
            ws.close()
            await asyncio.wait_for(reader, DEADLINE)

    messages, latency = asyncio.run(scenario())
    print(f"flood: {len(messages)} messages; latency of the line after it: {latency * 1000:.0f} ms")
    assert latency < 1.0
    assert all(len(m["lines"]) <= logstream.MAX_LINES for m, _ in messages)
    assert max(size for _, size in messages) <= logstream.MAX_BYTES + 64 * 1024
    sent = sum(len(m["lines"]) for m, _ in messages)
    dropped = sum(m["dropped"] for m, _ in messages)
    assert dropped > 0 and sent + dropped == total + 2  # every line sent or counted
    ids = [line["id"] for m, _ in messages for line in m["lines"]]
    assert ids == sorted(set(ids))  # in order, never twice
    assert all(
        len(line["text"]) <= logstream.MAX_LINE_CHARS for m, _ in messages for line in m["lines"]
    )
    kept = served.ledger.lines("flood")
    assert len(kept) == total + 2 and max(len(line["text"]) for line in kept) == 100_000


def test_the_stream_ends_by_itself_after_the_job_ends(served):
    served.ledger.job_started("ending", None, "k", "print(2)", {})
    served.add("ending", ["before"])

    async def scenario() -> list[dict]:
        ws = await connect(served, served.ws_url("ending"))
        messages = []
        (first, _) = await receive(ws)
        messages.append(first)
        served.add("ending", ["last words"])
        served.ledger.job_ended("ending", "done")
        while True:
            message, _ = await receive(ws)
            if message is None:
                break
            messages.append(message)
        assert ws.close_code == 1000
        return messages

    messages = asyncio.run(scenario())
    assert [line["text"] for m in messages for line in m["lines"]] == ["before", "last words"]
    assert messages[-1].get("end") is True and messages[-1]["status"] == "done"
    assert not any(m.get("end") for m in messages[:-1])
