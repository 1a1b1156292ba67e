"""The node's copy of the notebook's working folder: stored by content, laid out before the
cell, read for what the cell wrote after it.

Runs in a Dask worker process on a remote node (never for the local provider, whose cells
run in the notebook's own folder). Each node keeps, per cluster, under its state folder:

* ``blobs/``: every file the kernel sent, once, named by its sha256 (the kernel asks which
  keys a node lacks before it sends any: :mod:`jupyter_burst.driver.workdir_sync`);
* ``folders/NAME/``: one copy per notebook folder, laid out from the blobs before a cell
  (:func:`prepare`), shared by the node's worker processes. The first rank of a job on the
  node lays it out under a file lock; the job's other ranks there find it done and leave it
  alone (they may already be writing into it);
* ``folders/NAME.json``: what was laid out last, so an unchanged file is not copied again.

Laying out mirrors the notebook's folder: files it no longer has go, as do files an earlier
cell wrote here that did not come back; what the ignore rules leave out is the node's own
(a cache a cell keeps there stays). After the cell, rank 0 reports what it created or
changed (:func:`collect`); the kernel decides what to write.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import socket
import tempfile
import time
from typing import Any

from filelock import FileLock

from jupyter_burst.errors import BurstError
from jupyter_burst.wire import folder_scan
from jupyter_burst.wire.contract import FilesBack, Workdir
from jupyter_burst.wire.ignore_rules import IgnoreRules

_PRUNE_SECONDS = 3600.0  # a blob no folder uses is kept this long (a push may be under way)


def node_root(
    state_dir: str | os.PathLike | None = None, cluster: str | None = None
) -> pathlib.Path:
    """This node's working-folder store for its cluster (the worker's environment says which).

    The head node's job runner, in a process of its own on the same machine, passes its
    own state folder and cluster name and reaches the same place.
    """
    base = state_dir or os.environ.get("JUPYTER_BURST_STATE_DIR") or tempfile.gettempdir()
    cluster = cluster or os.environ.get("JUPYTER_BURST_CLUSTER", "cluster")
    return pathlib.Path(base) / "workdir" / cluster


def node_id() -> str:
    """Which machine (and store) this worker is on: workers that share one get files once."""
    return f"{socket.gethostname()}:{node_root().resolve()}"


def blob_path(root: pathlib.Path, key: str) -> pathlib.Path:
    return root / "blobs" / key[:2] / key


def folder_of(workdir: Workdir) -> pathlib.Path:
    """Where the cell runs on this node: its copy of the notebook's folder."""
    return node_root() / "folders" / workdir.name


# ---- what the kernel (or head) calls through client.run before the cell ---------------------


def lacking(keys: list[str]) -> tuple[str, list[str]]:
    """(this node, the keys among ``keys`` its store does not hold).

    Those it holds count as just used: the cell about to run needs them, so no pruning
    (:func:`_prune`) takes them away in between.
    """
    root = node_root()
    missing = []
    for key in keys:
        try:
            os.utime(blob_path(root, key))
        except OSError:
            missing.append(key)
    return node_id(), missing


async def receive(data_key: str, dask_worker: Any = None) -> int:
    """Store the files scattered to this worker under ``data_key`` ({key: bytes}); bytes kept.

    A coroutine, so that writing (off the event loop, in a thread) does not hold up the
    worker's heartbeats.
    """
    import asyncio

    blobs = dask_worker.data[data_key]
    return await asyncio.to_thread(store, blobs)


def store(blobs: dict[str, bytes], root: pathlib.Path | None = None) -> int:
    """Keep each blob under its key, after checking its bytes are that key's."""
    root = root or node_root()
    written = 0
    for key, data in blobs.items():
        if folder_scan.bytes_key(data) != key:
            raise BurstError(
                f"a file of the working folder arrived damaged ({key[:12]}...); run the cell again"
            )
        path = blob_path(root, key)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, data)
        written += len(data)
    return written


def read_blob(root: pathlib.Path, key: str) -> bytes | None:
    """A stored blob's bytes (the head node serves a new node from its own store); None if absent."""
    try:
        return blob_path(root, key).read_bytes()
    except OSError:
        return None


# ---- around the cell ----------------------------------------------------------------------


