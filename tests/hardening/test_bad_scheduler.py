"""A cluster whose scheduler hangs or answers garbage: a clear line, a new cluster, the kernel alive."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

import pytest

from tests.harness import burst_kernel, wait_for

FAKE = pathlib.Path(__file__).with_name("fake_scheduler.py")


@pytest.mark.parametrize("mode", ["hang", "garbage"])
def test_a_scheduler_that_hangs_or_answers_garbage_is_replaced(state_dir, workdir, mode):
    fake = subprocess.Popen([sys.executable, str(FAKE), mode], stdout=subprocess.PIPE, text=True)
    try:
        port = int(fake.stdout.readline())
        record = {
            "id": "default-fake",
            "name": "default",
            "provider": "local",
            "scheduler": f"tcp://127.0.0.1:{port}",
            "pid": fake.pid,  # alive: the record looks like a running cluster
            "host": "fake",
            "slots": 1,
            "devices": ["cpu"],
            "idle": 20.0,
            "started": time.time(),
        }
        (state_dir / "clusters").mkdir(exist_ok=True)
        (state_dir / "clusters" / "default.json").write_text(json.dumps(record))
        env = {"DASK_BURST__CONNECT_TIMEOUT": "2"}
        with burst_kernel(state_dir, workdir, env) as kernel:
            started = time.monotonic()
            run = kernel.ok("%%burst\nz = 41 + 1\n", timeout=60)
            assert time.monotonic() - started < 30
            (line,) = [t for t in run.stderr.splitlines() if "did not answer" in t]
            reason = (
                f"the scheduler at tcp://127.0.0.1:{port} did not answer within 2 s"
                if mode == "hang"
                else f"what answers at tcp://127.0.0.1:{port} is not a Dask scheduler"
            )
            assert line.startswith(f"burst: cluster 'default' did not answer ({reason}")
            assert line.endswith("it is stopped and a new one started")
            assert kernel.ok("print(z)").stdout.strip() == "42"
            wait_for(lambda: fake.poll() is not None, 10, "the stale scheduler to be stopped")
    finally:
        if fake.poll() is None:
            fake.kill()
        fake.wait()
