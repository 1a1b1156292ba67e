"""The checkpoint store: atomic saves, one manifest per job, newest-valid restore, keep-last-N.

Addressed by an fsspec URL (``burst.checkpoints.url``; default: ``checkpoints/`` in the
state folder; ``s3://bucket/prefix`` for cloud work). Each job has a folder::
    <root>/<job>/manifest.json                       the commit: the kept checkpoints, oldest first
    <root>/<job>/<ns>-step<K>-<random>.ckpt          one data file per checkpoint

A save writes the data file first (flushed and fsynced on a local disk), then replaces the
manifest in one step (written aside, then renamed; one PUT on an object store, which is
atomic there). Until that step the new file is not part of any checkpoint, so a save that
dies half-way leaves the previous manifest, and every file it names, as they were. Files
that retention drops are deleted only after the new manifest is in place; leftovers of a
killed save are swept by the next save. (On S3 a data file killed during a multipart upload
never becomes an object at all; a bucket lifecycle rule, AbortIncompleteMultipartUpload,
frees its parts.)

Each manifest entry carries the data's size and sha256: a file that no longer matches is
skipped with a warning that names it, and the checkpoint before it is used. It also carries
an HMAC of the data made with the user's store key (:mod:`jupyter_burst.store.store_key`),
checked before a byte is unpickled: an entry that someone else wrote into the store (they
can write a matching sha256, not the HMAC) is refused like a damaged one.

One writer per job: the main rank of the job's current attempt.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import io
import json
import os
import pathlib
import pickle
import re
import sys
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

from jupyter_burst import config
from jupyter_burst.errors import CheckpointError, OptionError
from jupyter_burst.store import store_key

MANIFEST = "manifest.json"
_DATA = re.compile(r"^(\d{20})-step[^/]*\.ckpt$")
_MANIFEST_ASIDE = re.compile(r"^manifest\.json\.[0-9a-f]{12}\.partial$")
_UNREADABLE = re.compile(r"^manifest\.json\.unreadable-(\d{20})$")
# Object stores whose single-object write is atomic: no rename (a copy there) is needed.
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}
_BACKENDS = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
}


class CheckpointSkipped(UserWarning):
    """A checkpoint whose data is missing or does not match its manifest was passed over."""


@dataclass(frozen=True)
class Checkpoint:
    """One committed checkpoint, as its job's manifest records it."""

    job: str
    step: int | None
    time: float
    bytes: int
    sha256: str
    name: str
    url: str
    cell: str = ""
    format: str = "pickle"  # "torch" (torch.save) or "pickle"
    mac: str = ""  # HMAC-SHA256 of the data with the user's store key (store_key.py)

    @property
    def ns(self) -> int:
        """The save's time in nanoseconds, from the name (which sorts in save order)."""
        return int(self.name.split("-", 1)[0])


