"""The JupyterLab settings that kernels read: the Settings Editor's jupyter-burst values,
written as a Dask config file, where every ``%%burst`` cell reads its defaults.

The file holds only what the user set in the Settings Editor; without any, it is removed,
so the schema's defaults never hide a Dask config file of the user's own. It is named to
sort after ``burst.yaml`` in the same folder (Dask reads a folder's files in name order,
the later winning): what was set last, in the editor, wins. ``DASK_BURST__*`` variables
and a cell's own options still win over it.
"""

from __future__ import annotations

import math
import pathlib
import re
from typing import Any

import dask.config

from jupyter_burst import config

FILE_NAME = "jupyter-burst-lab.yaml"
MAX_IDLE_MINUTES = 7 * 24 * 60
_PROVIDER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def settings_path() -> pathlib.Path:
    """The file in the user's Dask config folder (``DASK_CONFIG``, else ~/.config/dask)."""
    return pathlib.Path(dask.config.PATH) / FILE_NAME


def burst_config(body: Any) -> dict[str, Any]:
    """The Settings Editor's values as ``burst`` settings; ValueError names a bad one."""
    if not isinstance(body, dict):
        raise ValueError('send a JSON object such as {"defaultProvider": "aws", "idle": 10}')
    unknown = sorted(set(body) - {"defaultProvider", "idle", "budget"})
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r}; known: defaultProvider, idle, budget")
    out: dict[str, Any] = {}
    if "defaultProvider" in body:
        provider = body["defaultProvider"]
        if not isinstance(provider, str) or not _PROVIDER.match(provider):
            raise ValueError("defaultProvider must be a provider name such as local or aws")
        out["provider"] = provider
    if "idle" in body:
        out["idle"] = _number(body["idle"], "idle", MAX_IDLE_MINUTES)
    if "budget" in body:
        daily = None if body["budget"] is None else _number(body["budget"], "budget", None)
        out["budget"] = {"daily": daily}
    return out


def _number(value: Any, name: str, high: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number")
    if value <= 0 or (high is not None and value > high):
        bound = f" and at most {high:g}" if high is not None else ""
        raise ValueError(f"{name} must be more than 0{bound}")
    return value


def write(body: Any, path: pathlib.Path | None = None) -> dict[str, Any]:
    """Write (or, with nothing set, remove) the settings file; what the kernels now read."""
    settings = burst_config(body)
    path = settings_path() if path is None else path
    if not settings:
        path.unlink(missing_ok=True)
        return {"path": str(path), "burst": {}}
    config.write_config_file(
        path,
        "# Written by the jupyter-burst JupyterLab extension from its Settings Editor values;\n"
        "# change them there (this file is rewritten on every change).\n",
        settings,
    )
    return {"path": str(path), "burst": settings}
