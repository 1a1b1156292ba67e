"""The checkpoint store: a kill mid-save, a corrupted file, retention, a full disk, the magic.

Kills are real SIGKILLs of real processes writing to a real folder; the full disk is a
filesystem that really writes until its budget is spent, and a process whose file-size
limit (RLIMIT_FSIZE) makes the kernel itself refuse the write.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import select
import signal
import subprocess
import sys
import threading
import time
import warnings

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem

from jupyter_burst.errors import CheckpointError
from jupyter_burst.store.checkpoints import MANIFEST, CheckpointSkipped, CheckpointStore
from tests.harness import REPO, wait_for

BLOB = 3 << 20  # a few MB per checkpoint: a save takes long enough to be caught mid-way


def state_of(k: int) -> dict:
    """What step ``k`` saves; the tests can tell every step's state from every other's."""
    return {
        "k": k,
        "blob": bytes([k % 251]) * BLOB,
        "nested": {"lr": 0.1 * k, "ks": list(range(k))},
    }


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# The writer: continues the job from its newest checkpoint and saves step after step until
# it is killed. It does not import torch, so its checkpoints are pickles.
_WRITER = f"""
import sys
from jupyter_burst.store.checkpoints import CheckpointStore
BLOB = {BLOB}
def state_of(k):
    return {{"k": k, "blob": bytes([k % 251]) * BLOB, "nested": {{"lr": 0.1 * k, "ks": list(range(k))}}}}
store = CheckpointStore(sys.argv[1], "job", keep=int(sys.argv[2]))
found = store.restore()
k = found[0]["k"] if found else 0
print("ready", k, flush=True)
while True:
    k += 1
    store.save(state_of(k), step=k)
