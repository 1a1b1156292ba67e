"""``%pip install`` in a burst cell: once on every node of the cluster, before the cell runs.

A cell that says ``%pip install tqdm`` means "this cell needs tqdm where it runs": on every
node of the cluster, not on whichever rank reads the line first, and also on a node that
joins the cluster later (it grew, or replaced a lost one). So the kernel takes ``%pip``
lines out of the cell (:mod:`jupyter_burst.kernel.ipython_syntax`) and registers each, before the
cell is submitted, as a Dask worker plugin: the scheduler keeps it and gives it to every
worker, present and future. On each node the first worker process to get it runs pip,
under a lock, into the node's own package folder (the cluster's, not the environment the
node started with: a local cluster shares the notebook's environment, which a cell must not
change behind the notebook's back); every worker process of the node puts that folder first
on its ``sys.path``.

The kernel's side is :func:`ensure`; :class:`PipOnNode` runs in the worker processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pathlib
import shlex
import socket
import subprocess
import sys
import sysconfig
import tempfile
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin
from filelock import FileLock

from jupyter_burst.errors import BurstError

_PIP_SECONDS = 1800.0
# The %pip verbs the kernel has done on every node before the cell; others run on the rank.
EVERY_NODE = frozenset({"install", "uninstall"})


class PipOnNode(WorkerPlugin):
    """One ``%pip install ...`` / ``%pip uninstall ...`` line, done once per node."""

    idempotent = True  # the same line registered again (a cell run twice) is done once

    def __init__(self, line: str):
        self.line = line
        self.name = "burst-pip-" + hashlib.sha256(line.encode()).hexdigest()[:16]

    async def setup(self, worker: Any) -> None:
        folder = node_folder(worker.scheduler.address)
        use_packages(folder)
        # pip takes seconds to minutes: off the worker's event loop, or its heartbeats stop.
        await asyncio.to_thread(self._once, folder)

    def _once(self, folder: pathlib.Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(folder / ".lock"):
            done_file = folder / "done.json"
            try:
                done = json.loads(done_file.read_text())
            except (OSError, ValueError):
                done = []
            if self.name in done:
                return
            run_pip(self.line, folder)
            done.append(self.name)
            done_file.write_text(json.dumps(done))
        import importlib

        importlib.invalidate_caches()


def pip_verb(line: str) -> str:
    """The pip command of a ``%pip`` line: install, uninstall, list ..."""
    try:
        words = shlex.split(line)
    except ValueError:
        return ""
    return next((w for w in words if not w.startswith("-")), "")


def node_folder(scheduler: str, cluster: str | None = None) -> pathlib.Path:
    """This node's package folder for the cluster at ``scheduler`` (removed when it stops)."""
    base = os.environ.get("JUPYTER_BURST_STATE_DIR") or tempfile.gettempdir()
    cluster = cluster or os.environ.get("JUPYTER_BURST_CLUSTER", "cluster")
    which = hashlib.sha256(f"{scheduler}|{socket.gethostname()}".encode()).hexdigest()[:12]
    return pathlib.Path(base) / "packages" / f"{cluster}-{which}"


def site_packages(folder: pathlib.Path) -> str:
    return sysconfig.get_path("purelib", vars={"base": str(folder), "platbase": str(folder)})


def use_packages(folder: pathlib.Path) -> None:
    """This worker process (and what it starts) imports from ``folder`` first."""
    site = site_packages(folder)
    os.makedirs(site, exist_ok=True)
    if site not in sys.path:
        sys.path.insert(0, site)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if site not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([site, *filter(None, paths)])


def run_pip(line: str, folder: pathlib.Path) -> None:
    """Run one ``%pip`` line on this node; raise with pip's own last lines when it fails."""
    words = shlex.split(line)
    verb = pip_verb(line)
    site = site_packages(folder)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([site, os.environ.get("PYTHONPATH", "")]))
    if verb == "install":
        command = [sys.executable, "-m", "pip", *words, "--prefix", str(folder)]
        command += ["--disable-pip-version-check", "--no-input"]
    elif verb == "uninstall":
        # pip will not uninstall outside its environment; what %pip added is ours to remove.
        # A package of the node's own environment is left as it is.
        for name in [w for w in words[words.index("uninstall") + 1 :] if not w.startswith("-")]:
            _remove(name, folder, site)
        return
    else:
        return
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=_PIP_SECONDS, check=False
    )
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        raise RuntimeError(
            f"pip {' '.join(words)} failed on {socket.gethostname()}: {lines[-1] if lines else done.returncode}"
        )


def _remove(name: str, folder: pathlib.Path, site: str) -> None:
    """Remove the distribution ``name`` from the node's package folder, by its RECORD."""
    import importlib.metadata
    import shutil

    root = folder.resolve()
    for dist in importlib.metadata.distributions(path=[site]):
        if _canonical(dist.metadata["Name"] or "") != _canonical(name):
            continue
        files = list(dist.files or [])  # read before RECORD itself goes
        for file in files:
            path = pathlib.Path(str(dist.locate_file(file))).resolve()
            if path.is_relative_to(root) and path.is_file():
                path.unlink()
        for top in {f.parts[0] for f in files if f.parts and f.parts[0] != ".."}:
            path = (pathlib.Path(site) / top).resolve()
            if path.is_relative_to(root) and path.is_dir() and not any(path.rglob("*.py")):
                shutil.rmtree(path, ignore_errors=True)


def _canonical(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


# ----------------------------------------------------------------------------------------
# The kernel's side


def ensure(client: Any, lines: list[str] | tuple[str, ...], cluster: str) -> None:
    """Have every ``%pip`` line done on every node of the cluster (and on nodes that join it)."""
    if not lines:
        return
    for line in lines:
        print(
            f"burst: pip {line.strip()} on every node of cluster '{cluster}' (once per node; "
            "a node that joins later gets it too)",
            file=sys.stderr,
            flush=True,
        )
        try:
            client.register_plugin(PipOnNode(line))
        except Exception as exc:
            raise BurstError(
                f"%pip {line.strip()}: {str(exc).splitlines()[0][:300]}; the cell did not run "
                "(fix the %pip line, or install it in the environment the nodes start with)"
            ) from None
