"""The backend a script asks of init_process_group, as the cell's slot can run it (pure).

The end-to-end shapes (a torchrun script split over cells, gpus=1 with the script's own
group) run in real kernels in tests/test_notebook_cells.py."""

from __future__ import annotations

from jupyter_burst.worker.process_group import CellGroup


def _group(rank: int = 0, cuda: bool = False) -> tuple[CellGroup, list[str]]:
    said: list[str] = []
    return CellGroup(rank, 2, ("127.0.0.1", 1), 30.0, cuda=cuda, say=said.append), said


def test_nccl_on_a_cpu_slot_is_gloo_said_once_by_rank_0():
    group, said = _group()
    assert [group._usable("nccl"), group._usable("NCCL")] == ["gloo", "gloo"]
    assert len(said) == 1 and 'backend="nccl") on a CPU slot: it uses gloo' in said[0]
    other, said_by_rank_1 = _group(rank=1)
    assert other._usable("nccl") == "gloo" and said_by_rank_1 == []


def test_a_slots_own_backends_are_kept_and_a_mixed_one_is_read_for_the_slot():
    cpu, said = _group()
    assert cpu._usable(None) is None
    assert cpu._usable("gloo") == "gloo"
    assert cpu._usable("cpu:gloo, cuda:nccl") == "gloo" and said == []
    gpu, said = _group(cuda=True)
    assert gpu._usable("nccl") == "nccl"
    assert gpu._usable("cpu:gloo,cuda:nccl") == "cpu:gloo,cuda:nccl" and said == []
