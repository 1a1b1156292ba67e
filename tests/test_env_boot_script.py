"""The environment part of a node's boot script (clusters/env/boot.py), run by bash as a
node runs it, with a stand-in ``uv`` on its PATH: a uv that crashed is run once more (a
segfault after every package was installed was seen on an emulated machine), a uv that
refused the lock is not (its error is the boot's)."""

from __future__ import annotations

import subprocess

from jupyter_burst.clusters.env.boot import EnvBoot, render
from jupyter_burst.clusters.env.lock import NodeLock
from jupyter_burst.clusters.env.spec import EnvSpec

# A uv that records its calls, makes the venv it is asked for, and ends `pip sync` as told:
# "crash-once" by SIGSEGV the first time, "refuse" with exit 2 every time.
FAKE_UV = """#!/bin/bash
echo "$*" >> "$ROOT/uv-calls"
case "$1 $2" in
  "venv --quiet") mkdir -p "${@: -1}/bin" ;;
  "pip sync")
    if [ "$UV_BEHAVIOUR" = refuse ]; then echo "No solution found" >&2; exit 2; fi
    if [ ! -e "$ROOT/crashed" ]; then touch "$ROOT/crashed"; kill -SEGV $$; fi ;;
esac
"""


def _boot(tmp_path, behaviour: str) -> subprocess.CompletedProcess:
    spec = EnvSpec(python="3.11", requirements=("tabulate==0.9.0",), packages={"tabulate": "0.9.0"})
    lock = NodeLock(spec=spec, lines=("tabulate==0.9.0",), wheels=(), hash="0" * 16)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uv").write_text(FAKE_UV)
    (bin_dir / "uv").chmod(0o755)
    root = tmp_path / "root"
    root.mkdir()
    script = f'set -euo pipefail\nburst_phase() {{ echo "phase $*"; }}\n{render(EnvBoot(lock, ""))}'
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "ROOT": str(root), "UV_BEHAVIOUR": behaviour},
    )


def test_a_uv_that_crashed_is_run_once_more_and_the_environment_is_built(tmp_path):
    done = _boot(tmp_path, "crash-once")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "burst-env: uv ended by signal 11; running it once more" in done.stdout
    assert "built with uv" in done.stdout
    calls = (tmp_path / "root" / "uv-calls").read_text().splitlines()
    assert [c.split()[:2] for c in calls] == [["venv", "--quiet"], ["pip", "sync"], ["pip", "sync"]]


def test_a_uv_that_refused_the_lock_is_not_run_again_and_the_boot_fails(tmp_path):
    done = _boot(tmp_path, "refuse")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "No solution found" in done.stderr and "running it once more" not in done.stdout
    calls = (tmp_path / "root" / "uv-calls").read_text().splitlines()
    assert [c.split()[:2] for c in calls] == [["venv", "--quiet"], ["pip", "sync"]]
