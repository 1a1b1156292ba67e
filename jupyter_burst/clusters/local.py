"""The embedded default provider: this machine's processes, bound to 127.0.0.1 only.

It runs the same node bootstrap and watchdog a cloud machine runs (``jupyter_burst.node``),
as a process of its own session, so the cluster outlives the kernel that started it. A cell
that needs more slots than it has makes the head start more worker processes here
(``--grow-here``); they close again after the cluster's idle time of their own idleness.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import psutil

from jupyter_burst import config
from jupyter_burst.clusters import records
from jupyter_burst.clusters.offers import Offer, OfferRequest
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.errors import ClusterError
from jupyter_burst.store.cost import local_price_per_hour


class LocalProvider:
    name = "local"

    def launch(self, request: ClusterRequest) -> dict[str, Any]:
        logs = request.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        log_path = logs / f"{request.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        command = [
            sys.executable,
            "-m",
            "jupyter_burst.node",
            "--cluster",
            request.name,
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
        from jupyter_burst.node.bootstrap import cuda_device_count

        if cuda_device_count():  # what gpu_mem= a cell on this cluster may ask for
            command += ["--gpu-mem", f"{local_gpu_model()[1]:g}"]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a kernel interrupt or restart must not reach it
                cwd=request.state_dir,
            )
        # Reap it when it exits, so a long-lived kernel keeps no zombie.
        threading.Thread(target=process.wait, name=f"burst-reap-{process.pid}", daemon=True).start()

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
        from jupyter_burst.node.bootstrap import cuda_device_count

        gpus = cuda_device_count()
        if gpus and gpus < request.gpus:
            return []
        memory = psutil.virtual_memory().total / (1 << 30)
        model, gpu_mem = local_gpu_model() if gpus else ("CPU slots (no GPU)", 0.0)
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
        pid = record.get("pid")
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not _is_zombie(pid)

    def terminate(self, record: dict[str, Any]) -> None:
        pid = record.get("pid")
        if pid and self.is_alive(record):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def local_gpu_model() -> tuple[str, float]:
    """This machine's GPU model and memory (GiB, the smallest GPU's), as nvidia-smi says.

    Without it, a local GPU would never qualify for gpu_mem= or a gpus=auto estimate.
    """
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
        rows = [line.rsplit(",", 1) for line in out.strip().splitlines() if "," in line]
        return rows[0][0].strip(), min(float(mib) for _, mib in rows) / 1024
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return "CUDA GPU", 0.0


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _last_line(path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"
