"""A ledger file that cannot be read: moved aside, and a new one started with what still reads.

A ledger can be damaged by a disk that filled up or a machine that lost power mid-write.
The notebook must not stop working because of it, and nothing the user had may be lost:
the damaged file is kept beside the new one (for a closer look), every row that can still
be read is copied into the new one, and one line says so. Checkpoints are files of their
own and are not touched.
"""

from __future__ import annotations

import pathlib
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator

from filelock import FileLock

# quick_check reads every page: past this size it would hold up the first cell for seconds.
_CHECK_UP_TO = 256 << 20
_SIDE_FILES = ("", "-wal", "-shm")


def check(db: sqlite3.Connection, path: pathlib.Path) -> None:
    """Raise sqlite3.DatabaseError when the ledger file is damaged (a truncated file, say)."""
    try:
        size = path.stat().st_size
    except OSError:
        return
    if size == 0 or size > _CHECK_UP_TO:
        return
    verdict = db.execute("PRAGMA quick_check").fetchone()[0]
    if verdict != "ok":
        raise sqlite3.DatabaseError(f"database disk image is malformed: {verdict}")


def rebuild(
    path: pathlib.Path, problem: Exception, prepare: Callable[[sqlite3.Connection], None]
) -> None:
    """Move the damaged ledger aside and start a new one from the rows that still read.

    ``prepare`` makes the tables of a new ledger file. Several processes may find the damage
    at once: one rebuilds, the others find a readable ledger when their turn comes.
    """
    with FileLock(path.with_name(path.name + ".lock")):
        if _readable(path):
            return
        aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in _SIDE_FILES:
            damaged = path.with_name(path.name + suffix)
            if damaged.exists():
                damaged.rename(aside.with_name(aside.name + suffix))
        fresh = sqlite3.connect(path, isolation_level=None)
        try:
            prepare(fresh)
            copied = _copy_readable_rows(aside, fresh)
        finally:
            fresh.close()
    print(
        f"burst: the ledger {path} could not be read ({str(problem)[:120]}); it was moved to "
        f"{aside.name} and a new one started with the {copied} records that could still be "
        "read from it; checkpoints are files of their own and were not touched",
        file=sys.stderr,
        flush=True,
    )


def _readable(path: pathlib.Path) -> bool:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        check(db, path)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return True
    except sqlite3.DatabaseError:
        return False
    finally:
        db.close()


def _copy_readable_rows(damaged: pathlib.Path, fresh: sqlite3.Connection) -> int:
    """Copy, table by table, the rows of ``damaged`` that still read."""
    padded = damaged.with_name(damaged.name + ".salvage")
    try:
        _pad_to_declared_size(damaged, padded)
        old = sqlite3.connect(f"file:{padded}?mode=ro", uri=True)
    except (OSError, sqlite3.Error):
        _remove(padded)
        return 0
    try:
        return _copy_tables(old, fresh)
    finally:
        old.close()
        _remove(padded)


def _remove(database: pathlib.Path) -> None:
    for suffix in _SIDE_FILES:
        database.with_name(database.name + suffix).unlink(missing_ok=True)


def _pad_to_declared_size(damaged: pathlib.Path, padded: pathlib.Path) -> None:
    """A copy of ``damaged`` as long as its header says: SQLite reads none of a file cut short,
    but reads the intact pages of one whose missing end is zeros."""
    shutil.copyfile(damaged, padded)
    with open(padded, "r+b") as f:
        header = f.read(100)
        if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
            return
        page = int.from_bytes(header[16:18], "big")
        page = 65536 if page == 1 else page
        declared = int.from_bytes(header[28:32], "big") * page
        size = f.seek(0, 2)
        if declared > size:
            f.truncate(declared)  # extends with zeros


def _copy_tables(old: sqlite3.Connection, fresh: sqlite3.Connection) -> int:
    copied = 0
    tables = [r[0] for r in fresh.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        columns = [r[1] for r in fresh.execute(f"PRAGMA table_info({table})")]
        try:
            have = {r[1] for r in old.execute(f"PRAGMA table_info({table})")}
        except sqlite3.DatabaseError:
            continue  # its description is in the damaged part: the table is lost
        shared = [c for c in columns if c in have]
        if not shared:
            continue
        names = ", ".join(shared)
        marks = ", ".join("?" * len(shared))
        fresh.execute("BEGIN")
        try:
            for row in _readable_rows(old, table, names):
                fresh.execute(f"INSERT OR IGNORE INTO {table}({names}) VALUES ({marks})", row)
                copied += 1
        finally:
            fresh.execute("COMMIT")
    return copied


def _readable_rows(old: sqlite3.Connection, table: str, names: str) -> Iterator[tuple]:
    """The rows of ``table`` in rowid order, stepping over the ranges that do not read."""
    after, step = 0, 1
    query = f"SELECT rowid, {names} FROM {table} WHERE rowid > ? ORDER BY rowid"
    while step < 1 << 40:
        try:
            for rowid, *row in old.execute(query, (after,)):
                if rowid <= after:
                    # A damaged tree can lead back to pages already read, forever: a loop.
                    raise sqlite3.DatabaseError(f"{table}: rowid {rowid} after {after}")
                yield tuple(row)
                after, step = rowid, 1
            return
        except sqlite3.DatabaseError:
            after, step = after + step, step * 2  # a bad page: look further on, ever further
