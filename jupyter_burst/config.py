"""Settings under the ``burst`` key of dask.config, and the state folder."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import dask.config
import yaml

_DEFAULTS = pathlib.Path(__file__).with_name("burst.yaml")


def _load_defaults() -> None:
    with _DEFAULTS.open() as f:
        defaults = yaml.safe_load(f)
    dask.config.update_defaults(defaults)


_load_defaults()


def refresh() -> None:
    """Re-read config files and ``DASK_BURST__*`` variables (once per cell, not per lookup)."""
    dask.config.refresh()


def get(key: str, default: Any = None) -> Any:
    """A ``burst.<key>`` setting."""
    return dask.config.get(f"burst.{key}", default=default)


def state_dir() -> pathlib.Path:
    """The folder that holds the ledger, cluster records and node logs (created 0700)."""
    configured = get("state-dir")
    if configured:
        path = pathlib.Path(os.path.expanduser(str(configured)))
    else:
        from jupyter_core.paths import jupyter_data_dir

        path = pathlib.Path(jupyter_data_dir()) / "burst"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
