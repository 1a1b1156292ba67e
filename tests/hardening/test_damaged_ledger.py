"""A damaged ledger: rebuilt from what still reads, with one warning line; checkpoints untouched."""

from __future__ import annotations

import pathlib
import subprocess
import sys

from jupyter_burst.store.ledger import open_ledger


def _ledger_with_history(state_dir: pathlib.Path, jobs: int) -> None:
    ledger = open_ledger(state_dir)
    for i in range(jobs):
        ledger.job_started(f"job{i:04d}", "c1", "kernel", f"x = {i}", {}, notebook="nb.ipynb")
        ledger.add_lines(f"job{i:04d}", [(float(i), 0, "stdout", "line " * 200)])
        ledger.job_ended(f"job{i:04d}", "done")
    ledger.close()


def _open_in_a_new_process(
    state_dir: pathlib.Path, job: str = "after"
) -> subprocess.CompletedProcess:
    """What the next kernel sees: it opens the ledger and lists the jobs it finds."""
    code = (
        "import sys, pathlib\n"
        "from jupyter_burst.store.ledger import open_ledger\n"
        "ledger = open_ledger(pathlib.Path(sys.argv[1]))\n"
        "print(len(ledger.query('SELECT id FROM jobs')))\n"
        "ledger.job_started(sys.argv[2], 'c1', 'kernel', 'y = 1', {})\n"
        "print(ledger.job(sys.argv[2])['status'])\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(state_dir), job],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _moved_aside(state_dir: pathlib.Path) -> list[pathlib.Path]:
    found = state_dir.glob("ledger.sqlite.unreadable-*")
    return [p for p in found if not p.name.endswith(("-wal", "-shm"))]


def _checkpoint(state_dir: pathlib.Path) -> pathlib.Path:
    path = state_dir / "checkpoints" / "job0001" / "step-3.ckpt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights" * 1000)
    return path


def test_a_file_that_is_not_a_ledger_is_moved_aside_and_a_new_one_works(state_dir):
    (state_dir / "ledger.sqlite").write_bytes(b"\x00garbage, not SQLite" * 500)
    checkpoint = _checkpoint(state_dir)
    run = _open_in_a_new_process(state_dir)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0", "running"]
    (warning,) = [line for line in run.stderr.splitlines() if line.startswith("burst:")]
    assert warning.startswith(
        f"burst: the ledger {state_dir / 'ledger.sqlite'} could not be read ("
    )
    assert "started with the 0 records that could still be read" in warning
    assert "checkpoints are files of their own and were not touched" in warning
    (aside,) = _moved_aside(state_dir)
    assert aside.read_bytes().startswith(b"\x00garbage")
    assert checkpoint.read_bytes() == b"weights" * 1000


def test_a_half_written_ledger_keeps_the_records_that_still_read(state_dir):
    _ledger_with_history(state_dir, jobs=300)
    path = state_dir / "ledger.sqlite"
    for side in ("ledger.sqlite-wal", "ledger.sqlite-shm"):
        (state_dir / side).unlink(missing_ok=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the power went out half-way through a copy
    checkpoint = _checkpoint(state_dir)
    run = _open_in_a_new_process(state_dir)
    assert run.returncode == 0, run.stderr
    jobs_kept, status = run.stdout.split()
    assert status == "running"
    assert 0 < int(jobs_kept) <= 300, run.stdout  # what the first half held
    assert "could not be read (database disk image is malformed" in run.stderr
    assert len(_moved_aside(state_dir)) == 1
    assert checkpoint.read_bytes() == b"weights" * 1000
    # The next process finds a sound ledger: no warning, nothing moved again.
    again = _open_in_a_new_process(state_dir, job="later")
    assert again.returncode == 0 and "burst:" not in again.stderr, again.stderr
    assert len(_moved_aside(state_dir)) == 1
