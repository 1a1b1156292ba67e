"""A notebook's own environment for the emulated cloud, and the package index its machines use.

The test suite's virtualenv holds everything (pytest, moto, playwright, torch...): a kernel
there would ask every emulated machine for all of it. A user's notebook holds less; this is
one: jupyter-burst installed editable (so it is built into a wheel and shipped, as a user's
own package would be), a kernel, the AWS client, and ``tabulate``, which no bare machine
has. It is made once per test process with uv from ``.wheelhouse`` (``make wheelhouse``),
the emulated cloud's package index: no test reaches the network.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.harness import REPO

WHEELHOUSE = REPO / ".wheelhouse"
# What a user's notebook environment has, beyond jupyter-burst's runtime.
NOTEBOOK_PACKAGES = ("ipykernel", "boto3", "cryptography", "tabulate", "uv")
# Read by tests.harness.Kernel: the interpreter the kernel runs (not a variable of the kernel).
KERNEL_PYTHON = "JUPYTER_BURST_TEST_KERNEL_PYTHON"


def uv_binary() -> str:
    import uv

    return uv.find_uv_bin()


def base_python() -> str:
    """A plain interpreter of the tests' Python version, with no package of the tests'."""
    return getattr(sys, "_base_executable", sys.executable)


def index_env(cache: pathlib.Path) -> dict[str, str]:
    """Config for a kernel: resolve and build from the wheelhouse, keep built wheels in ``cache``."""
    return {
        "DASK_BURST__ENV__FIND_LINKS": json.dumps([str(WHEELHOUSE)]),
        "DASK_BURST__ENV__NO_INDEX": "true",
        "DASK_BURST__ENV__CACHE_DIR": str(cache),
    }


def make_notebook_env(folder: pathlib.Path, uv_cache: pathlib.Path, extra: tuple[str, ...] = ()):
    """A virtualenv at ``folder`` with the notebook's packages; its python."""
    if not (WHEELHOUSE / ".stamp").exists():
        raise RuntimeError(f"{WHEELHOUSE} is missing: run `make wheelhouse` (make test does)")
    env = dict(os.environ, UV_CACHE_DIR=str(uv_cache))
    uv = uv_binary()
    subprocess.run(
        [uv, "venv", "--quiet", "--python", base_python(), str(folder)], env=env, check=True
    )
    python = folder / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(python), "--no-index",
         "--find-links", str(WHEELHOUSE), *NOTEBOOK_PACKAGES, *extra, "-e", str(REPO)],
        env=env,
        check=True,
        timeout=300,
    )  # fmt: skip
    return python


def fake_distribution(folder: pathlib.Path, name: str, version: str, *requires: str) -> None:
    """An installed distribution as importlib.metadata sees one (a macOS notebook's, say)."""
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "INSTALLER").write_text("pip\n")


def with_a_macos_only_package(env: dict[str, str], folder: pathlib.Path) -> dict[str, str]:
    """``env`` for a kernel that has ``maconly 1.0`` installed, whose index (the wheelhouse and
    a folder of its own) holds only a macOS wheel of it: no Linux node can install it."""
    site, index = folder / "site", folder / "index"
    fake_distribution(site, "maconly", "1.0")
    index.mkdir()
    (index / "maconly-1.0-py3-none-macosx_11_0_arm64.whl").write_bytes(b"")
    return {
        **env,
        "PYTHONPATH": f"{REPO}:{site}",
        "DASK_BURST__ENV__FIND_LINKS": json.dumps([str(WHEELHOUSE), str(index)]),
    }


@pytest.fixture(scope="session")
def notebook_python(tmp_path_factory) -> pathlib.Path:
    """The notebook environment's interpreter (one per test process)."""
    base = tmp_path_factory.mktemp("notebook-env")
    return make_notebook_env(base / "venv", base / "uv-cache")


@pytest.fixture(scope="session")
def env_cache(tmp_path_factory) -> pathlib.Path:
    """Where kernels keep the wheels they build (content-keyed: shared by the tests)."""
    return tmp_path_factory.mktemp("env-cache")
