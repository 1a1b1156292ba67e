"""The notebook's environment on the ssh hosts: built once per host and hash, then kept there.

Before any node starts, each host (once, however many of the cluster's entries name it) is
asked whether it has the environment of the lock's hash in ``<remote-dir>/envs/<hash>/``.
One that has it does nothing: cached. One that lacks it gets a tar over the ssh channel
(the lock, the wheels built in this kernel and, when the host has no uv but runs the
platform this kernel's uv is built for, that uv), and its helper (``remote.py env``) builds
the environment with uv into a folder of its own and renames it into place, one build of
a hash at a time. A node then runs that environment's python: the host's own Python runs
only the stdlib helper, and the packages installed there play no part.
"""

from __future__ import annotations

import io
import pathlib
import platform
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters import start_phases
from jupyter_burst.clusters.env.lock import NodeLock, node_wheel_path
from jupyter_burst.clusters.env.uv_tool import index_arguments, uv
from jupyter_burst.clusters.ssh import channel
from jupyter_burst.clusters.ssh.hosts import Host
from jupyter_burst.clusters.start_phases import ENVIRONMENT
from jupyter_burst.errors import ClusterError

_ASK_SECONDS = 60
# A first build downloads every package (CUDA torch is gigabytes); a second kernel building
# the same hash waits for the first within this time too.
_BUILD_SECONDS = 1800
UV_INSTALL = "curl -LsSf https://astral.sh/uv/install.sh | sh"
_MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


@dataclass(frozen=True)
class HostEnvironment:
    """The environment on one host: its python, and whether this start built it."""

    host: Host
    python: str
    built: bool
    seconds: float


def host_key(host: Host) -> tuple[str, int]:
    """What makes entries of burst.ssh.hosts the same machine: one environment each."""
    return host.target, host.port


def envs_folder() -> str:
    """Where the hosts keep the environments (relative to the login's home unless absolute)."""
    return f"{str(config.get('ssh.remote-dir') or '.cache/jupyter-burst').rstrip('/')}/envs"


def ensure(
    hosts: list[Host],
    lock: NodeLock,
    state_dir: pathlib.Path,
    phases: start_phases.StartPhases = start_phases.NOT_RECORDED,
) -> dict[tuple[str, int], str]:
    """The environment's python on each host (by :func:`host_key`), built where it is missing.

    Every host is asked first, and every one that cannot build it (no uv, none to send) is
    refused before any builds: nothing is left half done on one host for another's sake.
    """
    distinct: dict[tuple[str, int], Host] = {}
    for host in hosts:
        distinct.setdefault(host_key(host), host)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda h: _ask(h, lock, state_dir), distinct.values()))
    missing = [
        (h, a) for h, a in zip(distinct.values(), answers, strict=True) if a.get("env") != "cached"
    ]
    sending = {host_key(h): _uv_to_send(h, a) for h, a in missing}
    found: list[HostEnvironment] = [
        HostEnvironment(h, str(a["python"]), False, 0.0)
        for h, a in zip(distinct.values(), answers, strict=True)
        if a.get("env") == "cached"
    ]
    if missing:
        phases.enter(ENVIRONMENT, "building", done=0, total=len(missing))
        counting = threading.Lock()  # hosts finish in any order: the count stays whole
        done: list[HostEnvironment] = []
        # At most two tars (with this kernel's uv and without), made once for every host.
        tars = {uv_binary: payload(lock, uv_binary) for uv_binary in set(sending.values())}

        def build(host: Host) -> HostEnvironment:
            made = _build(host, lock, state_dir, tars[sending[host_key(host)]])
            with counting:
                done.append(made)
                phases.enter(ENVIRONMENT, "building", done=len(done), total=len(missing))
            return made

        with ThreadPoolExecutor(max_workers=8) as pool:
            found += list(pool.map(build, [h for h, _ in missing]))
        phases.enter(ENVIRONMENT, "built")
    else:
        phases.enter(ENVIRONMENT, "cached")
    # Said here, in host order, from the thread that runs the cell: its output is the cell's.
    by_key = {host_key(e.host): e for e in found}
    for key in distinct:
        made = by_key[key]
        how = f"built in {start_phases.seconds_text(made.seconds)}" if made.built else "cached"
        print(f"burst: {made.host.target}: environment {lock.hash[:12]} {how}", flush=True)
    return {key: made.python for key, made in by_key.items()}


def payload(lock: NodeLock, uv_binary: str | None) -> bytes:
    """What a host builds the environment from: the lock, the wheels built here (where the
    lock's ``${ROOT}/wheels/...`` lines name them), and this kernel's uv when it is sent."""
    buffer = io.BytesIO()
    # dereference: the uv found here may be a link; the host needs the file itself.
    with tarfile.open(fileobj=buffer, mode="w", dereference=True) as tar:
        text = lock.text().encode()
        info = tarfile.TarInfo("requirements.txt")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
        for wheel in lock.wheels:
            tar.add(str(wheel.path), arcname=f"wheels/{node_wheel_path(wheel)}")
        if uv_binary:
            tar.add(uv_binary, arcname="uv")
    return buffer.getvalue()


def _arguments(lock: NodeLock) -> list[str]:
    preference = str(config.get("ssh.uv-python-preference", None) or "")
    return ["env", envs_folder(), lock.hash, lock.python, preference, "--", *index_arguments()]


def _ask(host: Host, lock: NodeLock, state_dir: pathlib.Path) -> dict[str, Any]:
    return channel.helper(host, state_dir, _arguments(lock), timeout=_ASK_SECONDS)


def _build(host: Host, lock: NodeLock, state_dir: pathlib.Path, tar: bytes) -> HostEnvironment:
    answer = channel.helper(host, state_dir, _arguments(lock), stdin=tar, timeout=_BUILD_SECONDS)
    # "cached" too: another kernel built the same hash while this one waited for it.
    built = answer.get("env") == "built"
    return HostEnvironment(host, str(answer["python"]), built, float(answer.get("seconds", 0)))


def _uv_to_send(host: Host, answer: dict[str, Any]) -> str | None:
    """This kernel's uv for a host without one; refused (naming the fix) when it cannot run there."""
    if answer.get("uv"):
        return None
    here = (platform.system(), _machine(platform.machine()))
    there = (str(answer.get("system", "?")), _machine(str(answer.get("machine", "?"))))
    if here[0] != "Linux" or here != there:
        raise ClusterError(
            f"install uv on {host.target} ({UV_INSTALL}): the notebook's environment is built "
            f"there with uv, and this kernel's uv ({' '.join(here)}) cannot run on its "
            f"{' '.join(there)}; nothing was started"
        )
    return uv()


def _machine(name: str) -> str:
    return _MACHINES.get(name.lower(), name.lower())
