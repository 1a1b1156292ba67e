"""Where a running cluster's Dask dashboard is served, and the TLS to reach it with.

The Jupyter server asks the cluster's head, over the cluster's own authenticated Dask
connection, to serve its dashboard pages under the path the server proxies them at
(``node/dashboard.py``); the answer is the head's HTTP port. The pages are then fetched from
the head's address with the cluster's client certificate, which the head requires.
"""

from __future__ import annotations

import pathlib
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from jupyter_burst.clusters.tls import CA, CLIENT, ClusterCerts
from jupyter_burst.driver.cluster import ask_head, newest_running_record
from jupyter_burst.errors import ClusterError
from jupyter_burst.wire.contract import Rpc


@dataclass(frozen=True)
class DashboardAddress:
    """The head's HTTP server (``https://host:port``) and the client TLS it asks for."""

    origin: str
    tls: ssl.SSLContext


def dashboard_address(state_dir: pathlib.Path, name: str, prefix: str) -> DashboardAddress:
    """Ask the running cluster ``name`` to serve its dashboard under ``prefix``."""
    record = newest_running_record(state_dir, name)
    if record is None:
        raise ClusterError(
            f"no running cluster named '{name}': %burst status lists the running ones"
        )
    if not record.get("tls"):
        raise ClusterError(
            f"cluster '{name}' runs without TLS, so its dashboard is not served: install "
            "cryptography where the notebook runs and start the cluster again"
        )
    reply = ask_head(record, Rpc.DASHBOARD, prefix=prefix)
    if "error" in reply:
        raise ClusterError(f"cluster '{name}': {reply['error']}")
    host = urlsplit(record["scheduler"]).hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return DashboardAddress(f"https://{host}:{int(reply['port'])}", client_tls(record["tls"]))


def client_tls(folder: str | pathlib.Path) -> ssl.SSLContext:
    """A TLS context that trusts the cluster's CA only and shows the client certificate."""
    certs = ClusterCerts(pathlib.Path(folder))
    context = ssl.create_default_context(cafile=str(certs.cert(CA)))
    # The nodes' certificate names the cluster, not the head's address (as Dask's own TLS).
    context.check_hostname = False
    context.load_cert_chain(str(certs.cert(CLIENT)), str(certs.key(CLIENT)))
    return context
