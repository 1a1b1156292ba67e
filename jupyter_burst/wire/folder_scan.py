"""Walking a working folder: its files (size, time, mode), their content keys, and its limits.

The kernel walks the notebook's folder to choose what a remote cell's nodes need; the node
walks its copy after the cell to find what the cell created or changed. Both walk the same
way (the same skipped folders, the same ignore rules: :mod:`jupyter_burst.wire.ignore_rules`)
and name files by their path relative to the folder, with ``/`` separators.

A file's content key is the sha256 of its bytes. Hashing is the cost of syncing by content,
so the kernel keeps the keys it computed by (path, size, modification time): an unchanged
file is hashed once per kernel. A file modified within the last seconds is not remembered,
as git does for its index: a second write within the clock's resolution would keep the
size and time and fool the cache.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from dask.utils import format_bytes

from jupyter_burst.wire.ignore_rules import (
    RULE_FILES,
    SECRET_FILES,
    IgnoreRules,
    RuleFile,
    always_skipped,
    read_rule_file,
    rules_above,
)

_CHUNK = 1 << 20
_RACY_NS = 2_000_000_000  # a file this recent may change again within its timestamp's tick


class Stat(NamedTuple):
    size: int
    mtime_ns: int
    executable: bool


@dataclass
class Scan:
    """What a walk found: every file it keeps, by relative path."""

    files: dict[str, Stat] = field(default_factory=dict)
    rules: IgnoreRules = field(default_factory=IgnoreRules)
    total: int = 0
    stopped: bool = False  # the walk stopped early: past the limits (the sizes are a floor)


def scan(
    root: str,
    rules: IgnoreRules | None = None,
    *,
    read_rules: bool = False,
    max_bytes: int | None = None,
    max_files: int | None = None,
) -> Scan:
    """The files under ``root`` that the rules keep; walking stops once past either limit.

    ``read_rules``: also read the ``.gitignore``/``.burstignore`` files met on the way (and
    above the folder, up to its git repository's root), after the rules that keep
    secret-shaped files back; they end in ``Scan.rules``. A
    symbolic link to a file counts as the file; one to a folder is not followed (it may lead
    anywhere, or round in a circle).
    """
    found = Scan(rules=rules if rules is not None else IgnoreRules())
    if read_rules:
        found.rules.add(SECRET_FILES)
        for rule_file in rules_above(root):
            found.rules.add(rule_file)
    pending = [""]
    while pending:
        relative = pending.pop()
        folder = os.path.join(root, relative) if relative else root
        if read_rules:
            for name in RULE_FILES:
                lines = read_rule_file(os.path.join(folder, name))
                if lines:
                    found.rules.add(RuleFile(relative, "", lines))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue  # unreadable or gone: nothing of it travels
        folders = []
        for entry in entries:
            path = relative + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not always_skipped(folder, entry.name) and not found.rules.ignored(
                        path, True
                    ):
                        folders.append(path + "/")
                    continue
                if not entry.is_file() or found.rules.ignored(path, False):
                    continue
                info = entry.stat()
            except OSError:
                continue
            found.files[path] = Stat(
                info.st_size, info.st_mtime_ns, bool(info.st_mode & stat.S_IXUSR)
            )
            found.total += info.st_size
            if (max_bytes is not None and found.total > max_bytes) or (
                max_files is not None and len(found.files) > max_files
            ):
                found.stopped = True
                return found
        pending.extend(reversed(folders))
    return found


def content_key(path: str) -> str:
    """The sha256 of the file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class KeyCache:
    """Content keys already computed, by (absolute path, size, modification time)."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, int, int], str] = {}

    def key(self, path: str, size: int, mtime_ns: int) -> str:
        known = self._keys.get((path, size, mtime_ns))
        if known is not None:
            return known
        key = content_key(path)
        if time.time_ns() - mtime_ns > _RACY_NS:
            self._keys[(path, size, mtime_ns)] = key
        return key

    def __len__(self) -> int:
        return len(self._keys)


def over_limits(
    sizes: dict[str, int], max_bytes: int, max_files: int, stopped: bool = False
) -> str | None:
    """Why ``sizes`` (path -> bytes) is too much to carry, naming the biggest files; None if not.

    ``stopped``: the walk stopped at a limit, so the totals are at least what it counted.
    """
    total = sum(sizes.values())
    at_least = "at least " if stopped else ""
    if total > max_bytes:
        return (
            f"come to {at_least}{format_bytes(total)}, over burst.workdir.max-bytes "
            f"({format_bytes(max_bytes)}; biggest: {biggest(sizes)})"
        )
    if len(sizes) > max_files:
        return (
            f"are {at_least}{len(sizes)} files, over burst.workdir.max-files ({max_files}; "
            f"biggest: {biggest(sizes)})"
        )
    return None


def biggest(sizes: dict[str, int], count: int = 3) -> str:
    """The ``count`` biggest files with their sizes: ``data/big.bin 2.1 GiB, m.pt 300 MiB``."""
    ranked = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:count]
    return ", ".join(f"{path} {format_bytes(size)}" for path, size in ranked)
