"""Sending the notebook's working folder to the nodes a cell runs on: each file once per node.

Used by whoever submits a cell's ranks (:func:`jupyter_burst.driver.jobs.submit`): the
kernel for a cell, the head node for a background job's attempts. Before the ranks are
submitted, every node that will run one is asked, in one call, which of the folder's
content keys it lacks (a node is a machine's store, shared by its worker processes: see
:mod:`jupyter_burst.worker.workdir`); only those files travel, straight to one worker of
that node (scattered, never through the scheduler), in batches of at most ``_BATCH_BYTES``.

The bytes come from a :class:`FileSource`: the notebook's folder in the kernel (each file
checked against the key it was listed with: one changed since the cell was read is refused
rather than sent under a wrong name), or, on the head node, the head machine's own store,
which the kernel filled when it handed the job over (so a node that joins for a later
attempt gets the folder too).
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any, Protocol

from dask.utils import format_bytes

from jupyter_burst.errors import BurstError, ClusterError
from jupyter_burst.wire.contract import Workdir
from jupyter_burst.worker import workdir as node_side

_BATCH_BYTES = 64 << 20


class FileSource(Protocol):
    """Where the bytes of a content key come from."""

    def read(self, key: str) -> bytes: ...


@dataclass
class Pushed:
    """What one push sent: files and bytes, to how many nodes; how many were there already."""

    files: int = 0
    nbytes: int = 0
    nodes: int = 0
    already: int = 0  # files (of every node asked) that needed no sending

    def line(self, cluster: str) -> str:
        nodes = f"{self.nodes} node" + ("s" if self.nodes != 1 else "")
        return (
            f"burst: working folder: sent {self.files} file(s), {format_bytes(self.nbytes)}, "
            f"to {nodes} of cluster '{cluster}' ({self.already} unchanged already there)"
        )


# (provider, cluster name) -> the kernel's latest push there, for %burst cache
last_push: dict[tuple[str, str], Pushed] = {}


class HeadStore:
    """On the head node: files from its own machine's store (a background job's attempts)."""

    def __init__(self, state_dir: str | pathlib.Path, cluster: str):
        self.root = node_side.node_root(state_dir, cluster)

    def read(self, key: str) -> bytes:
        data = node_side.read_blob(self.root, key)
        if data is None:
            raise BurstError(
                "a node that joined for this job's new attempt lacks files of the working "
                "folder the head node does not hold either; run the cell again from the notebook"
            )
        return data


def push(handle: Any, workers: list[str] | None, workdir: Workdir, source: FileSource) -> Pushed:
    """Give each node of ``workers`` (all the cluster's when None) the folder's files it lacks."""
    try:
        pushed = _push(handle, workers, workdir, source)
    except BurstError:
        raise
    except Exception as exc:  # a worker lost mid-way, a connection closed: one line
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ClusterError(
            f"the working folder could not be sent to cluster '{handle.name}' "
            f"({type(exc).__name__}: {reason}); run the cell again (burst.workdir: false "
            "leaves the folder behind)"
        ) from None
    last_push[(handle.provider, handle.name)] = pushed
    return pushed


def _push(handle: Any, workers: list[str] | None, workdir: Workdir, source: FileSource) -> Pushed:
    sizes = {entry.key: entry.size for entry in workdir.files.values()}
    if not sizes:
        return Pushed()
    client = handle.client
    targets = [w for w in workers if w] if workers else list(handle.workers())
    answers = client.run(node_side.lacking, sorted(sizes), workers=targets)
    by_node: dict[str, tuple[str, list[str]]] = {}
    for worker in targets:  # one worker per node receives for all of them
        node, missing = answers[worker]
        by_node.setdefault(node, (worker, missing))
    pushed = Pushed(nodes=len(by_node))
    for worker, missing in by_node.values():
        pushed.already += len(sizes) - len(missing)
        for batch in _batches(missing, sizes):
            data = {key: source.read(key) for key in batch}
            # Straight to the worker, as a big cell message goes (jobs._place); it stores
            # them from its own memory.
            [future] = client.scatter([data], workers=[worker], direct=True, hash=False)
            try:
                client.run(node_side.receive, future.key, workers=[worker])
            finally:
                future.release()
            pushed.files += len(batch)
            pushed.nbytes += sum(len(d) for d in data.values())
    return pushed


def _batches(keys: list[str], sizes: dict[str, int]) -> list[list[str]]:
    batches: list[list[str]] = [[]]
    held = 0
    for key in keys:
        if batches[-1] and held + sizes[key] > _BATCH_BYTES:
            batches.append([])
            held = 0
        batches[-1].append(key)
        held += sizes[key]
    return [b for b in batches if b]


def describe(handle: Any) -> str | None:
    """``%burst cache``'s line on the working folder: what the latest cell's push sent."""
    pushed = last_push.get((handle.provider, handle.name))
    if pushed is None or not pushed.nodes:
        return None
    return (
        f"  working folder, last cell: sent {pushed.files} file(s), "
        f"{format_bytes(pushed.nbytes)}; {pushed.already} unchanged were already on the nodes"
    )
