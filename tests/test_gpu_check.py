"""``make gpu-check`` (``bench/gpu_check.py``): on a machine without a CUDA device it says so in
one line and exits 0 at once; with one it reads ``%burst estimate``'s own table, so a change
of that table shows here rather than on the next lent GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench import gpu_check
from jupyter_burst.estimate import estimate
from tests.harness import REPO


def test_gpu_check_without_a_cuda_device_says_so_in_one_line_and_exits_0():
    # CUDA_VISIBLE_DEVICES="" hides any GPU, as CUDA itself reads it: a machine without one.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "no CUDA device: gpu-check skipped\n",
        "",
    )
    assert elapsed < 15, f"took {elapsed:.1f} s: the skip must not start a kernel or import torch"


def test_the_gpu_check_reads_burst_estimates_own_table():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 8))
    found = estimate(model, optimizer="adam", batch=torch.randn(32, 256))
    read = gpu_check.parse_estimate(found.table())
    expected = {
        "plain": found.total,
        "DDP": found.per_gpu(1, "ddp"),
        "FSDP": found.per_gpu(1, "fsdp"),
    }
    for path, value in expected.items():  # the table rounds to 0.1 MiB
        assert abs(read[path] - value) <= 0.05 * (1 << 20), (path, read[path], value)


def test_the_gpu_check_table_marks_each_path_against_its_target():
    mib = 1 << 20
    text, ok = gpu_check.table(
        ["MLP"],
        [{"plain": 100 * mib, "DDP": 100 * mib, "FSDP": 120 * mib}],
        {"MLP": {"plain": 95 * mib, "DDP": 130 * mib}},  # FSDP not measured
        {"backend": "nccl"},
    )
    rows = text.splitlines()[2:]
    assert rows[0] == (
        "| MLP | plain (one GPU total) | 100.0 MiB | 95.0 MiB | +5.3% | within 15%: pass |"
    )
    assert rows[1].startswith("| MLP | DDP, nccl (DDP per GPU, gpus=1) | 100.0 MiB | 130.0 MiB")
    assert rows[1].endswith("| -23.1% | within 15%: **MISS** |")
    assert "not measured" in rows[2] and not ok
