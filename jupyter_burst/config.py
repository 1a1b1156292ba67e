"""Settings under the ``burst`` key of dask.config, and the state folder."""

from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Any

import dask.config
import yaml

from jupyter_burst.errors import OptionError

_DEFAULTS = pathlib.Path(__file__).with_name("burst.yaml")


def _load_defaults() -> None:
    with _DEFAULTS.open() as f:
        defaults = yaml.safe_load(f)
    dask.config.update_defaults(defaults)


_load_defaults()


_seen: tuple | None = None


def refresh() -> None:
    """Re-read config files and ``DASK_*`` variables when they changed (checked once per cell).

    Re-reading costs milliseconds a cell; listing the config folders costs microseconds.
    """
    global _seen
    now = _sources()
    if now != _seen:
        dask.config.refresh()
        _seen = now


def _sources() -> tuple:
    """What dask.config is read from: the files of its folders (name, size, time), the variables."""
    files = []
    for folder in dask.config.paths:
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.endswith((".yaml", ".yml", ".json")):
                        info = entry.stat()
                        files.append((entry.path, info.st_size, info.st_mtime_ns))
        except OSError:
            continue
    variables = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("DASK_")))
    return tuple(dask.config.paths), tuple(files), variables


def get(key: str, default: Any = None) -> Any:
    """A ``burst.<key>`` setting."""
    return dask.config.get(f"burst.{key}", default=default)


def names(key: str, default: Any = None) -> tuple[str, ...]:
    """A ``burst.<key>`` list of names: a list, or a comma-separated string as an environment
    variable gives one ("local,aws", or "[local, aws]" as YAML would write it)."""
    value = get(key, default)
    if isinstance(value, str):
        value = value.strip().strip("[]").split(",")
    return tuple(str(name).strip() for name in value or () if str(name).strip())


def fresh(key: str, default: Any = None) -> Any:
    """A ``burst.<key>`` setting as the config files and variables say now, read without
    changing this process's config: :func:`refresh` clears it before it fills it again,
    which a long-lived process with threads (the Jupyter server) must not let them see."""
    merged: dict[str, Any] = {}
    for defaults in dask.config.defaults:
        dask.config.update(merged, defaults, priority="old")
    dask.config.update(merged, dask.config.collect())
    return dask.config.get(f"burst.{key}", default=default, config=merged)


def flag(key: str, default: bool = False, *, now: bool = False) -> bool:
    """A yes/no ``burst.<key>`` setting (``true``/``false``, ``on``/``off``, ``yes``/``no``);
    anything else is refused in one line that names it. ``now``: as the files say now
    (:func:`fresh`), not as this process last read them."""
    value = fresh(key, default) if now else get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("yes", "true", "on", "1"):
        return True
    if text in ("no", "false", "off", "0", "none", "null", ""):
        return False
    raise OptionError(f"burst.{key}={value} is not yes or no; set it to true or false")


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


def write_config_file(path: pathlib.Path, header: str, burst: dict[str, Any]) -> None:
    """A Dask config file of ``burst`` settings under a comment ``header``, replaced whole: a
    kernel or server reading it meanwhile sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = header + yaml.safe_dump({"burst": burst}, sort_keys=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise
