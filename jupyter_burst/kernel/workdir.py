"""The notebook's working folder, the kernel's side: what a remote cell's nodes get, and
the files its cell wrote there coming back.

A cell on the local provider runs in the notebook's own folder, so nothing travels. On a
remote cluster (AWS, SSH hosts, ...) each node keeps a copy of the folder
(:mod:`jupyter_burst.worker.workdir`) and the cell runs in it, so that
``pd.read_csv('data.csv')`` and ``df.to_csv('out.csv')`` mean what they mean in the notebook:

* **Out**, read with the cell (:func:`for_cell`, before any cluster is contacted): every file
  the ignore rules keep (:mod:`jupyter_burst.wire.ignore_rules`), named by content; a folder
  past ``burst.workdir.max-bytes``/``max-files`` is refused in one line naming its biggest
  files. The files a node lacks are sent when the ranks are submitted
  (:mod:`jupyter_burst.driver.workdir_sync`): an unchanged file is never sent twice.
* **Back**, with rank 0's result (:func:`bring_back`): each file the cell created or changed
  is written into the notebook's folder, unless the notebook's copy changed too since it was
  sent (:func:`verdict`): then the notebook's copy is kept, untouched, and one line says so.
  A file the cell deleted is not deleted here. Files other ranks write stay on their nodes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import re
import tempfile
from collections.abc import Callable
from typing import Literal

from dask.utils import parse_bytes

from jupyter_burst import config
from jupyter_burst.errors import BurstError
from jupyter_burst.wire import folder_scan
from jupyter_burst.wire.contract import FileEntry, FilesBack, Workdir

# The kernel's content keys by (path, size, time): an unchanged file is hashed once.
keys = folder_scan.KeyCache()
_SHOWN_NAMES = 5
_OFF = frozenset({"false", "off", "no", "0", "none"})  # DASK_BURST__WORKDIR=false arrives as text


def limits() -> tuple[int, int] | None:
    """(max bytes, max files) of ``burst.workdir``; None when it is off (``burst.workdir: false``)."""
    settings = config.get("workdir", {})
    if settings is None or settings is False or str(settings).lower() in _OFF:
        return None
    if not isinstance(settings, dict):
        raise BurstError(
            f"burst.workdir is {settings!r}; set it to false (the folder stays behind) or "
            "leave it a mapping with max-bytes and max-files"
        )
    try:
        max_bytes = int(parse_bytes(str(settings.get("max-bytes", "100 MiB"))))
        max_files = int(settings.get("max-files", 10000))
    except (ValueError, TypeError) as exc:
        raise BurstError(
            f'burst.workdir: {exc}; write max-bytes as a size ("500 MiB") and max-files as a count'
        ) from None
    return max_bytes, max_files


def for_cell(provider: str | None, root: str | None = None) -> Workdir | None:
    """The notebook's folder as a cell on ``provider`` gets it; None where nothing travels.

    Refused in one line, before anything starts, when it is past the limits.
    """
    if provider == "local":
        return None  # the cell runs in the notebook's folder itself
    bounds = limits()
    if bounds is None:
        return None
    max_bytes, max_files = bounds
    root = os.path.realpath(root or os.getcwd())
    found = folder_scan.scan(root, read_rules=True, max_bytes=max_bytes, max_files=max_files)
    problem = folder_scan.over_limits(
        {p: s.size for p, s in found.files.items()}, max_bytes, max_files, found.stopped
    )
    if problem:
        raise BurstError(
            f"the notebook's folder ({root}) travels to the cluster's nodes and its files "
            f"{problem}; add them to .burstignore, raise burst.workdir.max-bytes, or set "
            "burst.workdir: false"
        )
    files = {
        path: FileEntry(
            keys.key(os.path.join(root, path), stat.size, stat.mtime_ns),
            stat.size,
            stat.mtime_ns,
            stat.executable,
        )
        for path, stat in found.files.items()
    }
    return Workdir(
        root=root,
        name=folder_name(root),
        files=files,
        ignore=tuple(found.rules.files),
        max_bytes=max_bytes,
        max_files=max_files,
    )


def folder_name(root: str) -> str:
    """The copy's name on a node: readable, and one per notebook folder (``nb-3f2a...``)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(root)) or "root"
    return f"{base[:40]}-{hashlib.sha256(root.encode()).hexdigest()[:10]}"


