"""How much GPU memory training a model takes, per GPU, under DDP and FSDP, and what to ask for.

Parameters, gradients and optimizer state are counted exactly from the model (and the
optimizer's known state layout). Activations are measured: one forward/backward on a
sample batch, on a copy of the model, on the CPU (the torch profiler's allocation events)
or, for a model on the meta device, by adding up the tensors autograd saves. One optimizer
step on the copy measures the optimizer's temporary buffers too.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from jupyter_burst.errors import BurstError

_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# Per optimizer: (state tensors shaped like each parameter, fp32 scalar tensors per parameter)
_OPTIMIZERS = {
    "adam": (2, 1),
    "adamw": (2, 1),
    "sgd": (0, 0),
    "momentum": (1, 0),
    "rmsprop": (1, 1),
    "adagrad": (1, 1),
    "none": (0, 0),
}
GPU_SIZES_GIB = (16, 24, 40, 48, 80, 141)
RESERVED_BYTES = 1 << 30  # CUDA context and allocator slack per GPU


@dataclass
class MemoryEstimate:
    """The bytes a training step holds, and how they split across GPUs."""

    parameters: int
    trainable: int
    param_bytes: int
    buffer_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    step_bytes: (
        int  # what a whole step adds beyond the gradients (activations and optimizer temporaries)
    )
    largest_layer_bytes: int
    optimizer: str
    precision: str
    measured_on: str
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Peak bytes of one training step on one device (no data parallelism)."""
        return (
            self.param_bytes
            + self.buffer_bytes
            + self.optimizer_bytes
            + self.grad_bytes
            + max(self.activation_bytes, self.step_bytes)
        )

    def per_gpu(self, gpus: int, strategy: str = "ddp") -> int:
        """Peak bytes on each of ``gpus`` GPUs (activations for a batch per GPU as measured)."""
        if strategy == "ddp":
            # DDP keeps a second copy of the gradients in its communication buckets.
            return self.total + (self.grad_bytes if gpus > 1 else 0)
        if strategy == "fsdp":
            sharded = (self.param_bytes + self.grad_bytes + self.optimizer_bytes) / gpus
            gathered = 2 * self.largest_layer_bytes  # the unit being computed and the next
            return int(
                sharded
                + gathered
                + self.buffer_bytes
                + max(self.activation_bytes, self.step_bytes / gpus)
            )
        raise ValueError(f"unknown strategy {strategy!r}; use 'ddp' or 'fsdp'")

    def recommend(self, max_gpus: int = 8) -> tuple[int, int, str]:
        """(GPUs, GiB per GPU, strategy): the fewest GPUs, then the smallest GPU, that fit."""
        for gpus in range(1, max_gpus + 1):
            for size in GPU_SIZES_GIB:
                usable = size * (1 << 30) - RESERVED_BYTES
                for strategy in ("ddp", "fsdp") if gpus > 1 else ("ddp",):
                    if self.per_gpu(gpus, strategy) <= usable:
                        return gpus, size, strategy
        return max_gpus, GPU_SIZES_GIB[-1], "fsdp"

    def table(self, max_gpus: int = 8) -> str:
        rows = [
            f"parameters      {self.parameters:,} ({self.trainable:,} trainable), {self.precision}",
            f"  weights       {_gib(self.param_bytes)}   buffers {_gib(self.buffer_bytes)}",
            f"  gradients     {_gib(self.grad_bytes)}",
            f"  optimizer     {_gib(self.optimizer_bytes)}   ({self.optimizer})",
            f"  activations   {_gib(self.activation_bytes)}   (measured on {self.measured_on})",
            f"  step peak     {_gib(self.step_bytes)}   (beyond the gradients, forward to optimizer step)",
            f"one GPU total   {_gib(self.total)}",
            "",
            "GPUs   DDP per GPU   FSDP per GPU",
        ]
        for gpus in range(1, max_gpus + 1):
            rows.append(
                f"{gpus:>4}   {_gib(self.per_gpu(gpus, 'ddp')):>11}   {_gib(self.per_gpu(gpus, 'fsdp')):>12}"
            )
        gpus, size, strategy = self.recommend(max_gpus)
        rows += ["", f"recommended: gpus={gpus} with >= {size} GiB each ({strategy.upper()})"]
        return "\n".join(rows + self.notes)

    def __str__(self) -> str:
        return self.table()

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self.table())


