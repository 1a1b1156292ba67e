"""gpus=N as N torch.distributed ranks (gloo on CPU slots), the burst helper, and rank failures."""

from __future__ import annotations

import time

import pytest

from jupyter_burst.server.api import job_usage_view, metrics_view
from jupyter_burst.store.ledger import Ledger

_DATA = (
    "import torch\n"
    "torch.manual_seed(0)\n"
    "X = torch.randn(64, 5)\n"
    "Y = X @ torch.arange(5.0)[:, None] + 0.1 * torch.randn(64, 1)\n"
    "ds = torch.utils.data.TensorDataset(X, Y)\n"
    "def make_model():\n"
    "    torch.manual_seed(1)\n"
    "    return torch.nn.Linear(5, 1)\n"
)

_TRAIN = (
    "%%burst gpus={n}\n"
    "import torch\n"
    "model = burst.wrap(make_model())\n"
    "opt = torch.optim.SGD(model.parameters(), lr=0.05)\n"
    "loader = burst.loader(ds, batch_size=4, seed=3)\n"
    "for epoch in range(2):\n"
    "    for xb, yb in loader:\n"
    "        opt.zero_grad()\n"
    "        torch.nn.functional.mse_loss(model(xb), yb).backward()\n"
    "        opt.step()\n"
    "    burst.log(step=epoch, loss=torch.nn.functional.mse_loss(model(X), Y))\n"
    "trained = {{k: v.detach().clone() for k, v in getattr(model, 'module', model).state_dict().items()}}\n"
)

# The same global batches in one process: batch i of every rank's shard, together.
_REFERENCE = (
    "from torch.utils.data.distributed import DistributedSampler\n"
    "ref = make_model()\n"
    "ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05)\n"
    "for epoch in range(2):\n"
    "    shards = []\n"
    "    for r in range({n}):\n"
    "        sampler = DistributedSampler(ds, num_replicas={n}, rank=r, shuffle=True, seed=3)\n"
    "        sampler.set_epoch(epoch)\n"
    "        shards.append(list(sampler))\n"
    "    for i in range(0, len(shards[0]), 4):\n"
    "        idx = [j for shard in shards for j in shard[i:i + 4]]\n"
    "        ref_opt.zero_grad()\n"
    "        torch.nn.functional.mse_loss(ref(X[idx]), Y[idx]).backward()\n"
    "        ref_opt.step()\n"
    "diff = max(float((trained[k] - v).abs().max()) for k, v in ref.state_dict().items())\n"
    "moved = float((trained['weight'] - make_model().weight).abs().max())\n"
    "print(f'{{diff:.2e}} {{moved:.3f}}')\n"
)


@pytest.mark.parametrize("n", [2, 4])
def test_ddp_training_matches_one_process_over_the_same_global_batches(kernel, state_dir, n):
    kernel.ok(_DATA)
    run = kernel.ok(_TRAIN.format(n=n), timeout=180)
    assert "[rank 0] step 1  loss=" in run.stdout and "[rank 1]" not in run.stdout  # logged once
    diff, moved = kernel.ok(_REFERENCE.format(n=n)).stdout.split()
    assert float(diff) <= 1e-5 and float(moved) > 0.01, (diff, moved)
    ledger = Ledger(state_dir / "ledger.sqlite")
    job = ledger.query("SELECT id FROM jobs WHERE status = 'done' ORDER BY started DESC LIMIT 1")[0]
    # Printed once, recorded by every rank: the sidebar draws a loss curve per rank.
    recorded = sorted((m["rank"], m["step"], m["name"]) for m in ledger.metrics(job["id"]))
    assert recorded == [(r, step, "loss") for r in range(n) for step in (0, 1)]
    view = metrics_view(state_dir, job["id"])
    assert sorted({p["rank"] for p in view["points"]}) == list(range(n))
    assert metrics_view(state_dir, job["id"], since=view["next"])["points"] == []
    # Each rank's slot as it was at the job's end, kept for the job's history.
    used = job_usage_view(state_dir, job["id"])["samples"]
    assert sorted(s["rank"] for s in used) == list(range(n))
    assert all(s["device"] == "cpu" and s["rss"] > 0 for s in used)


