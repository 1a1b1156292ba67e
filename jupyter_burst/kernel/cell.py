"""Everything ``%%burst`` does, as a Python API: read, pack, run remotely, merge back.

The order matters for the promise "$0 for a mistake": the cell is parsed and its values
packed before any cluster is started or contacted.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from dask.utils import parse_bytes
from IPython import get_ipython

from jupyter_burst import config, credentials
from jupyter_burst.clusters.start_phases import StartPhases
from jupyter_burst.driver import cache_plan, cluster, jobs, placement
from jupyter_burst.driver.job_log import JobLog, ending
from jupyter_burst.driver.timeline import Timeline
from jupyter_burst.errors import BurstError, JobInterrupted, SendError
from jupyter_burst.kernel import (
    cell_profile,
    cell_status,
    ipython_syntax,
    namespace,
    output,
    tracebacks,
    workdir,
)
from jupyter_burst.kernel.merge import merge_in_place, repoint
from jupyter_burst.kernel.options import CellOptions, parse
from jupyter_burst.store import checkpoints
from jupyter_burst.store.ledger import shared_ledger
from jupyter_burst.wire import payload as wire
from jupyter_burst.wire import rng_state
from jupyter_burst.wire.contract import CellSpec
from jupyter_burst.worker import node_packages


@dataclasses.dataclass
class CellResult:
    """What one burst brought back."""

    job_id: str
    cluster: str
    assigned: list[str]
    changed: list[str]
    deleted: list[str]
    seconds: float
    shown: Any = None  # the value of the cell's last line, when it is an expression (Out[n])


@dataclasses.dataclass
class PreparedCell:
    """A cell read and packed, before any cluster is contacted."""

    job_id: str
    source: str
    spec: CellSpec
    message: wire.Payload
    snapshot: dict[str, Any]
    options: CellOptions  # with its provider: named, or chosen (driver/placement.py)


def prepare(
    source: str,
    options: CellOptions,
    user_ns: MutableMapping[str, Any],
    filename: str | None = None,
    line_offset: int = 0,
) -> PreparedCell:
    """Read the cell and pack what it reads; a mistake here costs nothing ($0, no cluster)."""
    # Where it runs decides its working folder; choosing starts nothing (it reads offers).
    options = placement.resolve(options)
    job_id = jobs.new_job_id()
    filename = filename or f"<burst-cell-{job_id}>"
    code = ipython_syntax.transform(source)  # !cmd, %time ...; a magic the ranks lack: one line
    try:
        analysis = namespace.analyse(code.code, filename)
    except SyntaxError:
        raise  # the user's own mistake, shown by IPython with its caret
    analysis = namespace.with_magic_code(analysis, code.timed, code.read_only)
    ipython_syntax.refuse_keyboard(code.code, user_ns)
    values = namespace.select(user_ns, analysis, send=options.send, exclude=options.exclude)
    secrets = credentials.notebook_secrets(user_ns)
    credentials.refuse(values, send=options.send, secrets=secrets)
    credentials.remember(secrets)  # so that output quoting one is redacted in the ledger
    # A remote cluster's nodes get the notebook's folder (refused here when past its limits).
    folder = workdir.for_cell(options.provider)
    spec = CellSpec(
        source=code.code,
        filename=filename,
        line_offset=line_offset,
        assigns=tuple(sorted(analysis.assigns)),
        contexts=tuple(sorted(analysis.contexts & analysis.assigns)),
        imported_from=tuple(tuple(binding) for binding in analysis.imported_from),
        returns=tuple(options.returns) if options.returns is not None else None,
        gather=options.gather,
        collective_timeout=float(config.get("collective-timeout", 300)),
        exclude=tuple(options.exclude),
        # On this machine the cell runs where the notebook runs, so relative paths agree.
        cwd=os.getcwd() if options.provider == "local" else None,
        workdir=folder,
        background=options.background,
        cache=cache_plan.settings(),  # this kernel's entries in the workers' caches
        # Child processes (DataLoader workers, Pool) start as they would in the notebook.
        start_method=multiprocessing.get_start_method(allow_none=True)
        or multiprocessing.get_context().get_start_method(),
        pip=tuple(ipython_syntax.expand(line, user_ns) for line in code.pip),
        # The notebook's random generators: each rank starts from them (rng_state.py).
        rng=rng_state.capture(),
        imports_torch=any(m.split(".")[0] == "torch" for m in analysis.modules)
        or "torch" in analysis.reads,
    )
    snapshot = dict(user_ns)
    if not isinstance(user_ns, dict):
        raise SendError("the namespace must be a dict")
    limit = config.get("send-limit")
    message = wire.pack_namespace(
        values,
        user_ns,
        imports=analysis.modules,
        cache_from=cache_plan.threshold(),
        limit=None if limit is None else int(parse_bytes(str(limit))),
    )
    # The notebook's own objects, for a reference back to one that travelled (payload.SENT).
    snapshot[wire.SENT] = message.sent
    return PreparedCell(job_id, source, spec, message, snapshot, options)


def connect(
    options: CellOptions,
    on_start: Callable[[StartPhases], None] | None = None,
    purpose: str = "cell",
) -> cluster.ClusterHandle:
    """The cluster the options name: attached if it runs (grown if too small), started if not.

    Unnamed, it is the provider's own ``default``; a name the cell gave is one cluster.
    ``on_start`` gets the recorder of a start's phases (the status line shows them);
    ``purpose``: ``prewarm`` when JupyterLab starts it ahead of its cell (kernel/prewarm.py).
    """
    if options.provider is None:
        options = placement.resolve(options)
    return cluster.connect(
        options.cluster,
        options.provider,
        options.gpus,
        options.idle,
        idle_given="idle" in options.given,
        named="cluster" in options.given,
        spot=options.spot,
        gpu_mem=options.gpu_mem,
        regions=options.regions,
        plan=options.plan,
        on_start=on_start,
        purpose=purpose,
        max_hourly=float(options.max_hourly) if options.max_hourly is not None else None,
    )


def checkpoint_settings(
    state_dir, job_id: str, source: str, provider: str = "local"
) -> dict[str, Any]:
    """Where ``burst.checkpoint`` of this job writes; the same for every attempt of it."""
    root = checkpoints.default_root(state_dir)
    if provider not in _OWN_MACHINES:
        _warn_if_checkpoints_stay_on_the_machines(root, provider)
    return {
        "root": root,
        "job": job_id,
        "keep": int(config.get("checkpoints.keep", 3)),
        "cell": credentials.redact(source),  # an excerpt of it goes in the store's manifest
    }


# Providers whose machines (and disks) outlive a cluster: this one, and on-prem hosts.
_OWN_MACHINES = ("local", "ssh")
_warned_local_roots: set[str] = set()


def _warn_if_checkpoints_stay_on_the_machines(root: str, provider: str) -> None:
    """A folder path on a rented cluster is a folder on its machines: gone when they are."""
    if "://" in root and not root.startswith("file://"):
        return
    if root in _warned_local_roots:
        return
    _warned_local_roots.add(root)
    hint = " with burst.aws.instance-profile" if provider == "aws" else ""
    print(
        f"burst: checkpoints go to {root} on the {provider} cluster's own machines and end with "
        f"them; keep them with burst.checkpoints.url=s3://BUCKET/PREFIX{hint}",
        flush=True,
    )


def run_cell(
    source: str,
    options: CellOptions,
    user_ns: MutableMapping[str, Any],
    filename: str | None = None,
    line_offset: int = 0,
    render: Callable[[int, list], None] | None = None,
    kernel: str = "",
    status: cell_status.StatusLine | None = None,
) -> CellResult:
    """Run ``source`` on the cluster ``options`` name and merge its results into ``user_ns``.

    ``filename``/``line_offset`` make tracebacks point at the notebook cell's own lines.
    ``status``: the cell's live status line (:func:`jupyter_burst.kernel.cell_status.for_cell`),
    shown once the cell is packed and ended with the job's final state; none by default.
    """
    started = time.monotonic()
    timeline = Timeline()
    cell = prepare(source, options, user_ns, filename, line_offset)
    timeline.mark("packed")
    line = status if status is not None else cell_status.StatusLine()
    line.begin(cell.job_id)
    timeline.mark("status shown")
    state = "failed"
    ran_on: list[cluster.ClusterHandle] = []
    try:
        result = _run_prepared(cell, user_ns, render, kernel, started, line, timeline, ran_on)
        state = "done"
        return result
    except BaseException as exc:
        state, _ = ending(exc)
        raise
    finally:
        line.end(state)
        timeline.mark("status ended")
        if options.profile and ran_on:
            cell_profile.show(timeline, ran_on[-1], cell.job_id)


def _run_prepared(
    cell: PreparedCell,
    user_ns: MutableMapping[str, Any],
    render: Callable[[int, list], None] | None,
    kernel: str,
    started: float,
    line: cell_status.StatusLine,
    timeline: Timeline,
    used: list[cluster.ClusterHandle],
) -> CellResult:
    """Run a packed cell on its cluster, recorded in the ledger, and merge what it sent back.

    ``used`` gets each cluster it ran on (a lost one is replaced between attempts)."""
    source, options, job_id = cell.source, cell.options, cell.job_id
    handle = connect(options, on_start=line.starting)
    node_packages.ensure(handle.client, cell.spec.pip, handle.name)  # %pip, on every node
    cell.spec.checkpoints = checkpoint_settings(handle.state_dir, job_id, source, handle.provider)
    ledger = shared_ledger(handle.state_dir)
    show = render or output.renderer(options.gpus, job_id)
    log = JobLog(ledger, job_id, show, lambda _, text: print(text, file=sys.stderr, flush=True))
    used.append(handle)
    timeline.mark("connected")

    def attempt_cluster(attempt: int) -> cluster.ClusterHandle:
        if attempt == 1:
            return handle
        if ledger.stopped_on_purpose(used[-1].id):
            # Stopping a cluster means: stop spending now. A rerun would start another.
            raise JobInterrupted(
                f"interrupted: cluster '{used[-1].name}' was stopped while the cell ran "
                "(%burst down, or Stop in the sidebar), so the cell was not run again; "
                f"its checkpoints: %burst checkpoints {job_id}"
            )
        # After a lost scheduler this starts a new cluster; the checkpoint store outlives it.
        used.append(connect(options, on_start=line.starting))
        if used[-1] is not used[-2]:
            node_packages.ensure(used[-1].client, cell.spec.pip, used[-1].name)
        return used[-1]

    ledger.job_started(
        job_id, handle.id, kernel, source, options_record(options), notebook=jobs.notebook_path()
    )
    line.started(handle.name, ledger)
    timeline.mark("recorded")
    status, error_text = "failed", None
    try:
        try:
            outcome = jobs.run_attempts(
                attempt_cluster,
                job_id,
                cell.message,
                cell.spec,
                ranks=options.gpus,
                retries=options.retries,
                timeout_minutes=options.timeout,
                on_events=log.events,
                on_note=log.note,
                on_job=lambda _: line.running(),
                files=workdir.NotebookFiles(cell.spec.workdir) if cell.spec.workdir else None,
                timeline=timeline,
            )
        finally:
            if render is None:
                show.close()  # the last lines a flood held back, before any traceback
        timeline.mark("output shown")
        try:
            main = apply_outcome(
                outcome.payloads,
                outcome.failure,
                options.gpus,
                options.gather,
                user_ns,
                cell.snapshot,
                say=show.note if render is None else None,
            )
        except BaseException:
            if render is None:
                show.show_after_cell()  # the figures, then the error
            raise
        timeline.mark("merged")
        if render is None:
            output.show_after_result(show, main.get("shown") is not None)
        output.prepare_to_show(main.get("shown"))
        rng_state.restore(main.get("rng"), imported_only=True)  # where rank 0's ended
        timeline.mark("figures shown")
        status = "done"
        return CellResult(
            job_id=job_id,
            cluster=handle.name,
            assigned=sorted(set(main["values"]) - set(main["changed"])),
            changed=main["changed"],
            deleted=main["deleted"],
            seconds=time.monotonic() - started,
            shown=main.get("shown"),
        )
    except BaseException as exc:
        status, error_text = ending(exc)
        raise
    finally:
        log.close()
        ledger.job_ended(job_id, status, error_text)
        timeline.mark("end recorded")


def apply_outcome(
    payloads: list,
    failure: jobs.RankFailure | None,
    world_size: int,
    gather: bool,
    user_ns: MutableMapping[str, Any],
    snapshot: dict[str, Any],
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Merge what the ranks sent back into ``user_ns``, or raise the error of the rank that failed.

    ``say``: how a note about a value is shown (default: a line on stderr).
    """
    say = say or _say
    if failure is not None:
        raise _failed_rank(failure, world_size, user_ns, snapshot, payloads, say)
    results = [
        wire.unpack_result(p, user_ns, snapshot) if (rank == 0 or gather) else None
        for rank, p in enumerate(payloads)
    ]
    main = results[0]
    for warning in main.get("warnings", ()):
        say(warning)
    workdir.bring_back(main.get("files"), say)
    if gather:
        names = sorted({name for r in results for name in r["values"]})
        for name in names:
            user_ns[name] = [r["values"].get(name) for r in results]
    else:
        _merge(main, user_ns, snapshot, say)
    return main


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _merge(
    result: dict, user_ns: MutableMapping[str, Any], snapshot: dict, say: Callable[[str], None]
) -> None:
    changed = set(result["changed"])
    merged: dict[int, Any] = {}  # id of a copy that came back -> the notebook's object it updated
    for name, value in result["values"].items():
        if isinstance(value, wire.MissingModule):
            say(
                f"burst: the cell imported '{value.__name__}' as {name}, which exists on the "
                f"cluster only (a %pip install there); the notebook has no '{name}'"
            )
            continue
        original = snapshot.get(name)
        if name in changed and merge_in_place(original, value):
            user_ns[name] = original  # the same object, now holding the cell's changes
            merged[id(value)] = original
        else:
            user_ns[name] = value
    if merged:
        # What came back may hold the copies just poured into the notebook's objects (a
        # scheduler holds its optimizer, a trainer its model): point it at the originals.
        for name in result["values"]:
            if name in user_ns:
                repoint(user_ns[name], merged)
    for name in result["deleted"]:
        user_ns.pop(name, None)


