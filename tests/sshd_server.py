"""A real sshd of a test's own: its config, host key and authorized_keys in the test's
folder, on a free port of a loopback address, letting this user in with a fresh key (or the
key it is given); stopped afterwards.

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
from tests.harness import stop_process, wait_for
from tests.notebook_env import base_python

SSHD = pathlib.Path("/usr/sbin/sshd")


@dataclass
class Sshd:
    port: int
    user: str
    identity: pathlib.Path  # a key it lets in (none when it was given the authorized key)
    known_hosts: pathlib.Path  # its host key, as a user who trusts this host has it
    folder: pathlib.Path  # its config, keys (host_key, host_key.pub) and log
    address: str = "127.0.0.1"
    process: subprocess.Popen | None = None


def make_key(path: pathlib.Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(
    folder: pathlib.Path,
    *,
    address: str = "127.0.0.1",
    port: int | None = None,
    authorized: str | None = None,
    login_env: dict[str, str] | None = None,
) -> Sshd:
    """An sshd whose files are in ``folder`` (made here); the caller stops its process.

    ``authorized``: the public key it lets in (else a fresh client key of its own);
    ``login_env``: more variables for its logins.
    """
    if not SSHD.exists() or not shutil.which("ssh"):
        pytest.fail("these tests need /usr/sbin/sshd and ssh: run `make sshd`")
    folder.mkdir(parents=True)
    make_key(folder / "host_key")
    if authorized is None:
        make_key(folder / "client_key")
        authorized = (folder / "client_key.pub").read_text()
    (folder / "authorized_keys").write_text(authorized.strip() + "\n")
    # The host's own Python, of the tests' minor version (the one uv builds the environment
    # on, as a host's system Python): a plain interpreter, not the tests' virtualenv.
    host_bin = folder / "bin"
    host_bin.mkdir()
    for name in ("python3", f"python{sys.version_info.major}.{sys.version_info.minor}"):
        (host_bin / name).symlink_to(base_python())
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    port = port or free_port()
    more = "".join(f" {name}={value}" for name, value in (login_env or {}).items())
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress {address}\nHostKey {folder / 'host_key'}\n"
        f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
        "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        # The host's environment: a login's bare PATH (no uv), uv on the system's Python.
        f"SetEnv PATH={host_bin}:/usr/bin:/bin UV_PYTHON_PREFERENCE=only-system "
        f"UV_PYTHON_DOWNLOADS=never{more}\n"
    )
    with open(folder / "sshd.log", "wb") as log:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: _banner(address, port) or process.poll() is not None, 10, "sshd")
        assert process.poll() is None, (folder / "sshd.log").read_text()
    except BaseException:
        stop_process(process, timeout=10)
        raise
    where = address if port == 22 else f"[{address}]:{port}"
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"{where} {(folder / 'host_key.pub').read_text()}")
    user = getpass.getuser()
    return Sshd(port, user, folder / "client_key", known_hosts, folder, address, process)


@contextlib.contextmanager
def running_sshd(folder: pathlib.Path, login_env: dict[str, str] | None = None) -> Iterator[Sshd]:
    """An sshd on 127.0.0.1 whose files are in ``folder``; stopped when the block ends."""
    server = start_sshd(folder, login_env=login_env)
    try:
        yield server
    finally:
        assert server.process is not None
        stop_process(server.process, timeout=10)


def _banner(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False
