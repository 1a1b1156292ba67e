"""``WS <base_url>/jupyter-burst/jobs/<id>/logs/stream?since=<cursor>&rank=<r>``: live logs.

The kernel writes a job's output lines into the ledger as they arrive from the workers;
this socket sends them on to the sidebar. On open it sends the backfill after ``since`` in
pages, then asks the ledger every :data:`TICK_SECONDS` for newer lines (SQLite in WAL mode:
these reads never block the kernel's writes; they run in a thread, off the event loop).

Every message is ``{"lines": [...], "next": cursor, "dropped": n, "status": ...}`` and is
bounded (:data:`MAX_LINES` lines, about :data:`MAX_BYTES` of text), so a cell printing
10,000 lines a second cannot flood the page: when more arrived than the bound, the newest
are sent and ``dropped`` says how many before them were skipped — skipped from the view
only; the ledger keeps every line and ``GET .../logs?since=`` pages them. When the job has
ended and every line was sent, a last message with ``"end": true`` closes the socket.
"""

from __future__ import annotations

import asyncio
import functools
import json
import pathlib
from typing import Any

import tornado.web
import tornado.websocket
from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin

from jupyter_burst import config
from jupyter_burst.server import api
from jupyter_burst.server.handlers import AUTH_RESOURCE, int_argument
from jupyter_burst.store.ledger import shared_ledger

TICK_SECONDS = 0.2  # a line reaches the page within a tick (+ the query) of its write
MAX_LINES = 1000  # per message, so at most 5,000 lines a second reach the page
MAX_BYTES = 256 * 1024  # of line text per message
MAX_LINE_CHARS = 8192  # a longer line is cut in the view (the ledger keeps it whole)
BACKFILL_LINES = 10 * MAX_LINES  # on open; older lines are reported as dropped


def _bounded(rows: list[dict[str, Any]], max_bytes: int) -> list[dict[str, Any]]:
    """``rows`` as view lines, in their order, until the next would pass ``max_bytes``."""
    kept, size = [], 0
    for row in rows:
        text = row["text"]
        cut = len(text) > MAX_LINE_CHARS
        if cut:
            text = text[:MAX_LINE_CHARS]
        size += len(text.encode("utf-8", "replace")) + 64  # + the line's JSON keys
        if kept and size > max_bytes:
            break
        line = {"id": row["id"], "ts": row["ts"], "rank": row["rank"], "stream": row["stream"]}
        line["text"] = text
        if cut:
            line["cut"] = True
        kept.append(line)
    return kept


def newest_lines(
    state_dir: pathlib.Path,
    job_id: str,
    since: int,
    rank: int | None = None,
    limit: int = MAX_LINES,
    max_bytes: int = MAX_BYTES,
) -> dict[str, Any]:
    """The newest lines after the cursor ``since``, at most ``limit`` and ``max_bytes``.

    ``dropped`` counts the lines after ``since`` that were left out to keep the bound (all
    older than those sent), so ``len(lines) + dropped`` is every line after ``since``.
    ``ended`` is read before the lines: if it is true, no line of the job comes later.
    """
    job = api.job_row(state_dir, job_id)
    ledger = shared_ledger(state_dir)
    where, params = api.log_lines_after(job_id, since, rank)
    # Newest first, so a flood keeps its latest lines; put back in order below.
    rows = ledger.query(
        f"{api.LOG_COLUMNS} WHERE {where} ORDER BY id DESC LIMIT ?", [*params, limit]
    )
    kept = _bounded(rows, max_bytes)
    kept.reverse()
    dropped = 0
    if kept and (len(rows) == limit or len(kept) < len(rows)):
        # Line ids only grow (AUTOINCREMENT): the skipped ones lie before the first sent.
        counted = ledger.query(
            f"SELECT COUNT(*) AS n FROM log_lines WHERE {where} AND id < ?",
            [*params, kept[0]["id"]],
        )
        dropped = int(counted[0]["n"])
    return {
        "lines": kept,
        "next": kept[-1]["id"] if kept else int(since),
        "dropped": dropped,
        "status": job["status"],
        "ended": job["ended"] is not None,
    }


def oldest_lines(
    state_dir: pathlib.Path,
    job_id: str,
    since: int,
    rank: int | None = None,
    limit: int = MAX_LINES,
    max_bytes: int = MAX_BYTES,
) -> dict[str, Any]:
    """One backfill page: the oldest lines after ``since`` within the bounds; ``more``."""
    job = api.job_row(state_dir, job_id)
    where, params = api.log_lines_after(job_id, since, rank)
    rows = shared_ledger(state_dir).query(
        f"{api.LOG_COLUMNS} WHERE {where} ORDER BY id LIMIT ?", [*params, limit]
    )
    kept = _bounded(rows, max_bytes)
    return {
        "lines": kept,
        "next": kept[-1]["id"] if kept else int(since),
        "more": len(kept) < len(rows) or len(rows) == limit,
        "status": job["status"],
    }


