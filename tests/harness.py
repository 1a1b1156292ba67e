"""Real kernels for tests: start one, run cells, read what a notebook would show.

No sleeping: every wait is on a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
from jupyter_client.manager import KernelManager

REPO = pathlib.Path(__file__).resolve().parents[1]
_STACK_DUMPS = pathlib.Path(__file__).resolve().parent / "stack_dumps"
_FRAMES_EACH = 9  # of a thread's stack, innermost first: where it waits, and who asked
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def needs(why_not: str | None) -> None:
    """Skip the test for ``why_not`` (a missing privilege or tool); under CI, fail instead,
    so that CI never passes without it."""
    if why_not is None:
        return
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{why_not}: CI must run this test")
    pytest.skip(why_not)


@dataclass
class Execution:
    """What one cell showed: streams, displays, the error (as plain text), the reply status."""

    status: str = ""
    stdout: str = ""
    stderr: str = ""
    displays: list[dict] = field(default_factory=list)
    ename: str | None = None
    evalue: str | None = None
    traceback: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    stream_times: list[tuple[float, str, str]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """What a terminal shows of the cell: its stdout, then the text of each value shown
        (a ``%burst`` verb's returned table, say)."""
        shown = [d["text/plain"] for d in self.displays if "text/plain" in d]
        return "\n".join(filter(None, [self.stdout.rstrip("\n"), *shown]))

    @property
    def error_text(self) -> str:
        return strip_ansi("\n".join(self.traceback))


class Kernel:
    """A real IPython kernel with its own state folder and working folder."""

    def __init__(
        self, state_dir: pathlib.Path, cwd: pathlib.Path, env: dict[str, str] | None = None
    ):
        self.state_dir = state_dir
        self.cwd = cwd
        # Where the kernel's processes write their stacks when a cell hangs (self.stacks).
        self.stacks_dir = pathlib.Path(tempfile.mkdtemp(prefix="burst-stacks-"))
        self.env = dict(os.environ)
        self.env.update(
            {
                "DASK_BURST__STATE_DIR": str(state_dir),
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO), str(_STACK_DUMPS), os.environ.get("PYTHONPATH", "")])
                ),
                "JUPYTER_BURST_TEST_STACKS": str(self.stacks_dir),
                "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            }
        )
        self.env.update(env or {})
        # A notebook environment of its own (tests/notebook_env.py), else the tests' own.
        python = self.env.pop("JUPYTER_BURST_TEST_KERNEL_PYTHON", sys.executable)
        self.km = KernelManager(kernel_name="python3")
        self.km.kernel_spec.argv[0] = python
        self.km.start_kernel(env=self.env, cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def execute(self, code: str, timeout: float = 120, allow_error: bool = True) -> Execution:
        msg_id = self.kc.execute(code)
        result = self.collect(msg_id, timeout)
        if not allow_error and result.status != "ok":
            raise AssertionError(
                f"cell failed: {result.ename}: {result.evalue}\n{result.error_text}"
            )
        return result

    def ok(self, code: str, timeout: float = 120) -> Execution:
        return self.execute(code, timeout, allow_error=False)

    def messages(self, msg_id: str, timeout: float) -> Iterator[dict]:
        """The cell's iopub messages as they arrive, until the kernel is idle again."""
        deadline = time.monotonic() + timeout
        shown: list[str] = []  # what the cell printed so far, for the message of a hang
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                last = "".join(shown).splitlines()[-15:]
                raise AssertionError(
                    f"cell did not finish within {timeout:g} s; its last lines:\n"
                    + "\n".join(last)
                    + f"\nwhere it waits:\n{self.stacks()}"
                )
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                shown.append(msg["content"]["text"])
            yield msg
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return

    def collect(
        self, msg_id: str, timeout: float, on_message: Callable[[dict], None] | None = None
    ) -> Execution:
        started = time.monotonic()
        result = Execution()
        for msg in self.messages(msg_id, timeout):
            if on_message is not None:
                on_message(msg)
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                result.stream_times.append((time.time(), content["name"], content["text"]))
                if content["name"] == "stdout":
                    result.stdout += content["text"]
                else:
                    result.stderr += content["text"]
            elif kind in ("display_data", "execute_result"):
                result.displays.append(content["data"])
            elif kind == "error":
                result.ename, result.evalue, result.traceback = (
                    content["ename"],
                    content["evalue"],
                    content["traceback"],
                )
        reply = self.kc.get_shell_msg(timeout=10)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=10)
        result.status = reply["content"]["status"]
        result.elapsed = time.monotonic() - started
        return result

    def stacks(self, lines_each: int = 40) -> str:
        """The stacks of the kernel and of its clusters' processes, now (a cell hangs).

        Each process that registered for it (tests/stack_dumps/sitecustomize.py) writes its
        threads' stacks on SIGUSR1; only the threads in jupyter_burst's code, or the kernel's
        main thread, are kept, so that the answer fits a CI log.
        """
        pids = [self.km.provisioner.pid] if self.km.provisioner else []
        pids = [p for p in pids if p] + [p.pid for p in burst_processes(self.state_dir)]
        files = {pid: self.stacks_dir / f"{pid}.txt" for pid in pids}
        files = {pid: f for pid, f in files.items() if f.exists()}  # only those that listen
        for pid in files:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: all(f.stat().st_size for f in files.values()), 5, "stack dumps")
        report = []
        for pid, file in files.items():
            kept = []
            for thread in file.read_text(errors="replace").split("\n\n"):
                main_of_kernel = pid == pids[0] and thread.startswith("Current thread")
                if "jupyter_burst" in thread or main_of_kernel:
                    kept += thread.strip().splitlines()[:_FRAMES_EACH]  # innermost first
            if kept:
                report.append(f"--- pid {pid}:\n" + "\n".join(kept[:lines_each]))
        return "\n".join(report) or "(no stacks)"

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def restart(self) -> None:
        self.km.restart_kernel(now=True)
        self.kc.wait_for_ready(timeout=60)

    def kill(self) -> None:
        """The kernel dies without a chance to clean up (a laptop closed, a crash)."""
        self.km.signal_kernel(signal.SIGKILL)
        wait_for(lambda: not self.km.is_alive(), 10, "the kernel to die")

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=True)
            shutil.rmtree(self.stacks_dir, ignore_errors=True)


