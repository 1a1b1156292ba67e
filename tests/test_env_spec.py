"""The rules of the nodes' environment spec, on made-up installed distributions (no process).

tests/test_node_environment.py shows the same through a kernel and bare emulated machines.
"""

from __future__ import annotations

import json
import pathlib

import dask.config
import pytest

from jupyter_burst.clusters.env import spec
from jupyter_burst.clusters.env.uv_tool import index_arguments
from jupyter_burst.clusters.env.wheels import LocalDist, wheel_for
from jupyter_burst.errors import ClusterError


def _dist(
    site: pathlib.Path,
    name: str,
    version: str,
    *requires: str,
    installer: str = "uv",
    direct: dict | None = None,
) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "INSTALLER").write_text(installer + "\n")
    (info / "REQUESTED").write_text("")
    if direct is not None:
        (info / "direct_url.json").write_text(json.dumps(direct))


@pytest.fixture
def site(tmp_path) -> pathlib.Path:
    """A notebook environment: jupyter-burst with its lab extra, pandas through dask's extra."""
    site = tmp_path / "site"
    _dist(site, "jupyter-burst", "0.1.0", "dask", "cloudpickle",
          'ipykernel; extra == "lab"', 'jupyterlab; extra == "lab"')  # fmt: skip
    _dist(site, "dask", "2026.8.0", 'pandas; extra == "dataframe"', 'pytest; extra == "test"',
          'hypothesis; extra == "test"')  # fmt: skip
    _dist(site, "cloudpickle", "3.1.3")
    _dist(site, "pandas", "2.3.0")
    _dist(site, "pytest", "9.0.0")  # installed, but dask's test extra is not complete
    _dist(site, "ipykernel", "7.4.0", 'appnope; platform_system == "Darwin"', "pyzmq")
    _dist(site, "appnope", "0.1.4")
    _dist(site, "pyzmq", "27.0.0")
    _dist(site, "jupyterlab", "4.5.0", "jupyter-server", "requests")
    _dist(site, "jupyter-server", "2.17.0")
    _dist(site, "requests", "2.32.5")
    _dist(site, "torch", "2.13.0+cpu")
    _dist(site, "tabulate", "0.10.0")
    return site


def test_the_spec_ships_what_the_user_installed_and_leaves_the_notebooks_side(site):
    found = spec.read_spec(paths=[str(site)])
    assert set(found.packages) == {
        "jupyter-burst", "dask", "cloudpickle", "pandas", "torch", "tabulate", "pytest",
    }  # fmt: skip
    # pytest: no installed package requires it under an extra that is complete, so it is a
    # root (the user installed it); pandas: dask's dataframe extra is all installed.
    assert "torch==2.13.0" in found.requirements  # the public version: a node's own build
    assert found.differences == ("torch 2.13.0: the cpu build here, the CUDA build on the nodes",)
    (appnope,) = [ln for ln in found.left_out if ln.startswith("appnope")]
    assert appnope == (
        "appnope 0.1.4: left out (only needed off Linux: ipykernel asks for it elsewhere only)"
    )
    (side,) = [ln for ln in found.left_out if "notebook's side" in ln]
    assert side.startswith("5 distributions left out") and "ipykernel" in side, side


def test_burst_env_include_and_exclude(site):
    with dask.config.set({"burst.env.include": ["requests"], "burst.env.exclude": ["tabulate"]}):
        found = spec.read_spec(paths=[str(site)])
    assert "requests" in found.packages and "tabulate" not in found.packages
    assert "tabulate 0.10.0: left out (burst.env.exclude)" in found.left_out


def test_leaving_out_what_pickles_need_is_refused(site):
    with dask.config.set({"burst.env.exclude": ["cloudpickle"]}):
        with pytest.raises(ClusterError, match="leaves out cloudpickle, which values pickled"):
            spec.read_spec(paths=[str(site)])


def test_a_python_minor_the_nodes_cannot_match_is_refused(site):
    with dask.config.set({"burst.env.python": "3.12"}):
        with pytest.raises(ClusterError, match=r"burst.env.python is 3.12 but this kernel runs"):
            spec.read_spec(paths=[str(site)])


def test_a_local_package_is_built_and_a_vcs_one_keeps_its_commit(tmp_path):
    site = tmp_path / "site"
    wheel = tmp_path / "mine-1.0-py3-none-any.whl"
    _dist(site, "mine", "1.0", direct={"url": wheel.as_uri(), "archive_info": {}})
    _dist(site, "theirs", "2.0", direct={
        "url": "https://github.com/o/theirs", "vcs_info": {"vcs": "git", "commit_id": "abc123"}
    })  # fmt: skip
    found = spec.read_spec(paths=[str(site)])
    assert found.local == (LocalDist("mine", "1.0", str(wheel), False),)
    assert found.requirements == ("theirs @ git+https://github.com/o/theirs@abc123",)
    # a source that is gone is refused with the fix
    with pytest.raises(ClusterError, match=r"mine 1.0 was installed from .* which is gone"):
        wheel_for(found.local[0], tmp_path / "cache")


def test_an_index_url_with_a_password_is_refused():
    with dask.config.set({"burst.env.index-url": "https://me:secret@pypi.example/simple"}):
        with pytest.raises(ClusterError, match="carries a user name or password"):
            index_arguments()
    with dask.config.set({"burst.env.index-url": "https://pypi.example/simple"}):
        assert index_arguments() == ["--index-url", "https://pypi.example/simple"]
