"""Durable results of background jobs: kept beside the job's checkpoints when the cluster stops.

A background job's results wait on its cluster until a kernel fetches them. A cluster that
switches itself off (idle) before that writes them here first, so that ``%burst wait`` still
finds them the next morning, without a machine kept running for them.
"""

from __future__ import annotations

import pickle
from typing import Any

from jupyter_burst.store.checkpoints import OBJECT_STORES, filesystem

_NAME = ".result.pkl"


def _path(root: str, job_id: str):
    fs, path = filesystem(root)  # the checkpoint store's, with its one-line errors
    return fs, f"{path.rstrip('/')}/{job_id}", f"{path.rstrip('/')}/{job_id}/{_NAME}"


def save(root: str, job_id: str, outcome: bytes) -> None:
    """Write aside, then rename: a half-written result is never mistaken for one."""

    fs, folder, final = _path(root, job_id)
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & OBJECT_STORES:
        # One PUT is atomic there; and no makedirs, which in s3fs creates a missing bucket.
        fs.pipe_file(final, outcome)
        return
    fs.makedirs(folder, exist_ok=True)
    partial = final + ".partial"
    with fs.open(partial, "wb") as f:
        f.write(outcome)
    fs.mv(partial, final)


def load(root: str, job_id: str) -> Any | None:
    """The saved outcome (payloads, failure, error) of ``job_id``, or None."""
    fs, _, final = _path(root, job_id)
    try:
        with fs.open(final, "rb") as f:
            return pickle.loads(f.read())
    except FileNotFoundError:
        return None


def exists(root: str, job_id: str) -> bool:
    fs, _, final = _path(root, job_id)
    return fs.exists(final)


def remove(root: str, job_id: str) -> None:
    fs, _, final = _path(root, job_id)
    try:
        fs.rm(final)
    except FileNotFoundError:
        pass
