"""Interrupt, timeout, reattach after a kernel restart, idle shutdown, status and down."""

from __future__ import annotations

import json
import time

import psutil

from jupyter_burst.store.ledger import Ledger
from tests.harness import Kernel, burst_processes, cluster_record, wait_for

_BUSY_LOOP = (
    "%%burst\nimport os, time\nprint('worker', os.getpid(), flush=True)\nwhile True:\n    {body}\n"
)


def _interrupt_when_running(kernel, code: str) -> tuple[object, float, int]:
    msg_id = kernel.kc.execute(code)
    state: dict = {}

    def watch(msg):
        if (
            msg["msg_type"] == "stream"
            and "worker" in msg["content"]["text"]
            and "pid" not in state
        ):
            state["pid"] = int(msg["content"]["text"].split()[1])
            state["at"] = time.monotonic()
            kernel.interrupt()

    result = kernel.collect(msg_id, timeout=120, on_message=watch)
    return result, time.monotonic() - state["at"], state["pid"]


def test_interrupt_stops_a_python_loop_within_5s_and_the_next_cell_works(kernel, workdir):
    beat = workdir / "beat"
    result, seconds, _ = _interrupt_when_running(
        kernel,
        _BUSY_LOOP.format(
            body=f"open({str(beat)!r}, 'w').write(str(time.time())); time.sleep(0.02)"
        ),
    )
    assert result.status == "error" and result.evalue.startswith("burst: interrupted")
    assert result.traceback == [result.evalue]
    assert seconds < 5, seconds
    last = beat.read_text()
    assert kernel.ok("%%burst\nafter = 1 + 1\n").status == "ok"  # the slot is free again
    assert beat.read_text() == last  # and the loop is not running any more
    assert kernel.ok("print(after)").stdout.strip() == "2"


def test_interrupt_stops_a_cell_stuck_in_c_code_within_5s(kernel):
    result, seconds, pid = _interrupt_when_running(
        kernel, _BUSY_LOOP.format(body="time.sleep(1000)")
    )
    assert result.status == "error" and result.evalue.startswith("burst: interrupted")
    assert seconds < 5, seconds
    wait_for(lambda: not psutil.pid_exists(pid), 10, "the stuck worker process to be gone")
    run = kernel.ok("%%burst\nimport os\nnew_pid = os.getpid()\n")
    assert run.status == "ok"
    assert int(kernel.ok("print(new_pid)").stdout) != pid


def test_timeout_stops_the_cell_with_one_line(kernel):
    started = time.monotonic()
    run = kernel.execute("%%burst timeout=2s\nimport time\nwhile True:\n    time.sleep(0.05)\n")
    assert run.status == "error" and run.evalue.startswith("burst: the cell ran past timeout=")
    assert time.monotonic() - started < 10


def test_a_restarted_kernel_reattaches_to_the_running_cluster(kernel, state_dir):
    kernel.ok("%%burst\nx = 1\n")
    before = cluster_record(state_dir)
    kernel.restart()
    kernel.ok("%load_ext jupyter_burst")
    run = kernel.ok("%%burst\nimport os\ny = 2\n")
    after = cluster_record(state_dir)
    assert after["id"] == before["id"] and after["pid"] == before["pid"], (before, after)
    assert psutil.pid_exists(before["pid"])
    assert run.elapsed < 3  # attached, not started anew
    status = kernel.ok("%burst status").text
    assert "default" in status and "local" in status and "cpu" in status


def test_an_idle_cluster_stops_by_itself_without_the_kernel(state_dir, workdir, no_leaks):
    kernel = Kernel(state_dir, workdir)
    try:
        kernel.ok("%load_ext jupyter_burst")
        kernel.ok("%%burst idle=3s\nx = 1\n")
        record = cluster_record(state_dir)
        assert record is not None and burst_processes(state_dir)
        kernel.kill()  # no help from the kernel from here on
    finally:
        kernel.shutdown()
    wait_for(lambda: not burst_processes(state_dir), 30, "the idle cluster's processes to exit")
    assert cluster_record(state_dir) is None
    ledger = Ledger(state_dir / "ledger.sqlite")
    cluster = ledger.clusters()[0]
    assert cluster["stopped"] is not None and cluster["stop_reason"].startswith("idle")
    node = ledger.query("SELECT * FROM nodes")[0]
    assert node["stopped"] == cluster["stopped"]
    assert json.loads(node["devices"]) == ["cpu"]


def test_a_running_cell_keeps_the_cluster_alive_past_idle(kernel, state_dir):
    run = kernel.ok("%%burst idle=2s\nimport time\ntime.sleep(5)\ndone = True\n")
    assert run.status == "ok" and cluster_record(state_dir) is not None


def test_status_and_down(kernel, state_dir):
    assert "no clusters" in kernel.ok("%burst status").text
    kernel.ok("%%burst cluster=exp1\nx = 1\n")
    kernel.ok("%%burst cluster=exp2 idle=45\nx = 2\n")
    status = kernel.ok("%burst status").text
    assert "exp1" in status and "exp2" in status and "45 min" in status
    pids = [cluster_record(state_dir, n)["pid"] for n in ("exp1", "exp2")]
    assert "stopped exp1" in kernel.ok("%burst down exp1").stdout
    assert (
        not psutil.pid_exists(pids[0]) or psutil.Process(pids[0]).status() == psutil.STATUS_ZOMBIE
    )
    assert "exp1" not in kernel.ok("%burst status").text
    run = kernel.execute("%burst down nope")
    assert run.evalue == "burst: no cluster named 'nope'; running: exp2"
    assert "stopped exp2" in kernel.ok("%burst down").stdout
    wait_for(lambda: not burst_processes(state_dir), 30, "all cluster processes to exit")
    run = kernel.execute("%burst stat")
    assert run.evalue.startswith("burst: unknown command '%burst stat' (did you mean 'status'?)")


def test_a_cell_that_kills_its_worker_fails_with_one_line_and_the_next_cell_works(kernel):
    run = kernel.execute("%%burst\nimport os\nos._exit(3)\n")
    assert run.status == "error" and run.evalue.startswith(
        "burst: the worker running the cell was lost"
    )
    assert run.traceback == [run.evalue]
    assert kernel.ok("%%burst\nfine = True\n").status == "ok"


def test_the_next_cell_starts_a_new_cluster_after_the_old_one_idled_away(kernel, state_dir):
    kernel.ok("%%burst idle=2s\nx = 1\n")
    first = cluster_record(state_dir)
    wait_for(lambda: not psutil.pid_exists(first["pid"]), 30, "the idle cluster to stop")
    kernel.ok("%%burst\ny = 2\n")
    second = cluster_record(state_dir)
    assert second is not None and second["id"] != first["id"]
