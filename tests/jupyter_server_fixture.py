"""A real ``jupyter server`` process on 127.0.0.1 with a token, for the extension's tests.

It runs with ``JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS=false`` (the server's own
default is to allow it), its own config/data/runtime folders, and ``state_dir`` as the
jupyter-burst state folder; it is stopped (and waited for) when the block ends.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import requests

from tests.harness import REPO, cluster_record, stop_clusters, stop_process, wait_for

API = "jupyter-burst/"


@dataclass
class RunningServer:
    url: str  # http://127.0.0.1:PORT/
    token: str
    log_path: pathlib.Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(home: pathlib.Path, state_dir: pathlib.Path) -> dict[str, str]:
    """The environment of the server (and of anything the test starts beside it)."""
    return {
        **os.environ,
        "DASK_BURST__STATE_DIR": str(state_dir),
        # The Settings Editor's values are written here, never into the developer's own.
        "DASK_CONFIG": str(home / "dask"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


@contextlib.contextmanager
def jupyter_server(home: pathlib.Path, env: dict[str, str]) -> Iterator[RunningServer]:
    """Start the server, wait until the extension answers, stop it at the end."""
    root = home / "root"
    root.mkdir(exist_ok=True)
    token, port = secrets.token_hex(16), free_port()
    command = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1"]
    command += [f"--port={port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}"]
    command += [f"--IdentityProvider.token={token}"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log_path = home / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    server = RunningServer(f"http://127.0.0.1:{port}/", token, log_path)

    def answers() -> bool:
        assert process.poll() is None, log_path.read_text()
        try:
            reply = requests.get(
                server.url + API + "status",
                headers={"Authorization": f"token {token}"},
                timeout=30,
            )
            return reply.status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(answers, 60, "jupyter server to answer")
        yield server
    finally:
        stop_process(process)


@contextlib.contextmanager
def local_node(
    state_dir: pathlib.Path, env: dict[str, str], cluster: str, *args: str
) -> Iterator[subprocess.Popen]:
    """A local cluster's head (``python -m jupyter_burst.node``, one slot, 30 idle minutes,
    ``args`` added) started in ``state_dir`` and up; at the end it and whatever else the state
    folder runs are stopped (also when the start failed)."""
    command = [sys.executable, "-m", "jupyter_burst.node", "--cluster", cluster]
    command += ["--state-dir", str(state_dir), "--slots", "1", "--idle", "30"]
    command += ["--memory-limit", "0", *args]
    with open(state_dir / "node.log", "wb") as log:
        node = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: node.poll() is not None or cluster_record(state_dir, cluster),
            60,
            "the local cluster to start",
        )
        assert node.poll() is None, (state_dir / "node.log").read_text()
        yield node
    finally:
        stop_process(node, timeout=30)
        stop_clusters(state_dir)
