"""A lost worker mid-training: the job reruns by itself and resumes from its latest checkpoint."""

from __future__ import annotations

import os
import re
import signal
import time

import dask.config
import pytest

from jupyter_burst.driver import cluster
from jupyter_burst.store.ledger import Ledger
from tests.harness import cluster_record, wait_for

_DATA = (
    "import torch\n"
    "torch.manual_seed(0)\n"
    "X = torch.randn(64, 5)\n"
    "Y = X @ torch.arange(5.0)[:, None] + 0.1 * torch.randn(64, 1)\n"
    "STEPS, EVERY = 30, 5\n"
    "def make_model():\n"
    "    torch.manual_seed(1)\n"
    "    return torch.nn.Linear(5, 1)\n"
    "def batch(step):\n"
    "    return torch.randint(0, 64, (8,), generator=torch.Generator().manual_seed(step))\n"
)

# Checkpoint every EVERY steps; each rank trains on its half of the step's batch (DDP
# averages the gradients, so the result equals one process on the whole batch).
_TRAIN = (
    "%%burst gpus=2\n"
    "import os, time, torch\n"
    "model = burst.wrap(make_model())\n"
    "opt = torch.optim.SGD(model.parameters(), lr=0.05)\n"
    "start, state = 0, burst.restore()\n"
    "if state is not None:\n"
    "    model.module.load_state_dict(state['model'])\n"
    "    opt.load_state_dict(state['opt'])\n"
    "    start = state['step']\n"
    "print('pid', os.getpid(), flush=True)\n"
    "for step in range(start, STEPS):\n"
    "    idx = batch(step)[burst.rank::burst.world_size]\n"
    "    opt.zero_grad()\n"
    "    torch.nn.functional.mse_loss(model(X[idx]), Y[idx]).backward()\n"
    "    opt.step()\n"
    "    print('step', step + 1, flush=True)\n"
    "    if (step + 1) % EVERY == 0:\n"
    "        burst.checkpoint({'model': model.module.state_dict(), 'opt': opt.state_dict(),\n"
    "                          'step': step + 1}, step=step + 1)\n"
    "    time.sleep(0.1)\n"
    "trained = {k: v.detach().clone() for k, v in model.module.state_dict().items()}\n"
)

_UNINTERRUPTED = (
    "ref = make_model()\n"
    "ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05)\n"
    "for step in range(STEPS):\n"
    "    idx = batch(step)\n"
    "    ref_opt.zero_grad()\n"
    "    torch.nn.functional.mse_loss(ref(X[idx]), Y[idx]).backward()\n"
    "    ref_opt.step()\n"
    "diff = max(float((trained[k] - v).abs().max()) for k, v in ref.state_dict().items())\n"
    "moved = float((trained['weight'] - make_model().weight).abs().max())\n"
    "print(f'{diff:.2e} {moved:.3f}')\n"
)


def test_a_worker_killed_mid_training_resumes_from_its_checkpoint_with_the_same_final_weights(
    kernel, state_dir
):
    kernel.ok(_DATA)
    kernel.ok("%%burst gpus=2\nimport torch\n", timeout=180)  # both slots warm
    pids: dict[int, int] = {}
    killed: dict[str, int] = {}

    def kill_rank_1_at_step_12(msg):
        if msg["msg_type"] != "stream" or killed:
            return
        for rank, pid in re.findall(r"\[rank (\d)\] pid (\d+)", msg["content"]["text"]):
            pids[int(rank)] = int(pid)
        if "[rank 0] step 12\n" in msg["content"]["text"] and 1 in pids:
            os.kill(pids[1], signal.SIGKILL)
            killed["pid"] = pids[1]

    msg_id = kernel.kc.execute(_TRAIN)
    run = kernel.collect(msg_id, timeout=240, on_message=kill_rank_1_at_step_12)
    assert killed, "the training never reached step 12"
    assert run.status == "ok", (run.evalue, run.stderr)

    assert "burst: rank 1 of 2: the worker running the cell was lost" in run.stderr
    assert "running the cell again from its latest checkpoint (attempt 2 of 3)" in run.stderr
    resumed = int(re.search(r"resumed from the checkpoint of step (\d+)", run.stderr).group(1))
    assert resumed >= 10 and resumed % 5 == 0, resumed
    steps = [int(s) for s in re.findall(r"\[rank 0\] step (\d+)", run.stdout)]
    assert steps[-1] == 30
    assert len(steps) - 30 <= 5, f"lost work: {len(steps) - 30} steps (at most one interval)"

    diff, moved = kernel.ok(_UNINTERRUPTED).stdout.split()
    assert float(diff) <= 1e-5 and float(moved) > 0.01, (diff, moved)

    ledger = Ledger(state_dir / "ledger.sqlite")
    job = ledger.query("SELECT * FROM jobs ORDER BY started DESC LIMIT 1")[0]
    assert job["status"] == "done"
    texts = [line["text"] for line in ledger.lines(job["id"])]
    assert any("attempt 2 of 3" in t for t in texts)
    assert any(f"resumed from the checkpoint of step {resumed}" in t for t in texts)
    assert [c["step"] for c in ledger.checkpoints(job["id"])][-1] == 30


