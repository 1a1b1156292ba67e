"""Run a demo notebook headless (nbclient, a real kernel) and print what happened.

``python -m jupyter_burst.demo notebooks/demo.ipynb`` -- used by ``make demo``. Exits non-zero
on any unexpected error. The run gets its own state folder (``.burst-demo/`` beside the
notebook's folder unless ``--state-dir`` says otherwise) so its ledger can be looked at after.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys
import time


def _seconds(cell) -> float | None:
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not start or not end:
        return None
    parse = datetime.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def _what_it_showed(cell) -> str:
    """The error, or the first and last lines it printed, or the kinds of rich output."""
    lines: list[str] = []
    rich: list[str] = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out['ename']}: {out['evalue']}"[:110]
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


def run(notebook: pathlib.Path, state_dir: pathlib.Path, timeout: int) -> int:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    state_dir.mkdir(parents=True, exist_ok=True)
    os.environ["DASK_BURST__STATE_DIR"] = str(state_dir)
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook.parent)}},
        record_timing=True,
    )
    started = time.monotonic()
    failed = None
    try:
        client.execute()
    except CellExecutionError as exc:
        failed = exc
    total = time.monotonic() - started
    executed = state_dir / f"{notebook.stem}.executed.ipynb"
    nbformat.write(nb, executed)

    print(f"\njupyter-burst demo: {notebook}")
    print(f"{'cell':>4}  {'kind':<6} {'seconds':>7}  what it showed")
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        kind = "burst" if cell.source.lstrip().startswith("%%burst") else "local"
        seconds = _seconds(cell)
        shown = f"{seconds:7.2f}" if seconds is not None else "      -"
        print(f"{i + 1:>4}  {kind:<6} {shown}  {_what_it_showed(cell)}")
    print(_ledger_summary(state_dir))
    print(f"total {total:.1f} s; executed notebook: {executed}")
    if failed is not None:
        print(f"\nFAILED: {str(failed).strip().splitlines()[-1]}", file=sys.stderr)
        return 1
    return 0


def _ledger_summary(state_dir: pathlib.Path) -> str:
    from jupyter_burst.ledger import Ledger

    ledger = Ledger(state_dir / "ledger.sqlite")
    jobs = ledger.query("SELECT status, count(*) AS n FROM jobs GROUP BY status")
    lines = ledger.query("SELECT count(*) AS n FROM log_lines")[0]["n"]
    nodes = ledger.query(
        "SELECT devices, started, stopped, price_per_hour FROM nodes ORDER BY started"
    )
    cost = sum(
        ((n["stopped"] or time.time()) - n["started"]) / 3600 * (n["price_per_hour"] or 0)
        for n in nodes
    )
    devices = sorted({d for n in nodes for d in json.loads(n["devices"] or "[]")})
    by_status = ", ".join(f"{j['n']} {j['status']}" for j in jobs) or "none"
    return (
        f"ledger: bursts {by_status}; {lines} output lines kept; {len(nodes)} node(s), "
        f"slots {', '.join(devices) or '-'} (cpu = a CPU slot, no GPU); cost ${cost:.2f} "
        "(local provider, no price set)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jupyter_burst.demo")
    parser.add_argument("notebook", type=pathlib.Path)
    parser.add_argument("--state-dir", type=pathlib.Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    notebook = args.notebook.resolve()
    state_dir = (args.state_dir or notebook.parent.parent / ".burst-demo").resolve()
    sys.exit(run(notebook, state_dir, args.timeout))


if __name__ == "__main__":
    main()
