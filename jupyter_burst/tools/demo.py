"""Run demo notebooks headless (nbclient, a real kernel each) and print what happened.

``python -m jupyter_burst.tools.demo notebooks/quickstart.ipynb notebooks/training.ipynb`` -- what
``make demo`` runs. Per notebook: a table of its code cells (numbered as their ``In [n]``
prompts and tracebacks number them), then from the ledger the jobs and their ranks, whether
a lost worker was resumed from a checkpoint, the checkpoints kept and what the clusters
cost. Exits non-zero, naming the cell and its error, on anything unexpected.

Two cell tags steer a run:

- ``raises-exception`` (nbclient's own): the cell's error is what it demonstrates. The run
  goes on; a tagged cell that ends *without* an error is a failure.
- ``demo-interrupt``: a cell that runs until it is stopped, as a user stops it with the stop
  button. Once it has printed and has run for :data:`INTERRUPT_AFTER_SECONDS`, the kernel
  is interrupted for real; the cell must end with ``JobInterrupted``.

The run gets its own state folder (``.burst-demo/`` beside the notebooks' folder unless
``--state-dir`` says otherwise), so its ledger can be looked at after; the executed
notebooks are written there too. Whatever happens, no cluster of that folder is left
running.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import pathlib
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from jupyter_burst import config
from jupyter_burst.driver import cluster
from jupyter_burst.store import cost
from jupyter_burst.store.checkpoints import default_root, listing
from jupyter_burst.store.ledger import Ledger

if TYPE_CHECKING:
    from nbformat import NotebookNode

EXPECTED_ERROR_TAG = "raises-exception"
INTERRUPT_TAG = "demo-interrupt"
INTERRUPT_AFTER_SECONDS = 3.0
INTERRUPTED_ERROR = "JobInterrupted"
HALF_A_CENT = Decimal("0.005")  # what a bill would round to $0.00
# A demo-interrupt cell that has printed nothing by then is a failure, not a longer wait.
FIRST_OUTPUT_TIMEOUT = 120.0
# What the kernel records in the ledger when a lost worker's cell runs again (jobs.py) and
# when burst.restore() hands it a checkpoint (helper.py).
_RERUN = re.compile(r"running the cell again .*\((attempt \d+ of \d+)\)")
_RESUMED = re.compile(r"resumed from the checkpoint of step (\S+)")


@dataclass
class NotebookRun:
    """One notebook's run: the executed notebook, when it ran, and what went wrong."""

    path: pathlib.Path
    nb: NotebookNode
    started: float  # time.time(): the ledger's clock
    ended: float = 0.0
    problems: list[str] = field(default_factory=list)
    executed: pathlib.Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _seconds(cell) -> float | None:
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not start or not end:
        return None
    parse = datetime.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def _error(cell) -> dict | None:
    return next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)


