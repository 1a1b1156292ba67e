"""jupyter-burst: run a notebook cell on a Dask cluster of GPU machines with ``%%burst``."""

# What Jupyter looks up on the package: the server extension and the labextension's path.
from jupyter_burst._labextension import _jupyter_labextension_paths as _jupyter_labextension_paths
from jupyter_burst._version import __version__
from jupyter_burst.errors import BurstError
from jupyter_burst.server import (
    _jupyter_server_extension_points as _jupyter_server_extension_points,
)
from jupyter_burst.server import _load_jupyter_server_extension as _load_jupyter_server_extension

__all__ = ["BurstError", "CellResult", "__version__", "burst", "load_ipython_extension", "run"]


def load_ipython_extension(ipython) -> None:
    """``%load_ext jupyter_burst``: register ``%%burst`` and ``%burst``."""
    # Here, not above: the magic pulls in Dask, and the server extension imports this package.
    from jupyter_burst.kernel.magic import load

    load(ipython)


def __getattr__(name: str):
    # The API pulls in Dask; importing the package (the server extension does) should not.
    if name in ("run", "CellResult"):
        # The API pulls in Dask: only when asked for.
        from jupyter_burst.kernel import cell

        return getattr(cell, name)
    if name == "burst":
        # The helper pulls in Dask (and torch when a cell uses it): only when asked for.
        from jupyter_burst.worker import helper

        globals()["burst"] = helper.local()
        return globals()["burst"]
    raise AttributeError(f"module 'jupyter_burst' has no attribute {name!r}")
