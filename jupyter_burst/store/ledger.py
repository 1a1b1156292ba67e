"""The ledger: one SQLite file (WAL) with every cluster, node, job and output line.

It is the single source of truth the sidebar and ``%burst status`` read. Several processes
write it at once (kernels, node processes), so every connection waits on a busy file
instead of failing, and each write is its own short transaction.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import signal
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from jupyter_burst import config, credentials
from jupyter_burst.store import ledger_salvage as salvage

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clusters (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    provider TEXT NOT NULL,
    address TEXT,
    slots INTEGER,
    devices TEXT,
    idle_minutes REAL,
    started REAL NOT NULL,
    stopped REAL,
    stop_reason TEXT,
    stop_requested REAL
);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    cluster_id TEXT NOT NULL REFERENCES clusters(id),
    provider TEXT NOT NULL,
    role TEXT NOT NULL,
    slots INTEGER NOT NULL,
    devices TEXT,
    price_per_hour REAL NOT NULL DEFAULT 0,
    pid INTEGER,
    started REAL NOT NULL,
    stopped REAL,
    stop_reason TEXT,
    notional INTEGER,
    billing_minimum REAL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    cluster_id TEXT,
    kernel TEXT,
    source TEXT NOT NULL,
    options TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    status TEXT NOT NULL,
    error TEXT,
    stop_reason TEXT,
    cancel_requested REAL,
    notebook TEXT
);
CREATE TABLE IF NOT EXISTS job_clusters (
    job_id TEXT NOT NULL,
    cluster_id TEXT NOT NULL,
    PRIMARY KEY (job_id, cluster_id)
);
CREATE TABLE IF NOT EXISTS log_lines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    ts REAL NOT NULL,
    rank INTEGER NOT NULL DEFAULT 0,
    stream TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    ts REAL NOT NULL,
    rank INTEGER NOT NULL DEFAULT 0,
    step INTEGER,
    name TEXT NOT NULL,
    value REAL
);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    ts REAL NOT NULL,
    rank INTEGER NOT NULL DEFAULT 0,
    host TEXT,
    device TEXT,
    cpu_percent REAL,
    rss INTEGER,
    gpu_utilization REAL,
    gpu_memory_used INTEGER,
    gpu_memory_total INTEGER
);
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    step INTEGER,
    ts REAL NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    url TEXT NOT NULL
);
-- The machine image a cloud cluster's nodes booted and how it was found (a setting, or a
-- public SSM parameter and its region): a table of its own, so that a ledger written before
-- it existed gets it on open like any other table.
CREATE TABLE IF NOT EXISTS cluster_images (
    cluster_id TEXT NOT NULL,
    image TEXT NOT NULL,
    how TEXT NOT NULL,
    parameter TEXT,
    recorded REAL NOT NULL,
    PRIMARY KEY (cluster_id, image)
);
-- Where a cluster's start spends its time (schema 3): one row per start, one per phase of it
-- (jupyter_burst.clusters.start_phases writes them). ``cluster_id`` is known once it is up.
CREATE TABLE IF NOT EXISTS starts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    provider TEXT NOT NULL,
    purpose TEXT NOT NULL DEFAULT 'cell',
    pid INTEGER,
    host TEXT,
    started REAL NOT NULL,
    ended REAL,
    outcome TEXT,
    cluster_id TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS start_phases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    start_id TEXT NOT NULL REFERENCES starts(id),
    phase TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    done INTEGER,
    total INTEGER,
    started REAL NOT NULL,
    updated REAL NOT NULL,
    ended REAL
);
CREATE INDEX IF NOT EXISTS starts_cluster ON starts(name, provider, started);
CREATE INDEX IF NOT EXISTS start_phases_start ON start_phases(start_id, id);
CREATE INDEX IF NOT EXISTS log_lines_job ON log_lines(job_id, id);
CREATE INDEX IF NOT EXISTS metrics_job ON metrics(job_id, id);
CREATE INDEX IF NOT EXISTS usage_job ON usage(job_id, id);
CREATE INDEX IF NOT EXISTS jobs_started ON jobs(started);
CREATE INDEX IF NOT EXISTS nodes_cluster ON nodes(cluster_id);
"""