@pytest.mark.hardening
def test_a_cell_that_kills_its_worker_every_time_stops_after_its_retries(kernel):
    run = kernel.execute("%%burst retries=1\nimport os\nos._exit(3)\n", timeout=120)
    assert run.status == "error" and run.traceback == [run.evalue]
    assert run.evalue.startswith("burst: the worker running the cell was lost")
    assert "on each of 2 attempts; stopped after retries=1" in run.evalue
    assert "(attempt 2 of 2)" in run.stderr
    assert kernel.ok("%%burst\nfine = True\n").status == "ok"


def test_a_lost_cluster_is_started_again_and_the_cell_resumes_from_its_checkpoint(
    kernel, state_dir, workdir
):
    """The scheduler itself dies: the next attempt starts a new cluster; the store outlives it."""
    kernel.ok("%%burst\nx = 1\n")
    first = cluster_record(state_dir)
    marker = workdir / "saved"
    run_id = kernel.kc.execute(
        "%%burst\n"
        "import time\n"
        "state = burst.restore() or {'step': 0}\n"
        "print('from', state['step'], flush=True)\n"
        "for step in range(state['step'], 6):\n"
        "    burst.checkpoint({'step': step + 1}, step=step + 1)\n"
        "    if step + 1 == 3 and state['step'] == 0:\n"
        f"        open({str(marker)!r}, 'w').close()\n"
        "        time.sleep(60)  # the cluster is lost here\n"
        "last = step + 1\n"
    )
    wait_for(marker.exists, 60, "the third checkpoint")
    started = time.monotonic()
    os.kill(first["pid"], signal.SIGKILL)
    run = kernel.collect(run_id, timeout=120)
    assert run.status == "ok", (run.evalue, run.stderr)
    assert time.monotonic() - started < 30
    # (attempt 1's own lines may die with its cluster: output still in flight is lost)
    assert "running the cell again from its latest checkpoint (attempt 2 of 3)" in run.stderr
    assert "from 3" in run.stdout, run.stdout
    second = cluster_record(state_dir)
    assert second is not None and second["id"] != first["id"]
    assert kernel.ok("print(last)").stdout.strip() == "6"


def test_a_hung_worker_is_noticed_within_30s_and_the_cell_resumes(kernel, workdir):
    """A worker that stops answering (SIGSTOP: a frozen machine) is replaced, never waited on."""
    marker = workdir / "pid"
    run_id = kernel.kc.execute(
        "%%burst\n"
        "import os, time\n"
        "state = burst.restore() or {'step': 0}\n"
        "print('from', state['step'], flush=True)\n"
        "for step in range(state['step'], 5):\n"
        "    burst.checkpoint({'step': step + 1}, step=step + 1)\n"
        "    if step + 1 == 2 and state['step'] == 0:\n"
        f"        open({str(marker)!r}, 'w').write(str(os.getpid()))\n"
        "        time.sleep(120)\n"
        "last = step + 1\n"
    )
    wait_for(lambda: marker.exists() and marker.read_text(), 60, "the second checkpoint")
    os.kill(int(marker.read_text()), signal.SIGSTOP)
    stopped = time.monotonic()
    noticed: list[float] = []

    def note_the_rerun(msg):
        if "running the cell again" in msg["content"].get("text", "") and not noticed:
            noticed.append(time.monotonic() - stopped)

    run = kernel.collect(run_id, timeout=120, on_message=note_the_rerun)
    assert run.status == "ok", (run.evalue, run.stderr)
    assert noticed and noticed[0] < 30, noticed
    assert "from 2" in run.stdout, run.stdout  # the frozen attempt's lines may never come
    assert kernel.ok("print(last)").stdout.strip() == "5"


def test_a_cluster_stopped_on_purpose_mid_cell_is_not_started_again(kernel, state_dir, workdir):
    """Stop (the sidebar's, %burst down) means stop spending: the cell is not rerun elsewhere."""
    kernel.ok("steps = 0")
    marker = workdir / "running"
    run_id = kernel.kc.execute(
        "%%burst\n"
        "import time\n"
        "for step in range(600):\n"
        "    burst.checkpoint({'step': step}, step=step)\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "    steps = step\n"
        "    time.sleep(0.1)\n"
    )
    wait_for(marker.exists, 60, "the cell to run")
    with dask.config.set({"burst.state-dir": str(state_dir)}):
        assert cluster.down("default") == ["default"]  # what POST clusters/default/stop does
    run = kernel.collect(run_id, timeout=60)
    assert run.status == "error" and run.ename == "JobInterrupted", (run.evalue, run.stderr)
    assert "cluster 'default' was stopped while the cell ran" in run.evalue
    assert cluster_record(state_dir) is None  # no new cluster was started
    ledger = Ledger(state_dir / "ledger.sqlite")
    assert ledger.clusters(running_only=True) == []
    assert [j["status"] for j in ledger.recent_jobs(1)] == ["interrupted"]
    assert kernel.ok("print(steps)").stdout.strip() == "0"  # nothing merged back