"""


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    ready = wait_for(
        lambda: select.select([proc.stdout], [], [], 0.05)[0] or proc.poll() is not None,
        timeout,
        "the writer to start",
    )
    assert ready
    line = proc.stdout.readline()
    assert line, f"the writer exited ({proc.poll()}): {proc.stderr.read()}"
    return line


def check_store(folder: pathlib.Path, keep: int, newest_saved_here: bool = False) -> int | None:
    """Everything a committed manifest names is intact; restore() gives the newest; its step."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        store = CheckpointStore(str(folder.parent), folder.name, keep=keep)
        assert store.list() == [] and store.restore() is None
        return None
    entries = json.loads(manifest.read_text())["checkpoints"]
    assert 1 <= len(entries) <= keep, [e["step"] for e in entries]
    steps = [e["step"] for e in entries]
    assert steps == sorted(steps) and len(set(steps)) == len(steps), steps
    for i, entry in enumerate(entries):
        data = (folder / f"{entry['name']}.ckpt").read_bytes()
        assert len(data) == entry["bytes"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["name"]
        if not (newest_saved_here and i == len(entries) - 1):
            # The writer has no torch imported; this process may have (an earlier test).
            assert entry["format"] == "pickle"
    store = CheckpointStore(str(folder.parent), folder.name, keep=keep)
    assert [c.name for c in store.list()] == [e["name"] for e in entries]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact store restores without skipping anything
        state, checkpoint = store.restore()
    assert checkpoint.step == steps[-1]
    assert state == state_of(steps[-1])
    return steps[-1]


def _leftovers(folder: pathlib.Path) -> set[str]:
    named = {MANIFEST}
    if (folder / MANIFEST).exists():
        entries = json.loads((folder / MANIFEST).read_text())["checkpoints"]
        named |= {f"{e['name']}.ckpt" for e in entries}
    return {p.name for p in folder.iterdir()} - named


def test_a_kill_at_any_moment_of_a_save_leaves_the_previous_checkpoint_valid(tmp_path):
    keep = 2
    root = tmp_path / "store"
    folder = root / "job"
    newest = None
    mid_save = 0
    for i in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(root), str(keep)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        try:
            resumed_from = int(_read_line(proc, 30).split()[1])
            assert resumed_from == (newest or 0)  # it continues from what was committed
            # The kill moment is what this test varies: spread over a dozen saves, so it
            # lands in every phase of one (pickling, writing, fsync, commit, pruning).
            time.sleep(0.0137 * i)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.stdout.close()
            proc.stderr.close()
        mid_save += bool(_leftovers(folder)) if folder.exists() else 0
        step = check_store(folder, keep)
        assert newest is None or (step is not None and step >= newest)  # nothing committed lost
        newest = step
    assert newest is not None and newest > 20
    assert mid_save >= 5, f"only {mid_save} of 20 kills caught a save half-way"
    # The next save sweeps what the killed ones left behind.
    store = CheckpointStore(str(root), "job", keep=keep)
    store.save(state_of(newest + 1), step=newest + 1)
    assert _leftovers(folder) == set()
    assert check_store(folder, keep, newest_saved_here=True) == newest + 1


# Kills at exact points of a save: the process SIGKILLs itself at the n-th call of one of the
# functions a save goes through, before or after it runs.
_KILL_AT = """
import os, signal, sys
from jupyter_burst.store import checkpoints
from jupyter_burst.store.checkpoints import CheckpointStore
root, owner, name, when, nth = sys.argv[1:6]
store = CheckpointStore(root, "job", keep=2)
def state_of(k):
    return {"k": k, "blob": bytes([k % 251]) * (3 << 20), "nested": {"lr": 0.1 * k, "ks": list(range(k))}}
for k in (1, 2, 3):
    store.save(state_of(k), step=k)
target = {"os": os, "writer": checkpoints._HashingWriter}[owner]
original = getattr(target, name)
calls = [0]
def dying(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(nth) and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(*args, **kwargs)
    if calls[0] == int(nth) and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(target, name, dying)
store.save(state_of(4), step=4)
print("not killed", flush=True)
"""


@pytest.mark.parametrize(
    ("owner", "name", "when", "nth", "committed"),
    [
        ("writer", "write", "after", 2, 3),  # part of the data written
        ("os", "fsync", "before", 1, 3),  # all data written, not yet synced
        ("os", "fsync", "after", 2, 3),  # the new manifest written aside and synced
        ("os", "replace", "before", 1, 3),  # about to commit
        ("os", "replace", "after", 1, 4),  # committed; the oldest not yet removed
        ("os", "remove", "before", 1, 4),  # removing the retired checkpoint's file
    ],
    ids=[
        "mid-data",
        "before-data-fsync",
        "manifest-aside",
        "before-commit",
        "after-commit",
        "pruning",
    ],
)
def test_a_kill_at_each_step_of_a_save_leaves_a_valid_store(
    tmp_path, owner, name, when, nth, committed
):
    root = tmp_path / "store"
    run = subprocess.run(
        [sys.executable, "-c", _KILL_AT, str(root), owner, name, when, str(nth)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    folder = root / "job"
    assert check_store(folder, keep=2) == committed
    store = CheckpointStore(str(root), "job", keep=2)
    store.save(state_of(5), step=5)
    assert _leftovers(folder) == set()
    assert [c.step for c in store.list()] == [committed, 5]


def _flip(path: pathlib.Path, at: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def third_skipped(saved: list) -> str:
    """The warning when the third of three saves of job ``job`` is corrupt: step 2 is used."""
    return (
        f"burst: skipped checkpoint {saved[2].name} of job job (step 3): its data does not match "
        f"the sha256 in the manifest; using the checkpoint of step 2 ({saved[1].name}) instead"
    )


@pytest.mark.hardening
def test_a_corrupted_checkpoint_is_skipped_with_a_warning_and_the_one_before_is_used(tmp_path):
    store = CheckpointStore(str(tmp_path), "job", keep=3)
    saved = [store.save(state_of(k), step=k) for k in (1, 2, 3)]
    _flip(tmp_path / "job" / f"{saved[2].name}.ckpt")
    with pytest.warns(CheckpointSkipped) as caught:
        state, checkpoint = store.restore()
    assert checkpoint.step == 2 and state == state_of(2)
    (message,) = [str(w.message) for w in caught]
    assert message == third_skipped(saved)
    # A file cut short, and one gone, are skipped the same way.
    (tmp_path / "job" / f"{saved[1].name}.ckpt").write_bytes(b"short")
    (tmp_path / "job" / f"{saved[0].name}.ckpt").unlink()
    with pytest.warns(CheckpointSkipped) as caught:
        assert store.restore() is None
    reasons = [str(w.message) for w in caught]
    assert len(reasons) == 3 and all("no valid checkpoint is left" in r for r in reasons)
    assert "has 5 bytes, the manifest says" in reasons[1] and "is missing" in reasons[2]
    with pytest.raises(CheckpointError, match=r"^burst: checkpoint .* \(step 3\) cannot be used: "):
        store.load(saved[2])


def test_restore_at_a_step_and_the_newest_first(tmp_path):
    store = CheckpointStore(str(tmp_path), "job", keep=5)
    assert store.restore() is None
    for k in (1, 2, 3, 2):  # a run that went back to step 2 saves it again
        store.save(state_of(k) | {"again": k == 2 and store.list()[-1].step == 3}, step=k)
    state, checkpoint = store.restore(step=2)
    assert checkpoint == store.list()[-1] and state["again"] is True
    assert store.restore()[1].step == 2
    assert store.restore(step=7) is None


def test_retention_keeps_the_last_n(tmp_path):
    store = CheckpointStore(str(tmp_path), "job", keep=3)
    saved = [store.save(state_of(k), step=k) for k in range(1, 8)]
    assert store.list() == saved[-3:]
    assert {p.name for p in (tmp_path / "job").iterdir()} == {MANIFEST} | {
        f"{c.name}.ckpt" for c in saved[-3:]
    }
    assert [c.name for c in saved] == sorted(c.name for c in saved)  # names sort in save order
    one = CheckpointStore(str(tmp_path), "single", keep=1)
    for k in (1, 2, 3):
        one.save(state_of(k), step=k)
    assert [c.step for c in one.list()] == [3] and one.restore()[0] == state_of(3)


def test_the_newest_checkpoint_is_kept_even_when_older_ones_are_corrupt(tmp_path):
    store = CheckpointStore(str(tmp_path), "job", keep=2)
    first = store.save(state_of(1), step=1)
    _flip(tmp_path / "job" / f"{first.name}.ckpt")
    store.save(state_of(2), step=2)
    assert [c.step for c in store.list()] == [1, 2] and store.restore()[1].step == 2


def test_model_and_optimizer_state_dicts_round_trip_with_torch(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(4, 8)).pow(2).mean().backward()
        optimizer.step()
    store = CheckpointStore(str(tmp_path), "job")
    saved = store.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}, step=3
    )
    assert saved.format == "torch"
    state, _ = store.restore()
    fresh = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    fresh.load_state_dict(state["model"])
    fresh_optimizer.load_state_dict(state["optimizer"])
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    moments = optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(fresh_optimizer.state_dict()["state"][0]["exp_avg"], moments)
    assert state["epoch"] == 3


def test_a_state_that_cannot_be_pickled_is_one_line_and_leaves_nothing(tmp_path):
    store = CheckpointStore(str(tmp_path), "job")
    store.save(state_of(1), step=1)
    with pytest.raises(CheckpointError) as caught:
        store.save({"lock": threading.Lock()}, step=2)
    text = str(caught.value)
    assert "\n" not in text and text.startswith("burst: the state of step 2 cannot be saved (")
    assert "save state_dicts and plain values" in text
    assert _leftovers(tmp_path / "job") == set() and store.restore()[1].step == 1


class _FullDisk(LocalFileSystem):
    """A local folder with ``free`` bytes left for files whose name contains ``only``."""

    protocol = "fulldisk"
    free: int | None = None
    only = ""

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        if "w" in mode and self.only in os.path.basename(path):
            return _Budget(f, type(self))
        return f


class _Budget:
    """Writes through until the disk's budget is spent, then fails as a full disk does."""

    def __init__(self, f, disk: type[_FullDisk]):
        self.f, self.disk = f, disk

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        if self.disk.free is not None and len(data) > self.disk.free:
            self.f.write(data[: self.disk.free])  # what fits does reach the disk
            self.f.flush()
            self.disk.free = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.f.path)
        if self.disk.free is not None:
            self.disk.free -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.fixture
def full_disk(monkeypatch):
    fsspec.register_implementation("fulldisk", _FullDisk, clobber=True)
    monkeypatch.setattr(_FullDisk, "free", None)
    monkeypatch.setattr(_FullDisk, "only", "")
    yield _FullDisk
    _FullDisk.clear_instance_cache()


@pytest.mark.hardening
@pytest.mark.parametrize(
    ("only", "free"), [("", 1 << 20), (MANIFEST, 100)], ids=["in-the-data", "in-the-manifest"]
)
def test_a_full_disk_is_one_line_and_the_previous_checkpoint_stays(tmp_path, full_disk, only, free):
    root = f"fulldisk://{tmp_path}"
    store = CheckpointStore(root, "job", keep=2)
    store.save(state_of(1), step=1)
    before = {p.name: p.read_bytes() for p in (tmp_path / "job").iterdir()}
    full_disk.free, full_disk.only = free, only
    with pytest.raises(CheckpointError) as caught:
        store.save(state_of(2), step=2)
    assert str(caught.value) == (
        f"burst: could not save the checkpoint of step 2 in {root}: No space left on device "
        "(ENOSPC); free space there or set burst.checkpoints.url to a store with room; "
        "the previous checkpoints are unchanged"
    )
    assert caught.value._render_traceback_() == [str(caught.value)]
    after = {p.name: p.read_bytes() for p in (tmp_path / "job").iterdir()}
    assert after == before  # no partial file, the manifest and step 1 byte for byte
    full_disk.free = None
    assert store.restore()[0] == state_of(1)
    store.save(state_of(3), step=3)  # room again: saving goes on
    assert [c.step for c in store.list()] == [1, 3]


_FSIZE = """
import resource, signal, sys
from jupyter_burst.store.checkpoints import CheckpointStore
from jupyter_burst.errors import CheckpointError
store = CheckpointStore(sys.argv[1], "job")
store.save({"k": 1, "blob": b"a" * 100_000}, step=1)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of a signal
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    store.save({"k": 2, "blob": b"b" * (4 << 20)}, step=2)
except CheckpointError as exc:
    print(exc)
"""


def test_a_write_the_os_refuses_leaves_no_partial_file(tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", _FSIZE, str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == (
        f"burst: could not save the checkpoint of step 2 in {tmp_path}: File too large (EFBIG); "
        "check the store or set burst.checkpoints.url to another one; the previous checkpoints "
        "are unchanged\n"
    )
    store = CheckpointStore(str(tmp_path), "job")
    assert _leftovers(tmp_path / "job") == set()
    assert store.restore()[0] == {"k": 1, "blob": b"a" * 100_000}


def test_an_s3_store_without_s3fs_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if it were not installed
    registry = sys.modules["fsspec.registry"]  # the module; `fsspec.registry` is its view
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    with pytest.raises(CheckpointError) as caught:
        CheckpointStore("s3://bucket/prefix", "job")
    assert str(caught.value) == (
        "burst: the checkpoint store s3://bucket/prefix needs s3fs, which is not installed: "
        "pip install s3fs"
    )


def test_an_unreadable_manifest_is_set_aside_and_no_old_file_is_deleted(tmp_path):
    store = CheckpointStore(str(tmp_path), "job", keep=1)
    old = store.save(state_of(1), step=1)
    (tmp_path / "job" / MANIFEST).write_text("{not json")
    with pytest.warns(CheckpointSkipped, match="manifest of job job is unreadable"):
        assert store.list() == []
    with pytest.warns(CheckpointSkipped, match="moved to manifest.json.unreadable-"):
        store.save(state_of(2), step=2)
    store.save(state_of(3), step=3)
    assert (tmp_path / "job" / f"{old.name}.ckpt").exists()  # the only copy of step 1
    assert store.restore()[0] == state_of(3)


# In a real kernel --------------------------------------------------------------------------

_SAVE_THREE = (
    "%%burst\nimport torch\nfor k in range(1, 4):\n"
    "    burst.checkpoint({'w': torch.ones(3) * k}, step=k)\n"
)

# Saves steps 1-3 and waits to be killed; the attempt after the kill resumes instead.
_RESUMING = """%%burst
import os, time, torch
state = burst.restore()
if state is None:
    for k in range(1, 4):
        burst.checkpoint({'w': torch.ones(3) * k, 'k': k}, step=k)
    print('saved, pid', os.getpid(), flush=True)
    while True:
        time.sleep(0.05)
print('resumed at', state['k'], state['w'].tolist(), flush=True)
"""


def test_checkpoints_listing_restore_and_resume_in_a_kernel(kernel, state_dir):
    kernel.ok(_SAVE_THREE)
    listing = kernel.ok("%burst checkpoints").text.strip().splitlines()
    assert listing[0].split()[:5] == ["job", "step", "saved", "size", "cell"]
    rows = [line.split() for line in listing[1:]]
    assert [row[1] for row in rows] == ["1", "2", "3"] and len({row[0] for row in rows}) == 1
    job = rows[0][0]
    assert kernel.ok(f"%burst checkpoints {job[:6]}").text.strip().splitlines() == listing

    restored = kernel.ok("%burst restore last step=2 as s")
    assert restored.stdout.strip() == f"burst: s = the checkpoint of job {job}, step 2"
    assert kernel.ok("print(s['w'].tolist())").stdout.strip() == "[2.0, 2.0, 2.0]"
    for line, expected in [
        ("%burst restore last step=two as s", "burst: write %burst restore JOB [step=K] as NAME"),
        ("%burst restore nope as s", "burst: 'nope' is not a job with checkpoints; jobs with"),
        ("%burst restore last step=9 as s", f"burst: job {job} has no valid checkpoint at step 9"),
    ]:
        run = kernel.execute(line)
        assert run.status == "error" and run.traceback == [run.evalue], run.traceback
        assert run.evalue.startswith(expected), run.evalue

    # The worker dies after step 3 was saved, and step 3's file was damaged on disk: the
    # cell runs again and burst.restore() gives it step 2, saying why.
    root = state_dir / "checkpoints"
    msg_id = kernel.kc.execute(_RESUMING)
    seen: dict = {}

    def kill_when_saved(msg):
        text = msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""
        if "saved, pid" in text and "pid" not in seen:
            seen["pid"] = int(text.split()[-1])
            (folder,) = [p for p in root.iterdir() if p.name != job]
            newest = json.loads((folder / MANIFEST).read_text())["checkpoints"][-1]
            assert newest["step"] == 3
            seen["skipped"] = newest["name"]
            _flip(folder / f"{newest['name']}.ckpt", at=100)
            os.kill(seen["pid"], signal.SIGKILL)

    run = kernel.collect(msg_id, timeout=120, on_message=kill_when_saved)
    assert run.status == "ok", run.error_text
    assert "resumed at 2 [2.0, 2.0, 2.0]" in run.stdout
    assert f"burst: skipped checkpoint {seen['skipped']} of job" in run.stderr
    assert "(step 3): its data does not match the sha256 in the manifest; using the " in run.stderr
    assert "checkpoint of step 2" in run.stderr