def _failed_rank(
    failure, world_size: int, user_ns, snapshot, payloads: list, say: Callable[[str], None]
) -> BaseException:
    """The exception to raise for the rank that failed first; the others were stopped.

    What rank 0 wrote in its working folder before it ended comes back all the same, as a
    file a notebook cell writes before it raises stays written.
    """
    first = payloads[0] if payloads else None
    if first is not None and not (failure.rank == 0 and failure.lost is not None):
        try:
            files = wire.unpack_result(first, user_ns, snapshot).get("files")
        except Exception:
            files = None  # the error below is what the user needs to see
        workdir.bring_back(files, say)
    if failure.lost is not None:
        return failure.lost
    result = wire.unpack_result(failure.payload, user_ns, snapshot)
    if world_size > 1:
        print(
            f"burst: rank {failure.rank} of {world_size} raised {result['error'].get('type', 'an error')}; "
            "the other ranks were stopped",
            file=sys.stderr,
        )
    return _raise_remote(result["error"])


def _raise_remote(error: dict) -> BaseException:
    if error.get("kind") == "burst":
        return BurstError(error["message"])
    return tracebacks.rebuild(error)


def options_record(options: CellOptions) -> dict[str, Any]:
    """What the ledger keeps of a cell's options, with the cell's number (its ``In [n]``):
    the sidebar titles a job by its notebook and that number."""
    record = dataclasses.asdict(options)
    record["given"] = sorted(options.given)
    record["cell_number"] = running_cell_number(get_ipython())
    return record


