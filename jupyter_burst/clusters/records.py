"""Cluster records: one JSON file per live cluster in the state folder, keyed by provider and name.

Written by whoever knows the cluster is ready (the local head node, or the kernel that
launched a cloud one), removed when it stops, read by any kernel that wants to attach (also
after a kernel restart). A name is per provider: ``default`` on ``local`` and ``default`` on
``aws`` are two clusters, ``clusters/default@local.json`` and ``clusters/default@aws.json``.
Records written before names were per provider (``clusters/NAME.json``) are still read.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

from filelock import FileLock


def records_dir(state_dir: pathlib.Path) -> pathlib.Path:
    path = state_dir / "clusters"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def record_path(state_dir: pathlib.Path, name: str, provider: str = "local") -> pathlib.Path:
    return records_dir(state_dir) / f"{name}@{provider}.json"


def _legacy_path(state_dir: pathlib.Path, name: str) -> pathlib.Path:
    """Where a record was kept when names were not per provider."""
    return records_dir(state_dir) / f"{name}.json"


def write_record(state_dir: pathlib.Path, name: str, record: dict[str, Any]) -> None:
    """Write ``record`` under its own provider (``record["provider"]``, else local) and ``name``.

    It replaces an older-style record of the same provider and name (a cluster it succeeds).
    """
    provider = record.get("provider", "local")
    path = record_path(state_dir, name, provider)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)
    legacy = _load(_legacy_path(state_dir, name))
    if legacy is not None and legacy.get("provider", "local") == provider:
        with contextlib.suppress(FileNotFoundError):
            _legacy_path(state_dir, name).unlink()


def _load(path: pathlib.Path) -> dict[str, Any] | None:
    try:
        with path.open() as f:
            record = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def read_record(
    state_dir: pathlib.Path, name: str, provider: str = "local"
) -> dict[str, Any] | None:
    """The record of cluster ``name`` on ``provider``; None if there is none."""
    record = _load(record_path(state_dir, name, provider))
    if record is not None:
        return record
    legacy = _load(_legacy_path(state_dir, name))
    if legacy is not None and legacy.get("provider", "local") == provider:
        return legacy
    return None


def named(state_dir: pathlib.Path, name: str) -> list[dict[str, Any]]:
    """The records of every provider's cluster called ``name``."""
    return [r for r in all_records(state_dir) if r.get("name") == name]


def remove_record(
    state_dir: pathlib.Path, name: str, cluster_id: str, provider: str = "local", keys: bool = True
) -> None:
    """Remove the record, unless a newer cluster of the same name has replaced it; with
    ``keys``, the cluster's TLS keys in this state folder too, which nothing can use now."""
    for path in (record_path(state_dir, name, provider), _legacy_path(state_dir, name)):
        current = _load(path)
        if current is not None and current.get("id") == cluster_id:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            folder = pathlib.Path(current.get("tls") or state_dir / "tls" / cluster_id)
            if keys and folder.resolve().parent == (state_dir / "tls").resolve():
                shutil.rmtree(folder, ignore_errors=True)


def all_records(state_dir: pathlib.Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(records_dir(state_dir).glob("*.json")):
        record = _load(path)
        if record is not None:
            out.append(record)
    return out


@contextlib.contextmanager
def cluster_lock(state_dir: pathlib.Path, name: str, provider: str = "local") -> Iterator[None]:
    """Held while a kernel finds, starts or grows cluster ``name`` on ``provider``, so that two
    kernels start (or grow) one cluster."""
    # filelock: flock where there is one, the Windows lock API on Windows.
    with FileLock(records_dir(state_dir) / f"{name}@{provider}.lock"):
        yield