def _gib(n: float) -> str:
    if n >= 1 << 30:
        return f"{n / (1 << 30):.2f} GiB"
    return f"{n / (1 << 20):.1f} MiB"


def optimizer_state_bytes(model, optimizer: str, precision: str = "fp32") -> int:
    """The optimizer's state after its first step, exactly, for torch's built-in layouts."""
    per_param, scalars = _optimizer_layout(optimizer)
    size = _BYTES[precision]
    trainable = [p for p in model.parameters() if p.requires_grad]
    return sum(per_param * p.numel() * size + scalars * 4 for p in trainable)


def _optimizer_layout(optimizer: str) -> tuple[int, int]:
    try:
        return _OPTIMIZERS[optimizer.lower()]
    except KeyError:
        raise BurstError(
            f"unknown optimizer '{optimizer}'; known: {', '.join(sorted(_OPTIMIZERS))}"
        ) from None


def estimate(
    model, optimizer: str = "adam", batch: Any = None, precision: str = "fp32", loss=None
) -> MemoryEstimate:
    """Estimate the memory of training ``model`` with ``optimizer`` on batches like ``batch``.

    ``batch`` is one input (or a tuple of inputs) of the size one GPU sees; without it,
    activations are not counted (and the estimate says so). ``loss`` maps the model's output
    to a scalar (default: the mean of the output).
    """
    import torch

    if precision not in _BYTES:
        raise BurstError(f"precision={precision} is not known; use fp32, bf16 or fp16")
    _optimizer_layout(optimizer)
    size = _BYTES[precision]
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    buffers = list(model.buffers())
    scale = size / 4
    notes: list[str] = []

    param_bytes = sum(p.numel() * size for p in params)
    buffer_bytes = sum(b.numel() * b.element_size() for b in buffers)
    grad_bytes = sum(p.numel() * size for p in trainable)
    optimizer_bytes = optimizer_state_bytes(model, optimizer, precision)
    largest = max(
        (sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0
    )

    on_meta = any(p.is_meta for p in params)
    activation_bytes = step_bytes = 0
    if batch is None:
        notes.append("note: no batch= given, so activations are not counted")
        measured_on = "nothing"
    elif on_meta:
        activation_bytes = int(_saved_tensor_bytes(model, batch, loss) * scale)
        measured_on = "meta device"
        notes.append("note: on the meta device only tensors saved for backward are counted")
    else:
        fwd_bwd, whole_step = _measure_on_cpu(model, batch, loss, optimizer)
        # Both measurements include the gradients made during backward; count those once.
        activation_bytes = int(max(fwd_bwd * scale - grad_bytes, 0))
        step_bytes = int(max(whole_step * scale - grad_bytes, 0))
        measured_on = "cpu"
    del torch
    return MemoryEstimate(
        parameters=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in trainable),
        param_bytes=param_bytes,
        buffer_bytes=buffer_bytes,
        grad_bytes=grad_bytes,
        optimizer_bytes=optimizer_bytes,
        activation_bytes=activation_bytes,
        step_bytes=step_bytes,
        largest_layer_bytes=largest * size,
        optimizer=optimizer,
        precision=precision,
        measured_on=measured_on,
        notes=notes,
    )


def _inputs(batch) -> tuple:
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)


def _loss(output, loss):
    if loss is not None:
        return loss(output)
    if isinstance(output, (tuple, list)):
        output = output[0]
    return output.float().mean()


