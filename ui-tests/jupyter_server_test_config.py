"""The JupyterLab server Galata drives: Galata's own test settings (no token, a temporary
root folder, the server's state reset), and a state folder of its own for jupyter-burst."""

import os
import tempfile

from jupyterlab.galata import configure_jupyter_server

configure_jupyter_server(c)  # noqa: F821 - `c` is the config object Jupyter passes in
os.environ.setdefault("DASK_BURST__STATE_DIR", tempfile.mkdtemp(prefix="burst-galata-"))
