"""``python -m bench.gpu_check [--write] [--budget SECONDS]`` (``make gpu-check``): what only a
real GPU can show, through a real kernel, in a few minutes.

On the local provider, in a real IPython kernel with ``%load_ext jupyter_burst``:

- ``%burst estimate`` of the three reference models of ``bench/estimate.py`` (Adam, fp32),
  as a user runs it in the notebook;
- one ``%%burst gpus=1`` cell on the slot's GPU that makes its process group itself,
  ``init_process_group("nccl")`` from the rank's torchrun variables (``gpus=1`` makes none
  before the cell, ``worker/process_group.py``), checks an NCCL ``all_reduce``, and measures
  ``torch.cuda.max_memory_allocated`` over a steady training step of each model three ways:
  plain, under DDP (NCCL) and under FSDP;
- one table: each estimate (one GPU; DDP and FSDP per GPU at gpus=1) against what was
  measured. ``--write`` puts it into bench/README.md.

A measured peak counts what a steady step holds and adds, as the estimate does: the peak
minus what was allocated before the model came (cuBLAS/cuDNN workspaces, made by a warm-up
first) and minus the input batch. Small models, three steps each: the run takes a minute or
two on one GPU, and stops at ``--budget`` seconds (default 280) whatever happens.

Without a CUDA device it says ``no CUDA device: gpu-check skipped`` and exits 0 at once; on
a machine whose GPUs this torch cannot use it says why and exits 2. Exit 1: a path failed or
an estimate missed its target.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
import time

from bench.common import REPO, burst_processes, reap

README = pathlib.Path(__file__).with_name("README.md")
START, END = "<!-- gpu-check:start -->", "<!-- gpu-check:end -->"
TARGET = 0.15  # |estimate - measured| / measured, as bench/estimate.py's CPU rows
SKIPPED = "no CUDA device: gpu-check skipped"

SETUP = """\
from bench.estimate import _models as reference_models
reference = list(reference_models().items())
(m0, b0), (m1, b1), (m2, b2) = (pair for _, pair in reference)
"""

# The rank's cell: all its work in one function, so that only `gpu_check` (numbers) and the
# function come back to the notebook, no CUDA tensor.
GPU_CELL = """\
%%burst gpus=1
def measure_on_the_gpu(reference, burst):
    import copy, gc, os, time
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.nn.parallel import DistributedDataParallel

    started = time.perf_counter()
    device = burst.device
    if device.type != "cuda":
        raise RuntimeError(f"the rank's device is {device}, not a GPU (CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
    torch.cuda.set_device(device)
    # gpus=1 makes no group before the cell: this call makes it, from the torchrun variables
    dist.init_process_group("nccl")
    probe = torch.full((4,), 2.0, device=device)
    dist.all_reduce(probe)
    nccl = torch.cuda.nccl.version()
    found = {
        "backend": str(dist.get_backend()),
        "all_reduce": float(probe.sum()),
        "world_size": dist.get_world_size(),
        "gpu": torch.cuda.get_device_name(device),
        "device": str(device),
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl),
        "peaks": {},
    }
    # cuBLAS's and cuDNN's workspaces are made once, here, not inside a model's measurement
    warm = torch.randn(8, 3, 16, 16, device=device, requires_grad=True)
    torch.nn.functional.conv2d(warm, torch.randn(4, 3, 3, 3, device=device)).sum().backward()
    (torch.randn(256, 256, device=device) @ torch.randn(256, 256, device=device)).sum().item()
    del warm, probe

    def step_peak(model, batch, wrap):
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        net = wrap(copy.deepcopy(model).to(device).train())
        x = batch.to(device)
        opt = torch.optim.Adam(net.parameters())
        for _ in range(2):  # the first step makes Adam's state; the second is a steady one
            opt.zero_grad(set_to_none=True)
            net(x).float().mean().backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        net(x).float().mean().backward()
        opt.step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device) - before - x.nelement() * x.element_size()
        del net, opt, x
        return int(peak)

    paths = {
        "plain": lambda m: m,
        "DDP": lambda m: DistributedDataParallel(m, device_ids=[torch.cuda.current_device()]),
        "FSDP": lambda m: FullyShardedDataParallel(m, device_id=torch.cuda.current_device()),
    }
    for name, (model, batch) in reference:
        found["peaks"][name] = {path: step_peak(model, batch, wrap) for path, wrap in paths.items()}
    found["seconds"] = time.perf_counter() - started
    return found


