"""A cluster's Dask dashboard, through the Jupyter server only.

A real ``jupyter server`` on 127.0.0.1 and a real local cluster on TLS (a
``jupyter_burst.node`` process with its certificates, as the local provider starts it).
The dashboard's pages and bokeh's websocket reach a logged-in browser through the server;
no port of the cluster's head serves anything to a peer without the cluster's client
certificate, so other users of the machine see nothing.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest
import requests
import tornado.httpclient
import tornado.websocket

from jupyter_burst.clusters import tls
from tests.jupyter_server_fixture import API, jupyter_server, local_node, server_env


@dataclass
class Setup:
    url: str
    token: str
    state_dir: pathlib.Path
    node: subprocess.Popen

    def get(self, path: str, token: bool = True, **kw) -> requests.Response:
        headers = {"Authorization": f"token {self.token}"} if token else {}
        return requests.get(self.url + API + path, headers=headers, timeout=60, **kw)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    home = tmp_path_factory.mktemp("dashboard")
    state_dir = home / "state"
    state_dir.mkdir(mode=0o700)
    env = server_env(home, state_dir)
    certs = tls.make(state_dir / "tls" / "lab-1", "lab-1")
    with local_node(state_dir, env, "lab", "--tls-dir", str(certs.folder)) as node:
        with jupyter_server(home, env) as running:
            yield Setup(running.url, running.token, state_dir, node)


def test_the_sidebar_is_given_the_dashboard_of_a_running_cluster_on_tls(setup):
    rows = setup.get("clusters").json()
    assert [(r["name"], r["dashboard_url"]) for r in rows] == [
        ("lab", "/jupyter-burst/dashboard/lab/status")
    ]


def test_the_dashboard_pages_come_through_the_server_to_its_logged_in_users_only(setup):
    page = setup.get("dashboard/lab/status")
    assert page.status_code == 200, page.text
    assert "Dask" in page.text and "bokeh" in page.text.lower()
    # Its scripts and style sheets are under the same path, and come through too.
    sources = re.findall(r'src="(/jupyter-burst/dashboard/lab/[^"]+)"', page.text)
    assert sources, page.text[:2000]
    for source in sources[:3]:
        script = requests.get(
            setup.url + source.lstrip("/"),
            headers={"Authorization": f"token {setup.token}"},
            timeout=60,
        )
        assert script.status_code == 200, source
        # One Content-Type, the head's (the server's default text/html would be a second).
        types = [v for k, v in script.raw.headers.items() if k.lower() == "content-type"]
        assert len(types) == 1 and "javascript" in types[0], types
    info = setup.get("dashboard/lab/info/main/workers.html")
    assert info.status_code == 200 and "Worker" in info.text
    plots = setup.get("dashboard/lab/individual-plots.json")
    assert "Individual Task Stream" in plots.json()

    assert setup.get("dashboard/lab/status", token=False).status_code == 403
    missing = setup.get("dashboard/nosuch/status")
    assert missing.status_code == 404
    assert "no running cluster named 'nosuch'" in missing.text, missing.text


def test_bokehs_websocket_comes_through_the_server(setup):
    page = setup.get("dashboard/lab/status")
    token = re.search(r'"token":\s*"([^"]+)"', page.text)
    assert token, page.text[:3000]

    async def first_message() -> str | bytes | None:
        request = tornado.httpclient.HTTPRequest(
            setup.url.replace("http://", "ws://") + API + "dashboard/lab/status/ws",
            headers={"Authorization": f"token {setup.token}"},
        )
        connection = await tornado.websocket.websocket_connect(
            request, subprotocols=["bokeh", token.group(1)]
        )
        try:
            return await asyncio.wait_for(connection.read_message(), 30)
        finally:
            connection.close()

    message = asyncio.run(first_message())
    assert message is not None
    assert "ACK" in (message if isinstance(message, str) else message.decode(errors="replace"))


def _listening_ports(pid: int) -> list[int]:
    process = psutil.Process(pid)
    ports = set()
    for each in [process, *process.children(recursive=True)]:
        for connection in each.net_connections(kind="tcp"):
            if connection.status == psutil.CONN_LISTEN:
                ports.add(connection.laddr.port)
    return sorted(ports)


PAGES = [
    "/jupyter-burst/dashboard/lab/status",
    "/jupyter-burst/dashboard/lab/info/main/workers.html",
    "/jupyter-burst/dashboard/lab/individual-plots.json",
    "/status",
    "/info/main/workers.html",
    "/metrics",
]


def _served_without_a_certificate(port: int) -> list[str]:
    """The pages the port serves to a peer without the cluster's certificate (plain HTTP, or
    TLS that shows no certificate)."""
    served, plain = [], False
    for scheme in ("http", "https"):
        if scheme == "https" and plain:
            break  # a plain HTTP server would wait for the rest of a TLS hello
        for page in PAGES:
            try:
                reply = requests.get(f"{scheme}://127.0.0.1:{port}{page}", timeout=10, verify=False)
            except requests.RequestException:
                continue
            plain = plain or scheme == "http"
            if reply.status_code == 200:
                served.append(f"{scheme} {page}")
    return served


def test_no_port_of_the_cluster_serves_a_page_to_a_peer_without_its_certificate(setup):
    """Dask's health check ("ok") is all a worker's own HTTP server says to anyone."""
    assert setup.get("dashboard/lab/status").status_code == 200  # the pages are being served
    ports = _listening_ports(setup.node.pid)
    assert len(ports) >= 3, ports  # the scheduler's, its HTTP server's, the worker's
    served = {port: _served_without_a_certificate(port) for port in ports}
    assert not any(served.values()), served
    assert json.loads(setup.get("clusters").text)[0]["state"] == "running"
