"""Background bursts: ``%%burst async name=...`` returns at once; jobs, logs, wait, cancel, attach.

The job runs on the cluster's head node, so a kernel restart loses nothing.
"""

from __future__ import annotations

import os
import re
import signal
import time

import psutil
import pytest

from jupyter_burst.store.ledger import Ledger
from tests.harness import burst_processes, cluster_record, wait_for

# The job runs until the test creates the flag file, so "still running" is a fact, not a race;
# its own deadline keeps it from ever hanging a test.
_UNTIL_FLAG = (
    "%%burst async name={name}\n"
    "import os, time\n"
    "print('started', flush=True)\n"
    "deadline = time.time() + 60\n"
    "while not os.path.exists({flag!r}) and time.time() < deadline:\n"
    "    time.sleep(0.02)\n"
    "y = x * 2\n"
    "print('finished', flush=True)\n"
)


def _logs_show(kernel, name: str, text: str) -> bool:
    return text in kernel.ok(f"%burst logs {name}").stdout


def test_an_async_cell_returns_at_once_the_notebook_stays_usable_and_wait_brings_its_results(
    kernel, workdir, state_dir
):
    flag = workdir / "go"
    kernel.ok("x = 21")
    run = kernel.ok(_UNTIL_FLAG.format(name="train1", flag=str(flag)))
    assert "train1 runs in the background on cluster 'default'" in run.stdout
    assert kernel.ok("z = x + 1\nprint(z)").stdout.strip() == "22"  # the notebook is free
    jobs = kernel.ok("%burst jobs").text
    assert "train1" in jobs and "running" in jobs, jobs
    wait_for(
        lambda: _logs_show(kernel, "train1", "started"), 30, "the job's first line in its logs"
    )
    assert "y" not in kernel.ok("print(sorted(globals()))").stdout.split("'")

    flag.touch()
    followed = kernel.ok("%burst logs train1 -f", timeout=60)  # returns when the job ends
    assert followed.stdout.splitlines() == ["started", "finished"], followed.stdout
    done = kernel.ok("%burst wait train1", timeout=60)
    assert "finished" in done.stdout and "burst: train1 done" in done.stdout, done.stdout
    assert kernel.ok("print(y)").stdout.strip() == "42"
    assert "fetched" in kernel.ok("%burst jobs").text

    ledger = Ledger(state_dir / "ledger.sqlite")
    job = ledger.query("SELECT * FROM jobs WHERE status = 'done'")[0]
    assert '"name": "train1"' in job["options"]
    assert [line["text"] for line in ledger.lines(job["id"])] == ["started", "finished"]


def test_a_kernel_restart_during_an_async_job_then_attach_finds_its_logs_and_results(
    kernel, workdir
):
    flag = workdir / "go"
    kernel.ok("x = 5")
    kernel.ok(_UNTIL_FLAG.format(name="train1", flag=str(flag)))
    wait_for(lambda: _logs_show(kernel, "train1", "started"), 30, "the job to start")
    kernel.restart()
    kernel.ok("%load_ext jupyter_burst")

    attached = kernel.ok("%burst attach train1")
    assert "started" in attached.stdout  # the output it printed before the restart
    assert "train1 is still running" in attached.stdout
    flag.touch()
    wait_for(lambda: "held" in kernel.ok("%burst jobs").text, 30, "the job to end")
    done = kernel.ok("%burst wait train1")
    assert "finished" in done.stdout and "train1 done" in done.stdout
    assert kernel.ok("print(y)").stdout.strip() == "10"
    again = kernel.execute("%burst wait train1")
    assert again.evalue == "burst: the results of job 'train1' were fetched already"


@pytest.mark.parametrize("body", ["time.sleep(0.02)", "time.sleep(1000)"], ids=["python", "c"])
def test_cancel_stops_a_background_job_within_5s(kernel, workdir, body):
    beat = workdir / "beat"
    kernel.ok(
        "%%burst async name=loop\n"
        "import time\n"
        "while True:\n"
        f"    open({str(beat)!r}, 'w').write(str(time.time()))\n"
        f"    {body}\n"
    )
    wait_for(beat.exists, 30, "the job to run")
    started = time.monotonic()
    run = kernel.ok("%burst cancel loop")
    assert time.monotonic() - started < 5
    assert "cancelled loop" in run.stdout
    last = beat.read_text()
    assert kernel.ok("%%burst\nafter = 1\n").status == "ok"  # the only slot is free again
    assert beat.read_text() == last
    assert "cancelled" in kernel.ok("%burst jobs").text
    waited = kernel.execute("%burst wait loop")
    assert waited.evalue.startswith("burst: job 'loop' was cancelled")