gpu_check = measure_on_the_gpu(reference, burst)
"""

_TOTAL = re.compile(r"one GPU total\s+([\d.,]+) (MiB|GiB)")
_ONE_GPU = re.compile(r"^\s*1\s+([\d.,]+) (MiB|GiB)\s+([\d.,]+) (MiB|GiB)\s*$", re.MULTILINE)


USAGE_CELL = (
    "import json\nfrom jupyter_burst.driver import cluster\n"
    "print(json.dumps([u for e in cluster.status() for u in (e.get('usage') or [])]))"
)


def cuda_here() -> tuple[bool, str]:
    """(whether the check can run, why not): NVML first (no torch import: a CPU machine says
    so in a tenth of a second), then whether this torch can use the GPU it sees."""
    from jupyter_burst import gpus

    count = gpus.cuda_device_count()
    if count == 0:
        return False, ""
    try:
        import torch
    except ImportError:
        return False, f"NVML sees {count} GPU(s) but torch is not installed"
    if not torch.cuda.is_available():
        return False, (
            f"NVML sees {count} GPU(s) but torch {torch.__version__} cannot use CUDA; "
            "install a CUDA build of torch (same version, https://download.pytorch.org/whl/)"
        )
    return True, ""


def _bytes(number: str, unit: str) -> float:
    return float(number.replace(",", "")) * (1 << (30 if unit == "GiB" else 20))


def parse_estimate(text: str) -> dict[str, float]:
    """From ``%burst estimate``'s table: one GPU total, and DDP / FSDP per GPU at gpus=1."""
    total, one = _TOTAL.search(text), _ONE_GPU.search(text)
    if total is None or one is None:
        raise ValueError(f"%burst estimate printed no table: {text[-300:]!r}")
    return {
        "plain": _bytes(*total.groups()),
        "DDP": _bytes(one.group(1), one.group(2)),
        "FSDP": _bytes(one.group(3), one.group(4)),
    }


def _mib(n: float) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def table(names: list[str], estimates: list[dict], measured: dict, info: dict) -> tuple[str, bool]:
    """The markdown table, and whether every row met its target."""
    rows = [
        "| model | path | `%burst estimate` | `torch.cuda.max_memory_allocated` | error | target |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    ok = True
    labels = {
        "plain": "plain (one GPU total)",
        "DDP": f"DDP, {info.get('backend', '?')} (DDP per GPU, gpus=1)",
        "FSDP": "FSDP (FSDP per GPU, gpus=1)",
    }
    for name, estimate in zip(names, estimates, strict=True):
        for path, label in labels.items():
            got = measured.get(name, {}).get(path)
            if got is None:
                rows.append(f"| {name} | {label} | {_mib(estimate[path])} | not measured | | |")
                ok = False
                continue
            error = (estimate[path] - got) / got if got else float("inf")
            met = abs(error) <= TARGET
            ok = ok and met
            rows.append(
                f"| {name} | {label} | {_mib(estimate[path])} | {_mib(got)} | {error:+.1%} "
                f"| within {TARGET:.0%}: {'pass' if met else '**MISS**'} |"
            )
    return "\n".join(rows), ok


def write_readme(body: str) -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{body}\n{END}{tail}")


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, most: float) -> float:
        return max(1.0, min(most, self.end - time.monotonic()))


