"""``make demo``'s runner: the training notebook end to end, and a notebook that goes wrong."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from jupyter_burst.tools import demo
from tests.harness import REPO, burst_processes, stop_clusters, wait_for


def _run_demo(
    notebooks: list[pathlib.Path], state_dir: pathlib.Path, timeout: float
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("DASK_BURST__LOCAL__PRICE_PER_HOUR", None)  # the notebook sets its own
    try:
        return subprocess.run(
            [sys.executable, "-m", "jupyter_burst.tools.demo", *map(str, notebooks)]
            + ["--state-dir", str(state_dir), "--timeout", "180"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        stop_clusters(state_dir)  # only if the run itself failed to: it must leave none


def test_the_training_notebook_runs_on_two_ranks_loses_a_worker_resumes_and_costs_something(
    state_dir,
):
    run = _run_demo([REPO / "notebooks" / "training.ipynb"], state_dir, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert re.search(r"^jobs: 1 \(1 done\); ranks: 2 \(1 job\)", out, re.M), out
    assert re.search(r"^resumed: yes \(job \w+ lost a worker; attempt 2 of 3 resumed", out, re.M)
    live = re.search(
        r"^live output: .* kept ([\d.]+) s after it started, ([\d.]+) s before", out, re.M
    )
    assert live and float(live.group(2)) > 2, out  # lines arrived while the training ran
    kept = re.search(r"^checkpoints kept: (\d+) ", out, re.M)
    assert kept and int(kept.group(1)) > 0, out
    cost = re.search(r"^cost: \$(\d+\.\d+) notional", out, re.M)
    assert cost and float(cost.group(1)) > 0, out
    assert "everything went as the notebooks say" in out
    # The notebook's own lines: the resume is visible where the user looks.
    executed = nbformat.read(state_dir / "training.executed.ipynb", as_version=4)
    shown = "".join(
        o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "the worker running the cell was lost" in shown
    assert re.search(r"resumed from step [1-9]", shown), shown
    wait_for(lambda: not burst_processes(state_dir), 30, "no cluster process left")


def test_an_unexpected_error_fails_the_demo_and_names_its_cell(state_dir, tmp_path):
    notebook = tmp_path / "broken.ipynb"
    nb = new_notebook(
        cells=[
            new_code_cell("x = 1"),
            new_code_cell("y = 2", metadata={"tags": ["raises-exception"]}),
            new_code_cell("ratio = x / 0"),
            new_code_cell("print('never runs')"),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, notebook)

    run = _run_demo([notebook], state_dir, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert (
        "FAILED: " + str(notebook) + ": cell In [3] (notebook cell 2: 'ratio = x / 0') raised "
        "ZeroDivisionError: division by zero"
    ) in run.stderr, run.stderr
    assert "cell In [2] (notebook cell 1: 'y = 2') was to raise an error" in run.stderr
    assert "never runs" not in run.stdout  # the run stopped at the error
    assert re.search(r"^\s+3\s+local\s+[\d.]+\s+ZeroDivisionError", run.stdout, re.M), run.stdout


def test_an_interrupt_cell_must_end_interrupted():
    """The interrupt cell's own error is expected; any other error there is a failure."""
    cell = new_code_cell(
        "%%burst\nwhile True: pass",
        metadata={"tags": [demo.EXPECTED_ERROR_TAG, demo.INTERRUPT_TAG]},
    )
    nb = new_notebook(cells=[cell])
    cell.outputs = [new_output("error", ename="JobInterrupted", evalue="burst: interrupted")]
    assert demo._check_cells(nb, last=0) == []
    cell.outputs = [new_output("error", ename="NameError", evalue="name 'x' is not defined")]
    (problem,) = demo._check_cells(nb, last=0)
    assert "was to be interrupted (JobInterrupted), but raised NameError" in problem
