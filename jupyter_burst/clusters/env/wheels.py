"""The notebook's own packages (from a folder or a local file) as wheels the nodes can install.

No index has them, so they are built here with ``uv build`` and shipped with the cluster's
environment. A build is kept in the cache folder under a key of its source's files (path,
size, modification time), so an unchanged project is not built again; a wheel is known by
the hashes its RECORD lists (its files' contents), which stay the same when the same source
is built again, unlike the wheel file's own bytes.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import zipfile
from dataclasses import dataclass

from filelock import FileLock

from jupyter_burst.clusters.env.spec import LocalDist
from jupyter_burst.clusters.env.uv_tool import index_arguments, uv
from jupyter_burst.errors import ClusterError

# Folders of a project that are never part of its wheel and can be large.
_NOT_SOURCE = frozenset(
    {".git", ".venv", "venv", "node_modules", "__pycache__", "build", "dist", ".tox", ".nox",
     ".mypy_cache", ".ruff_cache", ".pytest_cache", ".ipynb_checkpoints", "test-artifacts"}
)  # fmt: skip
_BUILD_SECONDS = 600


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    path: pathlib.Path
    identity: str  # sha256 of the wheel's RECORD: its files' contents, not its timestamps


def wheel_for(dist: LocalDist, cache: pathlib.Path) -> Wheel:
    """``dist`` as a wheel: the file it was installed from, or built from its source folder."""
    source = pathlib.Path(dist.source)
    if source.is_file() and source.suffix == ".whl":
        return Wheel(dist.name, dist.version, source, identity(source))
    if not source.exists():
        raise ClusterError(
            f"{dist.name} {dist.version} was installed from {source}, which is gone, so the "
            f"nodes cannot get it; reinstall it from where it is now, or leave it out with "
            f"burst.env.exclude: [{dist.name}]"
        )
    key = _source_key(source)
    out = cache / "wheels" / f"{dist.name}-{key}"
    with FileLock(str(out) + ".lock"):
        built = sorted(out.glob("*.whl")) if out.is_dir() else []
        if not built:
            built = [_build(dist, source, out)]
    return Wheel(dist.name, dist.version, built[0], identity(built[0]))


def identity(wheel: pathlib.Path) -> str:
    """What the wheel holds, as a hash: its RECORD (every file's sha256), RECORD's own line aside."""
    with zipfile.ZipFile(wheel) as archive:
        record = next((n for n in archive.namelist() if n.endswith(".dist-info/RECORD")), None)
        if record is None:
            return hashlib.sha256(wheel.read_bytes()).hexdigest()
        lines = sorted(
            line
            for line in archive.read(record).decode().splitlines()
            if line and not line.startswith(record)
        )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _source_key(source: pathlib.Path) -> str:
    """A key that changes when any file of the project (or the archive) changes."""
    digest = hashlib.sha256(str(source.resolve()).encode())
    if source.is_file():
        stat = source.stat()
        digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]
    for root, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in _NOT_SOURCE and not d.endswith(".egg-info"))
        for name in sorted(files):
            try:
                stat = os.stat(os.path.join(root, name))
            except OSError:
                continue
            digest.update(f"{root}/{name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _build(dist: LocalDist, source: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    command = [uv(), "build", "--wheel", "--quiet", "--out-dir", str(partial), *index_arguments()]
    command.append(str(source))
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=_BUILD_SECONDS, check=False
    )
    built = sorted(partial.glob("*.whl"))
    if done.returncode != 0 or not built:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        shutil.rmtree(partial, ignore_errors=True)
        raise ClusterError(
            f"{dist.name} {dist.version} (installed from {source}) could not be built into a "
            f"wheel for the nodes: {lines[-1] if lines else done.returncode}; fix its build, or "
            f"leave it out with burst.env.exclude: [{dist.name}]"
        )
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out / built[0].name