def run(budget: float, echo) -> tuple[str, bool]:
    """The check, through a real kernel; (the report, whether everything passed)."""
    from jupyter_burst.tools.smoke import Notebook

    deadline = Deadline(budget)
    root = pathlib.Path(tempfile.mkdtemp(prefix="burst-gpu-check-"))
    state_dir = root / "state"
    env = {
        **os.environ,
        "DASK_BURST__STATE_DIR": str(state_dir),
        "DASK_BURST__PROVIDERS": "[local]",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    notebook = None
    try:
        notebook = Notebook(env, echo)

        def cell(name: str, code: str, most: float) -> str:
            step = notebook.run(name, code, deadline.left(most))
            if not step.ok:
                raise RuntimeError(f"{name}: {step.error}")
            return step.output

        cell("load", "%load_ext jupyter_burst", 60)
        cell("models", SETUP, 60)
        names = json.loads(
            cell("names", "import json; print(json.dumps([n for n, _ in reference]))", 30)
        )
        estimates = [
            parse_estimate(cell(f"estimate {i}", f"%burst estimate m{i} optimizer=adam batch=b{i}", 90))
            for i in range(len(names))
        ]  # fmt: skip
        error = ""
        try:
            cell("gpus=1", GPU_CELL, 240)
            info = json.loads(cell("results", "print(json.dumps(gpu_check))", 30))
            # The sidebar's GPU panel: the slot's heartbeat sample, read by NVML on the worker.
            slots = json.loads(cell("usage", USAGE_CELL, 30))
        except RuntimeError as exc:
            error, info, slots = str(exc), {}, []
        text, ok = table(names, estimates, info.get("peaks", {}), info)
        if info:
            head = (
                f"GPU: {info['gpu']} (`{info['device']}` in the rank, CUDA_VISIBLE_DEVICES="
                f"{info['visible']}); torch {info['torch']}, CUDA {info['cuda']}, NCCL "
                f"{info['nccl']}; process group `{info['backend']}`, world size "
                f"{info['world_size']}, all_reduce of 4 x 2.0 summed to {info['all_reduce']:g}; "
                f"the cell's measurements took {info['seconds']:.1f} s."
            )
            ok = ok and info["backend"] == "nccl" and info["all_reduce"] == 8.0
            gpu = next((u["gpu"] for u in slots if u.get("gpu")), None)
            if gpu:
                head += (
                    f" The slot's heartbeat sample (the sidebar's GPU panel): {gpu['name']}, "
                    f"{gpu['utilization']:g}% busy, {gpu['memory_used'] / 2**30:.1f} of "
                    f"{gpu['memory_total'] / 2**30:.1f} GiB in use."
                )
            else:
                head += f" No GPU in the slots' heartbeat samples: {slots}"
            ok = ok and bool(gpu) and gpu["memory_total"] > 0
        else:
            head = f"The gpus=1 cell failed: {error}"
        return f"{head}\n\n{text}", ok and not error
    finally:
        try:
            if notebook is not None and notebook.km.is_alive():
                notebook.run("down", "%burst down", 60)
        finally:
            if notebook is not None:
                notebook.close()
            leaked = reap(burst_processes(state_dir), state_dir, timeout=30)
            if leaked:
                echo(f"gpu-check: killed cluster processes left behind: {leaked}")
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu_check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--write", action="store_true", help="put the table into bench/README.md")
    parser.add_argument(
        "--budget", type=float, default=280, help="seconds the whole check may take (default 280)"
    )
    parser.add_argument("--verbose", action="store_true", help="echo every cell's output")
    args = parser.parse_args(argv)
    usable, why = cuda_here()
    if not usable:
        if why:
            print(f"gpu-check: {why}", file=sys.stderr)
            return 2
        print(SKIPPED)
        return 0
    started = time.monotonic()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    def echo(text: str) -> None:
        if args.verbose or text.startswith((">>> ", "gpu-check:")):
            print(text, file=sys.stderr, flush=True)

    try:
        report, ok = run(args.budget, echo)
    except Exception as exc:  # a step that failed: one line, the cluster already stopped
        print(f"gpu-check: FAIL: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    body = f"Command: `python -m bench.gpu_check` — run {when}, took {elapsed:.0f} s.\n\n{report}"
    print(body)
    if args.write:
        write_readme(body)
        print(f"gpu-check: wrote {README}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
