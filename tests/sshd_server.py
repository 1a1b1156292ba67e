"""A real sshd of a test's own on 127.0.0.1: its config, host key and authorized_keys in the
test's folder, on a free port, letting this user in with a fresh key; stopped afterwards.

Its logins get a bare PATH (a host's system Python as ``python3``, no uv) and uv told to use
the system's Python, as a plain on-prem host or a fresh cloud machine has.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pathlib
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.aws_fakes import free_port
from tests.harness import wait_for
from tests.notebook_env import base_python

SSHD = pathlib.Path("/usr/sbin/sshd")


@dataclass
class Sshd:
    port: int
    user: str
    identity: pathlib.Path
    known_hosts: pathlib.Path  # its host key, as a user who trusts this host has it
    folder: pathlib.Path  # its config, keys (host_key, host_key.pub) and log


def _key(path: pathlib.Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@contextlib.contextmanager
def running_sshd(folder: pathlib.Path) -> Iterator[Sshd]:
    """An sshd whose files are in ``folder`` (made here)."""
    if not SSHD.exists() or not shutil.which("ssh"):
        pytest.fail("these tests need /usr/sbin/sshd and ssh: run `make sshd`")
    folder.mkdir(parents=True)
    for key in ("host_key", "client_key"):
        _key(folder / key)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    # The host's own Python, of the tests' minor version (the one uv builds the environment
    # on, as a host's system Python): a plain interpreter, not the tests' virtualenv.
    host_bin = folder / "bin"
    host_bin.mkdir()
    for name in ("python3", f"python{sys.version_info.major}.{sys.version_info.minor}"):
        (host_bin / name).symlink_to(base_python())
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
        "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        # The host's environment: a login's bare PATH (no uv), uv on the system's Python.
        f"SetEnv PATH={host_bin}:/usr/bin:/bin UV_PYTHON_PREFERENCE=only-system "
        "UV_PYTHON_DOWNLOADS=never\n"
    )
    with open(folder / "sshd.log", "wb") as log:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: _banner(port) or process.poll() is not None, 10, "sshd to listen")
        assert process.poll() is None, (folder / "sshd.log").read_text()
        known_hosts = folder / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {(folder / 'host_key.pub').read_text()}")
        yield Sshd(port, getpass.getuser(), folder / "client_key", known_hosts, folder)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False