def _measure_on_cpu(model, batch, loss, optimizer: str) -> tuple[int, int]:
    """(peak bytes added by forward+backward, by a whole steady training step), on a copy."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    work = copy.deepcopy(model).cpu().train()
    inputs = tuple(t.cpu() if torch.is_tensor(t) else t for t in _inputs(batch))
    opt = _make_optimizer(work, optimizer)

    def step(with_optimizer: bool) -> None:
        _loss(work(*inputs), loss).backward()
        if with_optimizer and opt is not None:
            opt.step()

    step(True)  # the optimizer makes its state on the first step; the second is the steady one
    work.zero_grad(set_to_none=True)
    with _profiler_quiet(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(False)
    fwd_bwd = _peak(prof)
    work.zero_grad(set_to_none=True)
    with _profiler_quiet(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(True)
    return fwd_bwd, _peak(prof)


def _make_optimizer(model, optimizer: str):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    name = optimizer.lower()
    if name == "none" or not params:
        return None
    factory = {
        "adam": lambda: torch.optim.Adam(params),
        "adamw": lambda: torch.optim.AdamW(params),
        "sgd": lambda: torch.optim.SGD(params, lr=0.01),
        "momentum": lambda: torch.optim.SGD(params, lr=0.01, momentum=0.9),
        "rmsprop": lambda: torch.optim.RMSprop(params),
        "adagrad": lambda: torch.optim.Adagrad(params),
    }[name]
    return factory()


def measure_step_peak(model, batch, optimizer: str = "adam", loss=None) -> int:
    """Peak bytes of a plain training loop's steady step on the CPU, as the profiler sees them.

    What an estimate is checked against: weights, buffers and optimizer state held, plus the
    most that one forward, backward and optimizer step allocates on top.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    model = copy.deepcopy(model).cpu().train()
    inputs = _inputs(batch)
    opt = _make_optimizer(model, optimizer)
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        _loss(model(*inputs), loss).backward()
        if opt is not None:
            opt.step()
    model.zero_grad(set_to_none=True)
    state = (
        0
        if opt is None
        else sum(v.nbytes for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    )
    held = sum(t.nbytes for t in list(model.parameters()) + list(model.buffers())) + state
    with _profiler_quiet(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _loss(model(*inputs), loss).backward()
        if opt is not None:
            opt.step()
    return held + _peak(prof)


# What torch's profiler (Kineto) writes to the process's stderr on every start and stop:
# "USDT:2026-12-06 17:45:22 15556:15556 SyncActivityProfilerHandler.cpp:52] profiler_start"
# (older versions: "STAGE:... ActivityProfilerController.cpp:312] Completed Stage: Warm Up").
_PROFILER_CHATTER = re.compile(r"^(USDT|STAGE):")


@contextlib.contextmanager
def _profiler_quiet() -> Iterator[None]:
    """The profiler's own log lines kept out of the user's cell: the native stderr (file
    descriptor 2, which a kernel shows in the cell) goes to a file while the profiler runs;
    anything else written there is passed on afterwards."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 to borrow: say what it says
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [
                line
                for line in caught.read().decode(errors="replace").splitlines(keepends=True)
                if not _PROFILER_CHATTER.match(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))


def _peak(prof) -> int:
    events = sorted(
        (e for e in prof.events() if e.cpu_memory_usage), key=lambda e: e.time_range.start
    )
    current = peak = 0
    for event in events:
        current += event.cpu_memory_usage
        peak = max(peak, current)
    return peak


def _saved_tensor_bytes(model, batch, loss) -> int:
    import torch

    weights = {id(t.untyped_storage()) for t in list(model.parameters()) + list(model.buffers())}
    seen: dict[int, int] = {}
    keep: list = []

    def pack(tensor):
        storage = tensor.untyped_storage()
        if id(storage) not in weights:
            keep.append(storage)
            seen[id(storage)] = tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        output = model(*_inputs(batch))
    outputs = output if isinstance(output, (tuple, list)) else (output,)
    return sum(seen.values()) + sum(
        o.numel() * o.element_size() for o in outputs if torch.is_tensor(o)
    )


def needs_sharding(model, gpu_bytes: int) -> bool:
    """Whether one full replica (weights, gradients, Adam state) would not fit ``gpu_bytes``."""
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return size + trainable + 2 * trainable > gpu_bytes * 0.9


def gpus_for(estimate_: MemoryEstimate, max_gpus: int = 8) -> int:
    return estimate_.recommend(max_gpus)[0]


__all__ = [
    "MemoryEstimate",
    "estimate",
    "gpus_for",
    "measure_step_peak",
    "needs_sharding",
    "optimizer_state_bytes",
]
