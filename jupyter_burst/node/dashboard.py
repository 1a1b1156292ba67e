"""The cluster's Dask dashboard: served by its head, to holders of the cluster's client
certificate only, and only from the moment someone asks for it.

Dask's dashboard pages (task stream, workers' logs and call stacks) show what the cell does
and its data's shapes, with no authentication of their own. So the head's HTTP server
requires a TLS client certificate signed by the cluster's CA: on 127.0.0.1 (another user of
a shared machine can reach that port) as on a cloud head (whose firewall opens it to the
notebook's address only). The Jupyter server holds the client certificate and proxies the
pages to the browser behind its own login (``server/dashboard_proxy.py``).

Importing bokeh adds half a second to a head's start and memory to every head, for a page
most cells never open; the pages are added when the Jupyter server first asks
(:data:`Rpc.DASHBOARD`), under the path the Jupyter server serves them at, so that the
pages' own links and the bokeh websocket go through the proxy unchanged.
"""

from __future__ import annotations

import asyncio
import importlib
import pathlib
import ssl
from typing import Any

from jupyter_burst.clusters.tls import CA, NODE, ClusterCerts

# Beside the bokeh pages: the "Info" tab, individual-plots.json (dask-labextension's list
# of plots) and the pages' style sheets.
PAGE_ROUTES = [
    "distributed.http.scheduler.info",
    "distributed.http.scheduler.json",
    "distributed.http.statics",
]
MAX_PREFIXES = 4  # Jupyter servers (base URLs) a head serves its pages to at once


def tls_config(tls_dir: str | pathlib.Path) -> dict[str, str]:
    """Dask settings that put the head's HTTP server on TLS with the node's certificate."""
    certs = ClusterCerts(pathlib.Path(tls_dir))
    return {
        "distributed.scheduler.dashboard.tls.cert": str(certs.cert(NODE)),
        "distributed.scheduler.dashboard.tls.key": str(certs.key(NODE)),
        "distributed.scheduler.dashboard.tls.ca-file": str(certs.cert(CA)),
    }


def require_client_certificates(scheduler: Any) -> None:
    """From now on, the scheduler's HTTP server completes a TLS handshake only with a peer
    whose certificate the cluster's CA signed.

    Dask builds the server's context from :func:`tls_config` but asks no certificate of the
    client (its dashboard TLS is for encryption only). The context is the one object the
    server wraps each accepted connection with, so setting it before the loop next runs
    covers every connection.
    """
    context = getattr(scheduler.http_server, "ssl_options", None)
    if not isinstance(context, ssl.SSLContext):
        raise RuntimeError("the scheduler's HTTP server is not on TLS; refusing to serve it")
    context.verify_mode = ssl.CERT_REQUIRED


class Dashboard:
    """The head's dashboard pages, added under each prefix asked for (at most a few)."""

    def __init__(self, scheduler: Any, has_tls: bool) -> None:
        self.scheduler = scheduler
        self.has_tls = has_tls
        self.prefixes: set[str] = set()
        self._lock = asyncio.Lock()

    async def open(self, prefix: str) -> dict[str, Any]:
        """The HTTP port the pages are served on under ``prefix``, or a one-line error."""
        if not self.has_tls:
            return {
                "error": "this cluster runs without TLS, so its dashboard is not served: "
                "install cryptography where the notebook runs and start the cluster again"
            }
        if not prefix.startswith("/") or not prefix.endswith("/"):
            return {"error": f"a dashboard prefix starts and ends with '/', not {prefix!r}"}
        async with self._lock:
            if prefix not in self.prefixes:
                if len(self.prefixes) >= MAX_PREFIXES:
                    return {
                        "error": f"this head already serves its dashboard to {MAX_PREFIXES} "
                        "Jupyter servers (base URLs), the most it serves: restart the cluster "
                        "to serve it to another"
                    }
                try:
                    # In a thread: the import takes half a second the scheduler's loop needs.
                    pages = await asyncio.to_thread(
                        importlib.import_module, "distributed.dashboard.scheduler"
                    )
                    from distributed.http.utils import get_handlers
                except ImportError as exc:
                    return {
                        "error": f"the cluster's head cannot draw Dask's dashboard ({exc}): "
                        "pip install 'bokeh>=3.1' into the head's environment"
                    }
                application = self.scheduler.http_application
                pages.connect(application, self.scheduler.http_server, self.scheduler, prefix)
                application.add_handlers(".*$", get_handlers(self.scheduler, PAGE_ROUTES, prefix))
                self.prefixes.add(prefix)
        return {"port": self.scheduler.http_server.port}
