"""A cluster machine installs the runtime only (issue #16): the package without its lab extra.

- What a node runs (the package root, the worker's and the node's modules, the key bundle its
  boot script unpacks) imports with JupyterLab, jupyter_server, ipywidgets, ipykernel and
  cryptography made unimportable, and a cell with IPython syntax and rich output runs on a
  local cluster whose every process (kernel side, node, Dask workers) has them so.
- What a cloud node installs from a notebook environment with the kernel's side in it (its
  spec: issue #17, the environment travels) holds no lab distribution, and what the
  runtime's requirements pull in (read from this environment's installed metadata: no
  network) holds none. An SSH host installs nothing by hand: its Python runs a stdlib-only
  helper, and its node runs the environment built there from that same spec.

``python -m bench.node_install_count`` counts the distributions for real, from the index.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
        "store.key",  # with which its workers sign checkpoints (store/store_key.py)
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
    # Without cryptography the local cluster cannot have its certificates: said, once.
    assert done.stderr.count("burst: this local cluster is not authenticated") == 1, done.stderr
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


def _node_packages(python: pathlib.Path) -> dict:
    """What a cloud node installs from that notebook environment (its spec, read there)."""
    code = (
        "import json; from jupyter_burst.clusters.env.spec import read_spec; s = read_spec(); "
        "print(json.dumps({'packages': s.packages, 'local': [d.name for d in s.local]}))"
    )
    done = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return json.loads(done.stdout)


def test_a_node_installs_the_notebooks_packages_without_the_lab_side(notebook_python) -> None:
    """A notebook environment made with `jupyter-burst[lab]`'s kernel side (ipykernel,
    cryptography) and the AWS client: its nodes get the runtime and the user's package."""
    shipped = _node_packages(notebook_python)
    names = set(shipped["packages"])
    assert not names & LAB_DISTRIBUTIONS, sorted(names & LAB_DISTRIBUTIONS)
    assert {"dask", "distributed", "cloudpickle", "ipython", "tabulate"} <= names
    assert shipped["local"] == ["jupyter-burst"]  # editable here: built into a wheel, shipped
    runtime = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["dependencies"]}
    lab = {
        canonicalize_name(Requirement(r).name) for r in PYPROJECT["optional-dependencies"]["lab"]
    }
    assert {"jupyterlab", "jupyter-server", "ipywidgets", "ipykernel"} <= lab
    assert not runtime & LAB_DISTRIBUTIONS, (
        "the runtime (what every node installs) names the lab side"
    )
    assert {"dask", "distributed", "cloudpickle", "ipython"} <= runtime
    # What the runtime's requirements bring: none of the lab side.
    pulled = _closure(PYPROJECT["dependencies"])
    assert not pulled & LAB_DISTRIBUTIONS, sorted(pulled & LAB_DISTRIBUTIONS)
    # Everything the user installs by hand for the notebook does bring it.
    extras = PYPROJECT["optional-dependencies"]
    assert any("lab" in r for r in extras["test"] if r.startswith("jupyter-burst["))
    postbuild = (REPO / "binder" / "postBuild").read_text()
    assert '".[lab,torch]"' in postbuild


def test_an_ssh_host_needs_no_install_its_node_runs_the_built_environment(
    tmp_path: pathlib.Path,
) -> None:
    """An SSH host's own Python runs only the stdlib helper (here a plain interpreter in
    isolated mode: none of this environment's packages); the node it starts runs the
    environment built from the notebook's lock (the spec above, no lab distribution), with
    nothing of the login's PYTHONPATH or user site-packages."""
    from tests.harness import wait_for
    from tests.notebook_env import base_python

    calls = tmp_path / "calls"
    env_python = tmp_path / "envs" / "0123abcd" / "bin" / "python"
    env_python.parent.mkdir(parents=True)
    # The environment's python, as a stand-in that says how it was run.
    env_python.write_text(
        "#!/bin/sh\n"
        f'echo "$0 $* PYTHONPATH=${{PYTHONPATH-unset}} PYTHONNOUSERSITE=$PYTHONNOUSERSITE" >> {calls}\n'
    )
    env_python.chmod(0o755)
    source = pathlib.Path(remote.__file__).read_text()
    root = tmp_path / "root"
    args = ["start", str(root), "n", "worker", "5", str(env_python), "--", "--role", "worker"]
    done = subprocess.run(
        [base_python(), "-I", "-c", source, *args],
        input=b"",
        capture_output=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "user-site")},
    )
    assert done.returncode == 0, (done.stdout, done.stderr[-2000:])
    answer = json.loads(done.stdout)
    assert answer["root"] == str(root.resolve()) and answer["pid"] > 0

    def both() -> list[str]:
        said = calls.read_text().splitlines() if calls.exists() else []
        return said if len(said) == 2 else []

    lines = wait_for(both, 30, "the key unpacking and the node, both run by the environment")
    unpack, node = (shlex.split(line) for line in lines)
    assert unpack[:4] == [str(env_python), "-m", "jupyter_burst.clusters.tls", "unpack"]
    assert node[:5] == [str(env_python), "-m", "jupyter_burst.node", "--role", "worker"]
    for words in (unpack, node):
        assert words[-2:] == ["PYTHONPATH=unset", "PYTHONNOUSERSITE=1"], words