def prepare(workdir: Workdir, job: str) -> pathlib.Path:
    """Lay out the node's copy of the notebook's folder for ``job``; the folder the cell runs in.

    Once per job and node: the first of its ranks here does it, under the store's lock.
    """
    root = node_root()
    folder = root / "folders" / workdir.name
    folder.mkdir(parents=True, exist_ok=True)
    state_file = root / "folders" / f"{workdir.name}.json"
    with FileLock(str(root / "folders" / ".lock")):
        state = _read_state(state_file)
        if state.get("job") == job:
            return folder
        _mirror(workdir, folder, root, state.get("files", {}))
        _write_state(
            state_file, {"job": job, "files": {p: e.key for p, e in workdir.files.items()}}
        )
        _prune(root)
    return folder


def _mirror(workdir: Workdir, folder: pathlib.Path, root: pathlib.Path, laid: dict) -> None:
    """Make ``folder`` hold exactly the notebook's files (what the rules leave out aside)."""
    rules = IgnoreRules(list(workdir.ignore))
    present = folder_scan.scan(str(folder), rules).files
    for path in present.keys() - workdir.files.keys():
        with contextlib.suppress(OSError):
            (folder / path).unlink()
    missing = []
    for path, entry in workdir.files.items():
        here = present.get(path)
        if (
            here is not None
            and laid.get(path) == entry.key
            and (here.size, here.mtime_ns) == (entry.size, entry.mtime_ns)
        ):
            continue  # laid out before and untouched since
        blob = blob_path(root, entry.key)
        if not blob.exists():
            missing.append(path)
            continue
        target = folder / path
        _make_room(folder, target)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".burst-")
        os.close(fd)
        shutil.copyfile(blob, temporary)
        os.chmod(temporary, 0o755 if entry.executable else 0o644)
        # The notebook's own time: a write by the cell changes it, and that is how
        # collect() tells a changed file without hashing every one.
        os.utime(temporary, ns=(entry.mtime_ns, entry.mtime_ns))
        os.replace(temporary, target)
    if missing:
        raise BurstError(
            f"{len(missing)} file(s) of the working folder did not reach node "
            f"{socket.gethostname()} ({', '.join(sorted(missing)[:3])}); run the cell again"
        )


def _make_room(folder: pathlib.Path, target: pathlib.Path) -> None:
    """Folders up to ``target``, replacing a file that stands where a folder must (or back)."""
    for parent in reversed(target.relative_to(folder).parents[:-1]):
        here = folder / parent
        if here.exists() and not here.is_dir():
            here.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)


def collect(workdir: Workdir, folder: pathlib.Path) -> FilesBack:
    """After the cell: the files it created or changed in ``folder``, or one line why not."""
    rules = IgnoreRules(list(workdir.ignore))
    limit_files = workdir.max_files
    found = folder_scan.scan(str(folder), rules, max_files=limit_files + len(workdir.files))
    changed: dict[str, str | None] = {}
    sizes: dict[str, int] = {}
    for path, here in found.files.items():
        sent = workdir.files.get(path)
        if sent is not None and (here.size, here.mtime_ns) == (sent.size, sent.mtime_ns):
            continue
        try:
            key = folder_scan.content_key(str(folder / path))
        except OSError:
            continue  # gone since the walk (a rank still writing): not this cell's result
        if sent is not None and key == sent.key:
            continue  # rewritten with the same bytes
        changed[path] = sent.key if sent is not None else None
        sizes[path] = here.size
    back = FilesBack(root=workdir.root)
    problem = folder_scan.over_limits(sizes, workdir.max_bytes, workdir.max_files, found.stopped)
    if problem:
        back.refused = (
            f"the files the cell wrote in its working folder {problem}: they stay on the node; "
            "write them elsewhere (or add them to .burstignore), or raise the limit"
        )
        return back
    kept: dict[str, bytes] = {}
    for path, base in changed.items():
        try:
            data = (folder / path).read_bytes()
        except OSError:
            continue
        back.files[path] = (base, data, found.files[path].executable)
        kept[folder_scan.bytes_key(data)] = data
    # Once in the notebook's folder they are part of what the next cell sends: this node
    # has them already.
    store(kept)
    return back


# ---- the store's bookkeeping -----------------------------------------------------------------


def _read_state(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_state(path: pathlib.Path, state: dict) -> None:
    _write_atomically(path, json.dumps(state).encode())


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".burst-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(temporary, path)


def _prune(root: pathlib.Path) -> None:
    """Forget blobs no folder uses any more, once they are old enough not to be in flight."""
    used: set[str] = set()
    for state_file in (root / "folders").glob("*.json"):
        used.update(_read_state(state_file).get("files", {}).values())
    cutoff = time.time() - _PRUNE_SECONDS
    for blob in (root / "blobs").glob("*/*"):
        with contextlib.suppress(OSError):
            if blob.name not in used and blob.stat().st_mtime < cutoff:
                blob.unlink()
