"""``python -m bench [--quick] [--only NAME]... [--profile] [--write]``: measure, print the table.

With ``--write`` the table, the command, the date and the machine go into ``bench/README.md``
between the ``bench:start``/``bench:end`` markers.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import os
import pathlib
import platform
import shlex
import signal
import sys
import time

from bench.common import Report, Session

# The order they run in.
# The order they run in; "kernel" first: it is the figure a user meets (a real kernel).
MEASUREMENTS = ("kernel", "roundtrip", "throughput", "peers", "coldstart", "estimate", "resume")
README = pathlib.Path(__file__).with_name("README.md")
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Measure jupyter-burst; print the results table."
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repetitions")
    parser.add_argument(
        "--only",
        action="append",
        choices=MEASUREMENTS,
        metavar="NAME",
        help=f"run only this measurement (repeatable): {', '.join(MEASUREMENTS)}",
    )
    parser.add_argument(
        "--profile", action="store_true", help="print the breakdowns even where targets pass"
    )
    parser.add_argument("--write", action="store_true", help="rewrite the table in bench/README.md")
    return parser.parse_args(argv)


def machine() -> dict[str, str]:
    import psutil

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "RAM": f"{psutil.virtual_memory().total / (1 << 30):.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": version("torch"),
        "distributed": version("distributed"),
        "dask": version("dask"),
        "numpy": version("numpy"),
        "cloudpickle": version("cloudpickle"),
    }


def render(rows: list, notes: list[str]) -> str:
    header = ("measurement", "figure", "value", "target", "")
    table = [header, ("---",) * 5]
    for row in rows:
        verdict = "" if row.ok is None else ("pass" if row.ok else "**MISS**")
        table.append((row.measurement, row.figure, row.value, row.target, verdict))
    text = "\n".join("| " + " | ".join(cells) + " |" for cells in table)
    if notes:
        text += "\n\n```\n" + "\n".join(notes) + "\n```"
    return text


def write_readme(body: str) -> None:
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{body}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = [m for m in MEASUREMENTS if not args.only or m in args.only]
    # SIGTERM unwinds like Ctrl-C, so the clusters and temp folders still get cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    session = Session()  # sets DASK_BURST__STATE_DIR before jupyter_burst is imported
    reports: list[Report] = []
    leaked: list[int] = []
    try:
        for name in selected:
            t0 = time.monotonic()
            print(f"bench: {name}...", file=sys.stderr, flush=True)
            module = importlib.import_module(f"bench.{name}")
            reports.append(module.run(session, quick=args.quick, profile=args.profile))
            print(f"bench: {name} took {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        leaked = session.close()
    if leaked:
        print(f"bench: WARNING: killed cluster processes left behind: {leaked}", file=sys.stderr)
    rows = [row for r in reports for row in r.rows]
    notes = [line for r in reports for line in r.notes]
    table = render(rows, notes)
    info = machine()
    command = "python -m bench" + "".join(
        f" {shlex.quote(a)}" for a in sys.argv[1:] if a != "--write"
    )
    elapsed = time.monotonic() - started
    print(table)
    print(f"\n{command}  ({elapsed:.0f} s, {when})")
    print(", ".join(f"{k} {v}" for k, v in info.items()))
    if args.write:
        body = (
            f"Command: `{command}` — run {when}, took {elapsed:.0f} s.\n\n"
            "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".\n\n" + table
        )
        write_readme(body)
        print(f"bench: wrote {README}", file=sys.stderr)
    missed = [row for row in rows if row.ok is False]
    return 1 if missed or leaked else 0


if __name__ == "__main__":
    sys.exit(main())
