"""The packages values are pickled with, at the notebook's own versions: the floor of what a
remote node installs (``python -m bench.node_install_count`` counts it). A node gets the
notebook's whole environment since issue #17 (:mod:`jupyter_burst.clusters.env`)."""

from __future__ import annotations

import importlib.metadata

# What must match the notebook's environment for cells to travel (pickles of these classes).
# jupyter-burst without extras: a node installs the runtime (pyproject's dependencies), never
# the notebook's side (the lab extra: JupyterLab, its server, ipykernel, ipywidgets).
MATCHED_PACKAGES = ("jupyter-burst", "dask", "distributed", "cloudpickle", "torch")


def notebook_versions() -> dict[str, str]:
    """The installed versions of the packages a node must match."""
    found = {}
    for name in MATCHED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
