"""Talking to a host: the system ``ssh`` client running the host-side helper (``remote.py``).

``BatchMode`` so that a missing key fails at once instead of prompting in a kernel nobody
watches; ``accept-new`` host keys kept in the state folder's own known_hosts (a host seen once
must keep its key), unless ``burst.ssh.known-hosts`` names another file.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import subprocess
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters.ssh.hosts import Host
from jupyter_burst.errors import ClusterError

_HELPER = pathlib.Path(__file__).with_name("remote.py").read_text()
_UNREACHABLE = 255  # ssh's own exit status when it could not connect or log in


class Unreachable(ClusterError):
    """ssh could not connect to or log in on the host."""


def ssh_command(host: Host, state_dir: pathlib.Path) -> list[str]:
    known = config.get("ssh.known-hosts") or state_dir / "ssh_known_hosts"
    command = [
        "ssh", "-p", str(host.port),
        "-o", "BatchMode=yes",
        "-o", f"StrictHostKeyChecking={config.get('ssh.host-key-checking', 'accept-new')}",
        "-o", f"UserKnownHostsFile={os.path.expanduser(str(known))}",
        "-o", f"ConnectTimeout={config.get('ssh.connect-timeout', 10)}",
    ]  # fmt: skip
    identity = config.get("ssh.identity")
    if identity:
        command += ["-o", "IdentitiesOnly=yes", "-i", os.path.expanduser(str(identity))]
    return [*command, "--", host.target]


def helper(
    host: Host,
    state_dir: pathlib.Path,
    args: list[str],
    stdin: bytes = b"",
    timeout: float = 60,
) -> dict[str, Any]:
    """Run ``remote.py ARGS`` on ``host`` with its Python; its one-line JSON answer.

    The key bundle travels on stdin only: never on a command line (``ps`` shows those).
    """
    remote = shlex.join([host.python, "-c", _HELPER, *args])
    try:
        done = subprocess.run(
            [*ssh_command(host, state_dir), remote],
            input=stdin,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(
            f"{host.target} did not answer over ssh within {timeout:g} s; "
            "check the host, or raise burst.start-timeout"
        ) from None
    except FileNotFoundError:
        raise ClusterError(
            "provider=ssh needs the ssh client; install it (apt-get install openssh-client)"
        ) from None
    stderr = done.stderr.decode(errors="replace").strip().splitlines()
    if done.returncode == _UNREACHABLE:
        raise Unreachable(
            f"ssh to {host.target} (port {host.port}) failed: {stderr[-1] if stderr else 'no message'}; "
            "check burst.ssh.hosts and burst.ssh.identity (ssh runs in batch mode: "
            "the key must work without a password)"
        )
    answer = _answer(done.stdout)
    if answer is None:
        last = stderr[-1] if stderr else f"exit {done.returncode}"
        raise ClusterError(
            f"{host.python} on {host.target} did not run jupyter-burst's helper: {last}; "
            "set python= in its burst.ssh.hosts entry to a Python 3 there (it runs a "
            "stdlib-only helper; the nodes run the notebook's environment, built there)"
        )
    if "error" in answer:
        raise ClusterError(f"{host.target}: {answer['error']}")
    return answer


def _answer(stdout: bytes) -> dict[str, Any] | None:
    lines = stdout.decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None
