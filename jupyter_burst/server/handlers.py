"""HTTP handlers of the server extension, all under ``<base_url>/jupyter-burst/``."""

from __future__ import annotations

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

import jupyter_burst

API_NAMESPACE = "jupyter-burst"


class StatusHandler(APIHandler):
    """``GET /jupyter-burst/status``: the version the server runs."""

    @tornado.web.authenticated
    def get(self) -> None:
        self.finish({"version": jupyter_burst.__version__})


def setup_handlers(web_app: tornado.web.Application) -> None:
    base_url = web_app.settings["base_url"]
    handlers = [
        (url_path_join(base_url, API_NAMESPACE, "status"), StatusHandler),
    ]
    web_app.add_handlers(".*$", handlers)