# Columns added after a ledger file may already exist: CREATE TABLE IF NOT EXISTS leaves an
# old table as it is, so these are added to it on open (schema 1 -> 2; cancel_requested
# came later and is added the same way to a ledger of either).
_ADDED_COLUMNS = {
    "clusters": (("stop_requested", "REAL"),),
    "nodes": (("notional", "INTEGER"), ("billing_minimum", "REAL")),
    "jobs": (("stop_reason", "TEXT"), ("cancel_requested", "REAL"), ("notebook", "TEXT")),
}


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until the block is done.

    A kernel interrupt landing between taking the ledger's lock and giving it back would
    leave the lock held and the next write waiting forever. Only the main thread receives
    signals; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    received: list[tuple[int, Any]] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(*received[0])


class Ledger:
    """A connection to the ledger file; safe to share between threads of one process."""

    def __init__(self, path: pathlib.Path | str):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
                raise  # busy, locked, no disk: not the file's fault
            self._db.close()
            salvage.rebuild(self.path, exc, _new_file)
            self._open()

    def _open(self) -> None:
        self._db = sqlite3.connect(
            self.path, timeout=30, check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout = 30000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        salvage.check(self._db, self.path)
        with self._lock:
            # executescript commits on its own; IF NOT EXISTS makes it safe to race.
            self._db.executescript(_SCHEMA)
        with self._write() as db:
            _add_missing_columns(db)
            db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            db.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version' AND CAST(value AS INTEGER) < ?",
                (str(SCHEMA_VERSION), SCHEMA_VERSION),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with interrupts_deferred(), self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with interrupts_deferred(), self._lock:
            return [dict(row) for row in self._db.execute(sql, tuple(params))]

    # clusters and nodes -------------------------------------------------------------

    def cluster_started(
        self,
        cluster_id: str,
        name: str,
        provider: str,
        address: str,
        slots: int,
        devices: list[str],
        idle: float,
    ) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO clusters(id, name, provider, address, slots, devices, idle_minutes, started)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    cluster_id,
                    name,
                    provider,
                    address,
                    slots,
                    json.dumps(devices),
                    idle,
                    time.time(),
                ),
            )

    def cluster_idle_changed(self, cluster_id: str, idle: float) -> None:
        with self._write() as db:
            db.execute("UPDATE clusters SET idle_minutes = ? WHERE id = ?", (idle, cluster_id))

    def cluster_stopped(self, cluster_id: str, reason: str) -> None:
        now = time.time()
        with self._write() as db:
            db.execute(
                "UPDATE clusters SET stopped = ?, stop_reason = ? WHERE id = ? AND stopped IS NULL",
                (now, reason, cluster_id),
            )
            db.execute(
                "UPDATE nodes SET stopped = ?, stop_reason = ? WHERE cluster_id = ? AND stopped IS NULL",
                (now, reason, cluster_id),
            )

    def cluster_stop_requested(self, cluster_id: str) -> None:
        """Someone stopped the cluster on purpose (``%burst down``, the sidebar's Stop):
        recorded before it is stopped, so that a cell running on it is not run again on a
        new cluster when its workers vanish."""
        with self._write() as db:
            db.execute(
                "UPDATE clusters SET stop_requested = ? WHERE id = ? AND stop_requested IS NULL",
                (time.time(), cluster_id),
            )

    def stopped_on_purpose(self, cluster_id: str) -> bool:
        rows = self.query("SELECT stop_requested FROM clusters WHERE id = ?", [cluster_id])
        return bool(rows) and rows[0]["stop_requested"] is not None

    def node_stopped(self, node_id: str, when: float, reason: str) -> bool:
        """The provider's own word on when a node stopped running; True if it was news."""
        with self._write() as db:
            changed = db.execute(
                "UPDATE nodes SET stopped = ?, stop_reason = ? WHERE id = ? AND stopped IS NULL",
                (when, reason, node_id),
            ).rowcount
        return bool(changed)

    def node_started(
        self,
        node_id: str,
        cluster_id: str,
        provider: str,
        role: str,
        slots: int,
        devices: list[str],
        pid: int | None,
        price_per_hour: float = 0.0,
        notional: bool | None = None,
        billing_minimum: float | None = None,
        started: float | None = None,
    ) -> None:
        """A node started, at the price in force now; ``notional``/``billing_minimum``: None
        leaves them to :mod:`jupyter_burst.store.cost`'s defaults for the provider. ``started``: the
        provider's own launch time where it bills from it (EC2's), else now."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO nodes(id, cluster_id, provider, role, slots, devices, price_per_hour, pid,"
                " started, notional, billing_minimum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    node_id,
                    cluster_id,
                    provider,
                    role,
                    slots,
                    json.dumps(devices),
                    price_per_hour,
                    pid,
                    time.time() if started is None else started,
                    None if notional is None else int(bool(notional)),
                    billing_minimum,
                ),
            )

    def node_resized(self, node_id: str, slots: int, devices: list[str]) -> None:
        """A running node's slots changed (the local head grew or shrank): its price stays."""
        with self._write() as db:
            db.execute(
                "UPDATE nodes SET slots = ?, devices = ? WHERE id = ? AND stopped IS NULL",
                (slots, json.dumps(devices), node_id),
            )

    def cluster_resized(self, cluster_id: str, slots: int, devices: list[str]) -> None:
        """A running cluster's slots changed: it grew to fit a cell, or what it grew by went."""
        with self._write() as db:
            db.execute(
                "UPDATE clusters SET slots = ?, devices = ? WHERE id = ? AND stopped IS NULL",
                (slots, json.dumps(devices), cluster_id),
            )

    def image_used(
        self, cluster_id: str, image: str, how: str, parameter: str | None = None
    ) -> None:
        """The machine image the cluster's nodes boot, and how it was found; a cluster that
        grows onto another image gets a second row."""
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO cluster_images(cluster_id, image, how, parameter, recorded)"
                " VALUES (?, ?, ?, ?, ?)",
                (cluster_id, image, how, parameter, time.time()),
            )

    def images(self, cluster_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """Each cluster's images (oldest first): ``image``, ``how``, ``parameter``."""
        ids = list(cluster_ids)
        found: dict[str, list[dict[str, Any]]] = {cluster_id: [] for cluster_id in ids}
        for start in range(0, len(ids), 500):  # SQLite caps the parameters of one statement
            chunk = ids[start : start + 500]
            rows = self.query(
                "SELECT cluster_id, image, how, parameter FROM cluster_images"
                f" WHERE cluster_id IN ({', '.join('?' * len(chunk))}) ORDER BY recorded",
                chunk,
            )
            for row in rows:
                found[row.pop("cluster_id")].append(row)
        return found

    def nodes(
        self, cluster_ids: Iterable[str] | None = None, alive_since: float | None = None
    ) -> list[dict[str, Any]]:
        """Nodes (of ``cluster_ids``), those still running or stopped at ``alive_since`` or later."""
        where, params = [], []
        if cluster_ids is not None:
            ids = list(cluster_ids)
            if not ids:
                return []
            where.append(f"cluster_id IN ({', '.join('?' * len(ids))})")
            params.extend(ids)
        if alive_since is not None:
            where.append("(stopped IS NULL OR stopped >= ?)")
            params.append(alive_since)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return self.query(f"SELECT * FROM nodes {clause} ORDER BY started", params)

    def clusters(self, running_only: bool = False) -> list[dict[str, Any]]:
        where = "WHERE stopped IS NULL" if running_only else ""
        return self.query(f"SELECT * FROM clusters {where} ORDER BY started")

    # cluster starts and their phases (jupyter_burst.clusters.start_phases) -------------

    def start_begun(
        self, start_id: str, name: str, provider: str, purpose: str, pid: int, host: str
    ) -> None:
        """A cluster's start began here (``purpose``: ``cell``, ``prewarm``) in process ``pid``."""
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO starts(id, name, provider, purpose, pid, host, started)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (start_id, name, provider, purpose, pid, host, time.time()),
            )

    def start_phase(
        self,
        start_id: str,
        phase: str,
        detail: str,
        done: int | None,
        total: int | None,
        replace: bool = False,
    ) -> bool:
        """The start is now in ``phase``; False if the start has ended (nothing is written).

        The phase under way again is a progress update (its clock keeps running; an empty
        ``detail`` or a None count keeps the one it had); another phase ends the one under way,
        or with ``replace`` takes its place (and the time it has run).
        """
        now = time.time()
        with self._write() as db:
            if not db.execute(
                "SELECT 1 FROM starts WHERE id = ? AND ended IS NULL", (start_id,)
            ).fetchone():
                return False
            current = db.execute(
                "SELECT id, phase FROM start_phases WHERE start_id = ? AND ended IS NULL"
                " ORDER BY id DESC LIMIT 1",
                (start_id,),
            ).fetchone()
            if current is not None and current["phase"] != phase and replace:
                db.execute(
                    "UPDATE start_phases SET phase = ?, detail = ?, done = ?, total = ?,"
                    " updated = ? WHERE id = ?",
                    (phase, detail, done, total, now, current["id"]),
                )
                return True
            if current is not None and current["phase"] == phase:
                db.execute(
                    "UPDATE start_phases SET detail = COALESCE(NULLIF(?, ''), detail),"
                    " done = COALESCE(?, done), total = COALESCE(?, total), updated = ?"
                    " WHERE id = ?",
                    (detail, done, total, now, current["id"]),
                )
                return True
            db.execute(
                "UPDATE start_phases SET ended = ? WHERE start_id = ? AND ended IS NULL",
                (now, start_id),
            )
            db.execute(
                "INSERT INTO start_phases(start_id, phase, detail, done, total, started, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (start_id, phase, detail, done, total, now, now),
            )
        return True

    def start_ended(self, start_id: str, cluster_id: str | None, error: str | None) -> None:
        """The start is over: its cluster runs (``cluster_id``), or it failed with ``error``."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "UPDATE start_phases SET ended = ? WHERE start_id = ? AND ended IS NULL",
                (now, start_id),
            )
            db.execute(
                "UPDATE starts SET ended = ?, outcome = ?, cluster_id = COALESCE(?, cluster_id),"
                " error = ? WHERE id = ? AND ended IS NULL",
                (
                    now,
                    "failed" if error is not None else "running",
                    cluster_id,
                    credentials.redact(error) if error else None,
                    start_id,
                ),
            )

    def starts(
        self, since: float | None = None, start_ids: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        """Starts (those begun at ``since`` or later, or those of ``start_ids``), oldest first,
        each with its ``phases`` in order."""
        where, params = [], []
        if since is not None:
            where.append("started >= ?")
            params.append(since)
        if start_ids is not None:
            ids = list(start_ids)
            if not ids:
                return []
            where.append(f"id IN ({', '.join('?' * len(ids))})")
            params.extend(ids)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        starts = self.query(f"SELECT * FROM starts {clause} ORDER BY started, id", params)
        if not starts:
            return []
        ids = [s["id"] for s in starts]
        phases: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        for chunk in range(0, len(ids), 500):  # SQLite caps the parameters of one statement
            part = ids[chunk : chunk + 500]
            rows = self.query(
                f"SELECT * FROM start_phases WHERE start_id IN ({', '.join('?' * len(part))})"
                " ORDER BY id",
                part,
            )
            for row in rows:
                phases[row["start_id"]].append(row)
        return [dict(s, phases=phases[s["id"]]) for s in starts]

    # jobs and their output ----------------------------------------------------------

    def job_started(
        self,
        job_id: str,
        cluster_id: str | None,
        kernel: str,
        source: str,
        options: dict,
        notebook: str | None = None,
    ) -> None:
        """A job began; ``notebook``: the path of the notebook whose kernel runs it, if known."""
        with self._write() as db:
            db.execute(
                "INSERT INTO jobs(id, cluster_id, kernel, source, options, started, status, notebook)"
                " VALUES (?, ?, ?, ?, ?, ?, 'running', ?)",
                (
                    job_id,
                    cluster_id,
                    kernel,
                    credentials.redact(source),  # the sidebar shows it: as the output lines
                    json.dumps(options, default=str),
                    time.time(),
                    notebook,
                ),
            )

    def job_ran_on(self, job_id: str, cluster_id: str) -> None:
        """Each cluster an attempt of the job ran on (a rerun may start a new one): its cost."""
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO job_clusters(job_id, cluster_id) VALUES (?, ?)",
                (job_id, cluster_id),
            )

    def job_stop_reason(self, job_id: str, reason: str) -> None:
        """Why jupyter-burst ended the job itself (``budget``); kept apart from its status."""
        with self._write() as db:
            db.execute("UPDATE jobs SET stop_reason = ? WHERE id = ?", (reason, job_id))

    def request_cancel(self, job_id: str) -> bool:
        """Ask the kernel running the job to stop it; False if the job is not running.

        The kernel is busy running the cell and cannot be told directly: it reads this flag
        while it follows the job (:class:`jupyter_burst.driver.jobs.CancelWatch`). The first
        request's time is kept.
        """
        with self._write() as db:
            changed = db.execute(
                "UPDATE jobs SET cancel_requested = COALESCE(cancel_requested, ?)"
                " WHERE id = ? AND status = 'running'",
                (time.time(), job_id),
            ).rowcount
        return bool(changed)

    def cancel_requested(self, job_id: str) -> float | None:
        """When a cancel of the job was requested; None if it was not (or there is no such job)."""
        rows = self.query("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
        return rows[0]["cancel_requested"] if rows else None

    def job_clusters(self, job_ids: Iterable[str]) -> dict[str, set[str]]:
        """The clusters each job ran on: the one it started on and any a rerun started."""
        ids = list(job_ids)
        found: dict[str, set[str]] = {job_id: set() for job_id in ids}
        for start in range(0, len(ids), 500):  # SQLite caps the parameters of one statement
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self.query(
                f"SELECT id AS job_id, cluster_id FROM jobs WHERE id IN ({marks}) AND cluster_id IS NOT NULL"
                f" UNION SELECT job_id, cluster_id FROM job_clusters WHERE job_id IN ({marks})",
                chunk + chunk,
            )
            for row in rows:
                found[row["job_id"]].add(row["cluster_id"])
        return found

    def recent_jobs(self, limit: int = 10) -> list[dict[str, Any]]:
        """The last ``limit`` jobs, newest first."""
        return self.query("SELECT * FROM jobs ORDER BY started DESC LIMIT ?", (limit,))

    def job_ended(self, job_id: str, status: str, error: str | None = None) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET ended = ?, status = ?, error = ? WHERE id = ?",
                (time.time(), status, credentials.redact(error) if error else error, job_id),
            )

    def add_lines(self, job_id: str, lines: Iterable[tuple[float, int, str, str]]) -> None:
        """Append (time, rank, stream, text) output lines of a job, credentials redacted."""
        redact = credentials.redact
        rows = [(job_id, ts, rank, stream, redact(text)) for ts, rank, stream, text in lines]
        if not rows:
            return
        with self._write() as db:
            db.executemany(
                "INSERT INTO log_lines(job_id, ts, rank, stream, text) VALUES (?, ?, ?, ?, ?)", rows
            )

    def add_metrics(
        self, job_id: str, ts: float, rank: int, step: int | None, values: dict
    ) -> None:
        """Record ``burst.log(step, name=value, ...)``; values that are not numbers are kept as NULL."""
        rows = [(job_id, ts, rank, step, name, _number(value)) for name, value in values.items()]
        with self._write() as db:
            db.executemany(
                "INSERT INTO metrics(job_id, ts, rank, step, name, value) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def add_usage(self, job_id: str, ts: float, rank: int, sample: dict) -> None:
        """A rank's slot as it was at ``ts`` (worker/usage.py): kept for the job's history."""
        gpu = sample.get("gpu") if isinstance(sample.get("gpu"), dict) else {}
        with self._write() as db:
            db.execute(
                "INSERT INTO usage(job_id, ts, rank, host, device, cpu_percent, rss,"
                " gpu_utilization, gpu_memory_used, gpu_memory_total)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    ts,
                    rank,
                    sample.get("host"),
                    sample.get("device"),
                    _number(sample.get("cpu_percent")),
                    sample.get("rss"),
                    _number(gpu.get("utilization")),
                    gpu.get("memory_used"),
                    gpu.get("memory_total"),
                ),
            )

    def usage(self, job_id: str) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM usage WHERE job_id = ? ORDER BY id", (job_id,))

    def add_checkpoint(self, info: dict) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO checkpoints(name, job_id, step, ts, bytes, sha256, url)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    info["name"],
                    info["job"],
                    info["step"],
                    info["time"],
                    info["bytes"],
                    info["sha256"],
                    info["url"],
                ),
            )

    def checkpoints(self, job_id: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE job_id = ?", (job_id,)) if job_id else ("", ())
        return self.query(f"SELECT * FROM checkpoints {where} ORDER BY ts", params)

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT rank, step, name, value FROM metrics WHERE job_id = ? ORDER BY id", (job_id,)
        )

    def job(self, job_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return rows[0] if rows else None

    def forget_old_output(self, keep_days: float, now: float | None = None) -> int:
        """Remove the output lines, metrics and use samples of jobs that ended more than ``keep_days``
        ago (the bulk of the file); the jobs themselves, their cost and clusters stay. The
        number of lines removed."""
        before = (time.time() if now is None else now) - keep_days * 86400
        old = "SELECT id FROM jobs WHERE ended IS NOT NULL AND ended < ?"
        with self._write() as db:
            removed = db.execute(f"DELETE FROM log_lines WHERE job_id IN ({old})", (before,))
            db.execute(f"DELETE FROM metrics WHERE job_id IN ({old})", (before,))
            db.execute(f"DELETE FROM usage WHERE job_id IN ({old})", (before,))
            return removed.rowcount

    def lines(self, job_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT ts, rank, stream, text FROM log_lines WHERE job_id = ? ORDER BY id", (job_id,)
        )


# The most characters of one line the ledger keeps together (a longer one is cut in lines).
LONGEST_LINE = 64 * 1024


class LineSplitter:
    """Turns a stream's text chunks into whole lines; a progress bar's ``\\r`` keeps its last state."""

    def __init__(self) -> None:
        self._partial: dict[tuple[int, str], str] = {}

    def feed(self, rank: int, stream: str, text: str) -> list[tuple[int, str, str]]:
        key = (rank, stream)
        pieces = (self._partial.pop(key, "") + text).split("\n")
        rest = pieces.pop()
        # A line not ended yet is held, but never grows without bound (each chunk would copy
        # it again): a progress bar keeps its last state only, and text past the longest
        # line goes out as a line of its own.
        state = rest.rfind("\r", 0, len(rest) - 1)
        if state > 0:
            rest = rest[state:]
        while len(rest) > LONGEST_LINE:
            pieces.append(rest[:LONGEST_LINE])
            rest = rest[LONGEST_LINE:]
        self._partial[key] = rest
        return [(rank, stream, _last_state(piece)) for piece in pieces]

    def rest(self) -> list[tuple[int, str, str]]:
        out = [
            (rank, stream, _last_state(text))
            for (rank, stream), text in self._partial.items()
            if text
        ]
        self._partial.clear()
        return out


class JobRecorder:
    """Writes one job's output events into the ledger: whole lines, metrics, checkpoints."""

    def __init__(self, ledger: Ledger, job_id: str):
        self.ledger = ledger
        self.job_id = job_id
        self._splitter = LineSplitter()

    def events(self, rank: int, events: list) -> None:
        now = time.time()
        lines = []
        for event in events:
            if event[0] in ("stdout", "stderr"):
                lines.extend(self._splitter.feed(rank, event[0], event[1]))
            elif event[0] == "metrics":
                self.ledger.add_metrics(self.job_id, now, rank, event[1], event[2])
            elif event[0] == "checkpoint":
                self.ledger.add_checkpoint(event[1])
            elif event[0] == "usage" and isinstance(event[1], dict):
                self.ledger.add_usage(self.job_id, now, rank, event[1])
        self.ledger.add_lines(self.job_id, [(now, r, stream, text) for r, stream, text in lines])

    def note(self, rank: int, text: str) -> None:
        """A line of jupyter-burst's own about the job (a lost node, a resume)."""
        self.ledger.add_lines(self.job_id, [(time.time(), rank, "burst", text)])

    def close(self) -> None:
        """Keep the last, unterminated line of each stream."""
        now = time.time()
        rest = self._splitter.rest()
        self.ledger.add_lines(
            self.job_id, [(now, rank, stream, text) for rank, stream, text in rest]
        )