def test_an_async_cell_that_raises_shows_its_error_on_wait(kernel):
    kernel.ok("%%burst async name=bad\nx = 1\nraise ValueError('bad input')\n")
    wait_for(lambda: "failed" in kernel.ok("%burst jobs").text, 30, "the job to fail")
    run = kernel.execute("%burst wait bad")
    assert run.ename == "ValueError" and run.evalue == "bad input"
    assert "line 3" in run.error_text, run.error_text


def test_results_not_fetched_survive_the_cluster_switching_itself_off(kernel, state_dir):
    kernel.ok("x = 3")
    kernel.ok("%%burst async name=short idle=3s\ny = x * 7\n")
    # Nobody fetches the results: the cluster still stops when idle (no bill for waiting) ...
    wait_for(lambda: not burst_processes(state_dir), 60, "the idle cluster to stop")
    # ... and the results were kept beside the job's checkpoints.
    row = next(line for line in kernel.ok("%burst jobs").text.splitlines() if "short" in line)
    assert "default (stopped)" in row and row.split()[-1] == "kept", row
    done = kernel.ok("%burst wait short")
    assert "short done" in done.stdout
    assert kernel.ok("print(y)").stdout.strip() == "21"
    assert "short" not in kernel.ok("%burst jobs").text
    gone = kernel.execute("%burst wait short")
    assert gone.evalue.startswith("burst: job 'short'") and "fetched already" in gone.evalue


def test_background_job_mistakes_are_one_line(kernel, workdir):
    assert kernel.execute("%burst wait nope").evalue == (
        "burst: no background job named 'nope'; %burst jobs lists them"
    )
    assert kernel.execute("%%burst name=a\nx = 1\n").evalue.startswith(
        "burst: name=a names a background job; add async"
    )
    flag = workdir / "go"
    kernel.ok("x = 1")
    kernel.ok(_UNTIL_FLAG.format(name="dup", flag=str(flag)))
    clash = kernel.execute(_UNTIL_FLAG.format(name="dup", flag=str(flag)))
    assert clash.evalue == (
        "burst: a job named 'dup' is running on this cluster; "
        "pick another name= or stop it with %burst cancel dup"
    )
    flag.touch()
    kernel.ok("%burst wait dup")
    assert kernel.execute("%burst logs").evalue.startswith("burst: write %burst logs NAME")


def test_a_background_job_whose_worker_is_killed_resumes_from_its_checkpoint(kernel):
    kernel.ok(
        "%%burst async name=bg\n"
        "import os, time\n"
        "state = burst.restore() or {'step': 0}\n"
        "print('pid', os.getpid(), 'from', state['step'], flush=True)\n"
        "for step in range(state['step'], 10):\n"
        "    burst.checkpoint({'step': step + 1}, step=step + 1)\n"
        "    if step + 1 == 4 and state['step'] == 0:\n"
        "        print('waiting', flush=True)\n"
        "        time.sleep(60)  # its worker is killed here\n"
        "last = step + 1\n"
    )

    def logs_once_waiting() -> str | None:
        out = kernel.ok("%burst logs bg").stdout
        return out if "waiting" in out else None

    shown = wait_for(logs_once_waiting, 30, "the job to reach its fourth checkpoint")
    os.kill(int(re.search(r"pid (\d+) from 0", shown).group(1)), signal.SIGKILL)
    done = kernel.ok("%burst wait bg", timeout=60)
    assert "running the cell again from its latest checkpoint (attempt 2 of 3)" in done.stderr
    assert "from 4" in done.stdout and "bg done" in done.stdout, done.stdout
    assert kernel.ok("print(last)").stdout.strip() == "10"
    row = next(
        line for line in kernel.ok("%burst jobs").text.splitlines() if line.startswith("bg ")
    )
    assert row.split()[5] == "2", row  # attempts


def test_a_background_job_whose_cluster_is_lost_is_started_again_by_wait(kernel, state_dir):
    """The head node (scheduler and job runner) dies: wait starts the job on a new cluster."""
    kernel.ok(
        "%%burst async name=bg\n"
        "import os, time\n"
        "state = burst.restore() or {'step': 0}\n"
        "print('from', state['step'], flush=True)\n"
        "for step in range(state['step'], 6):\n"
        "    burst.checkpoint({'step': step + 1}, step=step + 1)\n"
        "    if step + 1 == 3 and state['step'] == 0:\n"
        "        print('waiting', flush=True)\n"
        "        time.sleep(60)  # the cluster is lost here\n"
        "last = step + 1\n"
    )
    wait_for(lambda: _logs_show(kernel, "bg", "waiting"), 30, "the third checkpoint")
    first = cluster_record(state_dir)
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(first["pid"]), 10, "the head node to die")
    done = kernel.ok("%burst wait bg", timeout=120)
    assert "the cluster running bg was lost; starting bg again" in done.stderr, done.stderr
    assert "from 3" in done.stdout and "bg done" in done.stdout, done.stdout
    assert kernel.ok("print(last)").stdout.strip() == "6"
    assert cluster_record(state_dir)["id"] != first["id"]
