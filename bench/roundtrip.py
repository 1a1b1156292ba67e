"""Warm round trip: a trivial ``%%burst`` cell vs a raw ``client.submit(f).result()``.

Both run on the same warm cluster from the same process, interleaved one by one so that
drift (another process, the CPU clock) hits both alike.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time

from bench.common import TRIVIAL_CELL, Report, Row, Session, Timers, median, ms, p90

TARGET_RATIO = 1.5


def run(session: Session, quick: bool, profile: bool = False) -> Report:
    n = 50 if quick else 200
    warmup = 5
    session.ensure_cluster()
    client = session.raw_client()
    trivial = session.remote["trivial"]

    def raw() -> float:
        t0 = time.perf_counter()
        client.submit(trivial, pure=False).result()
        return time.perf_counter() - t0

    for _ in range(warmup):
        session.cell(TRIVIAL_CELL)
        raw()
    burst_times, raw_times = [], []
    for _ in range(n):
        burst_times.append(session.cell(TRIVIAL_CELL))
        raw_times.append(raw())

    ratio = median(burst_times) / median(raw_times)
    report = Report()
    m = "warm round trip"
    report.rows += [
        Row(m, f"`%%burst` trivial cell, median (N={n})", ms(median(burst_times))),
        Row(m, f"`%%burst` trivial cell, p90 (N={n})", ms(p90(burst_times))),
        Row(m, f"raw `client.submit(f).result()`, median (N={n})", ms(median(raw_times))),
        Row(m, f"raw `client.submit(f).result()`, p90 (N={n})", ms(p90(raw_times))),
        Row(
            m,
            "burst / raw (medians)",
            f"{ratio:.2f}x",
            f"<= {TARGET_RATIO}x",
            ratio <= TARGET_RATIO,
        ),
    ]
    if profile or ratio > TARGET_RATIO:
        report.notes += breakdown(session, 20 if quick else 50)
    return report


def breakdown(session: Session, n: int) -> list[str]:
    """Where a trivial cell's time goes in the kernel: timed steps, then cProfile's top entries."""
    import jupyter_burst.driver.cluster as clusters
    import jupyter_burst.driver.jobs as jobs
    import jupyter_burst.kernel.cell as cell
    import jupyter_burst.kernel.magic as magic
    import jupyter_burst.kernel.namespace as namespace
    import jupyter_burst.store.ledger as ledger
    import jupyter_burst.wire.payload as wire

    totals = []
    with Timers() as timers:
        timers.wrap(magic, "run_cell", "cell.run_cell (all of the magic's work)")
        timers.wrap(namespace, "analyse", "namespace.analyse")
        timers.wrap(namespace, "select", "namespace.select")
        timers.wrap(wire, "pack_namespace", "payload.pack_namespace")
        timers.wrap(clusters, "connect", "clusters.connect")
        timers.wrap(cell, "shared_ledger", "ledger.shared_ledger")
        timers.wrap(ledger.Ledger, "job_started", "ledger.job_started")
        timers.wrap(ledger.Ledger, "job_ended", "ledger.job_ended")
        timers.wrap(ledger.Ledger, "add_lines", "ledger.add_lines")
        timers.wrap(jobs, "_choose_workers", "jobs._choose_workers (scheduler_info RPC)")
        timers.wrap(jobs, "submit", "jobs.submit (incl. _choose_workers)")
        timers.wrap(jobs, "follow", "jobs.follow (wait for the task + result)")
        timers.wrap(jobs, "_result", "jobs._result (future.result)")
        timers.wrap(wire, "unpack_result", "payload.unpack_result")
        timers.wrap(jobs, "drain", "jobs.drain")
        for _ in range(n):
            totals.append(session.cell(TRIVIAL_CELL))
    lines = [
        f"Warm round trip, kernel-side breakdown (mean per cell over {n} cells, "
        f"wall {ms(sum(totals) / n)} per `shell.run_cell`):"
    ]
    for label, values in timers.times.items():
        if values:
            lines.append(f"  {label:<45} {sum(values) / n * 1e3:7.2f} ms  (x{len(values) / n:g})")

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        session.cell(TRIVIAL_CELL)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(12)
    lines.append(f"cProfile of {n} trivial cells, top 12 by own time (tottime):")
    lines += ["  " + line for line in _stats_table(out.getvalue())]
    return lines


def _stats_table(text: str) -> list[str]:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("ncalls"):
            return [line.rstrip() for line in lines[i:] if line.strip()]
    return []
