"""Cold start: a trivial cell with no cluster running, until its result is back.

Warm imports: in this process, which has already imported jupyter_burst and run a cell,
after ``%burst down``. First ever: a fresh Python process with its own fresh state folder
(imports, ledger creation and all).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from bench import coldstart_cloud
from bench.common import (
    TRIVIAL_CELL,
    BenchError,
    Report,
    Row,
    Session,
    burst_processes,
    median,
    p90,
    reap,
)

TARGET_SECONDS = 3.0

# Runs in the fresh process. Times are time.time() so the parent can add interpreter start-up.
_FRESH = """
import time
t_start = time.time()
import json
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "jupyter_burst")
t_imported = time.time()
try:
    result = shell.run_cell({cell!r})
    t_done = time.time()
    error = result.error_in_exec or result.error_before_exec
    print("BENCH " + json.dumps({{"start": t_start, "imported": t_imported, "done": t_done,
                               "error": None if result.success else repr(error)}}), flush=True)
finally:
    from jupyter_burst.driver import cluster
    cluster.down()
"""


def run(session: Session, quick: bool, profile: bool = False) -> Report:
    reps = 3 if quick else 5
    session.ensure_cluster()  # imports warm, one burst done
    times = []
    for _ in range(reps):
        session.down()
        times.append(session.cell(TRIVIAL_CELL))
        session.ensure_cluster()  # notes the new cluster's processes for the final check
    fresh = fresh_process()
    cloud = coldstart_cloud.run(reps)
    m = "cold start"
    report = Report()
    report.rows += [
        Row(
            m,
            f"no cluster, warm imports: median / p90 (N={reps})",
            f"{median(times):.2f} s / {p90(times):.2f} s",
            f"<= {TARGET_SECONDS:g} s",
            median(times) <= TARGET_SECONDS,
        ),
        Row(
            m,
            "first ever, fresh process, one run: interpreter start + imports + cell",
            f"{fresh['done'] - fresh['spawned']:.2f} s",
        ),
        Row(
            m,
            "  of which: interpreter start / imports (IPython, jupyter_burst) / the cell",
            f"{fresh['start'] - fresh['spawned']:.2f} s"
            f" / {fresh['imported'] - fresh['start']:.2f} s"
            f" / {fresh['done'] - fresh['imported']:.2f} s",
        ),
    ]
    report.rows += cloud.rows
    return report


def fresh_process() -> dict:
    root = pathlib.Path(tempfile.mkdtemp(prefix="burst-bench-fresh-"))
    state_dir = root / "state"
    env = dict(os.environ)
    env["DASK_BURST__STATE_DIR"] = str(state_dir)
    env["DASK_BURST__IDLE"] = "5"
    package_root = str(pathlib.Path(sys.modules["jupyter_burst"].__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    try:
        spawned = time.time()
        child = subprocess.run(
            [sys.executable, "-c", _FRESH.format(cell=TRIVIAL_CELL)],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=180,
        )
        lines = [line for line in child.stdout.splitlines() if line.startswith("BENCH ")]
        if child.returncode != 0 or not lines:
            raise BenchError(
                f"the fresh-process cold start failed (exit {child.returncode}): "
                f"{(child.stderr or child.stdout).strip()[-2000:]}"
            )
        record = json.loads(lines[-1][len("BENCH ") :])
        if record["error"]:
            raise BenchError(f"the fresh-process cell failed: {record['error']}")
        record["spawned"] = spawned
        return record
    finally:
        leftover = reap(burst_processes(state_dir), state_dir, timeout=30)
        shutil.rmtree(root, ignore_errors=True)
        if leftover:
            raise BenchError(f"the fresh process left cluster processes behind: {leftover}")