class CheckpointStore:
    """One job's checkpoints under ``root`` (an fsspec URL or a local path)."""

    def __init__(self, root: str | os.PathLike, job: str, keep: int = 3, cell: str = ""):
        self.url = str(root)
        self.fs, path = filesystem(self.url)
        self.root = path.rstrip("/")
        self.job = job
        self.keep = max(1, int(keep))
        self.cell = cell[:200]

    @property
    def folder(self) -> str:
        return f"{self.root}/{self.job}"

    def _path(self, name: str) -> str:
        return f"{self.folder}/{name}"

    # saving -----------------------------------------------------------------------------

    def save(self, state: Any, step: int | None = None) -> Checkpoint:
        """Write ``state`` (state_dicts, any picklable object) as the job's newest checkpoint.

        Atomic: afterwards the new checkpoint is committed, or (on an error, or a kill) the
        job's checkpoints are exactly what they were. Older ones beyond ``keep`` are removed.
        """
        if step is not None:
            step = int(step)  # numpy and torch integers too; the manifest is JSON
        entries, readable = self._read_manifest(moving_aside=True)
        # The name sorts in commit order even if the clock steps back, and never collides.
        ns = max([time.time_ns(), *(c.ns + 1 for c in entries)])
        name = f"{ns:020d}-step{'none' if step is None else step}-{uuid.uuid4().hex[:8]}"
        data = self._path(f"{name}.ckpt")
        try:
            if not self._object_store:
                # An object store has no folders; s3fs would even create a missing bucket.
                self.fs.makedirs(self.folder, exist_ok=True)
            size, digest, fmt, mac = self._write_data(data, state, name)
        except Exception as exc:
            self._discard(data)
            if (failure := _store_failure(exc)) is not None:
                raise self._write_error(failure, step) from None
            raise CheckpointError(
                f"the state of step {step} cannot be saved ({type(exc).__name__}: "
                f"{_first_line(exc)}); save state_dicts and plain values (tensors, numbers, "
                "lists, dicts)"
            ) from exc
        except BaseException:
            self._discard(data)
            raise
        checkpoint = Checkpoint(
            job=self.job,
            step=step,
            time=ns / 1e9,
            bytes=size,
            sha256=digest,
            name=name,
            url=self.fs.unstrip_protocol(data),
            cell=self.cell,
            format=fmt,
            mac=mac,
        )
        # The newest `keep` stay; the one just written is the newest and, being just
        # hashed, valid, so retention can never leave the job without a valid checkpoint.
        kept = [*entries, checkpoint][-self.keep :]
        retired = [c for c in entries if c.name not in {k.name for k in kept}]
        try:
            self._write_manifest(kept)
        except BaseException as exc:
            # A move that is a copy and a delete (neither local nor an object store) can
            # fail after the copy: then the new manifest is in place and names this file.
            if not self._names(checkpoint.name):
                self._discard(data)
                if (failure := _store_failure(exc)) is not None:
                    raise self._write_error(failure, step) from None
                raise
        self._tidy(retired, kept, sweep=readable)
        return checkpoint

    def _write_data(self, path: str, state: Any, name: str) -> tuple[int, str, str, str]:
        key = store_key.load(create=True)
        if key is None:
            raise CheckpointError(
                f"this machine has no usable store key ({store_key.path()}), so its checkpoints "
                "could not be trusted when read; start the cluster again from the notebook"
            )
        torch = sys.modules.get("torch")
        with self.fs.open(path, "wb") as f:
            sink = _HashingWriter(f, store_key.signer(key, self.job, name))
            fmt = "pickle" if torch is None else "torch"
            try:
                if torch is None:
                    pickle.dump(state, sink, protocol=pickle.HIGHEST_PROTOCOL)
                else:
                    torch.save(state, sink)
            except Exception:
                if sink.error is not None:  # torch's writer wraps the store's error it got
                    raise sink.error from None
                raise
            self._sync(f)
        return sink.size, sink.sha256.hexdigest(), fmt, sink.mac.hexdigest()

    def _write_manifest(self, entries: list[Checkpoint]) -> None:
        text = json.dumps(
            {"version": 1, "job": self.job, "checkpoints": [asdict(c) for c in entries]},
            indent=1,
        ).encode()
        final = self._path(MANIFEST)
        if self._object_store:
            # One PUT: readers see the old manifest or the new one, never a part (a rename
            # there would be a copy and a delete).
            self.fs.pipe_file(final, text)
            return
        aside = self._path(f"{MANIFEST}.{uuid.uuid4().hex[:12]}.partial")
        try:
            with self.fs.open(aside, "wb") as f:
                f.write(text)
                self._sync(f)
            if self._local:
                os.replace(aside, final)  # atomic on POSIX: readers see the old or the new
                self._sync_folder()
            else:
                self.fs.mv(aside, final)
        except BaseException:
            self._discard(aside)
            raise

    def _names(self, name: str) -> bool:
        """Whether the manifest now in the store names ``name`` (False if it cannot be read)."""
        try:
            raw = self.fs.cat_file(self._path(MANIFEST))
            return any(c.get("name") == name for c in json.loads(raw)["checkpoints"])
        except Exception:
            return False

    @property
    def _protocols(self) -> set[str]:
        protocol = self.fs.protocol
        return {protocol} if isinstance(protocol, str) else set(protocol)

    @property
    def _object_store(self) -> bool:
        return bool(self._protocols & OBJECT_STORES)

    @property
    def _local(self) -> bool:
        from fsspec.implementations.local import LocalFileSystem

        return isinstance(self.fs, LocalFileSystem)

    def _sync(self, f) -> None:
        if not self._local:
            return
        f.flush()
        os.fsync(f.fileno())  # on disk before the manifest names it, not only in the page cache

    def _sync_folder(self) -> None:
        # The rename itself survives a power cut only once the folder is synced; a process
        # kill does not need it, so a filesystem that refuses this is no reason to fail.
        try:
            fd = os.open(self.folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _discard(self, path: str) -> None:
        try:
            self.fs.rm(path)
        except Exception as exc:
            if not isinstance(exc, ValueError) and _store_failure(exc) is None:
                raise
            # never written, or the store is failing already; nothing names it

    def _write_error(self, exc: OSError, step: int | None) -> CheckpointError:
        code = errno.errorcode.get(exc.errno or 0, "")
        reason = _first_line(exc.strerror or exc) + (f" ({code})" if code else "")
        if isinstance(exc, _NoCredentials):
            fix = _CREDENTIALS_FIX
        elif isinstance(exc, FileNotFoundError) and self._object_store:
            fix = "create the bucket or set burst.checkpoints.url to one that exists"
        elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = "free space there or set burst.checkpoints.url to a store with room"
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = "make it writable or set burst.checkpoints.url to a store you can write"
        else:
            fix = "check the store or set burst.checkpoints.url to another one"
        return CheckpointError(
            f"could not save the checkpoint of step {step} in {self.url}: {reason}; {fix}; "
            "the previous checkpoints are unchanged"
        )

    def _tidy(self, retired: list[Checkpoint], kept: list[Checkpoint], sweep: bool) -> None:
        """Delete retired data files and leftovers of killed saves; the save stands regardless."""
        doomed = [self._path(f"{c.name}.ckpt") for c in retired]
        if sweep:
            doomed += self._leftovers(kept)
        for path in doomed:
            try:
                self.fs.rm(path)
            except FileNotFoundError:
                pass
            except Exception as exc:
                if _store_failure(exc) is None:
                    raise
                warnings.warn(
                    f"burst: could not remove the old checkpoint file {path}: {_first_line(exc)}",
                    CheckpointSkipped,
                    stacklevel=3,
                )

    def _leftovers(self, kept: list[Checkpoint]) -> list[str]:
        """Data files no manifest names (a killed save, a retirement cut short), and asides."""
        try:
            self.fs.invalidate_cache(self.folder)  # s3fs keeps listings; this one must be fresh
            names = [
                p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.folder, detail=False)
            ]
        except Exception as exc:
            if _store_failure(exc) is None:
                raise
            return []
        named = {f"{c.name}.ckpt" for c in kept}
        newest = kept[-1].ns
        # Files from before a manifest was lost are the only copy of those checkpoints:
        # they stay for the user to recover by hand.
        floor = max((int(m.group(1)) for n in names if (m := _UNREADABLE.match(n))), default=-1)
        found = []
        for name in names:
            data = _DATA.match(name)
            if data and name not in named and floor < int(data.group(1)) < newest:
                found.append(self._path(name))
            elif _MANIFEST_ASIDE.match(name):
                found.append(self._path(name))
        return found

    # reading ----------------------------------------------------------------------------

    def _read_manifest(self, moving_aside: bool = False) -> tuple[list[Checkpoint], bool]:
        """The manifest's entries, oldest first, and whether the manifest could be read."""
        path = self._path(MANIFEST)
        try:
            raw = self.fs.cat_file(path)
        except FileNotFoundError:
            return [], True  # no save yet (on S3 also: no bucket yet; the save says so)
        except Exception as exc:
            if (
                error := _read_error(exc, f"read the checkpoints of job {self.job} in {self.url}")
            ) is None:
                raise
            raise error from None
        try:
            document = json.loads(raw)
            known = {f.name for f in fields(Checkpoint)}
            entries = [
                Checkpoint(**{k: v for k, v in entry.items() if k in known})
                for entry in document["checkpoints"]
            ]
            if not all(_DATA.match(f"{c.name}.ckpt") for c in entries):
                raise ValueError("an entry is not named like a checkpoint")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            where = "its checkpoint files are left as they are"
            if moving_aside:
                # A new save must not overwrite the only record of the older checkpoints.
                aside = f"{MANIFEST}.unreadable-{time.time_ns():020d}"
                try:
                    self.fs.mv(path, self._path(aside))
                    where = f"it was moved to {aside}, and the job's older files kept"
                except OSError:
                    pass
            warnings.warn(
                f"burst: the checkpoint manifest of job {self.job} is unreadable "
                f"({type(exc).__name__}: {_first_line(exc)}); {where}",
                CheckpointSkipped,
                stacklevel=3,
            )
            return [], False
        return sorted(entries, key=lambda c: c.name), True

    def list(self) -> list[Checkpoint]:
        """The job's committed checkpoints, oldest first."""
        return self._read_manifest()[0]

    def load(self, checkpoint: Checkpoint) -> Any:
        """The state saved in ``checkpoint``; CheckpointError if its data is missing or changed."""
        try:
            return self._load(checkpoint)
        except _Invalid as exc:
            raise CheckpointError(
                f"checkpoint {checkpoint.name} of job {self.job} (step {checkpoint.step}) "
                f"cannot be used: {exc}; see %burst checkpoints {self.job}"
            ) from None

    def data_path(self, checkpoint: Checkpoint) -> str:
        """Where ``checkpoint``'s data is in this store: from its job and name, never from the
        URL its manifest entry carries (whoever writes the store writes that too)."""
        return self._path(f"{checkpoint.name}.ckpt")

    def _load(self, checkpoint: Checkpoint) -> Any:
        path = self.data_path(checkpoint)
        try:
            # One GET of whatever is there now (s3fs's open() would refuse an object
            # replaced since it was listed, hiding what the sha256 check tells).
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            raise _Invalid("its data file is missing") from None
        except Exception as exc:
            if (failure := _store_failure(exc)) is None:
                raise
            raise _Invalid(f"its data file cannot be read ({_first_line(failure)})") from None
        if len(data) != checkpoint.bytes:
            raise _Invalid(
                f"its data file has {len(data):,} bytes, the manifest says {checkpoint.bytes:,}"
            )
        if hashlib.sha256(data).hexdigest() != checkpoint.sha256:
            raise _Invalid("its data does not match the sha256 in the manifest")
        if not store_key.verify(store_key.load(), self.job, checkpoint.name, data, checkpoint.mac):
            # Not written with this user's key: by someone else who can write the store, or
            # before checkpoints were signed. Never unpickled: that could run their code.
            raise _Invalid(
                "it is not signed with this user's store key (someone else wrote it, or an "
                "older jupyter-burst did), so it was not read"
            )
        try:
            return _deserialize(data, checkpoint.format)
        except Exception as exc:  # the bytes are intact but do not load here (a missing module)
            raise _Invalid(f"it does not load ({type(exc).__name__}: {_first_line(exc)})") from exc

    def restore(self, step: int | None = None) -> tuple[Any, Checkpoint] | None:
        """The newest valid checkpoint (at ``step``, if given) and its state; None if none.

        A checkpoint that cannot be used is skipped with a warning naming it and the step
        used instead.
        """
        skipped: list[tuple[Checkpoint, str]] = []
        found = None
        for checkpoint in reversed(self.list()):
            if step is not None and checkpoint.step != step:
                continue
            try:
                found = self._load(checkpoint), checkpoint
                break
            except _Invalid as exc:
                skipped.append((checkpoint, str(exc)))
        if found is not None:
            instead = f"using the checkpoint of step {found[1].step} ({found[1].name}) instead"
        else:
            instead = "no valid checkpoint is left" + (
                f" at step {step}" if step is not None else ""
            )
        for checkpoint, reason in skipped:
            warnings.warn(
                f"burst: skipped checkpoint {checkpoint.name} of job {self.job} "
                f"(step {checkpoint.step}): {reason}; {instead}",
                CheckpointSkipped,
                stacklevel=2,
            )
        return found