def running_cell_number(shell: Any) -> int | None:
    """The ``In [n]`` of the cell running now. IPython 9 counts ``execution_count`` on before
    the cell runs (IPython 8 after), so it is read from the result being made instead."""
    result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    number = getattr(result, "execution_count", None)
    return number if isinstance(number, int) else None


def run(
    source: str,
    namespace: MutableMapping[str, Any] | None = None,
    *,
    gpus: int = 1,
    provider: str | None = None,
    cluster: str | None = None,
    idle: float | None = None,
    timeout: float | None = None,
    send: tuple[str, ...] | list[str] = (),
    exclude: tuple[str, ...] | list[str] = (),
    returns: tuple[str, ...] | list[str] | None = None,
    retries: int | None = None,
) -> CellResult:
    """Run ``source`` as a burst cell; ``namespace`` (default: the caller's globals) gets the results.

    The keyword arguments are the ``%%burst`` options (``return=`` is ``returns=`` here).
    """
    config.refresh()
    words = [f"gpus={gpus}"]
    for key, value in (
        ("provider", provider),
        ("cluster", cluster),
        ("idle", idle),
        ("timeout", timeout),
        ("retries", retries),
    ):
        if value is not None:
            words.append(f"{key}={value}")
    for key, names in (("send", send), ("exclude", exclude), ("return", returns)):
        if names:
            words.append(f"{key}={','.join(names)}")
    parsed = parse(" ".join(words))
    if namespace is None:
        import inspect

        frame = inspect.currentframe()
        namespace = frame.f_back.f_globals if frame and frame.f_back else {}
    return run_cell(source, parsed, namespace)
