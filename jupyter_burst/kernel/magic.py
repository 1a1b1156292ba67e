"""``%%burst`` and ``%burst``: parse, delegate to :mod:`jupyter_burst.kernel.cell`, print one line on a user error."""

from __future__ import annotations

import dataclasses
import difflib
import shlex
import sys
import threading
import time
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class

from jupyter_burst import config
from jupyter_burst.clusters import gc_all, start_phases
from jupyter_burst.clusters.choose import gpu_mem_floor
from jupyter_burst.driver import background_jobs, cache_plan, cluster
from jupyter_burst.errors import OptionError
from jupyter_burst.estimate import estimate
from jupyter_burst.kernel import (
    background,
    cell_status,
    completion,
    cost_report,
    env_report,
    help_lines,
    namespace,
    options,
    prewarm,
)
from jupyter_burst.kernel.cell import run_cell, running_cell_number
from jupyter_burst.kernel.offers_report import offers_command
from jupyter_burst.kernel.report_table import Column, Report, Row, Table
from jupyter_burst.kernel.verb_help import VERBS, overview, verb_help
from jupyter_burst.store.checkpoints import CheckpointStore, default_root, find_job, listing
from jupyter_burst.store.ledger import shared_ledger
from jupyter_burst.wire import class_kwargs, payload
from jupyter_burst.worker import helper


