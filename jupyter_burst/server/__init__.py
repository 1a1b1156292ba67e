"""The Jupyter server extension: the REST API behind the JupyterLab sidebar.

Enabled on install by ``jupyter-config/server-config/jupyter_burst.json``; every handler
verb is authenticated.
"""

from __future__ import annotations

from typing import Any

from jupyter_burst.server.handlers import setup_handlers

__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_burst.server"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    """Register the jupyter-burst handlers with the server's web application."""
    setup_handlers(server_app.web_app)
    server_app.log.info("jupyter-burst server extension loaded")