def _new_file(db: sqlite3.Connection) -> None:
    """The tables of a ledger file, as this version writes them."""
    db.executescript(_SCHEMA)
    _add_missing_columns(db)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a ledger written by an older version up to this schema (inside a write lock)."""
    for table, columns in _ADDED_COLUMNS.items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns:
            if name not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _last_state(line: str) -> str:
    if "\r" not in line:
        return line
    parts = [p for p in line.split("\r") if p]
    return parts[-1] if parts else ""


def open_ledger(state_dir: pathlib.Path) -> Ledger:
    return Ledger(state_dir / "ledger.sqlite")


_shared: dict[pathlib.Path, Ledger] = {}
_shared_lock = threading.Lock()


def shared_ledger(state_dir: pathlib.Path) -> Ledger:
    """This process's connection to the ledger in ``state_dir`` (opened once, kept open).

    On opening, the output of jobs older than ``burst.ledger.keep-days`` (default 90; 0
    keeps all) is let go: a ledger that every notebook writes into must not grow forever.
    """
    path = pathlib.Path(state_dir) / "ledger.sqlite"
    with _shared_lock:
        ledger = _shared.get(path)
        if ledger is None or not path.exists():
            ledger = _shared[path] = Ledger(path)
            keep_days = _keep_days()
            if keep_days:
                with contextlib.suppress(sqlite3.Error):  # busy: the next opening does it
                    ledger.forget_old_output(keep_days)
        return ledger


def _keep_days() -> float:
    try:
        return max(0.0, float(config.get("ledger.keep-days", 90) or 0))
    except (TypeError, ValueError):
        return 90.0
