"""Talking to a host: the system ``ssh`` client running the host-side helper (``remote.py``).

``BatchMode`` so that a missing key fails at once instead of prompting in a kernel nobody
watches. Host keys are checked strictly: the first login to a host carries its node's TLS
key, so a host whose key is not already trusted (the user's ``~/.ssh/known_hosts``, the
state folder's ``ssh_known_hosts``, ``burst.ssh.known-hosts``) is refused in one line that
says how to add it. ``burst.ssh.accept-new-host-keys: true`` trusts a new host on first use
(said in one line; kept in the state folder's file); a changed key is refused either way.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters.ssh.hosts import Host
from jupyter_burst.errors import ClusterError

_HELPER = pathlib.Path(__file__).with_name("remote.py").read_text()
_UNREACHABLE = 255  # ssh's own exit status when it could not connect or log in


class Unreachable(ClusterError):
    """ssh could not connect to or log in on the host."""


# What ssh says when it refuses a host for its key (OpenSSH's own words).
_CHANGED = "REMOTE HOST IDENTIFICATION HAS CHANGED"
_UNKNOWN = re.compile(r"No \S+ host key is known for|Host key verification failed")
_ADDED = re.compile(r"Permanently added '([^']+)' \((\S+)\) to the list of known hosts")


def known_hosts_files(state_dir: pathlib.Path) -> list[str]:
    """The files whose host keys are trusted; a key trusted on first use goes to the first."""
    files = [str(state_dir / "ssh_known_hosts"), os.path.expanduser("~/.ssh/known_hosts")]
    extra = config.get("ssh.known-hosts")
    if extra:
        files.append(os.path.expanduser(str(extra)))
    return files


def _accept_new() -> bool:
    return str(config.get("ssh.accept-new-host-keys", False)).strip().lower() in (
        "true",
        "1",
        "yes",
    )


def known_hosts_name(host: Host) -> str:
    """How a known_hosts file names the host: its address, with the port unless it is 22."""
    where = host.target.rpartition("@")[2]
    return where if host.port == 22 else f"[{where}]:{host.port}"


def ssh_command(host: Host, state_dir: pathlib.Path, *, first_login: bool = False) -> list[str]:
    """``first_login``: for a machine we launched, take the key it shows into its own file
    (to be proven before anything is sent: clusters/lambda_cloud/host_keys.py)."""
    if host.known_hosts:  # a machine we launched: its proven key alone, strictly
        checking, files = ("accept-new" if first_login else "yes"), f'"{host.known_hosts}"'
    else:
        checking = config.get("ssh.host-key-checking") or ("accept-new" if _accept_new() else "yes")
        files = " ".join(f'"{f}"' for f in known_hosts_files(state_dir))
    command = [
        "ssh", "-p", str(host.port),
        "-o", "BatchMode=yes",
        "-o", f"StrictHostKeyChecking={checking}",
        "-o", f"UserKnownHostsFile={files}",
        "-o", f"ConnectTimeout={config.get('ssh.connect-timeout', 10)}",
    ]  # fmt: skip
    if host.known_hosts:
        command += ["-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no"]
    identity = host.identity or config.get("ssh.identity")
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
    _say_trusted_on_first_use(host, state_dir, stderr)
    if done.returncode == _UNREACHABLE:
        _refuse_host_key(host, state_dir, stderr)
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


def _say_trusted_on_first_use(host: Host, state_dir: pathlib.Path, stderr: list[str]) -> None:
    for line in stderr:
        added = _ADDED.search(line)
        if added:
            print(
                f"burst: trusted the new {added.group(2)} host key of {host.target} "
                f"({added.group(1)}) on first use (burst.ssh.accept-new-host-keys); kept in "
                f"{state_dir / 'ssh_known_hosts'}",
                file=sys.stderr,
                flush=True,
            )


def _refuse_host_key(host: Host, state_dir: pathlib.Path, stderr: list[str]) -> None:
    """One line for a host ssh refused for its key: nothing was sent to it."""
    said = "\n".join(stderr)
    where = host.target.rpartition("@")[2]
    name = known_hosts_name(host)
    if _CHANGED in said:
        raise Unreachable(
            f"the host key of {host.target} (port {host.port}) has changed since it was trusted, "
            "so nothing was sent to it; if the host was reinstalled, remove the old key "
            f"(ssh-keygen -R '{name}' -f FILE, for each of "
            f"{', '.join(known_hosts_files(state_dir))}), else someone may be in between"
        )
    if _UNKNOWN.search(said):
        raise Unreachable(
            f"the host key of {host.target} (port {host.port}) is not trusted yet, so nothing "
            f"was sent to it; check its fingerprint and add it (ssh-keyscan -p {host.port} "
            f"{where} >> ~/.ssh/known_hosts), or trust new hosts on first use with "
            "burst.ssh.accept-new-host-keys: true"
        )
