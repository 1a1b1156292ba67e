"""A cluster machine installs the runtime only (issue #16): the package without its lab extra.

- What a node runs (the package root, the worker's and the node's modules, the key bundle its
  boot script unpacks) imports with JupyterLab, jupyter_server, ipywidgets, ipykernel and
  cryptography made unimportable, and a cell with IPython syntax and rich output runs on a
  local cluster whose every process (kernel side, node, Dask workers) has them so.
- The node's own install (the AWS user data's pip line, the SSH host's advice) names no lab
  distribution, and what the runtime's requirements pull in (read from this environment's
  installed metadata: no network) holds none.

``python -m bench.node_install_count`` counts the distributions for real, from the index.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from jupyter_burst.clusters import node_versions
from jupyter_burst.clusters.aws import userdata
from jupyter_burst.clusters.ssh import remote
from tests.harness import stop_clusters

REPO = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# The notebook's side, as modules: none of them may be needed where a cell runs.
LAB_MODULES = ("jupyterlab", "jupyter_server", "ipywidgets", "ipykernel", "cryptography")
# ... and as distributions, with the heavier things they bring along.
LAB_DISTRIBUTIONS = {
    "jupyterlab",
    "jupyter-server",
    "ipywidgets",
    "ipykernel",
    "cryptography",
    "jupyter-client",
    "pyzmq",
    "nbconvert",
    "notebook-shim",
    "jupyterlab-server",
}

BLOCKER = '''\
import os, sys

_BLOCKED = frozenset(filter(None, os.environ.get("JUPYTER_BURST_TEST_BLOCKED", "").split(",")))


class _Unimportable:
    """As if these distributions were not installed (a node's environment)."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not on a node)", name=name)
        return None


sys.meta_path.insert(0, _Unimportable())
'''


def _node_env(tmp_path: pathlib.Path) -> dict[str, str]:
    """The environment of a process (and its children) without the lab side."""
    site = tmp_path / "blocker"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(site), str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    env["JUPYTER_BURST_TEST_BLOCKED"] = ",".join(LAB_MODULES)
    return env


def _python(code: str, env: dict[str, str], cwd: pathlib.Path, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_what_a_node_runs_imports_without_the_lab_side(tmp_path: pathlib.Path) -> None:
    from jupyter_burst.clusters import tls

    env = _node_env(tmp_path)
    certs = tls.make(tmp_path / "certs", "c-test")  # here, on the notebook's side
    (tmp_path / "keys.tar").write_bytes(certs.node_bundle())
    # The boot script's key unpacking (clusters/aws/userdata.py), as it runs it.
    unpack = [sys.executable, "-m", "jupyter_burst.clusters.tls", "unpack", "keys.tar", "tls"]
    unpacked = subprocess.run(unpack, env=env, cwd=tmp_path, capture_output=True, timeout=60)
    assert unpacked.returncode == 0, unpacked.stderr[-4000:]
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == [
        "ca.pem",
        "node.key",
        "node.pem",
    ]
    code = f"""
import importlib, json, pkgutil, sys
blocked = []
for name in {LAB_MODULES!r}:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        blocked.append(name)
import jupyter_burst, jupyter_burst.worker.runtime, jupyter_burst.node.bootstrap
imported = []
for folder in ("worker", "node", "wire", "store"):
    package = importlib.import_module("jupyter_burst." + folder)
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.endswith(".__main__"):
            importlib.import_module(info.name)
            imported.append(info.name)
for name in ("config", "errors", "credentials", "estimate", "gpus", "clusters.tls"):
    importlib.import_module("jupyter_burst." + name)
# What Jupyter looks up on the package: there, and loading no jupyter_server yet.
points = jupyter_burst._jupyter_server_extension_points()
# The Security the node's scheduler and workers make of the unpacked keys.
import pathlib
from jupyter_burst.clusters import tls
security = tls.node_security(pathlib.Path("tls"))
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in {LAB_MODULES!r})
print(json.dumps({{"blocked": blocked, "imported": imported, "points": points,
                  "encrypted": security.require_encryption, "loaded": loaded}}))
"""
    done = _python(code, env, tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["blocked"] == list(LAB_MODULES), "the blocker did not hold: the test proves nothing"
    assert "jupyter_burst.worker.rank_shell" in seen["imported"]
    assert "jupyter_burst.node.job_runner" in seen["imported"]
    assert seen["points"] == [{"module": "jupyter_burst.server"}]
    assert seen["encrypted"] is True
    assert seen["loaded"] == []
    # ...and, with those same modules unimportable, a node starts up to its argument parsing.
    started = subprocess.run(
        [sys.executable, "-m", "jupyter_burst.node", "--help"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr[-4000:]
    assert "--state-dir" in started.stdout


def test_a_cell_runs_on_a_cluster_without_the_lab_side(
    tmp_path: pathlib.Path, state_dir: pathlib.Path, no_leaks
) -> None:
    """The kernel's API in a plain Python, the local provider's node and its Dask workers:
    every process without JupyterLab, jupyter_server, ipywidgets, ipykernel, cryptography."""
    env = _node_env(tmp_path)
    env["DASK_BURST__STATE_DIR"] = str(state_dir)
    cell = f"""
import os
missing = []
for name in {LAB_MODULES!r}:
    try:
        __import__(name)
    except ModuleNotFoundError:
        missing.append(name)
rank_pid = os.getpid()
from IPython.display import HTML, display
display(HTML("<b>rich</b>"))
said = !echo from-the-shell
answer = 6 * 7
HTML("<i>the last line</i>")
"""
    code = f"""
import json, os, jupyter_burst
ns = {{}}
result = jupyter_burst.run({cell!r}, ns, provider="local", idle=2)
print(json.dumps({{"missing": ns.get("missing"), "answer": ns.get("answer"),
                  "said": list(ns.get("said") or []), "here": os.getpid(),
                  "rank": ns.get("rank_pid"), "shown": result.shown._repr_html_()}}))
"""
    try:
        done = _python(code, env, tmp_path, timeout=180)
    finally:
        stop_clusters(state_dir)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-4000:])
    # display() on the rank came back (a plain Python shows its text/plain)...
    assert "<IPython.core.display.HTML object>" in done.stdout, done.stdout[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["missing"] == list(LAB_MODULES), "the rank could import the lab side"
    assert seen["rank"] != seen["here"], "the cell did not run in a worker process"
    assert seen["answer"] == 42
    assert seen["said"] == ["from-the-shell"]  # !cmd, through IPython's own code on the rank
    assert seen["shown"] == "<i>the last line</i>"  # ...and so did the last line's value


def _closure(requirements: list[str]) -> set[str]:
    """Every distribution these requirements install (no extras), from installed metadata."""
    found: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in found:
            continue
        found.add(name)
        try:
            todo += [Requirement(r) for r in importlib.metadata.requires(req.name) or []]
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: counted, its own requirements unknown
    return found


def _node_pip_line() -> list[str]:
    boot = userdata.NodeBoot("c", "c-1", "worker", 1, 5.0, 60.0, "https://k.invalid/k")
    script = userdata.render(boot, {name: "1.0" for name in node_versions.MATCHED_PACKAGES})
    (line,) = re.findall(r"-m pip install (.*)$", script, re.M)
    return [a for a in shlex.split(line) if not a.startswith("-")]


def test_a_node_installs_the_package_without_its_lab_extra() -> None:
    wanted = _node_pip_line()
    assert wanted == sorted(f"{name}==1.0" for name in node_versions.MATCHED_PACKAGES)
    assert not [a for a in wanted if "[" in a], "a node installs an extra"
    runtime = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["dependencies"]}
    lab = {
        canonicalize_name(Requirement(r).name) for r in PYPROJECT["optional-dependencies"]["lab"]
    }
    assert {"jupyterlab", "jupyter-server", "ipywidgets", "ipykernel"} <= lab
    assert not runtime & LAB_DISTRIBUTIONS, (
        "the runtime (what every node installs) names the lab side"
    )
    assert {"dask", "distributed", "cloudpickle", "ipython"} <= runtime
    # What a node's pip line brings, torch and the package apart: none of the lab side.
    pulled = _closure(
        PYPROJECT["dependencies"]
        + [w for w in wanted if not w.startswith(("torch", "jupyter-burst"))]
    )
    assert not pulled & LAB_DISTRIBUTIONS, sorted(pulled & LAB_DISTRIBUTIONS)
    # Everything the user installs by hand for the notebook does bring it.
    extras = PYPROJECT["optional-dependencies"]
    assert any("lab" in r for r in extras["test"] if r.startswith("jupyter-burst["))
    postbuild = (REPO / "binder" / "postBuild").read_text()
    assert '".[lab,torch]"' in postbuild


def test_an_ssh_host_with_other_versions_is_told_the_runtime_install(
    tmp_path: pathlib.Path,
) -> None:
    """The host's helper names the pip line that fixes it: the packages' pins, no extra."""
    wanted = {
        "jupyter-burst": "0.0.1",
        "dask": "1.0",
        "cloudpickle": importlib.metadata.version("cloudpickle"),
        "torch": "9.9",
    }
    source = pathlib.Path(remote.__file__).read_text()
    args = ["start", str(tmp_path / "root"), "n", "worker", "5", json.dumps(wanted), "--"]
    done = subprocess.run(
        [sys.executable, "-c", source, *args],
        input=b"",
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr[-2000:]
    error = json.loads(done.stdout)["error"]
    here = importlib.metadata.version("jupyter-burst")
    assert f"jupyter-burst {here} (notebook: 0.0.1)" in error, error
    install = error.split("with: ", 1)[1].split(" (or point python=", 1)[0]
    words = shlex.split(install)
    assert words[:4] == [sys.executable, "-m", "pip", "install"]
    # The mismatched ones, at the notebook's versions; cloudpickle matches, torch is there.
    assert sorted(words[4:]) == ["dask==1.0", "jupyter-burst==0.0.1", "torch==9.9"]
