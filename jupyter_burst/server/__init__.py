"""The Jupyter server extension: the REST API behind the JupyterLab sidebar (its routes in
one table, thin handlers over plain functions of a state folder, the log websocket).

Enabled on install by ``jupyter-config/server-config/jupyter_burst.json``; every handler
verb is authenticated. ``import jupyter_burst`` (a kernel, a worker) does not import
jupyter_server: the handlers are imported only when the server loads the extension.
"""

from __future__ import annotations

from typing import Any

__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_burst.server"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    """Register the jupyter-burst handlers with the server's web application."""
    # jupyter_server and tornado load only in the server, never in a kernel or a worker.
    from jupyter_burst.server.routes import setup_handlers

    setup_handlers(server_app.web_app)
    server_app.log.info("jupyter-burst server extension loaded")