@magics_class
class BurstMagics(Magics):
    @line_cell_magic
    def burst(self, line: str, cell: str | None = None):
        __tracebackhide__ = True
        config.refresh()
        try:
            if cell is None:
                return self._verb(line)
            return self._cell(line, cell)
        except Exception as exc:
            remote = getattr(exc, "__burst_traceback__", None)
            if remote is not None:
                exc._render_traceback_ = _remote_renderer(self.shell, exc, remote)
                raise exc.with_traceback(remote) from None
            raise

    def _cell(self, line: str, cell: str) -> Any:
        parsed = options.parse(line)
        shell = self.shell
        if parsed.gpus_auto:
            parsed = choose_gpus(parsed, shell.user_ns, cell)
        raw = f"%%burst {line}\n{cell}" if line else f"%%burst\n{cell}"
        number = running_cell_number(shell)
        filename = shell.compile.cache(
            raw, number=shell.execution_count if number is None else number
        )
        kernel = getattr(getattr(shell, "kernel", None), "ident", "") or ""
        if parsed.background:
            name = background.start(
                cell, parsed, shell.user_ns, filename=filename, line_offset=1, kernel=kernel
            )
            print(
                f"burst: {name} runs in the background on cluster '{parsed.cluster}'; "
                f"%burst logs {name} -f follows it, %burst wait {name} brings its results back"
            )
            job_id = background.submitted_job(name)
            if job_id is not None:
                cell_status.show_background(parsed.cluster, parsed.gpus, name, job_id)
            return
        return run_cell(
            cell,
            parsed,
            shell.user_ns,
            filename=filename,
            line_offset=1,
            kernel=kernel,
            status=cell_status.for_cell(parsed.cluster, parsed.gpus),
        ).shown  # the value of the cell's last expression: IPython shows it as Out[n]

    def _verb(self, line: str):
        words = shlex.split(line)
        if not words:
            raise OptionError(
                "say what to do: %burst status, down, jobs, cost, offers ... (%burst? lists them); %%burst on a cell runs it"
            )
        verb, args = words[0], words[1:]
        if verb not in VERBS:
            close = difflib.get_close_matches(verb, list(VERBS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise OptionError(f"unknown command '%burst {verb}'{hint}; known: {', '.join(VERBS)}")
        return getattr(self, f"_{verb}")(args)

    def _help(self, args: list[str]) -> None:
        """%burst help [VERB]: every verb in one line each, or one verb's help."""
        if len(args) > 1 or (args and args[0] not in VERBS):
            raise OptionError(f"write %burst help [VERB]; the verbs: {', '.join(VERBS)}")
        print(verb_help(args[0]) if args else overview())

    def _estimate(self, args: list[str]) -> None:
        """%burst estimate EXPR [optimizer=adam] [batch=EXPR] [precision=fp32]"""
        if not args or "=" in args[0]:
            raise OptionError(
                "say which model: %burst estimate MODEL [optimizer=adam] [batch=EXPR] [precision=fp32]"
            )
        settings: dict[str, str] = {}
        for word in args[1:]:
            key, sep, value = word.partition("=")
            if not sep or key not in ("optimizer", "batch", "precision") or key in settings:
                raise OptionError(
                    f"'{word}' is not an estimate option; use optimizer=NAME, batch=EXPR, precision=fp32|bf16|fp16"
                )
            settings[key] = value
        # The model and the batch are the user's own expressions, evaluated like %timeit's.
        model = self.shell.ev(args[0])
        batch = self.shell.ev(settings["batch"]) if "batch" in settings else None
        result = estimate(
            model,
            optimizer=settings.get("optimizer", "adam"),
            batch=batch,
            precision=settings.get("precision", "fp32"),
        )
        _estimates[id(model)] = result
        print(result.table())

    def _checkpoints(self, args: list[str]) -> Table:
        """%burst checkpoints [JOB]: the checkpoints kept, newest last."""
        if len(args) > 1:
            raise OptionError("%burst checkpoints takes at most one job id")
        found = listing(default_root(config.state_dir()), args[0] if args else None)
        return checkpoints_table(
            found, empty="burst: no checkpoints" + (f" for job {args[0]}" if args else "")
        )

    def _restore(self, args: list[str]) -> None:
        """%burst restore JOB [step=K] as NAME: a checkpoint's state into the notebook."""
        usage = "write %burst restore JOB [step=K] as NAME (JOB from %burst checkpoints, or last)"
        if len(args) not in (3, 4) or args[-2] != "as" or not args[-1].isidentifier():
            raise OptionError(usage)
        step = None
        if len(args) == 4:
            key, _, value = args[1].partition("=")
            if key != "step" or not value.lstrip("-").isdigit():
                raise OptionError(usage)
            step = int(value)
        root = default_root(config.state_dir())
        job = find_job(root, args[0])
        store = CheckpointStore(root, job)
        found = store.restore(step)
        if found is None:
            where = f" at step {step}" if step is not None else ""
            raise OptionError(
                f"job {job} has no valid checkpoint{where}; see %burst checkpoints {job}"
            )
        state, checkpoint = found
        self.shell.user_ns[args[-1]] = state
        print(f"burst: {args[-1]} = the checkpoint of job {job}, step {checkpoint.step}")

    # background jobs ----------------------------------------------------------------

    def _jobs(self, args: list[str]) -> Table:
        if args:
            raise OptionError("%burst jobs takes no arguments")
        return background.jobs_table(background_jobs.list_jobs())

    def _logs(self, args: list[str]) -> None:
        follow = "-f" in args
        names = [a for a in args if a != "-f"]
        if len(names) != 1:
            raise OptionError("write %burst logs NAME, or %burst logs NAME -f to follow it")
        background.logs(names[0], follow=follow)

    def _wait(self, args: list[str]) -> None:
        name = _one_name("wait", args)
        summary = background.wait(name, self.shell.user_ns)
        if summary["status"] != "running":
            print(f"burst: {name} {summary['status']}; its results are in the notebook")

    def _cancel(self, args: list[str]) -> None:
        name = _one_name("cancel", args)
        started = time.monotonic()
        background_jobs.cancel(name)
        print(f"burst: cancelled {name}; its work stopped in {time.monotonic() - started:.1f} s")

    def _attach(self, args: list[str]) -> None:
        name = _one_name("attach", args)
        summary = background.attach(name, self.shell.user_ns)
        if summary["status"] == "running":
            print(
                f"burst: {name} is still running (attempt {summary.get('attempts', 1)}); "
                f"%burst wait {name} follows it and brings its results back"
            )
        else:
            print(f"burst: {name} {summary['status']}; its results are in the notebook")

    def _offers(self, args: list[str]) -> Table:
        """%burst offers gpus=N [gpu_mem=GiB] [spot=yes|no] [region=a,b]: cheapest first."""
        return offers_command(args)

    def _env(self, args: list[str]) -> None:
        """%burst env: what cloud nodes install from this kernel's environment, and its hash."""
        if args:
            raise OptionError("%burst env takes no arguments")
        print(env_report.report(config.state_dir()))

    def _cost(self, args: list[str]) -> Report:
        if args:
            raise OptionError("%burst cost takes no arguments")
        return cost_report.report(config.state_dir())

    def _gc(self, args: list[str]) -> None:
        """%burst gc [--yes] [--region a,b]: list (and with --yes end) what no live cluster owns."""
        print(gc_all.command(args, how_to_confirm="%burst gc --yes"))

    def _status(self, args: list[str]) -> Table:
        if args:
            raise OptionError("%burst status takes no arguments")
        entries = cluster.status()
        since = time.time() - _STARTS_SHOWN_SECONDS
        return status_table(entries, start_phases.recent(shared_ledger(config.state_dir()), since))

    def _prewarm(self, args: list[str]) -> None:
        """%burst prewarm [on|off]: whether JupyterLab starts a cell's cluster ahead of it."""
        print(prewarm.command(args))

    def _down(self, args: list[str]) -> None:
        """%burst down [NAME] [provider=P]: a name stops it on every provider it runs on."""
        provider = None
        names = []
        for word in args:
            key, sep, value = word.partition("=")
            if sep and key == "provider" and value and provider is None:
                provider = value
            elif not sep:
                names.append(word)
            else:
                raise OptionError(
                    f"'{word}' is not a %burst down option; write %burst down [NAME] [provider=P]"
                )
        if len(names) > 1:
            raise OptionError("%burst down takes at most one cluster name")
        stopped = cluster.down(names[0] if names else None, provider=provider)
        print(
            f"burst: stopped {', '.join(stopped)}" if stopped else "burst: no cluster was running"
        )

    def _cache(self, args: list[str]) -> None:
        """%burst cache [clear] [NAME]: what the cluster keeps of this notebook's values."""
        clear = bool(args) and args[0] == "clear"
        rest = args[1:] if clear else args
        if len(rest) > 1 or any("=" in word for word in rest):
            raise OptionError("write %burst cache [clear] [CLUSTER]")
        name = rest[0] if rest else str(config.get("cluster", "default"))
        provider = cluster.running_provider(name)
        handle = cluster.attach(name, provider) if provider else None
        if handle is None:
            print(f"burst: cluster '{name}' is not running; nothing of this notebook is kept on it")
            return
        print(cache_plan.clear(handle) if clear else cache_plan.describe(handle))


_estimates: dict[int, object] = {}


def checkpoints_table(found: list, empty: str) -> Table:
    """The checkpoints kept, one row each (job, step, saved, bytes, the cell's first line)."""
    rows = [
        Row(job=job, step=c.step, saved=c.time, bytes=c.bytes, cell=c.cell, checkpoint=c)
        for job, c in found
    ]

    def first_line(row: Row) -> str:
        return row.cell.strip().splitlines()[0][:40] if row.cell.strip() else ""

    return Table(
        rows,
        [
            Column("job", lambda r: r.job),
            Column("step", lambda r: str(r.step), ">"),
            Column("saved", lambda r: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.saved))),
            Column("size", lambda r: f"{r.bytes:,}", ">"),
            Column("cell", first_line),
        ],
        empty=empty,
    )