class NotebookFiles:
    """The bytes of the folder's files, by content key, read from the notebook's folder."""

    def __init__(self, workdir: Workdir):
        self.root = workdir.root
        self.paths = {entry.key: path for path, entry in workdir.files.items()}

    def read(self, key: str) -> bytes:
        path = self.paths[key]
        data = pathlib.Path(self.root, path).read_bytes()
        if folder_scan.bytes_key(data) != key:
            raise BurstError(
                f"{path} changed in the notebook's folder while the cell was being sent; "
                "run the cell again"
            )
        return data


Verdict = Literal["write", "same", "conflict"]


def verdict(sent: str | None, came: str, now: str | None) -> Verdict:
    """What to do with a file the cell wrote: the conflict rule.

    ``sent``: its key when the cell left (None: the notebook had no such file); ``came``:
    the key of what the cell left there; ``now``: the notebook's copy's key now (None: no
    file). The notebook's copy is replaced only while it is still what was sent; one that
    changed meanwhile (or a file made meanwhile where the cell made one) is a conflict.
    """
    if now == came:
        return "same"
    if now == sent:
        return "write"
    return "conflict"


def bring_back(files: FilesBack | None, say: Callable[[str], None]) -> list[str]:
    """Write what the cell created or changed into the notebook's folder; the paths written."""
    if files is None:
        return []
    if files.refused:
        say(f"burst: {files.refused}")
        return []
    root = pathlib.Path(files.root)
    written, conflicts = [], []
    for path, (sent, data, executable) in sorted(files.files.items()):
        target = _inside(root, path)
        if target is None:
            say(f"burst: {path!r} is not a path inside the notebook's folder; it was not written")
            continue
        decision = verdict(sent, folder_scan.bytes_key(data), _key_now(target))
        if decision == "conflict":
            conflicts.append(path)
        elif decision == "write":
            try:
                _write(target, data, executable)
            except OSError as exc:
                say(f"burst: {path} could not be written into the notebook's folder ({exc})")
                continue
            written.append(path)
    if written:
        names = ", ".join(written[:_SHOWN_NAMES])
        more = f" and {len(written) - _SHOWN_NAMES} more" if len(written) > _SHOWN_NAMES else ""
        if len(written) == 1:
            say(f"burst: {names} came back into the notebook's folder")
        else:
            say(f"burst: {len(written)} files came back into the notebook's folder: {names}{more}")
    for path in conflicts:
        say(
            f"burst: {path} changed in the notebook's folder while the cell ran, and the cell "
            "changed it too: the notebook's copy is kept and the cell's was not brought back; "
            "rename one of them and run the cell again"
        )
    return written


def _inside(root: pathlib.Path, path: str) -> pathlib.Path | None:
    """``root/path`` when ``path`` is relative and stays below ``root``; None otherwise."""
    parts = pathlib.PurePosixPath(path).parts
    if not parts or pathlib.PurePosixPath(path).is_absolute() or ".." in parts:
        return None
    return root.joinpath(*parts)


def _key_now(target: pathlib.Path) -> str | None:
    """The notebook's copy's key; a folder standing there never equals a file's."""
    if target.is_dir():
        return "a folder"
    try:
        return folder_scan.content_key(str(target))
    except FileNotFoundError:
        return None


def _write(target: pathlib.Path, data: bytes, executable: bool) -> None:
    """Replace ``target`` at once (a reader never sees half a file); a link's target is written."""
    target = pathlib.Path(os.path.realpath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.burst-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            mode = target.stat().st_mode & 0o7777  # the notebook's copy keeps its mode
        except FileNotFoundError:
            mode = 0o755 if executable else 0o644
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
