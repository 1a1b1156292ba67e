"""HTTP handlers of the server extension, all under ``<base_url>/jupyter-burst/``.

A thin layer over :mod:`jupyter_burst.server.api` (the views) and
:mod:`jupyter_burst.server.actions`: it checks the caller (authenticated, authorized; XSRF
on writes, as every ``APIHandler`` does), reads and validates the arguments, and runs the
work in a thread, since the ledger may wait on a busy file and actions wait on cluster.
Errors are JSON ``{"error": "one line"}``; no response ever carries a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from jupyter_burst import config
from jupyter_burst._version import __version__
from jupyter_burst.clusters import records
from jupyter_burst.driver import cluster
from jupyter_burst.errors import BurstError
from jupyter_burst.server import actions, api, prewarm, settings
from jupyter_burst.store import checkpoints
from jupyter_burst.store.budget import daily_budget

API_NAMESPACE = "jupyter-burst"
AUTH_RESOURCE = "jupyter_burst"  # what a custom Authorizer is asked about
DOWNLOAD_CHUNK = 1 << 20
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")

T = TypeVar("T")


def dashboard_prefix(base_url: str, cluster: str) -> str:
    """The path a cluster's Dask dashboard is served under through this server, with '/'."""
    return url_path_join(base_url, API_NAMESPACE, "dashboard", cluster) + "/"


