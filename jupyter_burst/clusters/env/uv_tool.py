"""``uv`` for the kernel's side, and the package index settings the kernel and the nodes share.

The kernel resolves the nodes' lock and builds its own packages with the same index the
nodes install from (``burst.env.index-url``, ``burst.env.find-links``,
``burst.env.no-index``), so that what the pre-flight found is what a node gets. These
settings travel in a node's boot script, which is readable on the machine: an index URL
that carries a password is refused.
"""

from __future__ import annotations

import shutil
import urllib.parse

from jupyter_burst import config
from jupyter_burst.errors import ClusterError


def uv() -> str:
    """The ``uv`` executable this kernel uses (the ``uv`` package's, else one on PATH)."""
    try:
        import uv as uv_package

        return uv_package.find_uv_bin()
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found:
        return found
    raise ClusterError(
        "the nodes' environment is resolved and built with uv, which this kernel lacks; "
        "pip install uv (it comes with jupyter-burst[lab])"
    )


def uv_version() -> str:
    """This kernel's uv version (the nodes install the same one)."""
    import subprocess

    done = subprocess.run([uv(), "--version"], capture_output=True, text=True, check=False)
    words = done.stdout.split()
    return words[1] if len(words) > 1 else ""


def index_arguments() -> list[str]:
    """uv's options for the configured index: the same for the kernel and the nodes."""
    out: list[str] = []
    url = config.get("env.index-url", None)
    if url:
        parsed = urllib.parse.urlparse(str(url))
        if parsed.password or (parsed.username and "@" in parsed.netloc):
            raise ClusterError(
                "burst.env.index-url carries a user name or password, and it would be written "
                "into every node's boot script; use an index the nodes reach without one"
            )
        out += ["--index-url", str(url)]
    for link in config.get("env.find-links", None) or []:
        out += ["--find-links", str(link)]
    if config.get("env.no-index", False):
        out.append("--no-index")
    return out
