"""A checkpoint written to a disk that fills up: one clear line, the checkpoint before it
intact and restorable. The disk is real: a 2 MiB tmpfs the test mounts (root; skipped
elsewhere, except under CI)."""

from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import Iterator

import pytest

from jupyter_burst.store.checkpoints import CheckpointStore
from jupyter_burst.store.ledger import Ledger
from tests.harness import burst_kernel, needs


@pytest.fixture
def small_disk(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    needs(None if os.geteuid() == 0 else "mounting a small disk needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


CELL = """%%burst
import os
burst.checkpoint({'step': 1, 'weights': b'w' * 100_000}, step=1)
burst.checkpoint({'step': 2, 'weights': os.urandom(4 * 2**20)}, step=2)
after = 'never'
"""


def test_a_checkpoint_on_a_full_disk_is_one_line_and_the_one_before_stays(
    state_dir, workdir, small_disk
):
    with burst_kernel(state_dir, workdir, {"DASK_BURST__CHECKPOINTS__URL": str(small_disk)}) as k:
        run = k.execute(CELL)
        # The cell's own line and the one line that says what to do; none of our frames.
        assert run.status == "error" and "----> 4 burst.checkpoint" in run.error_text
        assert "jupyter_burst" not in run.error_text, run.error_text
        assert run.evalue.startswith(
            f"burst: could not save the checkpoint of step 2 in {small_disk}: No space left on "
            "device (ENOSPC); free space there or set burst.checkpoints.url to a store with "
            "room; the previous checkpoints are unchanged"
        ), run.evalue
        assert k.ok("print('after' in dir())").stdout.strip() == "False"
        job = Ledger(state_dir / "ledger.sqlite").query("SELECT id FROM jobs")[0]["id"]
        listed = k.ok("%burst checkpoints").text
        assert job in listed and "step" in listed, listed
    store = CheckpointStore(str(small_disk), job)
    assert [c.step for c in store.list()] == [1]
    state, checkpoint = store.restore()
    assert state == {"step": 1, "weights": b"w" * 100_000} and checkpoint.step == 1
    partial = [p.name for p in (small_disk / job).iterdir() if p.name.startswith(".")]
    assert not partial, partial  # nothing half-written fills the disk
