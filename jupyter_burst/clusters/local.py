"""The embedded default provider: this machine's processes, bound to 127.0.0.1 only.

It runs the same node bootstrap and watchdog a cloud machine runs (``jupyter_burst.node``),
as a process of its own session, so the cluster outlives the kernel that started it. A cell
that needs more slots than it has makes the head start more worker processes here
(``--grow-here``); they close again after the cluster's idle time of their own idleness.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import psutil

from jupyter_burst import config, gpus
from jupyter_burst.clusters import records, start_phases, tls
from jupyter_burst.clusters.launch_checks import local_price_per_hour
from jupyter_burst.clusters.local_environ import node_environ
from jupyter_burst.clusters.offers import Offer, OfferRequest
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.clusters.start_phases import BOOTING, LAUNCHING
from jupyter_burst.errors import ClusterError
from jupyter_burst.store import store_key

# Seconds by which a process's start time, as the system keeps it, may come after the
# clock reading the node took once it was up (the two clocks are read differently).
_CLOCK_SLACK = 2.0


class LocalProvider:
    name = "local"

    def launch(self, request: ClusterRequest) -> dict[str, Any]:
        """Start the head node process; its record, once its workers have joined.

        Its start's phases: launching 1/1 (the process), booting (until its scheduler
        listens), then workers joined k/N, which the node itself records as each worker
        process joins (``--start-id``: it shares this machine's ledger).
        """
        phases = start_phases.of(request)
        phases.enter(LAUNCHING, done=0, total=1)
        logs = request.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        log_path = logs / f"{request.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        cluster_id = f"{request.name}-{uuid.uuid4().hex[:8]}"
        store_key.ensure()  # its checkpoints are signed with it (the node reads it here)
        command = [
            sys.executable,
            "-m",
            "jupyter_burst.node",
            "--cluster",
            request.name,
            "--cluster-id",
            cluster_id,
            "--provider",
            self.name,
            "--slots",
            str(request.slots),
            "--idle",
            repr(request.idle_minutes),
            "--state-dir",
            str(request.state_dir),
            "--memory-limit",
            str(config.get("local.memory-limit", "auto")),
            "--price-per-hour",
            str(local_price_per_hour()),  # notional: an internal price, not a bill
            "--grow-here",  # a bigger cell gets more worker processes here (they go when idle)
        ]
        if gpus.cuda_device_count():  # what gpu_mem= a cell on this cluster may ask for
            command += ["--gpu-mem", f"{gpus.model()[1]:g}"]
        if phases.start_id:
            command += ["--start-id", phases.start_id]
        # Before the certificates are made: a wrong burst.local.pass-env leaves nothing behind.
        env = node_environ(
            os.environ, config.get("checkpoints.url"), config.get("local.pass-env", None)
        )
        command += _tls_arguments(request, cluster_id)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # A kernel interrupt or restart must not reach it: its own session on POSIX,
                # its own process group on Windows (where start_new_session is ignored).
                start_new_session=True,
                creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
                cwd=request.state_dir,
                env=env,  # what a cell needs, not the kernel's secrets (local_environ)
            )
        # Reap it when it exits, so a long-lived kernel keeps no zombie.
        threading.Thread(target=process.wait, name=f"burst-reap-{process.pid}", daemon=True).start()
        phases.enter(LAUNCHING, done=1, total=1)
        phases.enter(BOOTING)

        deadline = time.monotonic() + float(config.get("start-timeout", 60))
        while time.monotonic() < deadline:
            record = records.read_record(request.state_dir, request.name, self.name)
            if record is not None and record.get("pid") == process.pid:
                return record
            if process.poll() is not None:
                raise ClusterError(
                    f"the local cluster '{request.name}' failed to start (exit {process.returncode}): "
                    f"{_last_line(log_path)}; full log: {log_path}"
                )
            time.sleep(0.02)
        self.terminate({"pid": process.pid})
        raise ClusterError(
            f"the local cluster '{request.name}' did not start within {config.get('start-timeout')} s; "
            f"see {log_path}, or raise burst.start-timeout"
        )

    def offers(self, request: OfferRequest) -> list[Offer]:
        """This machine: its CUDA GPUs, or CPU slots (as many as asked) when it has none."""
        here = gpus.cuda_device_count()
        if here and here < request.gpus:
            return []
        memory = psutil.virtual_memory().total / (1 << 30)
        model, gpu_mem = gpus.model() if here else ("CPU slots (no GPU)", 0.0)
        return [
            Offer(
                provider=self.name,
                instance_type="this machine",
                gpus=request.gpus,
                gpu_model=model,
                gpu_mem_gib=gpu_mem,
                vcpus=os.cpu_count() or 1,
                ram_gib=round(memory, 1),
                region="local",
                spot=False,
                price_per_hour=float(config.get("local.price-per-hour", 0) or 0),
                notional=True,
            )
        ]

    def is_alive(self, record: dict[str, Any]) -> bool:
        return _node_process(record) is not None

    def terminate(self, record: dict[str, Any]) -> None:
        """Ask the node to stop: SIGTERM on POSIX (it closes its workers and its record
        first); on Windows, where no signal can be caught, the process is ended outright."""
        process = _node_process(record)
        if process is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.terminate()


def _tls_arguments(request: ClusterRequest, cluster_id: str) -> list[str]:
    """Mutual TLS, as a remote cluster has: anyone on this machine can see the cluster's ports
    on 127.0.0.1, only this user's kernel (whose state folder holds the cluster's CA and
    client key, 0600 in a 0700 folder) can connect. The node removes them when it ends.

    Making certificates needs cryptography (the notebook's side, jupyter-burst[lab]); a
    plain Python with the runtime alone gets a cluster without them, and is told so once.
    """
    if tls.can_make():
        certs = tls.make(request.state_dir / "tls" / cluster_id, cluster_id)
        return ["--tls-dir", str(certs.folder)]
    if not _told_unauthenticated:
        _told_unauthenticated.append(True)
        print(
            "burst: this local cluster is not authenticated (no cryptography here to make its "
            "certificates): another user of this machine could connect to it; "
            "pip install 'jupyter-burst[lab]' to have them",
            file=sys.stderr,
            flush=True,
        )
    return []


_told_unauthenticated: list[bool] = []


def _node_process(record: dict[str, Any]) -> psutil.Process | None:
    """The record's node process while it runs: not a zombie (a kernel that outlived it may
    not have reaped it yet), and not another process that got its id since."""
    pid = record.get("pid")
    if not pid:
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        started = record.get("started")
        # The node writes "started" once it is up, so a process created later is not it.
        if started is not None and process.create_time() > float(started) + _CLOCK_SLACK:
            return None
        # This user started it: a process of another user with its pid is not it (a stale
        # record, the pid reused), and must never be taken for our cluster.
        if hasattr(os, "getuid") and process.uids().real != os.getuid():
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return process


def _last_line(path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"
