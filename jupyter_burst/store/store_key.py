"""The key that signs what the kernel unpickles from a store: checkpoints, background results.

A sha256 in a manifest catches a damaged file, not a writer: whoever can write the store (a
shared bucket, any node's instance profile) could replace an entry and its hash together,
and unpickling it would run their code as the user. So each entry also carries an
HMAC-SHA256 made with a key only this user's machines hold, and it is checked before a
byte is unpickled. The key is made once in the user's state folder (0600); local nodes read
it there, remote nodes get it in their key bundle with their TLS keys (``store.key``, never
in user data), whose folder their boot names in ``JUPYTER_BURST_STORE_KEY_FILE``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pathlib
import secrets

from jupyter_burst import config

FILE = "store.key"
ENV = "JUPYTER_BURST_STORE_KEY_FILE"
_BYTES = 32


def path() -> pathlib.Path:
    """Where this process's key is: named by its node, else its state folder's."""
    named = os.environ.get(ENV)
    if named:
        return pathlib.Path(named)
    state = os.environ.get("JUPYTER_BURST_STATE_DIR")  # a node's processes
    return (pathlib.Path(state) if state else config.state_dir()) / FILE


def ensure() -> pathlib.Path:
    """The key file, made (0600, never replaced) if there is none yet; its path."""
    where = path()
    if not where.exists():
        where.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process of this user made it meanwhile
            return where
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(_BYTES))
    return where


def load(create: bool = False) -> bytes | None:
    """This process's key (made first with ``create``: a writer's); None where it has none."""
    if create:
        ensure()
    try:
        return bytes.fromhex(path().read_text().strip()) or None
    except (FileNotFoundError, ValueError):  # none, or not a key: nothing verifies with it
        return None


def signer(key: bytes, job: str, name: str) -> hmac.HMAC:
    """An HMAC of one entry: bound to its job and name, so that a valid entry of one job
    cannot be passed off as another's."""
    return hmac.new(key, f"jupyter-burst store\n{job}\n{name}\n".encode(), hashlib.sha256)


def sign(key: bytes, job: str, name: str, data: bytes | memoryview) -> str:
    mac = signer(key, job, name)
    mac.update(data)
    return mac.hexdigest()


def verify(key: bytes | None, job: str, name: str, data: bytes, mac: str) -> bool:
    return bool(key and mac) and hmac.compare_digest(sign(key, job, name, data), mac)