def test_every_rank_gets_its_rank_a_process_group_and_torchruns_environment(kernel):
    run = kernel.ok(
        "%%burst gpus=2 return=gather\n"
        "import os, torch, torch.distributed as dist\n"
        "t = torch.tensor([burst.rank + 1.0])\n"
        "dist.all_reduce(t)\n"
        "total = float(t)\n"
        "who = (burst.rank, burst.world_size, burst.is_main, str(burst.device))\n"
        "env = (os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['LOCAL_RANK'], os.environ['MASTER_ADDR'])\n"
        "print('hello')\n",
        timeout=180,
    )
    assert "[rank 0] hello" in run.stdout and "[rank 1] hello" in run.stdout
    out = kernel.ok("print(total, who, env)").stdout.strip()
    assert out == (
        "[3.0, 3.0] [(0, 2, True, 'cpu'), (1, 2, False, 'cpu')] "
        "[('0', '2', '0', '127.0.0.1'), ('1', '2', '1', '127.0.0.1')]"
    )


def test_a_torchrun_style_script_runs_unchanged(kernel):
    run = kernel.ok(
        "%%burst gpus=2\n"
        "import os\n"
        "import torch\n"
        "import torch.distributed as dist\n"
        "\n"
        "def main():\n"
        "    dist.init_process_group(backend='gloo')\n"
        "    rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])\n"
        "    t = torch.ones(1) * rank\n"
        "    dist.all_reduce(t)\n"
        "    if rank == 0:\n"
        "        print(f'sum of ranks {int(t)} over {world} ranks')\n"
        "    dist.destroy_process_group()\n"
        "\n"
        "if __name__ == '__main__':\n"
        "    main()\n",
        timeout=180,
    )
    assert "[rank 0] sum of ranks 1 over 2 ranks" in run.stdout


def test_a_rank_that_raises_ends_the_job_within_10s_with_its_traceback(kernel):
    kernel.ok("%%burst gpus=2\nimport torch\n", timeout=180)  # warm: torch imported on both ranks
    started = time.monotonic()
    run = kernel.execute(
        "%%burst gpus=2\n"
        "import torch.distributed as dist\n"
        "if burst.rank == 1:\n"
        "    raise ValueError('bad shard on rank 1')\n"
        "dist.barrier()  # rank 0 would wait here forever\n"
    )
    assert time.monotonic() - started < 10
    assert (
        run.status == "error" and run.ename == "ValueError" and run.evalue == "bad shard on rank 1"
    )
    assert "line 4" in run.error_text and "raise ValueError" in run.error_text
    assert "burst: rank 1 of 2 raised ValueError; the other ranks were stopped" in run.stderr
    assert kernel.ok("%%burst gpus=2 return=gather\nr = burst.rank\n", timeout=60).status == "ok"
    assert kernel.ok("print(r)").stdout.strip() == "[0, 1]"


def test_the_same_cell_runs_without_the_magic_as_one_rank(kernel):
    kernel.ok(_DATA)
    out = kernel.ok(
        "model = burst.wrap(make_model())\n"
        "batches = sum(1 for _ in burst.loader(ds, batch_size=8))\n"
        "burst.barrier()\n"
        "print(burst.rank, burst.world_size, burst.is_main, type(model).__name__, batches)"
    ).stdout.strip()
    assert out == "0 1 True Linear 8"


def test_a_rank_that_crashes_ends_the_job_within_10s(kernel):
    """Without retries (with them, test_resume.py: the cell runs again from its checkpoint)."""
    kernel.ok("%%burst gpus=2\nimport torch\n", timeout=180)
    started = time.monotonic()
    run = kernel.execute(
        "%%burst gpus=2 retries=0\n"
        "import os, torch.distributed as dist\n"
        "if burst.rank == 1:\n"
        "    os._exit(9)\n"
        "dist.barrier()\n"
    )
    assert time.monotonic() - started < 10
    assert run.status == "error" and run.evalue.startswith(
        "burst: rank 1 of 2: the worker running the cell was lost"
    )
    assert kernel.ok("%%burst gpus=2\nok = True\n", timeout=60).status == "ok"


def test_large_values_reach_every_rank_and_environment_set_by_a_cell_stays(kernel):
    kernel.ok("import numpy as np\nbig = np.arange(500_000, dtype=np.float64)")  # 4 MB: scattered
    kernel.ok(
        "%%burst gpus=2 return=gather\nimport os\ntotal = float(big.sum())\nos.environ['MY_FLAG'] = 'on'\n",
        timeout=180,
    )
    kernel.ok(
        "%%burst gpus=2 return=gather\nimport os\nflag = os.environ.get('MY_FLAG')\n", timeout=60
    )
    assert (
        kernel.ok("print(total, flag)").stdout.strip()
        == "[124999750000.0, 124999750000.0] ['on', 'on']"
    )