def _one_name(verb: str, args: list[str]) -> str:
    if len(args) != 1:
        raise OptionError(f"write %burst {verb} NAME (the name= of a %%burst async cell)")
    return args[0]


def choose_gpus(parsed, user_ns, cell: str):
    """gpus=auto: as many GPUs as the memory estimate of the cell's largest model asks for."""
    torch = sys.modules.get("torch")
    reads = namespace.analyse(cell).reads
    models = [
        user_ns[name]
        for name in sorted(reads)
        if name in user_ns and torch is not None and isinstance(user_ns[name], torch.nn.Module)
    ]
    if not models:
        raise OptionError(
            "gpus=auto needs a torch model among the cell's variables to estimate; give gpus=N instead"
        )
    model = max(models, key=lambda m: sum(p.numel() for p in m.parameters()))
    found = _estimates.get(id(model)) or estimate(model)
    gpus, size, strategy = found.recommend()
    print(
        f"burst: gpus=auto chose gpus={gpus} ({strategy.upper()}, GPUs of >= {size} GiB; "
        f"one-GPU total {found.total / (1 << 30):.2f} GiB)"
    )
    # The same estimate sets the memory floor of the offers chosen from (gpu_mem= overrides it).
    gpu_mem = parsed.gpu_mem if parsed.gpu_mem is not None else gpu_mem_floor(found, gpus, strategy)
    return dataclasses.replace(parsed, gpus=gpus, gpus_auto=False, gpu_mem=gpu_mem)


