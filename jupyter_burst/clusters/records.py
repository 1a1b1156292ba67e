"""Cluster records: one JSON file per live cluster in the state folder.

Written by the node that runs the scheduler once it is ready, removed when it stops,
read by any kernel that wants to attach (also after a kernel restart).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

from jupyter_burst.filelock import exclusive


def records_dir(state_dir: pathlib.Path) -> pathlib.Path:
    path = state_dir / "clusters"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def record_path(state_dir: pathlib.Path, name: str) -> pathlib.Path:
    return records_dir(state_dir) / f"{name}.json"


def write_record(state_dir: pathlib.Path, name: str, record: dict[str, Any]) -> None:
    path = record_path(state_dir, name)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)


def read_record(state_dir: pathlib.Path, name: str) -> dict[str, Any] | None:
    try:
        with record_path(state_dir, name).open() as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def remove_record(state_dir: pathlib.Path, name: str, cluster_id: str) -> None:
    """Remove the record, unless a newer cluster of the same name has replaced it."""
    current = read_record(state_dir, name)
    if current is not None and current.get("id") == cluster_id:
        with contextlib.suppress(FileNotFoundError):
            record_path(state_dir, name).unlink()


def all_records(state_dir: pathlib.Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(records_dir(state_dir).glob("*.json")):
        record = read_record(state_dir, path.stem)
        if record is not None:
            out.append(record)
    return out


@contextlib.contextmanager
def cluster_lock(state_dir: pathlib.Path, name: str) -> Iterator[None]:
    """Held while a kernel finds or starts cluster ``name``, so two kernels start one cluster."""
    with exclusive(records_dir(state_dir) / f"{name}.lock"):
        yield