def cluster_record(
    state_dir: pathlib.Path, name: str = "default", provider: str | None = None
) -> dict | None:
    """The record of cluster ``name`` (on ``provider``; unsaid: on whichever provider has one,
    local first); None while there is none."""
    folder = state_dir / "clusters"
    providers = [provider] if provider else ["local"]
    if provider is None and folder.is_dir():
        providers += sorted(p.stem.split("@", 1)[1] for p in folder.glob(f"{name}@*.json"))
    for path in [folder / f"{name}@{p}.json" for p in providers] + [folder / f"{name}.json"]:
        try:
            record = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        if provider is None or record.get("provider", "local") == provider:
            return record
    return None


def burst_processes(state_dir: pathlib.Path) -> list[psutil.Process]:
    """Every live process that belongs to clusters of this state folder (nodes and workers)."""
    found = []
    marker = str(state_dir)
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            if marker in cmdline or proc.environ().get("JUPYTER_BURST_STATE_DIR") == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """End a server the test started: politely, then for sure; waited for either way."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def stop_clusters(state_dir: pathlib.Path, timeout: float = 30) -> None:
    """Stop whatever this state folder still runs (SIGTERM, then SIGKILL)."""
    procs = burst_processes(state_dir)
    for proc in procs:
        try:
            if "jupyter_burst.node" in " ".join(proc.cmdline()):
                proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


@contextlib.contextmanager
def burst_kernel(
    state_dir: pathlib.Path, cwd: pathlib.Path, env: dict[str, str] | None = None
) -> Iterator[Kernel]:
    """A kernel with ``%load_ext jupyter_burst``; stopped afterwards with every cluster it started."""
    k = Kernel(state_dir, cwd, env)
    try:
        k.ok("%load_ext jupyter_burst")
        yield k
    finally:
        try:
            if k.km.is_alive():
                k.execute("%burst down", timeout=60)
        finally:
            k.shutdown()
            stop_clusters(state_dir)
            wait_for(lambda: not burst_processes(state_dir), 30, "the cluster processes to exit")
