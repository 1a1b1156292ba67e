"""A real JupyterLab server (from this environment) and Debian's Chromium, for the sidebar tests.

The server runs with fresh Jupyter config, data and runtime folders, so nothing of the
developer's own Jupyter setup leaks in; the labextension is still found, because it is
installed under ``sys.prefix/share/jupyter``.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.harness import stop_process, wait_for
from tests.jupyter_server_fixture import free_port

REPO = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT = 120.0
DEMO_NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
LOCAL_PRICE_PER_HOUR = 36


@dataclass
class Lab:
    """A running ``jupyter lab`` server."""

    url: str  # http://127.0.0.1:PORT/ (base_url included, with a trailing slash)
    token: str
    home: pathlib.Path  # root/ (the notebooks), burst-state/, dask/, config/
    log_path: pathlib.Path
    process: subprocess.Popen

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, token: bool = True) -> tuple[int, bytes]:
        """GET ``path`` (relative to the base URL); the status and body, errors included."""
        request = urllib.request.Request(self.url + path.lstrip("/"))
        if token:
            request.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


def _server_answers(lab: Lab) -> bool:
    if lab.process.poll() is not None:
        raise RuntimeError(
            f"jupyter lab exited with {lab.process.returncode} before answering; "
            f"its log:\n{lab.log()}"
        )
    try:
        status, _ = lab.get("api/status")
    except OSError:
        return False
    return status == 200


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("jupyter")
    root = home / "root"
    config_dir = home / "config"
    for path in (root, config_dir):
        path.mkdir()
    # No "would you like news?" toast over the page.
    notification = config_dir / "lab/user-settings/@jupyterlab/apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    shutil.copy(DEMO_NOTEBOOK, root / DEMO_NOTEBOOK.name)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config_dir),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        # The server and the kernels it starts share a state folder of this test's own,
        # and a Dask config folder (where the Settings Editor's values are written).
        "DASK_BURST__STATE_DIR": str(home / "burst-state"),
        "DASK_CONFIG": str(home / "dask"),
        # A notional price, so that the cost visibly ticks: a cent a second.
        "DASK_BURST__LOCAL__PRICE_PER_HOUR": str(LOCAL_PRICE_PER_HOUR),
    }
    # The server's own default allows it; refused here, the server warns about any
    # endpoint without an authentication rule (test_sidebar.py fails on that warning).
    env["JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS"] = "false"
    token = secrets.token_hex(16)
    port = free_port()
    log_dir = ARTIFACTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"jupyter-lab-{request.module.__name__.rsplit('.', 1)[-1]}.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        # Endpoints without an authentication rule are then refused and warned about.
        "--ServerApp.allow_unauthenticated_access=False",
    ]
    if os.geteuid() == 0:  # CI and the dev machines run as root
        command.append("--allow-root")
    # A test module may ask for more server options: LAB_ARGS = [...] (a request log, say).
    command += getattr(request.module, "LAB_ARGS", [])
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, env=env, cwd=root, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = Lab(f"http://127.0.0.1:{port}/", token, home, log_path, process)
    try:
        wait_for(lambda: _server_answers(server), SERVER_START_TIMEOUT, "jupyter lab to answer")
        yield server
    finally:
        stop_process(process)
        _stop_clusters(env)


def _stop_clusters(env: dict[str, str]) -> None:
    """The clusters the notebooks' kernels started (they outlive a kernel by design)."""
    subprocess.run(
        [sys.executable, "-c", "from jupyter_burst.driver import cluster; cluster.down()"],
        env=env,
        check=True,
        timeout=120,
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_FAILED] = report.failed


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def browser_context(request: pytest.FixtureRequest, tmp_path: pathlib.Path):
    """A Chromium profile of its own; Debian's Chromium, never a downloaded one."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            yield context
        finally:
            if request.node.stash.get(_FAILED, False):
                # What the page showed when the test failed, for whoever reads the CI log.
                for i, page in enumerate(context.pages):
                    shot = ARTIFACTS / "screenshots" / f"failed-{request.node.name}-{i}.png"
                    shot.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(shot))
            context.close()
