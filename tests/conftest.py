"""Each test gets its own state folder, working folder, kernel and cluster processes, and leaves none behind."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import pytest

from tests.aws_cloud import cloud, moto_endpoint, moto_image  # noqa: F401 - fixtures for all
from tests.harness import burst_kernel, burst_processes, stop_clusters
from tests.netns import two_hosts  # noqa: F401 - a fixture for all
from tests.node_machines import machines  # noqa: F401 - a fixture for all
from tests.notebook_env import env_cache, notebook_python  # noqa: F401 - fixtures for all


def pytest_configure(config: pytest.Config) -> None:
    """The tests sign and check checkpoints with a store key of their own (store_key.py), in
    a folder of this test process: the kernels, servers and nodes they start inherit the
    setting, and the user's own key is never made or read."""
    folder = tempfile.mkdtemp(prefix="burst-test-keys-")
    os.environ["JUPYTER_BURST_STORE_KEY_FILE"] = str(pathlib.Path(folder) / "store.key")
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


@pytest.fixture
def state_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def workdir(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "notebook"
    path.mkdir()
    return path


@pytest.fixture
def no_leaks(state_dir: pathlib.Path):
    """Fails the test if any cluster process of its state folder outlives it."""
    yield
    leftover = burst_processes(state_dir)
    stop_clusters(state_dir)
    assert not leftover, f"processes left behind: {[p.pid for p in leftover]}"


@pytest.fixture
def kernel(state_dir: pathlib.Path, workdir: pathlib.Path):
    with burst_kernel(state_dir, workdir) as k:
        yield k