def _what_it_showed(cell) -> str:
    """The error, or the first and last lines it printed, or the kinds of rich output."""
    error = _error(cell)
    if error is not None:
        expected = "expected: " if EXPECTED_ERROR_TAG in _tags(cell) else ""
        return f"{expected}{error['ename']}: {error['evalue']}"[:110]
    lines: list[str] = []
    rich: list[str] = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            lines += [
                line.strip()
                for line in out["text"].replace("\r", "\n").splitlines()
                if line.strip()
            ]
        if out.get("output_type") in ("display_data", "execute_result"):
            rich.append(
                next((k for k in ("image/png", "text/html") if k in out["data"]), "text/plain")
            )
    shown = lines[0][:60] if lines else ""
    if len(lines) > 1:
        shown += f" ... {lines[-1][:40]} ({len(lines)} lines)"
    if rich:
        shown += (" " if shown else "") + "[" + ", ".join(rich) + "]"
    return shown


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _code_cells(nb) -> list[tuple[int, int, Any]]:
    """(In [n] number, index in the notebook, cell) of each code cell."""
    numbered = [(index, cell) for index, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    return [(n, index, cell) for n, (index, cell) in enumerate(numbered, start=1)]


def _name(nb, index: int) -> str:
    """How a failure names a cell: its In [n], its place in the notebook and its first line."""
    number = next((n for n, i, _ in _code_cells(nb) if i == index), None)
    first = (nb.cells[index].source.strip().splitlines() or [""])[0][:60]
    prompt = f"In [{number}] " if number is not None else ""
    return f"cell {prompt}(notebook cell {index}: {first!r})"


def _printed(cell) -> bool:
    return any(
        o.get("output_type") == "stream" and o.get("name") == "stdout" and o.get("text", "").strip()
        for o in cell.get("outputs", [])
    )


class _Interrupter:
    """Interrupts the kernel while a ``demo-interrupt`` cell runs, as the stop button does."""

    def __init__(self, client, problems: list[str]) -> None:
        self.client = client
        self.problems = problems
        self.task: asyncio.Task | None = None

    def cell_sent(self, cell, cell_index: int, **_: Any) -> None:
        # nbclient's on_cell_complete: the cell was sent to the kernel (not that it ended).
        if INTERRUPT_TAG in _tags(cell):
            self.task = asyncio.ensure_future(self._interrupt(cell, cell_index))

    def cell_ended(self, **_: Any) -> None:
        self.cancel()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _interrupt(self, cell, cell_index: int) -> None:
        from nbclient.util import ensure_async

        started = time.monotonic()
        # Once the loop prints, the remote work runs: that is what the interrupt must stop.
        while not _printed(cell):
            if time.monotonic() - started > FIRST_OUTPUT_TIMEOUT:
                self.problems.append(
                    f"{_name(self.client.nb, cell_index)} printed nothing within "
                    f"{FIRST_OUTPUT_TIMEOUT:g} s, so it was not interrupted"
                )
                return
            await asyncio.sleep(0.05)
        # A few seconds of its output first, as a user would watch it before pressing stop.
        await asyncio.sleep(max(0.0, started + INTERRUPT_AFTER_SECONDS - time.monotonic()))
        await ensure_async(self.client.km.interrupt_kernel())


def run_notebook(notebook: pathlib.Path, state_dir: pathlib.Path, timeout: int) -> NotebookRun:
    """Execute ``notebook`` in a fresh kernel whose clusters keep their state in ``state_dir``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(notebook, as_version=4)
    run = NotebookRun(notebook, nb, started=time.time())
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook.parent)}},
        record_timing=True,
    )
    interrupter = _Interrupter(client, run.problems)
    current: dict[str, int] = {}
    finished = False  # the last cell that ran has its reply (not a timeout, not a dead kernel)

    def cell_started(cell, cell_index: int, **_: Any) -> None:
        current["index"] = cell_index

    client.on_cell_execute = cell_started
    client.on_cell_complete = interrupter.cell_sent
    client.on_cell_executed = interrupter.cell_ended
    # The kernel's clusters use the demo's state folder; its jobs name their notebook.
    env = dict(os.environ, DASK_BURST__STATE_DIR=str(state_dir), JPY_SESSION_NAME=notebook.name)
    try:
        client.execute(env=env)
        finished = True
    except CellExecutionError:
        finished = True  # the cell's error is in its outputs: _check_cells names it
    except CellTimeoutError:
        run.problems.append(
            f"{_name(nb, current.get('index', 0))} ran past the timeout of {timeout} s"
        )
    except DeadKernelError:
        run.problems.append(f"the kernel died while running {_name(nb, current.get('index', 0))}")
    finally:
        interrupter.cancel()
        run.ended = time.time()
        run.executed = state_dir / f"{notebook.stem}.executed.ipynb"
        nbformat.write(nb, run.executed)
    last = current.get("index", -1)
    # A cell cut short has no outcome to check beyond the reason already given.
    run.problems[:0] = _check_cells(nb, last=last if finished else last - 1)
    return run


def _check_cells(nb, last: int) -> list[str]:
    """Unexpected errors, and expected ones that did not happen, in the cells that ran."""
    problems = []
    for _, index, cell in _code_cells(nb):
        if index > last:
            break
        error, tags = _error(cell), _tags(cell)
        if error is not None and EXPECTED_ERROR_TAG not in tags:
            problems.append(f"{_name(nb, index)} raised {error['ename']}: {error['evalue']}")
        elif error is None and EXPECTED_ERROR_TAG in tags:
            problems.append(f"{_name(nb, index)} was to raise an error, and ended without one")
        elif error is not None and INTERRUPT_TAG in tags and error["ename"] != INTERRUPTED_ERROR:
            problems.append(
                f"{_name(nb, index)} was to be interrupted ({INTERRUPTED_ERROR}), but raised "
                f"{error['ename']}: {error['evalue']}"
            )
    return problems


def cell_table(nb: NotebookNode) -> list[str]:
    """The table of code cells: In [n], kind, seconds, what it showed."""
    lines = [f"{'cell':>4}  {'kind':<6} {'seconds':>7}  what it showed"]
    for number, _, cell in _code_cells(nb):
        kind = "burst" if cell.source.lstrip().startswith("%%burst") else "local"
        seconds = _seconds(cell)
        shown = f"{seconds:7.2f}" if seconds is not None else "      -"
        lines.append(f"{number:>4}  {kind:<6} {shown}  {_what_it_showed(cell)}")
    return lines


def ledger_summary(state_dir: pathlib.Path, run: NotebookRun) -> list[str]:
    """From the ledger: this run's jobs and ranks, resumes, checkpoints kept and cost."""

    ledger = Ledger(state_dir / "ledger.sqlite")
    try:
        jobs = ledger.query(
            "SELECT * FROM jobs WHERE notebook = ? AND started >= ? AND started <= ?"
            " ORDER BY started",
            (run.path.name, run.started, run.ended),
        )
        if not jobs:
            return ["jobs: none"]
        ids = [j["id"] for j in jobs]
        marks = ", ".join("?" * len(ids))
        lines = ledger.query(
            f"SELECT job_id, ts, text FROM log_lines WHERE job_id IN ({marks}) ORDER BY id", ids
        )
        ran_on = ledger.job_clusters(ids)
        nodes = ledger.nodes(cluster_ids={c for found in ran_on.values() for c in found})

        statuses = Counter(j["status"] for j in jobs)
        ranks = Counter(int(json.loads(j["options"]).get("gpus", 1)) for j in jobs)
        devices = sorted({d for n in nodes for d in json.loads(n["devices"] or "[]")})
        slots = ", ".join(devices) or "-"
        if "cpu" in devices:
            slots += " (cpu: a CPU slot, no GPU)"
        by_status = ", ".join(f"{n} {status}" for status, n in statuses.items())
        by_ranks = ", ".join(f"{r} ({_plural(n, 'job')})" for r, n in sorted(ranks.items()))
        summary = [
            f"jobs: {len(jobs)} ({by_status}); ranks: {by_ranks}; slots: {slots}",
            _live(jobs, lines),
            _resumes(lines),
        ]

        steps: dict[str, list[str]] = {}
        for job, checkpoint in listing(default_root(state_dir)):
            if job in ids:
                steps.setdefault(job, []).append(str(checkpoint.step))
        kept = sum(len(s) for s in steps.values())
        where = "; ".join(f"job {job}: steps {', '.join(s)}" for job, s in steps.items())
        summary.append(f"checkpoints kept: {kept}" + (f" ({where})" if where else ""))

        # The bill of the clusters its jobs ran on, over this run (from its start, for a
        # cluster that was already running).
        now = time.time()
        spend = cost.Spend()
        for node in nodes:
            spend += cost.Spend.of(node, cost.node_cost_between(node, run.started, now, now))
        if not spend.total:
            summary.append("cost: $0.00 (local provider, no price set)")
        elif spend.notional and not spend.billed and spend.notional < HALF_A_CENT:
            # A short run at the demo's price is a fraction of a cent: shown exactly, since
            # "$0.00" would read as nothing billed.
            summary.append(
                f"cost: ${spend.notional:.4f} notional (burst.local.price-per-hour: an internal "
                "price set for the demo, not a bill)"
            )
        elif spend.notional:
            summary.append(
                f"cost: {spend.show()} (burst.local.price-per-hour: an internal price set for "
                "the demo, not a bill)"
            )
        else:
            summary.append(f"cost: {spend.show()}")
        summary.append(f"output lines kept: {len(lines)}")
        return summary
    finally:
        ledger.close()


def _live(jobs: list[dict[str, Any]], lines: list[dict[str, Any]]) -> str:
    """That output streamed: the longest job's first line came long before its end."""
    first: dict[str, float] = {}
    for line in lines:
        first.setdefault(line["job_id"], line["ts"])
    ran = [j for j in jobs if j["id"] in first and j["ended"] is not None]
    if not ran:
        return "live output: no job printed"
    job = max(ran, key=lambda j: j["ended"] - j["started"])
    after, before = first[job["id"]] - job["started"], job["ended"] - first[job["id"]]
    return (
        f"live output: job {job['id']}'s first line was kept {after:.1f} s after it started, "
        f"{before:.1f} s before it ended"
    )


def _resumes(lines: list[dict[str, Any]]) -> str:
    """Whether a lost worker's job ran again and resumed from a checkpoint, from its lines."""
    reruns: dict[str, str] = {}
    resumed: list[tuple[str, str]] = []
    for line in lines:
        if (found := _RERUN.search(line["text"])) is not None:
            reruns.setdefault(line["job_id"], found.group(1))
        elif (found := _RESUMED.search(line["text"])) is not None:
            resumed.append((line["job_id"], found.group(1)))
    if not resumed:
        why = "a rerun found no checkpoint" if reruns else "no worker was lost"
        return f"resumed: no ({why})"
    return (
        "resumed: yes ("
        + "; ".join(
            f"job {job} lost a worker; {reruns.get(job, 'a rerun')} resumed from step {step}"
            for job, step in resumed
        )
        + ")"
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def stop_leftover_clusters() -> list[str]:
    """Stop any cluster of the demo's state folder still running (a notebook that failed early)."""

    config.refresh()
    return cluster.down()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jupyter_burst.tools.demo")
    parser.add_argument("notebooks", type=pathlib.Path, nargs="+", metavar="notebook")
    parser.add_argument("--state-dir", type=pathlib.Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    notebooks = [path.resolve() for path in args.notebooks]
    state_dir = (args.state_dir or notebooks[0].parent.parent / ".burst-demo").resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    # This process reads the same folder: the ledger, and the safety net below.
    os.environ["DASK_BURST__STATE_DIR"] = str(state_dir)
    sys.exit(run(notebooks, state_dir, args.timeout))


def run(notebooks: Sequence[pathlib.Path], state_dir: pathlib.Path, timeout: int) -> int:
    """Run each notebook, print its summary; 0 when everything went as the notebooks say."""
    started = time.monotonic()
    failed: list[tuple[pathlib.Path, list[str]]] = []
    try:
        for notebook in notebooks:
            result = run_notebook(notebook, state_dir, timeout)
            print(f"\njupyter-burst demo: {_shown_path(notebook)}")
            print("\n".join(cell_table(result.nb)))
            print("\n".join(ledger_summary(state_dir, result)))
            print(f"{result.ended - result.started:.1f} s; executed notebook: {result.executed}")
            if not result.ok:
                failed.append((notebook, result.problems))
    finally:
        left = stop_leftover_clusters()
        if left:
            print(f"\nstopped the clusters a notebook left running: {', '.join(left)}")
    outcome = f"{len(failed)} failed" if failed else "everything went as the notebooks say"
    print(f"\ndemo: {len(notebooks)} notebook(s) in {time.monotonic() - started:.1f} s; {outcome}")
    if not failed:
        return 0
    sys.stdout.flush()  # the table first, then what failed
    for notebook, problems in failed:
        for problem in problems:
            print(f"FAILED: {_shown_path(notebook)}: {problem}", file=sys.stderr)
    return 1


def _shown_path(path: pathlib.Path) -> str:
    try:
        return str(path.relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    main()
