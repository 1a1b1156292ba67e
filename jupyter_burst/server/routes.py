"""The server extension's routes, in one table: every URL under ``/jupyter-burst/`` and the
handler that answers it (:mod:`jupyter_burst.server.handlers`, the log websocket in
:mod:`jupyter_burst.server.logstream`)."""

from __future__ import annotations

import tornado.web
from jupyter_server.utils import url_path_join

from jupyter_burst.server.dashboard_proxy import DashboardProxyHandler
from jupyter_burst.server.handlers import (
    API_NAMESPACE,
    CheckpointDownloadHandler,
    CheckpointsHandler,
    ClusterIdleHandler,
    ClustersHandler,
    ClusterStopHandler,
    CostHandler,
    JobCancelHandler,
    JobLogsHandler,
    JobMetricsHandler,
    JobsHandler,
    JobUsageHandler,
    PrewarmHandler,
    SettingsHandler,
    StartsHandler,
    StatusHandler,
)
from jupyter_burst.server.logstream import LogStreamHandler


def setup_handlers(web_app: tornado.web.Application) -> None:
    base_url = web_app.settings["base_url"]
    part = "([^/]+)"

    def url(*parts: str) -> str:
        return url_path_join(base_url, API_NAMESPACE, *parts)

    handlers = [
        (url("status"), StatusHandler),
        (url("settings"), SettingsHandler),
        (url("clusters"), ClustersHandler),
        (url("clusters", part, "stop"), ClusterStopHandler),
        (url("clusters", part, "idle"), ClusterIdleHandler),
        (url("starts"), StartsHandler),
        (url("prewarm"), PrewarmHandler),
        (url("cost"), CostHandler),
        (url("jobs"), JobsHandler),
        (url("jobs", part, "logs"), JobLogsHandler),
        (url("jobs", part, "logs", "stream"), LogStreamHandler),
        (url("jobs", part, "metrics"), JobMetricsHandler),
        (url("jobs", part, "usage"), JobUsageHandler),
        (url("jobs", part, "cancel"), JobCancelHandler),
        (url("checkpoints"), CheckpointsHandler),
        (url("checkpoints", part), CheckpointsHandler),
        (url("checkpoints", part, part, "download"), CheckpointDownloadHandler),
        (url("dashboard", part, "(.*)"), DashboardProxyHandler),
    ]
    web_app.add_handlers(".*$", handlers)
