"""Everything ``%%burst`` does, as a Python API: read, pack, run remotely, merge back.

The order matters for the promise "$0 for a mistake": the cell is parsed and its values
packed before any cluster is started or contacted.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from jupyter_burst import clusters, config, jobs, namespace, output, tracebacks
from jupyter_burst import payload as wire
from jupyter_burst.errors import BurstError, SendError
from jupyter_burst.ledger import LineSplitter, shared_ledger
from jupyter_burst.merge import merge_in_place
from jupyter_burst.options import CellOptions


@dataclasses.dataclass
class CellResult:
    """What one burst brought back."""

    job_id: str
    cluster: str
    assigned: list[str]
    changed: list[str]
    deleted: list[str]
    seconds: float


def run_cell(
    source: str,
    options: CellOptions,
    user_ns: MutableMapping[str, Any],
    filename: str | None = None,
    line_offset: int = 0,
    render: Callable[[int, list], None] | None = None,
    kernel: str = "",
) -> CellResult:
    """Run ``source`` on the cluster ``options`` name and merge its results into ``user_ns``.

    ``filename``/``line_offset`` make tracebacks point at the notebook cell's own lines.
    """
    started = time.monotonic()
    job_id = jobs.new_job_id()
    filename = filename or f"<burst-cell-{job_id}>"
    try:
        analysis = namespace.analyse(source, filename)
    except SyntaxError:
        raise  # the user's own mistake, shown by IPython with its caret
    values = namespace.select(user_ns, analysis, send=options.send, exclude=options.exclude)
    spec = {
        "source": source,
        "filename": filename,
        "line_offset": line_offset,
        "assigns": sorted(analysis.assigns),
        "returns": "gather"
        if options.gather
        else (list(options.returns) if options.returns is not None else None),
        "collective_timeout": float(config.get("collective-timeout", 300)),
        "exclude": list(options.exclude),
        # On this machine the cell runs where the notebook runs, so relative paths agree.
        "cwd": os.getcwd() if options.provider == "local" else None,
    }
    snapshot = dict(user_ns)
    if not isinstance(user_ns, dict):
        raise SendError("the namespace must be a dict")
    message = wire.pack_namespace(values, user_ns, spec, imports=analysis.modules)

    handle = clusters.connect(
        options.cluster,
        options.provider,
        options.gpus,
        options.idle,
        idle_given="idle" in options.given,
    )
    ledger = shared_ledger(handle.state_dir)
    splitter = LineSplitter()
    show = render or output.renderer(options.gpus)

    def on_events(rank: int, events: list) -> None:
        show(rank, events)
        now = time.time()
        lines = []
        for event in events:
            if event[0] in ("stdout", "stderr"):
                lines.extend(splitter.feed(rank, event[0], event[1]))
            elif event[0] == "metrics":
                ledger.add_metrics(job_id, now, rank, event[1], event[2])
        ledger.add_lines(job_id, [(now, r, stream, text) for r, stream, text in lines])

    ledger.job_started(job_id, handle.id, kernel, source, _options_record(options))
    status, error_text = "failed", None
    try:
        job = jobs.submit(handle, job_id, message, spec, ranks=options.gpus)
        payloads, failure = jobs.follow(job, on_events, options.timeout)
        if failure is not None:
            raise _failed_rank(job, failure, options.gpus, user_ns, snapshot, on_events)
        results = [
            wire.unpack_result(p, user_ns, snapshot) if (rank == 0 or options.gather) else None
            for rank, p in enumerate(payloads)
        ]
        jobs.drain(job, sum(wire.event_count(p) for p in payloads), on_events)
        main = results[0]
        for warning in main.get("warnings", ()):
            print(warning, file=sys.stderr)
        if options.gather:
            names = sorted({name for r in results for name in r["values"]})
            for name in names:
                user_ns[name] = [r["values"].get(name) for r in results]
        else:
            _merge(main, user_ns, snapshot)
        status = "done"
        return CellResult(
            job_id=job_id,
            cluster=handle.name,
            assigned=sorted(set(main["values"]) - set(main["changed"])),
            changed=main["changed"],
            deleted=main["deleted"],
            seconds=time.monotonic() - started,
        )
    except BurstError as exc:
        status = "interrupted" if "interrupted" in str(exc) else "failed"
        error_text = error_text or str(exc)
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as exc:
        error_text = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        rest = splitter.rest()
        now = time.time()
        ledger.add_lines(job_id, [(now, rank, stream, text) for rank, stream, text in rest])
        ledger.job_ended(job_id, status, error_text)


def _merge(result: dict, user_ns: MutableMapping[str, Any], snapshot: dict) -> None:
    changed = set(result["changed"])
    for name, value in result["values"].items():
        original = snapshot.get(name)
        if name in changed and merge_in_place(original, value):
            user_ns[name] = original  # the same object, now holding the cell's changes
        else:
            user_ns[name] = value
    for name in result["deleted"]:
        user_ns.pop(name, None)


def _failed_rank(job, failure, world_size: int, user_ns, snapshot, on_events) -> BaseException:
    """The exception to raise for the rank that failed first; the others were stopped."""
    if failure.lost is not None:
        if world_size > 1:
            reason = str(failure.lost.args[0]).removeprefix("burst: ")
            return type(failure.lost)(
                f"rank {failure.rank} of {world_size}: {reason}; the other ranks were stopped"
            )
        return failure.lost
    result = wire.unpack_result(failure.payload, user_ns, snapshot)
    jobs.drain(job, result["events"], on_events)
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


def _options_record(options: CellOptions) -> dict[str, Any]:
    record = dataclasses.asdict(options)
    record["given"] = sorted(options.given)
    return record


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
) -> CellResult:
    """Run ``source`` as a burst cell; ``namespace`` (default: the caller's globals) gets the results.

    The keyword arguments are the ``%%burst`` options (``return=`` is ``returns=`` here).
    """
    from jupyter_burst import options as opts

    config.refresh()
    words = [f"gpus={gpus}"]
    for key, value in (
        ("provider", provider),
        ("cluster", cluster),
        ("idle", idle),
        ("timeout", timeout),
    ):
        if value is not None:
            words.append(f"{key}={value}")
    for key, names in (("send", send), ("exclude", exclude), ("return", returns)):
        if names:
            words.append(f"{key}={','.join(names)}")
    parsed = opts.parse(" ".join(words))
    if namespace is None:
        import inspect

        frame = inspect.currentframe()
        namespace = frame.f_back.f_globals if frame and frame.f_back else {}
    return run_cell(source, parsed, namespace)
