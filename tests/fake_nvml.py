"""A stand-in for ``pynvml`` (NVML's bindings) with the GPUs a test asks for, on any machine."""

from __future__ import annotations

import types


def fake_nvml(
    names: list[str], memory_gib: float, busy_percent: list[float] | None = None
) -> types.ModuleType:
    """GPUs named ``names``, each of ``memory_gib`` GiB, at indices 0.. and UUIDs GPU-0...;
    ``busy_percent``: each one's utilisation (with as many percent of its memory in use)."""
    busy = busy_percent or [0.0] * len(names)
    nvml = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def handle_by_index(index: int) -> int:
        if not 0 <= index < len(names):
            raise NVMLError("Invalid Argument")
        return index

    def handle_by_uuid(uuid: bytes) -> int:
        text = uuid.decode()
        if not text.startswith("GPU-"):
            raise NVMLError("Not Found")
        return handle_by_index(int(text.removeprefix("GPU-")))

    nvml.NVMLError = NVMLError
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetCount = lambda: len(names)
    nvml.nvmlDeviceGetHandleByIndex = handle_by_index
    nvml.nvmlDeviceGetHandleByUUID = handle_by_uuid
    nvml.nvmlDeviceGetName = lambda handle: names[handle]
    nvml.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(
        total=int(memory_gib * (1 << 30)), used=int(memory_gib * (1 << 30) * busy[handle] / 100)
    )
    nvml.nvmlDeviceGetUtilizationRates = lambda handle: types.SimpleNamespace(
        gpu=busy[handle], memory=busy[handle]
    )
    return nvml