class _Invalid(Exception):
    """Why a checkpoint's data cannot be used."""


class DataCheck:
    """A checkpoint's size, sha256 and signature, checked over its data read in chunks (a
    download streams it, so the answer comes at the end)."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        key = store_key.load()
        self._mac = store_key.signer(key, checkpoint.job, checkpoint.name) if key else None
        self._sha256 = hashlib.sha256()
        self._size = 0

    def update(self, chunk: bytes) -> None:
        self._sha256.update(chunk)
        if self._mac is not None:
            self._mac.update(chunk)
        self._size += len(chunk)

    def ok(self) -> bool:
        return (
            self._mac is not None
            and self._size == self.checkpoint.bytes
            and self._sha256.hexdigest() == self.checkpoint.sha256
            and hmac.compare_digest(self._mac.hexdigest(), self.checkpoint.mac)
        )


class _HashingWriter:
    """Passes writes to ``f``, hashing and counting them: the data is streamed, not held twice."""

    def __init__(self, f, mac):
        self.f = f
        self.sha256 = hashlib.sha256()
        self.mac = mac
        self.size = 0
        self.error: OSError | None = None  # the store's failure, not the state's

    def flush(self) -> None:
        self.f.flush()

    def write(self, b) -> int:
        view = memoryview(b).cast("B")
        try:
            self.f.write(view)
        except Exception as exc:
            if (failure := _store_failure(exc)) is None:
                raise
            self.error = failure
            raise
        self.sha256.update(view)
        self.mac.update(view)
        self.size += len(view)
        return len(view)


def _deserialize(data: bytes, fmt: str) -> Any:
    if fmt == "torch" or data[:2] == b"PK":  # torch.save's zip format
        import torch

        try:  # tensors, state_dicts and plain values: torch's safe loader takes them
            return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except pickle.UnpicklingError:
            # Other objects: signed with the user's key (checked before this), so written
            # by the user's own cell; unpickled as fully as they were saved.
            return torch.load(io.BytesIO(data), weights_only=False, map_location="cpu")
    return pickle.loads(data)


class _NoCredentials(PermissionError):
    """The store's client found no credentials to sign its requests with."""