def _remote_renderer(shell, exc: BaseException, tb):
    def render() -> list[str]:
        return shell.InteractiveTB.structured_traceback(type(exc), exc, tb, tb_offset=0)

    return render


def status_table(entries: list[dict], starts: list[start_phases.Start]) -> Table:
    """``%burst status``: one row per cluster (a name may run on several providers: ``default``
    on each); GPUs shown as 'cpu' where the slot is a CPU, and the slots a cluster grew by to
    fit a cell counted as added (they go again when idle). Below the rows, where the last
    start of each spent its time."""
    now = time.time()
    rows = [_cluster_row(e, now) for e in entries]
    # Which machine image a cloud cluster's nodes boot, and how it was found (a setting, or
    # a public SSM parameter): too long for a column.
    notes = [f"{r.name} image: {i['image']} ({i['how']})" for r in rows for i in r.images]
    starts_text = format_starts(entries, starts)
    if starts_text:  # after a blank line: the table's rows stay one block
        notes += ["", starts_text]
    return Table(
        rows,
        [
            Column("cluster", lambda r: r.name),
            Column("provider", lambda r: r.provider),
            Column("state", lambda r: r.state),
            Column("slots", _slots_text),
            Column("idle after", lambda r: f"{r.idle_minutes:g} min"),
            Column("address", lambda r: r.address),
            Column("up", lambda r: f"{r.up_minutes:.1f} min"),
        ],
        notes=notes,
        empty="burst: no clusters (a %%burst cell starts one)",
    )


def _cluster_row(e: dict, now: float) -> Row:
    if not e.get("alive"):
        state = "gone"
    elif "error" in e:
        state = "not answering"
    else:
        state = (
            "running"
            if e.get("busy")
            else f"idle, stops in {e.get('idle_remaining', 0) / 60:.1f} min"
        )
    slots = int(e.get("slots") or 0)
    return Row(
        name=e["name"],
        provider=e.get("provider", "?"),
        state=state,
        slots=slots,
        devices=list(e.get("devices") or []),
        added_slots=max(0, slots - int(e.get("started_slots") or slots)),
        idle_minutes=e.get("idle", 0),
        address=e.get("scheduler", ""),
        up_minutes=(now - e.get("started", now)) / 60,
        images=list(e.get("images") or []),
    )


def _slots_text(row: Row) -> str:
    text = ", ".join(row.devices) if row.devices else str(row.slots or "?")
    # Grown to fit a cell: the added slots go again when idle.
    return text + (f" ({row.added_slots} added)" if row.added_slots else "")


_STARTS_SHOWN_SECONDS = 24 * 3600  # a start older than a day is the ledger's alone


def format_starts(
    entries: list[dict], starts: list[start_phases.Start], now: float | None = None
) -> str:
    """Where the last start of each listed cluster spent its time, and any start under way:
    ``default (local) started in 3.1 s: quote 0.0 s · launching 1/1 0.1 s · ... → running``."""
    now = time.time() if now is None else now
    by_cluster = {s.cluster_id: s for s in starts if s.cluster_id}
    newest = start_phases.latest(starts)
    shown: list[start_phases.Start] = []
    for e in entries:
        key = (e.get("name"), e.get("provider", "local"))
        start = by_cluster.get(e.get("id")) or newest.get(key)
        if start is not None and start not in shown:
            shown.append(start)
    shown += [s for s in newest.values() if s.state == "starting" and s not in shown]
    lines = []
    for start in shown:
        how = " (pre-warmed)" if start.purpose == "prewarm" else ""
        lines.append(f"{start.name} ({start.provider}){how} {start.describe(now)}")
    return "\n".join(lines)


# %burst? shows every verb, from the one source of their help (kernel/verb_help.py).
BurstMagics.burst.__doc__ = overview()


def load(shell) -> None:
    shell.register_magics(BurstMagics)
    completion.install(shell)
    help_lines.install(shell)
    class_kwargs.install()  # a notebook class made with keywords can be made again remotely
    # The same cell also runs without %%burst: then `burst` is this one process, rank 0 of 1.
    shell.user_ns.setdefault("burst", helper.local())
    # While the user writes the first cell, not when it runs (a few hundred ms, once).
    threading.Thread(target=payload.warm_up, name="burst-warm-up", daemon=True).start()