class BurstHandler(APIHandler):
    """Common ground: JSON errors without tracebacks, blocking work off the event loop."""

    auth_resource = AUTH_RESOURCE

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # APIHandler's own reply names the exception; ours says one line and nothing of
        # the server's insides (tornado has already logged the traceback for a 500).
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError) and status_code < 500 and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif status_code < 500:
            message = self._reason
        else:
            message = "internal error in the jupyter-burst server extension; see the server log"
        self.clear_header("Content-Disposition")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": _one_line(str(message))}))

    async def blocking(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in a thread; our own errors become answers with their status."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, functools.partial(work, *args))
        except api.NotFound as exc:
            raise _error(404, exc) from None
        except (actions.Refused, BurstError) as exc:
            raise _error(409, exc) from None
        except ValueError as exc:
            raise _error(400, exc) from None

    def int_argument(self, name: str, default: int | None, low: int, high: int) -> int | None:
        return int_argument(self, name, default, low, high)

    def state_dir(self):
        return config.state_dir()


def int_argument(
    handler: tornado.web.RequestHandler, name: str, default: int | None, low: int, high: int
) -> int | None:
    """The query argument ``name`` as a whole number from ``low`` to ``high``; else 400."""
    text = handler.get_query_argument(name, None)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise _error(400, f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise _error(400, f"{name} must be from {low} to {high}")
    return value


def _one_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "error"


def _error(status: int, message: object) -> tornado.web.HTTPError:
    # log_message is %-formatted by tornado: the text goes in as an argument.
    return tornado.web.HTTPError(status, "%s", _one_line(str(message)))


class StatusHandler(BurstHandler):
    """``GET /jupyter-burst/status``: the version the server runs."""

    @tornado.web.authenticated
    @authorized
    def get(self) -> None:
        self.finish({"version": __version__})


class ClustersHandler(BurstHandler):
    """``GET /jupyter-burst/clusters``: running clusters (and those stopped today)."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        rows = await self.blocking(_clusters_with_live_info, self.state_dir())
        for row in rows:
            row["dashboard_url"] = (
                dashboard_prefix(self.base_url, row["name"]) + "status"
                if row.pop("dashboard")
                else None
            )
        self.finish(json.dumps(rows))


LIVE_INFO_SECONDS = 5.0


class LiveInfo:
    """What the running clusters say of themselves (idle countdown, busy), kept a few
    seconds: every open page asks every few seconds, and each answer means a Dask
    connection to each cluster. The ledger's figures are read fresh on every request."""

    def __init__(self, seconds: float = LIVE_INFO_SECONDS) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._taken = -math.inf
        self._info: list[dict[str, Any]] = []

    def get(self, state_dir) -> list[dict[str, Any]]:
        with self._lock:  # concurrent requests share one round of questions
            if time.monotonic() - self._taken < self.seconds:
                return self._info
            info: list[dict[str, Any]] = []
            if records.all_records(state_dir):
                try:
                    info = cluster.status()
                except Exception:  # listed from the ledger alone, without the countdown
                    info = []
            self._info, self._taken = info, time.monotonic()
            return info

    def forget(self) -> None:
        """After an action changed a cluster: the next request asks again."""
        with self._lock:
            self._taken = -math.inf


live_info = LiveInfo()


def _clusters_with_live_info(state_dir) -> list[dict[str, Any]]:
    return api.clusters_view(state_dir, live=live_info.get(state_dir))


class StartsHandler(BurstHandler):
    """``GET /jupyter-burst/starts?limit=N``: cluster starts of the last day and their phases."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.int_argument("limit", 50, 1, 500)
        view = await self.blocking(api.starts_view, self.state_dir(), None, limit)
        self.finish(json.dumps(view))


class PrewarmHandler(BurstHandler):
    """``POST /jupyter-burst/prewarm`` with ``{"line": "gpus=2"}``: start that ``%%burst`` line's
    cluster now, when ``burst.prewarm`` is on (``{"state": "off"}`` otherwise)."""

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            raise _error(400, 'send JSON {"line": "..."}') from None
        line = await self.blocking(prewarm.line_of, body)
        answer = await self.blocking(prewarm.prewarm, line)
        live_info.forget()
        self.finish(json.dumps(answer))


class CostHandler(BurstHandler):
    """``GET /jupyter-burst/cost?jobs=N``: live total, last N jobs, today, month, budget left."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        last = self.int_argument("jobs", 10, 0, 500)
        view = await self.blocking(_cost, self.state_dir(), last)
        self.finish(json.dumps(view))


def _cost(state_dir, last: int) -> dict[str, Any]:
    try:
        daily = daily_budget()
    except BurstError:  # a malformed setting: shown as no budget rather than no figures
        daily = None
    return api.cost_view(state_dir, last_jobs=last, daily=daily)


class JobsHandler(BurstHandler):
    """``GET /jupyter-burst/jobs?limit=N``: the last jobs, newest first."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.int_argument("limit", 50, 1, 1000)
        view = await self.blocking(api.jobs_view, self.state_dir(), None, limit)
        self.finish(json.dumps(view))


class JobLogsHandler(BurstHandler):
    """``GET /jupyter-burst/jobs/<id>/logs?since=<cursor>&rank=<r>``: the ledger's lines
    after the cursor (the backfill; live lines come over ``.../logs/stream``)."""

    @tornado.web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        since = self.int_argument("since", 0, 0, 1 << 62)
        rank = self.int_argument("rank", None, 0, 1 << 20)
        view = await self.blocking(api.logs_view, self.state_dir(), job_id, since, rank)
        self.finish(json.dumps(view))


class JobMetricsHandler(BurstHandler):
    """``GET /jupyter-burst/jobs/<id>/metrics?since=<cursor>``: the job's ``burst.log``
    points after the cursor, every rank's (the sidebar's charts)."""

    @tornado.web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        since = self.int_argument("since", 0, 0, 1 << 62)
        view = await self.blocking(api.metrics_view, self.state_dir(), job_id, since)
        self.finish(json.dumps(view))


class JobUsageHandler(BurstHandler):
    """``GET /jupyter-burst/jobs/<id>/usage``: what the job's slots used while it ran."""

    @tornado.web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        view = await self.blocking(api.job_usage_view, self.state_dir(), job_id)
        self.finish(json.dumps(view))


class JobCancelHandler(BurstHandler):
    """``POST /jupyter-burst/jobs/<id>/cancel``: cancel a background job (409 otherwise)."""

    @tornado.web.authenticated
    @authorized
    async def post(self, job_id: str) -> None:
        self.finish(json.dumps(await self.blocking(actions.cancel_job, job_id)))


class CheckpointsHandler(BurstHandler):
    """``GET /jupyter-burst/checkpoints[/<job>]``: kept checkpoints, oldest first."""

    @tornado.web.authenticated
    @authorized
    async def get(self, job: str | None = None) -> None:
        view = await self.blocking(api.checkpoints_view, self.state_dir(), job)
        self.finish(json.dumps(view))


class CheckpointDownloadHandler(BurstHandler):
    """``GET /jupyter-burst/checkpoints/<job>/<name>/download``: the checkpoint's bytes."""

    @tornado.web.authenticated
    @authorized
    async def get(self, job: str, name: str) -> None:
        found = await self.blocking(api.checkpoint_file, self.state_dir(), job, name)
        store = checkpoints.CheckpointStore(checkpoints.default_root(self.state_dir()), job)
        source = await self.blocking(store.fs.open, store.data_path(found), "rb")
        check = checkpoints.DataCheck(found)
        try:
            filename = _SAFE_FILENAME.sub("_", api.download_name(found))
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header("Content-Disposition", f'attachment; filename="{filename}"')
            self.set_header("Content-Length", str(found.bytes))
            await self.flush()  # the headers now: the API handler's finish() would make it JSON
            # A large checkpoint is streamed, not held in memory; its last chunk is held back
            # until the whole was checked, so a changed or forged file never arrives whole.
            held = b""
            while chunk := await self.blocking(source.read, DOWNLOAD_CHUNK):
                check.update(chunk)
                if held:
                    self.write(held)
                    await self.flush()
                held = chunk
        finally:
            source.close()
        if not check.ok():
            self.log.warning(
                "jupyter-burst: checkpoint %s of job %s does not match its manifest's sha256 "
                "and signature; its download was cut short",
                name,
                job,
            )
            self.request.connection.close()
            return
        self.write(held)
        self.finish()


class ClusterStopHandler(BurstHandler):
    """``POST /jupyter-burst/clusters/<name>/stop``: stop it now; answers once it is gone."""

    @tornado.web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        stopped = await self.blocking(actions.stop_cluster, name)
        live_info.forget()
        self.finish(json.dumps(stopped))


class ClusterIdleHandler(BurstHandler):
    """``POST /jupyter-burst/clusters/<name>/idle`` with ``{"minutes": N}``."""

    @tornado.web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            raise _error(400, 'send JSON {"minutes": N}') from None
        minutes = await self.blocking(api.idle_minutes, body)
        changed = await self.blocking(actions.set_idle, name, minutes)
        live_info.forget()
        self.finish(json.dumps(changed))


class SettingsHandler(BurstHandler):
    """``PUT /jupyter-burst/settings``: the Settings Editor's values, for the kernels."""

    @tornado.web.authenticated
    @authorized
    async def put(self) -> None:
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            raise _error(400, 'send a JSON object such as {"idle": 10}') from None
        self.finish(json.dumps(await self.blocking(settings.write, body)))