_CREDENTIALS_FIX = (
    "give this machine AWS credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY); on AWS nodes set burst.aws.instance-profile"
)


def _store_failure(exc: BaseException) -> OSError | None:
    """``exc`` as the OSError of a failing store; None when it is not the store's failure.

    fsspec backends report most failures as OSError, but some of the cloud SDK's own errors
    come through as they are: botocore's NoCredentialsError, its connection errors.
    """
    if isinstance(exc, OSError):
        return exc
    module = type(exc).__module__.split(".", 1)[0]
    if module not in {"botocore", "aiobotocore"}:
        return None
    if "Credentials" in type(exc).__name__:
        failure: OSError = _NoCredentials(f"no AWS credentials ({_first_line(exc)})")
    else:
        failure = OSError(_first_line(exc))
    return failure


def _read_error(exc: BaseException, doing: str) -> CheckpointError | None:
    """A store that could not be read, as one line naming the fix; None if ``exc`` is not that."""
    if (failure := _store_failure(exc)) is None:
        return None
    return CheckpointError(f"could not {doing}: {_first_line(failure)}; {_read_fix(failure)}")


def _read_fix(failure: OSError) -> str:
    if isinstance(failure, _NoCredentials):
        return _CREDENTIALS_FIX
    return "check the store or burst.checkpoints.url"


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def filesystem(url: str):
    """(fsspec filesystem, path) for a store URL; a one-line error when its backend is missing."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError:
        protocol = url.split("://", 1)[0]
        package = _BACKENDS.get(protocol, f"the fsspec backend for {protocol}://")
        hint = f"pip install {package}" if protocol in _BACKENDS else f"install {package}"
        raise CheckpointError(
            f"the checkpoint store {url} needs {package}, which is not installed: {hint}"
        ) from None
    except ValueError as exc:
        raise CheckpointError(
            f"the checkpoint store {url} cannot be opened ({_first_line(exc)}); set "
            "burst.checkpoints.url to a local folder or an fsspec URL such as s3://bucket/prefix"
        ) from None


def default_root(state_dir: str | os.PathLike) -> str:
    """``burst.checkpoints.url``, or ``checkpoints/`` in the state folder."""

    return str(config.get("checkpoints.url") or (pathlib.Path(state_dir) / "checkpoints"))


def all_jobs(root: str) -> list[str]:
    """The jobs with a checkpoint manifest under ``root``."""
    fs, path = filesystem(root)
    path = path.rstrip("/")
    try:
        fs.invalidate_cache(path)  # s3fs keeps listings: a job saved since must show
        found = fs.glob(f"{path}/*/{MANIFEST}")
    except FileNotFoundError:
        return []
    except Exception as exc:
        if (error := _read_error(exc, f"list the checkpoints in {root}")) is None:
            raise
        raise error from None
    return sorted({str(p).rstrip("/").rsplit("/", 2)[-2] for p in found})


def listing(root: str, job: str | None = None) -> list[tuple[str, Checkpoint]]:
    """(job, checkpoint) for every kept checkpoint (of ``job``, a prefix of its id), oldest first."""
    jobs = [find_job(root, job)] if job else all_jobs(root)
    rows = [(name, c) for name in jobs for c in CheckpointStore(root, name).list()]
    return sorted(rows, key=lambda row: row[1].time)


def find_job(root: str, text: str) -> str:
    """A job id from a prefix of it, or ``last`` for the newest job with checkpoints."""
    jobs = all_jobs(root)
    if text in jobs:
        return text
    if text == "last":
        dated = [
            (max((c.time for c in CheckpointStore(root, j).list()), default=0), j) for j in jobs
        ]
        if not dated:
            raise OptionError(
                "no job has checkpoints yet; burst.checkpoint(state) in a cell saves one"
            )
        return max(dated)[1]
    matches = [j for j in jobs if j.startswith(text)]
    if len(matches) != 1:
        known = ", ".join(jobs[-5:]) or "none"
        what = "matches several jobs" if matches else "is not a job with checkpoints"
        raise OptionError(f"'{text}' {what}; jobs with checkpoints: {known}")
    return matches[0]
