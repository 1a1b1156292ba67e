"""This machine's NVIDIA GPUs, as the driver's management library (NVML) reports them.

NVML ships with the driver on Linux and Windows; ``pynvml`` (the ``nvidia-ml-py``
distribution) loads it on first use. That works the same on every platform, where the
driver's ``/proc`` folder is Linux's alone and ``nvidia-smi`` is a process per question.
No bindings, no driver, no GPU: no GPUs, quietly. Nothing here imports torch (seconds).

``pynvml`` is used directly rather than through ``distributed.diagnostics.nvml``: that one
is switched off with the dashboard's GPU metrics (``distributed.diagnostics.nvml: False``),
which must not hide a machine's GPUs from the cells, and its per-device helpers are private.
"""

from __future__ import annotations

import os
import threading
from types import ModuleType
from typing import NamedTuple


class Gpu(NamedTuple):
    name: str
    memory_gib: float


_lock = threading.Lock()
# (process id, the pynvml module) that NVML was initialised in: a forked child, or a test's
# stand-in module, initialises again.
_initialised: tuple[int, ModuleType] | None = None


def visible_devices() -> list[str] | None:
    """The devices ``CUDA_VISIBLE_DEVICES`` lists (``-1`` and blanks hide); None when unset."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]


def cuda_device_count() -> int:
    """The GPUs a process started here may use.

    ``CUDA_VISIBLE_DEVICES``, when set, is taken at its word (as CUDA does, without asking
    the driver): a slot's worker sees exactly its one GPU, and a machine can be told to show
    fewer GPUs than it has.
    """
    visible = visible_devices()
    if visible is not None:
        return len(visible)
    nvml = _nvml()
    if nvml is None:
        return 0
    try:
        return int(nvml.nvmlDeviceGetCount())
    except nvml.NVMLError:
        return 0


def devices() -> list[Gpu]:
    """The GPUs a process started here may use, by NVML: each one's model and memory."""
    nvml = _nvml()
    if nvml is None:
        return []
    visible = visible_devices()
    try:
        wanted = visible if visible is not None else range(nvml.nvmlDeviceGetCount())
        found = []
        for device in wanted:
            handle = _handle(nvml, device)
            if handle is None:
                continue
            memory = nvml.nvmlDeviceGetMemoryInfo(handle).total / (1 << 30)
            found.append(Gpu(_text(nvml.nvmlDeviceGetName(handle)), memory))
        return found
    except nvml.NVMLError:
        return []


class GpuUse(NamedTuple):
    name: str
    utilization: float  # percent of the last sample period the GPU was busy
    memory_used: int  # bytes
    memory_total: int  # bytes


def use(device: str) -> GpuUse | None:
    """How busy one GPU is now (a physical index or a ``GPU-``/``MIG-`` UUID, as a slot's
    ``CUDA_VISIBLE_DEVICES`` names it); None where NVML cannot say."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        handle = _handle(nvml, device)
        if handle is None:
            return None
        rates = nvml.nvmlDeviceGetUtilizationRates(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        name = _text(nvml.nvmlDeviceGetName(handle))
        return GpuUse(name, float(rates.gpu), int(memory.used), int(memory.total))
    except nvml.NVMLError:
        return None


def model() -> tuple[str, float]:
    """The GPU model and memory (GiB, the smallest GPU's); ``("CUDA GPU", 0.0)`` where NVML
    cannot say (then a GPU here never qualifies for a ``gpu_mem=`` it might meet)."""
    found = devices()
    if not found:
        return "CUDA GPU", 0.0
    return found[0].name, min(gpu.memory_gib for gpu in found)


def slot_devices(slots: int, gpus: int) -> list[str]:
    """Each slot's device: a GPU of its own while there are, then the CPU."""
    return [f"cuda:{i}" if i < gpus else "cpu" for i in range(slots)]


def _nvml() -> ModuleType | None:
    """``pynvml``, initialised in this process; None where there is no NVML to be had."""
    global _initialised
    try:
        import pynvml
    except ImportError:
        return None
    with _lock:
        if _initialised != (os.getpid(), pynvml):
            try:
                pynvml.nvmlInit()
            except (pynvml.NVMLError, OSError):
                return None
            _initialised = (os.getpid(), pynvml)
    return pynvml


def _handle(nvml: ModuleType, device: int | str):
    """The NVML handle of a device given as an index or a ``GPU-``/``MIG-`` UUID; None when
    the driver has no such device (CUDA would not show it either)."""
    try:
        if isinstance(device, int) or device.isdigit():
            return nvml.nvmlDeviceGetHandleByIndex(int(device))
        if device.startswith(("GPU-", "MIG-")):
            return nvml.nvmlDeviceGetHandleByUUID(device.encode())  # bytes: every binding
    except nvml.NVMLError:
        return None
    return None


def _text(value: str | bytes) -> str:
    """Older bindings answer bytes, newer ones str."""
    return value.decode() if isinstance(value, bytes) else value
