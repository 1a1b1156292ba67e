"""jupyter-burst: run a notebook cell on a Dask cluster of GPU machines with ``%%burst``."""

__version__ = "0.1.0"

from jupyter_burst.errors import BurstError

__all__ = ["BurstError", "CellResult", "__version__", "load_ipython_extension", "run"]


def load_ipython_extension(ipython) -> None:
    """``%load_ext jupyter_burst``: register ``%%burst`` and ``%burst``."""
    from jupyter_burst.magic import load

    load(ipython)


def __getattr__(name: str):
    # The API pulls in Dask; importing the package (the server extension does) should not.
    if name in ("run", "CellResult"):
        from jupyter_burst import cell

        return getattr(cell, name)
    raise AttributeError(f"module 'jupyter_burst' has no attribute {name!r}")
from jupyter_burst.server import _jupyter_server_extension_points, _load_jupyter_server_extension
from jupyter_burst._labextension import _jupyter_labextension_paths
