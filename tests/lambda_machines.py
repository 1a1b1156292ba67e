"""The machines behind tests/lambda_fake.py: each launched instance boots as a bare machine.

Lambda's API keeps the books; this runs what a launched instance would: an sshd of its own
on an address of its own (127.0.0.N, the same port on each, as port 22 is on every real
machine) that lets in the SSH key the launch named, with fresh host keys; and the launch's
``user_data`` run by bash in a session of its own (its "machine"), with a bare PATH (a
plain interpreter as ``python3``) and the two variables that move the host-key proof's
files into the machine's folder (clusters/lambda_cloud/host_keys.py). A terminated
instance's machine is powered off: its processes end (the boot script's, and every process
started through its sshd: they carry its proof variable), its sshd with them.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import threading
from dataclasses import dataclass

import psutil

from jupyter_burst.clusters.lambda_cloud import host_keys
from tests.aws_fakes import free_port
from tests.harness import stop_process
from tests.notebook_env import base_python
from tests.sshd_server import Sshd, start_sshd

# The machine's `shutdown`: its cloud is told, as a guest shutdown tells the hypervisor.
_SHUTDOWN = """#!{python}
import urllib.request
urllib.request.urlopen(urllib.request.Request("{url}", method="POST"), timeout=30).read()
"""


@dataclass
class Machine:
    address: str
    folder: pathlib.Path
    sshd: Sshd
    boot: subprocess.Popen
    off: bool = False


class LambdaMachines:
    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.machines: dict[str, Machine] = {}
        self._lock = threading.Lock()

    def boot(self, instance_id: str, public_key: str, user_data: str, shutdown: str = "") -> str:
        """Start the instance's machine; its address. ``shutdown``: a URL that a ``shutdown``
        on the machine's PATH posts to (its cloud then stops the instance), else none."""
        with self._lock:
            address = f"127.0.0.{2 + len(self.machines)}"
            folder = self.folder / instance_id
            folder.mkdir(parents=True)
            proof = folder / "var" / "host-keys"
            sshd = start_sshd(
                folder / "sshd", address=address, port=self.port, authorized=public_key,
                login_env={host_keys.PROOF_ENV: str(proof)},
            )  # fmt: skip
            if shutdown:
                command = sshd.folder / "bin" / "shutdown"
                command.write_text(_SHUTDOWN.format(python=base_python(), url=shutdown))
                command.chmod(0o755)
            script = folder / "user-data"
            script.write_text(user_data)
            env = {
                "PATH": f"{sshd.folder / 'bin'}:/usr/bin:/bin",
                "HOME": str(folder),
                host_keys.PROOF_ENV: str(proof),
                host_keys.KEYS_ENV: str(sshd.folder / "host_key.pub"),
            }
            with open(folder / "boot.log", "wb") as log:
                boot = subprocess.Popen(
                    ["bash", str(script)], stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True,
                )  # fmt: skip
            self.machines[instance_id] = Machine(address, folder, sshd, boot)
            return address

    def power_off(self, instance_id: str) -> None:
        with self._lock:
            machine = self.machines.get(instance_id)
            if machine is None or machine.off:
                return
            machine.off = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(machine.boot.pid, signal.SIGKILL)
        machine.boot.wait(timeout=10)
        assert machine.sshd.process is not None
        stop_process(machine.sshd.process, timeout=10)
        doomed = self.processes(instance_id)
        for process in doomed:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(doomed, timeout=10)

    def processes(self, instance_id: str) -> list[psutil.Process]:
        """What runs on the machine: processes started through its sshd (its logins' mark)."""
        proof = str(self.machines[instance_id].folder / "var" / "host-keys")
        found = []
        for process in psutil.process_iter(["status"]):
            try:
                if process.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if process.environ().get(host_keys.PROOF_ENV) == proof:
                    found.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def stop(self) -> None:
        for instance_id in list(self.machines):
            self.power_off(instance_id)
