"""The worker's side of a cell: set it up, run it, stream what it prints, send back what changed.

Runs inside a Dask worker process, one cell at a time per worker (each worker has one
thread: one GPU slot). Output is batched every ``_FLUSH_SECONDS`` and published on the job's
topic with ``Worker.log_event``; the kernel subscribes to that topic.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import ctypes
import functools
import inspect
import io
import os
import pathlib
import pickle
import sys
import threading
import time
import traceback
import types
from typing import Any

import cloudpickle

from jupyter_burst.errors import BurstError
from jupyter_burst.wire import class_kwargs, prompt_streams, rng_state
from jupyter_burst.wire import payload as wire
from jupyter_burst.wire.contract import CellSpec, FilesBack, ResultMeta, Workdir
from jupyter_burst.worker import (
    cell_timings,
    helper,
    notebook_main,
    orphans,
    preemption,
    process_group,
    rank_shell,
    usage,
    value_cache,
    workdir,
)

_FLUSH_SECONDS = 0.05
_MAX_BATCH_CHARS = 256 * 1024

_current: _JobOutput | None = None
_children: notebook_main.ChildOutput | None = None  # the running cell's forked children's output
_running: dict[str, int] = {}  # job id -> thread ident, for interrupts
_helpers: dict[str, helper.Burst] = {}  # job id -> its cell's `burst`, for the budget's notice
_asked: dict[str, threading.Thread] = {}  # job id -> the on_preempt callbacks run for it
_asked_lock = threading.Lock()
_setup_lock = threading.Lock()
_setup_done = False


class _JobOutput:
    """Collects a job's output; :data:`_FLUSHER` publishes it in small batches.

    ``publish`` is None off a worker (a test calling :func:`run_cell` itself): nothing goes out.
    """

    def __init__(self, job: str, topic: str, publish, rank: int = 0, task: str | None = None):
        self.job = job
        self.rank = rank
        self.task = task  # the Dask key: which attempt of the job a result belongs to
        self.topic = topic
        self._publish = publish or (lambda topic, message: None)
        self.can_carry_results = publish is not None
        self._lock = threading.Lock()
        # Held while a batch is taken and published: batches leave in the order of their seq.
        self._publishing = threading.Lock()
        self._pending: list[list] = []
        self._pending_chars = 0
        self._seq = 0
        self._next_usage = time.monotonic() + usage.RECORD_SECONDS
        self._stopped = False

    def start(self) -> _JobOutput:
        _FLUSHER.add(self)
        return self

    def text(self, stream: str, text: str) -> None:
        if not text:
            return
        with self._lock:
            last = self._pending[-1] if self._pending else None
            if last is not None and last[0] == stream:
                last[1] += text
            else:
                self._pending.append([stream, text])
            self._pending_chars += len(text)
            full = self._pending_chars >= _MAX_BATCH_CHARS
        if full:
            _FLUSHER.wake.set()

    def event(self, *event: Any) -> None:
        with self._lock:
            self._pending.append(list(event))

    def flush(self, result: dict[str, Any] | None = None) -> None:
        """Publish what is pending as the next batch; with ``result``, the rank's (small)
        result goes in the same message, even with no output left."""
        with self._publishing:
            with self._lock:
                events, self._pending, self._pending_chars = self._pending, [], 0
                if events:
                    self._seq += 1
                seq = self._seq
            message = {"job": self.job, "rank": self.rank, "seq": seq, "events": events}
            if result is not None:
                message.update(result=result, task=self.task)
            elif not events:
                return
            self._publish(self.topic, message)

    def tick(self) -> None:
        """The flusher's beat: the slot's use every so often (and once at the end, with the
        result: the ledger keeps it as the job's history of its GPUs and CPUs), the output."""
        if self._stopped:
            return  # the flusher's list was read just before this job's end
        if time.monotonic() >= self._next_usage:
            self._next_usage += usage.RECORD_SECONDS
            self.event("usage", usage.sample())
        self.flush()

    def stop(self) -> int:
        """No more beats; the number of batches the job's output makes, the last one (what
        is still pending) included: it goes with :meth:`send_result` or :meth:`flush`."""
        _FLUSHER.remove(self)
        with self._publishing, self._lock:  # a batch being published now is counted
            self._stopped = True
            return self._seq + (1 if self._pending else 0)

    def send_result(self, result: dict[str, Any]) -> None:
        """The last batch, with the rank's result (a small one) in the same message."""
        self.flush(result)


class _Flusher:
    """The thread that publishes the running jobs' output every ``_FLUSH_SECONDS``, one per
    worker process: a thread started and joined for each cell costs it a few tenths of a
    millisecond, a quick cell's whole budget."""

    def __init__(self) -> None:
        self.wake = threading.Event()  # a batch is full: publish it now
        self._lock = threading.Lock()
        self._outputs: list[_JobOutput] = []
        self._thread: threading.Thread | None = None

    def add(self, output: _JobOutput) -> None:
        with self._lock:
            self._outputs.append(output)
            if self._thread is None or not self._thread.is_alive():  # first, or after a fork
                self._thread = threading.Thread(target=self._run, name="burst-output", daemon=True)
                self._thread.start()

    def remove(self, output: _JobOutput) -> None:
        with self._lock:
            if output in self._outputs:
                self._outputs.remove(output)

    def _run(self) -> None:
        while True:
            self.wake.wait(_FLUSH_SECONDS)
            self.wake.clear()
            with self._lock:
                outputs = list(self._outputs)
            for output in outputs:
                try:
                    output.tick()
                except Exception:
                    pass  # the worker is closing: nothing left to publish to


_FLUSHER = _Flusher()


class _StreamRouter(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr: text goes to the running job, else where it went before.

    Installed once per worker process, so that a handler that kept a reference to
    ``sys.stderr`` (logging's, for one) still reaches the right cell in later jobs.
    """

    def __init__(self, name: str, original):
        self.name = name
        self.original = original

    def write(self, text: str) -> int:
        out = _current
        if out is None:
            return self.original.write(text)
        out.text(self.name, text)
        return len(text)

    def flush(self) -> None:
        if _current is None:
            self.original.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.original, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


def _setup_process() -> None:
    global _setup_done
    with _setup_lock:
        if _setup_done:
            return
        if not isinstance(sys.stdout, _StreamRouter):
            sys.stdout = _StreamRouter("stdout", sys.stdout)
        if not isinstance(sys.stderr, _StreamRouter):
            sys.stderr = _StreamRouter("stderr", sys.stderr)
        os.environ.setdefault("MPLBACKEND", "module://jupyter_burst.worker.mpl_backend")
        _patch_ipython_display()
        # Before any cell is unpacked: a notebook function's `init_process_group` resolves
        # to the cell-aware one (process_group.py).
        process_group.install()
        notebook_main.forward_children(lambda: _children)
        class_kwargs.install()  # a class made here with keywords can travel back
        preemption.start_from_config()  # only when burst.preemption.url is set
        _send_at_once()
        _setup_done = True


def _send_at_once() -> None:
    """This worker's stream to the scheduler sends each message at once (prompt_streams.py)."""
    from distributed import get_worker

    try:
        prompt_streams.send_at_once(get_worker().batched_stream)
    except ValueError:  # not on a worker: a test calling run_cell directly
        pass


def _patch_ipython_display() -> None:
    try:
        import IPython.core.display_functions as display_functions
        import IPython.display
    except ImportError:
        return
    original_display = display_functions.display
    original_clear = display_functions.clear_output

    def display(*objs, **kwargs):
        if _current is None:
            return original_display(*objs, **kwargs)
        return burst_display(*objs, **kwargs)

    def clear_output(wait: bool = False):
        if _current is None:
            return original_clear(wait=wait)
        _current.event("clear_output", bool(wait))

    for module in (display_functions, IPython.display):
        module.display = display
        module.clear_output = clear_output
    try:
        import IPython.core.display as core_display

        core_display.display = display
        core_display.clear_output = clear_output
    except (ImportError, AttributeError):
        pass


def burst_display(*objs, raw: bool = False, metadata: dict | None = None, **_ignored) -> None:
    """``display()`` on a worker: the rich representation travels back to the notebook."""
    out = _current
    for obj in objs:
        if raw:
            data, md = dict(obj), dict(metadata or {})
        else:
            data, md = mimebundle(obj)
            md.update(metadata or {})
        if out is None:
            print(data.get("text/plain", repr(obj)))
        else:
            out.event("display", data, md)


def mimebundle(obj: Any) -> tuple[dict, dict]:
    """The representations Jupyter would show for ``obj``, JSON-ready."""
    figure = _matplotlib_figure_png(obj)
    if figure is not None:
        return figure, {}
    from IPython.core.formatters import DisplayFormatter

    data, md = DisplayFormatter().format(obj)
    for key, value in list(data.items()):
        if isinstance(value, bytes):
            data[key] = base64.b64encode(value).decode("ascii")
    return data, md


def _matplotlib_figure_png(obj: Any) -> dict | None:
    figure_module = sys.modules.get("matplotlib.figure")
    if figure_module is None or not isinstance(obj, figure_module.Figure):
        return None
    buffer = io.BytesIO()
    obj.savefig(buffer, format="png", bbox_inches="tight")
    return {
        "image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
        "text/plain": f"<Figure size {obj.get_size_inches()[0] * obj.dpi:g}x"
        f"{obj.get_size_inches()[1] * obj.dpi:g} with {len(obj.axes)} Axes>",
    }


def show_open_figures() -> None:
    """Display and close every open pyplot figure, as the inline backend does after a cell."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    from matplotlib._pylab_helpers import Gcf

    for manager in Gcf.get_all_fig_managers():
        burst_display(manager.canvas.figure, metadata={wire.AFTER_CELL: True})
    pyplot.close("all")


def interrupt_job(job: str) -> bool:
    """Raise KeyboardInterrupt in the thread running ``job`` (called on the worker's event loop)."""
    ident = _running.get(job)
    if ident is None:
        return False
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(KeyboardInterrupt)
    )
    return True


class BudgetNotice:
    """A notice like a spot one, from the kernel's budget check: ``message`` is the cell's line."""

    def __init__(self, message: str):
        self.message = message


def ask_to_checkpoint(job: str, message: str) -> bool:
    """Ask the running cell of ``job`` to save its work now, the way a spot notice does.

    Its ``burst.preempting`` becomes True, ``message`` is shown, and its ``on_preempt``
    callbacks run once, in a thread of their own (this runs on the worker's event loop,
    which a checkpoint must not hold up); the cell does not end before they return.
    True where the job runs.
    """
    with _asked_lock:
        burst = _helpers.get(job)
        if burst is None:
            return False
        if job not in _asked:
            thread = threading.Thread(
                target=burst._preempted,
                args=(BudgetNotice(message),),
                name=f"burst-budget-{job}",
                daemon=True,
            )
            _asked[job] = thread
            thread.start()
    return True


def _wait_for_asked(job: str) -> None:
    with _asked_lock:
        _helpers.pop(job, None)
        thread = _asked.pop(job, None)
    if thread is not None:
        thread.join()  # a stuck callback is ended with the worker, when the job is stopped


def free_port() -> int:
    """A TCP port free on this worker's host, for torch.distributed's rendezvous."""
    import socket

    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


async def exit_worker() -> None:
    """End this worker process at once (its nanny restarts it): the cell is stuck in C code.

    A coroutine, because Dask runs only those without waiting for a reply.
    """
    sys.stderr.flush()
    os._exit(75)


def _publisher():
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not on a worker: a test calling run_cell directly
        return None
    return worker.log_event


def _current_task() -> str | None:
    from distributed import get_worker

    try:
        return str(get_worker().get_current_task())
    except ValueError:  # not on a worker
        return None


def run_cell(message: wire.Payload, sent: dict[str, Any]) -> wire.Payload:
    """Run one cell (one rank of it) on this worker; the Dask task behind every ``%%burst`` cell.

    ``sent``: the cell's :class:`CellSpec` in its wire form (refused if another version of
    jupyter-burst sent it)."""
    global _current
    spec = CellSpec.from_wire(sent)
    steps = cell_timings.RankSteps(spec.job, spec.rank)
    _setup_process()
    started = time.time()
    rank, world_size = spec.rank, spec.world_size
    gather = spec.gather
    brings_back = rank == 0 or gather
    cache = _cache_use(spec)
    # The notebook's namespace is this process's __main__ while the cell is unpacked, runs
    # and is packed (notebook_main.py): what pickles by name in the notebook does so here.
    main = notebook_main.new_module()
    try:
        with notebook_main.as_main(main):
            result = _run_as_main(
                message, spec, main, cache, started, rank, world_size, brings_back, steps
            )
        steps.mark("packed")
        return result
    finally:
        # The result is packed: the cell's values go now, not when the cyclic collector next
        # runs (a function the cell defined holds the namespace that holds it). Otherwise a
        # superseded 1 GiB value outlives its cell on the worker, a cell or more per version.
        # Each cell has a namespace of its own: a notebook function the cell left registered
        # somewhere on the worker (atexit, a library's hook) finds its globals empty later.
        main.__dict__.clear()


def _run_as_main(
    message: wire.Payload,
    spec: CellSpec,
    main: types.ModuleType,
    cache: value_cache.JobCache | None,
    started: float,
    rank: int,
    world_size: int,
    brings_back: bool,
    steps: cell_timings.RankSteps,
) -> wire.Payload:
    global _current, _children
    try:
        meta, namespace, values = wire.unpack_namespace(message, cache, main.__dict__)
    except BaseException:
        if cache is not None:
            cache.release()  # the entries this job pinned on arrival
        raise
    steps.mark("unpacked")
    namespace.update(values)
    assigned = set(spec.assigns)
    initial = {k: v for k, v in namespace.items() if not k.startswith("__")}
    watched = {
        k: v
        for k, v in initial.items()
        if brings_back and k not in assigned and not isinstance(v, types.ModuleType)
    }
    before = _fingerprints(watched, cache.arrived() if cache is not None else {})
    namespace.setdefault("display", burst_display)
    # A remote cluster's cell runs in this node's copy of the notebook's folder.
    cwd = str(workdir.folder_of(spec.workdir)) if spec.workdir is not None else spec.cwd
    shell = rank_shell.RankShell(main, cwd)
    namespace["get_ipython"] = lambda: shell  # never sent back: the cell did not assign it

    job = spec.job
    output = _JobOutput(job, spec.topic, _publisher(), rank=rank, task=_current_task()).start()
    namespace["burst"] = helper.Burst(
        rank=rank,
        world_size=world_size,
        local_rank=spec.local_rank,
        device=_torch_device(),
        publish=lambda *event: output.event(*event),
        checkpoints=spec.checkpoints,
    )
    _current = output
    _children = notebook_main.ChildOutput(output.text)
    _running[job] = threading.get_ident()
    _helpers[job] = namespace["burst"]
    stop_watching = orphans.watch(job, lambda: interrupt_job(job))
    # After `_current` is set: a notice that came earlier is told to this cell at once.
    unfollow = preemption.follow(namespace["burst"]._preempted)
    error = None
    could_not_join = None
    shown = _NOTHING
    previous_cwd = os.getcwd()
    laid_out = False  # the node's copy of the notebook's folder is ready
    previous_env = _set_rank_environment(spec)
    group = process_group.CellGroup(
        rank,
        world_size,
        (spec.master_addr, int(spec.master_port)) if world_size > 1 else None,
        spec.collective_timeout,
        cuda=_torch_device().startswith("cuda"),
        say=lambda text: print(text, file=sys.stderr, flush=True),
    )
    try:
        with notebook_main.start_method(spec.start_method), _no_keyboard():
            if spec.workdir is not None:
                workdir.prepare(spec.workdir, job)  # once per job on this node
                laid_out = True
            if cwd and os.path.isdir(cwd):
                os.chdir(cwd)
            if meta["moved_devices"] and rank == 0:
                print(
                    f"burst: {', '.join(meta['moved_devices'])} tensors travelled through the CPU "
                    "and were put back on this worker's device",
                    file=sys.stderr,
                )
            try:
                process_group.begin(group)
            except Exception as exc:
                could_not_join = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                raise
            rng_state.restore(spec.rng, import_torch=spec.imports_torch)
            steps.mark("ready")
            shown = _execute(spec, namespace)
            steps.mark("ran")
            show_open_figures()
    except BaseException as exc:  # noqa: B036 - the cell's own exception, KeyboardInterrupt too
        if steps.steps[-1][0] == "ready":
            steps.mark("ran")  # the cell's code raised
        error = _describe_error(exc, spec.filename)
    finally:
        stop_watching()
        unfollow()  # waits for an on_preempt callback under way
        _wait_for_asked(job)
        process_group.end(group)
        _running.pop(job, None)
        children, _children = _children, None
        children.close()
        _current = None
        events = output.stop()
        os.chdir(previous_cwd)
        _restore_environment(previous_env)

    result: dict[str, Any] = {"error": error, "events": events, "seconds": time.time() - started}
    if rank == 0 and laid_out and cwd:
        # What the cell created or changed in its folder goes back with rank 0's result
        # (also when it raised: a file a notebook cell writes before its error stays written).
        result["files"] = _files_back(spec.workdir, cwd)
    if shown is not _NOTHING and brings_back and rank == 0:
        result["shown"] = shown
    if rank == 0 and error is None:
        result["rng"] = rng_state.capture()
    status = ResultMeta(
        rank=rank,
        failed=error is not None,
        failed_at=error["time"] if error else None,
        events=events,
        could_not_join=could_not_join,
        usage=_end_usage(),
    )
    try:
        payload = _result(
            result, status, namespace, spec, watched, before, initial, cache, meta["arrived"]
        )
    finally:
        if cache is not None:
            cache.release()
    return _send_back(output, payload)


# A result this small travels with the rank's last output batch, through the scheduler's
# event stream, and Dask's own result is a marker: the kernel does not fetch it (a round
# trip, a few milliseconds). The scheduler keeps its last events of each topic
# (distributed.scheduler.events-log-length): this bounds what those hold.
_WITH_OUTPUT_BYTES = 64 * 1024


def _send_back(output: _JobOutput, payload: wire.Payload) -> wire.Payload | wire.SentWithOutput:
    """The rank's result, or a marker of it when it went with the last output batch."""
    if output.can_carry_results and output.task and payload.nbytes <= _WITH_OUTPUT_BYTES:
        output.send_result(wire.payload_event(payload))
        return wire.SentWithOutput()
    output.flush()
    return payload


def _end_usage() -> dict[str, Any] | None:
    """The slot as the job ends, for the ledger's history of the job; None if unreadable."""
    try:
        return usage.sample()
    except Exception:  # a sample is never worth losing the result
        return None


def _result(
    result: dict[str, Any],
    status: ResultMeta,
    namespace: dict,
    spec: CellSpec,
    watched: dict[str, Any],
    before: dict[str, bytes | None],
    initial: dict[str, Any],
    cache: value_cache.JobCache | None,
    arrived: Any,
) -> wire.Payload:
    """What goes back: the names the cell assigned, and the values it changed in place.

    ``arrived``: the memo of the message the cell came in (objects by position); an unchanged one
    that a new value holds goes back as a reference to the notebook's own object.
    """
    brings_back = spec.rank == 0 or spec.gather
    if result["error"] is not None or not brings_back:
        if cache is not None:
            cache.check()
        result.update(values={}, deleted=[], changed=[])
        return wire.pack_result(result, namespace, {}, status)

    reached: dict[str, set[int]] = {}
    after = _fingerprints(watched, cache.after if cache is not None else {}, reached)
    if cache is not None:
        cache.check()  # the bytes the change check just hashed are not hashed again
    assigned = set(spec.assigns)
    changed = {k for k in watched if before[k] is None or before[k] != after[k]}
    # `t += 1` on a tensor, `lst += [x]`: assigned, but still the object that travelled.
    changed |= {
        k
        for k in assigned & initial.keys()
        if k in namespace
        and namespace[k] is initial[k]
        and not isinstance(initial[k], types.ModuleType)
    }
    names = {k for k in assigned if k in namespace} | changed
    if namespace.get("display") is burst_display and "display" not in initial:
        names.discard("display")
    names.discard("burst")
    if spec.returns is not None and not spec.gather:
        names &= set(spec.returns)
    names -= set(spec.exclude)
    # A DDP wrapper holds its process group, which ends with the cell: send the model inside.
    result["values"] = {k: helper.unwrap(namespace[k]) for k in sorted(names)}
    # `from m import a`: an import in the notebook too (its own m.a, which may differ).
    for name, module, attr in spec.imported_from:
        if name in result["values"] and result["values"][name] is _imported(module, attr):
            result["values"][name] = wire.ImportedName(module, attr)
    result["deleted"] = sorted(k for k in assigned if k not in namespace)
    result["changed"] = sorted(changed)
    # A background job's results may be fetched by a restarted kernel that no longer holds
    # the objects a reference would name: send everything by value then.
    unchanged: dict[int, str] = {}
    held: dict[int, int] = {}
    if not spec.background:
        unchanged = {id(v): k for k, v in watched.items() if k not in changed}
        safe = set().union(*(reached[k] for k in watched if k not in changed))
        safe.discard(id(namespace))
        sends_new = bool(result["values"]) or "shown" in result  # what could hold them
        held = wire.arrived_positions(arrived, safe) if safe and sends_new else {}
    try:
        return wire.pack_result(result, namespace, unchanged, status, cache, held)
    except Exception:
        # Keep the cell's work: bring back what can travel, name what stays behind.
        result["warnings"] = []
        if "shown" in result and _cannot_travel("shown", result["shown"]):
            result["shown"] = wire.Shown(*mimebundle(result["shown"]))  # its picture, not itself
        spent = set(spec.contexts)  # `with ... as f`: a closed file, an ended pool
        for name, value in list(result["values"].items()):
            problem = _cannot_travel(name, value)
            if problem:
                del result["values"][name]
                if name not in spent and not _spent(value):
                    result["warnings"].append(problem)
        return wire.pack_result(result, namespace, unchanged, status, cache, held)


_NOTHING = object()


def _files_back(folder: Workdir, cwd: str) -> FilesBack:
    try:
        return workdir.collect(folder, pathlib.Path(cwd))
    except OSError as exc:
        return FilesBack(
            root=folder.root, refused=f"the files the cell wrote could not be read ({exc})"
        )


def _imported(module: str, attr: str) -> Any:
    found = sys.modules.get(module)
    return getattr(found, attr, _NOTHING) if found is not None else _NOTHING


def _execute(spec: CellSpec, namespace: dict) -> Any:
    """Run the cell; the value of its last line when that is an expression (as IPython shows it).

    ``_NOTHING`` when there is none to show (a statement, ``None``, or a line ending in ``;``).
    """
    body, last = _compiled(spec.source, spec.filename, spec.line_offset)
    exec(body, namespace)
    if last is None:
        return _NOTHING
    value = eval(last, namespace)
    return _NOTHING if value is None else value


@functools.lru_cache(maxsize=64)
def _compiled(source: str, filename: str, line_offset: int):
    """The cell's code, and its last line's apart when it is an expression to show.

    Kept for the cell's next run (a re-run cell, a loop of cells, every rank of a job).
    """
    tree = ast.parse("\n" * line_offset + source, filename, "exec")
    last = tree.body[-1] if tree.body else None
    if not isinstance(last, ast.Expr) or _silenced(source):
        return compile(tree, filename, "exec"), None
    tree.body.pop()
    return (
        compile(tree, filename, "exec"),
        compile(ast.Expression(last.value), filename, "eval"),
    )


def _silenced(source: str) -> bool:
    """A cell ending in ``;`` shows no value, as in IPython."""
    from IPython.core.displayhook import DisplayHook

    return DisplayHook.semicolon_at_end_of_expression(source)


@contextlib.contextmanager
def _no_keyboard():
    """``input()`` on a rank: one clear line, not an EOFError from the worker's closed stdin."""
    import builtins

    def no_input(prompt: object = "") -> str:
        raise BurstError(
            "input() cannot ask the notebook for input from a %%burst cell (the cell runs on "
            "the cluster); read the value in a cell without %%burst and use the variable"
        )

    before = builtins.input
    builtins.input = no_input
    try:
        yield
    finally:
        builtins.input = before


def _torch_device() -> str:
    return "cuda:0" if os.environ.get("JUPYTER_BURST_DEVICE", "cpu").startswith("cuda") else "cpu"


_RANK_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "JUPYTER_BURST_TORCH_DEVICE",
)


def _restore_environment(previous: dict[str, str | None]) -> None:
    """Put back the rank variables only: what the cell itself set stays, as in a notebook."""
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _set_rank_environment(spec: CellSpec) -> dict[str, str | None]:
    """torchrun's variables for this rank, so a torchrun-style script runs unchanged."""
    previous = {name: os.environ.get(name) for name in _RANK_VARIABLES}
    world_size = spec.world_size
    os.environ.update(
        {
            "RANK": str(spec.rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(spec.local_rank),
            "LOCAL_WORLD_SIZE": str(world_size),
            "MASTER_ADDR": str(spec.master_addr or "127.0.0.1"),
            # One rank alone: a script's own env:// init must not meet another cell's port.
            "MASTER_PORT": str(spec.master_port or (free_port() if world_size == 1 else 29500)),
            "JUPYTER_BURST_TORCH_DEVICE": _torch_device(),
        }
    )
    return previous


def _spent(value: Any) -> bool:
    """A used-up resource: a closed file, a finished generator, an ended pool or bar.

    It cannot travel back and holds nothing the notebook could still use, so it stays on
    the worker without a note (the notebook would hold a dead object just the same).
    """
    if isinstance(value, io.IOBase):
        return value.closed
    if isinstance(value, types.GeneratorType):
        return inspect.getgeneratorstate(value) == inspect.GEN_CLOSED
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if kind == "multiprocessing.pool.Pool":
        return getattr(value, "_state", "RUN") != "RUN"
    if kind.startswith("concurrent.futures."):
        return bool(getattr(value, "_shutdown_thread", getattr(value, "_shutdown", False)))
    if kind.startswith("tqdm."):
        return bool(getattr(value, "disable", False))  # close() disables a bar
    return False


def _cannot_travel(name: str, value: Any) -> str | None:
    if isinstance(value, (types.GeneratorType, types.AsyncGeneratorType, types.CoroutineType)):
        return (
            f"burst: '{name}' ({wire.type_name(value)}) stays on the worker: a half-run "
            "generator cannot leave the process it runs in; consume it in the cell that makes "
            f"it (e.g. list({name})), or make it in the cell that uses it"
        )
    try:
        wire.dumps(value)
        return None
    except Exception:
        path, culprit = wire.find_unpicklable(value, name)
        held = (
            f"; it holds {wire.a_or_an(wire.type_name(culprit))} at {path}" if path != name else ""
        )
        return (
            f"burst: '{name}' ({wire.type_name(value)}) stays on the worker, it cannot travel back{held}; "
            f"the notebook keeps its old '{name}', if any (leave it out with exclude={name})"
        )


def _fingerprints(
    values: dict[str, Any],
    memo: dict[tuple[int, int], str],
    reached: dict[str, set[int]] | None = None,
) -> dict[str, bytes | None]:
    """Each value's fingerprint; ``reached`` gets the ids each value's pickle holds."""
    if reached is None:
        return {k: wire.fingerprint(v, memo) for k, v in values.items()}
    out = {}
    for k, v in values.items():
        reached[k] = set()
        out[k] = wire.fingerprint(v, memo, reached[k])
    return out


def _cache_use(spec: CellSpec) -> value_cache.JobCache | None:
    """The job's use of this worker's value cache, as the kernel's ``cache`` settings say."""
    settings = spec.cache
    if not settings:
        return None
    limit = value_cache.limit_bytes(settings["limit"])
    return value_cache.JobCache(settings["owner"], limit, settings["min_bytes"], spec.job)


def _describe_error(exc: BaseException, cell_filename: str) -> dict:
    frames = traceback.extract_tb(exc.__traceback__)
    for i, frame in enumerate(frames):
        if frame.filename == cell_filename:
            frames = frames[i:]
            break
    if isinstance(exc, BurstError):
        # Our own one-line errors (a checkpoint store that cannot be written, ...): the
        # cell's line that called us says where; the library's frames say nothing more.
        frames = [f for f in frames if f.filename == cell_filename] or frames
    try:
        pickled = cloudpickle.dumps(exc)
        pickle.loads(pickled)
    except Exception:
        pickled = None
    return {
        "kind": "exception",
        "time": time.time(),
        "type": type(exc).__name__,
        "module": type(exc).__module__,
        "message": str(exc),
        "pickled": pickled,
        "frames": [(f.filename, f.lineno, f.name, f.line) for f in frames],
    }
