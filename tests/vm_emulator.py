"""A VM emulator for moto: every instance launched there boots its real user data, locally.

moto keeps the books of EC2 but runs nothing. This watches it for new instances and runs
each one's user-data script as a process group of its own (its "machine"), with:
- a bare machine's software: a plain interpreter of the tests' Python version with no
  package (a cloud image's managed Python stands in for it: uv may not download one here),
  ``uv``, ``curl``, ``tar``, ``zstd`` and the system's tools, and no environment variable of
  the test process (no PYTHONPATH, no virtualenv); the package index is the wheelhouse the
  kernel names (tests/notebook_env.py). The machines share uv's download cache when
  ``shared_uv_cache`` (a regional package mirror's speed, not its packages: every machine
  still installs everything itself);
- a stand-in of the instance metadata service (IMDSv2, ``local-ipv4``: 127.0.0.1),
- a ``shutdown`` on its PATH: ``shutdown -h now`` powers the machine off, and, as the
  instance was launched with ``InstanceInitiatedShutdownBehavior=terminate``, terminates it
  in moto; ``shutdown -h +N`` arms the dead-man timer, which does the same after N minutes
  (the emulator's clock can be sped up for tests with ``minute_seconds``);
- a machine terminated through the API (the provider's terminate) is powered off.
Every instance's processes are killed when the emulator stops.
"""

from __future__ import annotations

import base64
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.aws_fakes import ImdsStandIn
from tests.notebook_env import base_python, uv_binary

_SHUTDOWN = """#!/bin/bash
echo "$*" >> "$JUPYTER_BURST_ROOT/shutdown-requests"
"""


@dataclass
class Machine:
    instance_id: str
    region: str
    root: pathlib.Path
    process: subprocess.Popen
    booted: float = field(default_factory=time.monotonic)
    dead_man: float | None = None  # monotonic time the armed `shutdown -h +N` fires
    seen_requests: int = 0
    off: bool = False
    why: str = ""


class VmEmulator:
    def __init__(
        self,
        clients,
        regions: tuple[str, ...],
        folder: pathlib.Path,
        minute_seconds: float = 60.0,
        shared_uv_cache: bool = True,
    ):
        self.clients = clients
        self.regions = regions
        self.folder = folder
        self.minute_seconds = minute_seconds
        self.machines: dict[str, Machine] = {}
        self.booted_at: dict[str, float] = {}  # instance -> time.time() it was first seen
        self.terminated_at: dict[str, float] = {}  # instance -> time.time() of its termination
        self._stop = threading.Event()
        self.imds = ImdsStandIn()  # every machine here answers to 127.0.0.1
        self.imds_url = self.imds.url
        self.bin = folder / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        (self.bin / "shutdown").write_text(_SHUTDOWN)
        (self.bin / "shutdown").chmod(0o755)
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        for name, target in (("uv", uv_binary()), (version, base_python())):
            (self.bin / name).symlink_to(target)
        self._uv_cache = folder / "uv-cache" if shared_uv_cache else None
        self._watcher = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> VmEmulator:
        self._watcher.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._watcher.join(10)
        for machine in self.machines.values():
            self._kill(machine)
        self.imds.close()

    # the emulator's loop ------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self._look()
            except Exception as exc:  # moto restarting between tests, say: look again
                print(f"vm emulator: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._stop.wait(0.2)

    def _look(self) -> None:
        for region in self.regions:
            ec2 = self.clients(region)
            reply = ec2.describe_instances(
                Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
            )
            alive = set()
            for reservation in reply["Reservations"]:
                for raw in reservation["Instances"]:
                    alive.add(raw["InstanceId"])
                    if raw["InstanceId"] not in self.machines:
                        self._boot(ec2, raw["InstanceId"], region)
            for machine in list(self.machines.values()):
                if machine.region != region or machine.off:
                    continue
                if machine.instance_id not in alive:
                    self._power_off(machine, "terminated through the API", terminate=False)
                else:
                    self._follow_shutdown(machine)

    def _boot(self, ec2, instance_id: str, region: str) -> None:
        self.booted_at[instance_id] = time.time()
        raw = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        script = base64.b64decode(raw.get("UserData", {}).get("Value", "") or b"").decode()
        root = self.folder / instance_id
        root.mkdir()
        (root / "user-data").write_text(script)
        # A bare machine: nothing of the test process's environment (no AWS credentials of
        # the notebook's, no PYTHONPATH, no virtualenv), uv told to use the plain interpreter.
        env = {
            "PATH": f"{self.bin}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
            "HOME": str(root),
            "LANG": "C.UTF-8",
            "JUPYTER_BURST_IMDS": self.imds_url,
            "JUPYTER_BURST_ROOT": str(root),
            "JUPYTER_BURST_SCHEDULER_PORT": "0",  # every machine here shares 127.0.0.1
            "UV_PYTHON_PREFERENCE": "only-system",
            "UV_PYTHON_DOWNLOADS": "never",
        }
        if self._uv_cache is not None:
            env["UV_CACHE_DIR"] = str(self._uv_cache)
        log = open(root / "console.log", "wb")  # noqa: SIM115 - the process owns it
        process = subprocess.Popen(
            ["bash", str(root / "user-data")] if script else ["true"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
            start_new_session=True,
        )
        log.close()
        self.machines[instance_id] = Machine(instance_id, region, root, process)

    def _follow_shutdown(self, machine: Machine) -> None:
        requests = machine.root / "shutdown-requests"
        lines = requests.read_text().splitlines() if requests.exists() else []
        for line in lines[machine.seen_requests :]:
            words = line.split()
            when = next((w for w in words if w.startswith("+") or w == "now"), "now")
            if when == "now":
                self._power_off(machine, "shutdown -h now")
                return
            machine.dead_man = time.monotonic() + float(when[1:]) * self.minute_seconds
        machine.seen_requests = len(lines)
        if machine.dead_man is not None and time.monotonic() >= machine.dead_man:
            self._power_off(machine, "the dead-man timer")

    def _power_off(self, machine: Machine, why: str, terminate: bool = True) -> None:
        machine.off, machine.why = True, why
        self._kill(machine)
        if terminate:  # InstanceInitiatedShutdownBehavior=terminate
            self.clients(machine.region).terminate_instances(InstanceIds=[machine.instance_id])
        self.terminated_at[machine.instance_id] = time.time()

    @staticmethod
    def _kill(machine: Machine) -> None:
        if machine.process.poll() is None:
            try:
                os.killpg(machine.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        machine.process.wait(10)
