"""What a slot uses, as the sidebar's GPU panel shows it: each worker samples its own slot
(its GPU by NVML, where it has one), and a GPU at rest while its slot runs a task is flagged.

NVML is the stand-in of tests/fake_nvml.py (no GPU here); the real one runs in
`make gpu-check` where a GPU is lent."""

from __future__ import annotations

import sys

from jupyter_burst.server.api import usage_rows
from jupyter_burst.worker import usage
from tests.fake_nvml import fake_nvml


def test_a_gpu_slot_samples_its_own_gpu_and_a_cpu_slot_has_none(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(["A10G", "H100"], 80, [7.0, 93.0]))
    monkeypatch.setenv("JUPYTER_BURST_DEVICE", "cuda:1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # what node/slots.py gives slot 1
    gpu_slot = usage.sample()
    assert gpu_slot["device"] == "cuda:1" and gpu_slot["rss"] > 0
    assert gpu_slot["gpu"] == {
        "name": "H100",
        "utilization": 93.0,
        "memory_used": int(80 * (1 << 30) * 0.93),
        "memory_total": 80 * (1 << 30),
    }
    monkeypatch.setenv("JUPYTER_BURST_DEVICE", "cpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cpu_slot = usage.sample()
    assert cpu_slot["gpu"] is None and cpu_slot["host_memory_total"] > 0


def test_a_busy_slots_gpu_at_rest_is_flagged_and_a_cpu_slot_is_labelled_as_such(monkeypatch):
    def gpu(percent: float) -> dict:
        return {"name": "H100", "utilization": percent, "memory_used": 1, "memory_total": 2}

    samples = [
        {"worker": "slot-0", "device": "cuda:0", "busy": True, "gpu": gpu(3.0)},
        {"worker": "slot-1", "device": "cuda:1", "busy": True, "gpu": gpu(88.0)},
        {"worker": "slot-2", "device": "cuda:2", "busy": False, "gpu": gpu(0.0)},
        {"worker": "slot-3", "device": "cpu", "busy": True, "gpu": None, "cpu_percent": 99.0},
    ]
    rows = usage_rows(samples)
    assert [(r["worker"], r["idle_gpu"]) for r in rows] == [
        ("slot-0", True),  # paid for, running a task, and unused: the waste to show
        ("slot-1", False),
        ("slot-2", False),  # no task on it: idle is the cluster's idle countdown's business
        ("slot-3", False),
    ]
    assert [r["label"] for r in rows] == ["H100", "H100", "H100", "CPU slot"]
    assert rows[3]["gpu_utilization"] is None and rows[3]["cpu_percent"] == 99.0
    assert usage_rows(None) == [] and usage_rows([{"worker": "x"}])[0]["label"] == "CPU slot"
