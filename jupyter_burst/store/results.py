"""Durable results of background jobs: kept beside the job's checkpoints when the cluster stops.

A background job's results wait on its cluster until a kernel fetches them. A cluster that
switches itself off (idle) before that writes them here first, so that ``%burst wait`` still
finds them the next morning, without a machine kept running for them.
"""

from __future__ import annotations

import pickle
from typing import Any

from jupyter_burst.errors import CheckpointError
from jupyter_burst.store import store_key
from jupyter_burst.store.checkpoints import OBJECT_STORES, filesystem

_NAME = ".result.pkl"
# The file: this mark, the HMAC of the outcome with the user's store key (hex), a newline,
# the pickled outcome. Checked before the outcome is unpickled (store_key.py says why).
_MARK = b"jupyter-burst result 1\n"


def _path(root: str, job_id: str):
    fs, path = filesystem(root)  # the checkpoint store's, with its one-line errors
    return fs, f"{path.rstrip('/')}/{job_id}", f"{path.rstrip('/')}/{job_id}/{_NAME}"


def save(root: str, job_id: str, outcome: bytes) -> None:
    """Write aside, then rename: a half-written result is never mistaken for one."""

    fs, folder, final = _path(root, job_id)
    key = store_key.load(create=True)
    if key is None:
        raise CheckpointError(
            f"this machine has no usable store key ({store_key.path()}), so the results of job "
            f"{job_id} could not be trusted when read; fetch them with %burst wait {job_id} "
            "while its cluster runs"
        )
    outcome = _MARK + store_key.sign(key, job_id, _NAME, outcome).encode() + b"\n" + outcome
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
            data = f.read()
    except FileNotFoundError:
        return None
    mac, _, outcome = data[len(_MARK) :].partition(b"\n")
    signed = data.startswith(_MARK) and store_key.verify(
        store_key.load(), job_id, _NAME, outcome, mac.decode("ascii", "replace")
    )
    if not signed:
        # Never unpickled: whoever wrote it could run code in this kernel that way.
        raise CheckpointError(
            f"the stored results of job {job_id} ({fs.unstrip_protocol(final)}) are not signed "
            "with this user's store key (someone else wrote them, or an older jupyter-burst "
            "did), so they were not read; run the job again"
        )
    return pickle.loads(outcome)


def exists(root: str, job_id: str) -> bool:
    fs, _, final = _path(root, job_id)
    return fs.exists(final)


def remove(root: str, job_id: str) -> None:
    fs, _, final = _path(root, job_id)
    try:
        fs.rm(final)
    except FileNotFoundError:
        pass