def backfill_start(
    state_dir: pathlib.Path, job_id: str, since: int, rank: int | None
) -> tuple[int, int]:
    """Where the backfill starts: ``since``, or later if more than BACKFILL_LINES follow it;
    and how many lines that start skips."""
    ledger = shared_ledger(state_dir)
    where, params = api.log_lines_after(job_id, since, rank)
    rows = ledger.query(
        f"SELECT id FROM log_lines WHERE {where} ORDER BY id DESC LIMIT 1 OFFSET ?",
        [*params, BACKFILL_LINES],
    )
    if not rows:
        return int(since), 0
    start = rows[0]["id"]
    counted = ledger.query(
        f"SELECT COUNT(*) AS n FROM log_lines WHERE {where} AND id <= ?", [*params, start]
    )
    return start, int(counted[0]["n"])


class LogStreamHandler(WebSocketMixin, tornado.websocket.WebSocketHandler, JupyterHandler):
    """A job's output lines, live; the same bases as jupyter_server's kernel websocket.

    ``WebSocketMixin`` brings jupyter_server's ``check_origin`` (the Origin must be the
    server's own host, or match ``allow_origin``/``allow_origin_pat``: otherwise 403 on the
    upgrade) and keep-alive pings; ``@ws_authenticated`` answers 403 without credentials
    instead of redirecting to the login page, and marks the handler as authenticated for
    the server's check of extension endpoints.
    """

    auth_resource = AUTH_RESOURCE

    job_id: str
    cursor: int
    rank: int | None
    _pump: asyncio.Task | None = None

    def skip_check_origin(self) -> bool:
        # jupyter_server skips the Origin check for token-authenticated requests; here a
        # foreign Origin is refused however the caller authenticated (a request without an
        # Origin header, not from a browser, still passes check_origin).
        return False

    async def pre_get(self) -> None:
        """Authorize as the REST endpoints do (``@authorized`` maps GET to ``read``)."""
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE)
        )
        if not allowed:
            raise tornado.web.HTTPError(403)

    @ws_authenticated
    async def get(self, job_id: str) -> None:
        await self.pre_get()
        # Checked before the upgrade, so a bad request is a plain 400/404 answer.
        self.cursor = int_argument(self, "since", 0, 0, 1 << 62) or 0
        self.rank = int_argument(self, "rank", None, 0, 1 << 20)
        self.job_id = job_id
        try:
            await self._blocking(api.job_row, self.job_id)
        except api.NotFound as exc:
            raise tornado.web.HTTPError(404, "%s", str(exc)) from None
        await super().get(job_id)

    def open(self, job_id: str) -> None:  # type: ignore[override]
        super().open(job_id)
        self._pump = asyncio.ensure_future(self._run())

    def on_message(self, message: str | bytes) -> None:
        pass  # the client says nothing; it reconnects with ``since`` to move the cursor

    def on_close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()

    async def _blocking(self, work: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(work, config.state_dir(), *args))

    async def _send(self, message: dict[str, Any]) -> None:
        # Awaiting the write waits for the socket to take it: a slow client slows the
        # ticks down (and so gets fewer, newer lines) rather than growing a buffer here.
        await self.write_message(json.dumps(message))

    async def _run(self) -> None:
        try:
            await self._backfill()
            while True:
                started = asyncio.get_running_loop().time()
                view = await self._blocking(newest_lines, self.job_id, self.cursor, self.rank)
                if view["lines"] or view["dropped"]:
                    await self._send(self._message(view))
                    self.cursor = view["next"]
                if view["ended"] and not view["lines"]:
                    # The job's status was read before its lines: none can follow.
                    await self._send(self._message(view, end=True))
                    self.close(1000, "the job has ended")
                    return
                elapsed = asyncio.get_running_loop().time() - started
                await asyncio.sleep(max(0.0, TICK_SECONDS - elapsed))
        except (asyncio.CancelledError, tornado.websocket.WebSocketClosedError):
            pass  # the client went away
        except Exception:
            self.log.exception("jupyter-burst log stream of job %s failed", self.job_id)
            self.close(1011, "internal error in the jupyter-burst server extension")

    async def _backfill(self) -> None:
        """Lines already in the ledger, oldest first, in pages; at most BACKFILL_LINES."""
        self.cursor, skipped = await self._blocking(
            backfill_start, self.job_id, self.cursor, self.rank
        )
        while True:
            view = await self._blocking(oldest_lines, self.job_id, self.cursor, self.rank)
            if view["lines"] or skipped:
                await self._send(self._message({**view, "dropped": skipped}))
            self.cursor, skipped = view["next"], 0
            if not view["more"]:
                return

    def _message(self, view: dict[str, Any], end: bool = False) -> dict[str, Any]:
        message = {k: view[k] for k in ("lines", "next", "dropped", "status")}
        if end:
            message.update(lines=[], dropped=0, end=True)
        return message
