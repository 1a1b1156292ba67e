"""``burst.ssh.*``: the on-prem hosts, read and checked before anything is started.

``burst.ssh.hosts`` is a list; each entry a string ``"user@host gpus=2 [port=22]
[python=/usr/bin/python3] [address=10.0.0.5]"`` or the same as a mapping
(``{host: user@host, gpus: 2, ...}``). ``address`` is where the cluster's other machines and
this notebook reach the host when that is not its ssh name (an alias of ~/.ssh/config).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jupyter_burst import config
from jupyter_burst.errors import ClusterError

_FORMAT = '"user@host gpus=N [port=22] [python=python3] [address=ADDR]"'
_KEYS = ("gpus", "port", "python", "address")


@dataclass(frozen=True)
class Host:
    target: str  # what ssh is given: user@host (or an alias of ~/.ssh/config)
    gpus: int
    port: int = 22
    python: str = "python3"
    address: str = ""  # where the scheduler and workers listen; "" = the host part of target
    # A machine we launched (Lambda): the key we log in with, and a known_hosts file with its
    # one proven host key, checked strictly. "": burst.ssh.identity and the usual files.
    identity: str = ""
    known_hosts: str = ""

    @property
    def listen(self) -> str:
        return self.address or self.target.rpartition("@")[2]


def configured_hosts() -> list[Host]:
    """The hosts of ``burst.ssh.hosts``, in order (the first is the head); one-line error if bad."""
    entries = config.get("ssh.hosts")
    if isinstance(entries, (str, dict)):
        entries = [entries]
    if not entries:
        raise ClusterError(
            "provider=ssh has no hosts; set burst.ssh.hosts to a list of "
            f"{_FORMAT} (e.g. DASK_BURST__SSH__HOSTS='[\"me@gpu1 gpus=4\"]')"
        )
    return [parse_host(entry, i) for i, entry in enumerate(entries, 1)]


def parse_host(entry: Any, number: int = 1) -> Host:
    """One ``burst.ssh.hosts`` entry (string or mapping) as a :class:`Host`."""
    where = f"burst.ssh.hosts entry {number} ({entry!r})"
    if isinstance(entry, str):
        words = entry.split()
        if not words or "=" in words[0]:
            raise ClusterError(f"{where} does not start with user@host; write it as {_FORMAT}")
        fields: dict[str, Any] = {"host": words[0]}
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if not sep:
                raise ClusterError(f"{where}: '{word}' is not key=value; write it as {_FORMAT}")
            fields[key] = value
    elif isinstance(entry, dict):
        fields = dict(entry)
    else:
        raise ClusterError(f"{where} is neither a string nor a mapping; write it as {_FORMAT}")
    target = str(fields.pop("host", "") or "").strip()
    if not target or any(c.isspace() for c in target) or target.startswith("-"):
        raise ClusterError(f"{where} names no host; write it as {_FORMAT}")
    unknown = sorted(set(fields) - set(_KEYS))
    if unknown:
        raise ClusterError(
            f"{where} has unknown key {unknown[0]}=; the keys are {', '.join(_KEYS)}"
        )
    if "gpus" not in fields:
        raise ClusterError(f"{where} does not say how many GPUs it has; add gpus=N")
    gpus = _whole(where, "gpus", fields["gpus"], 1)
    port = _whole(where, "port", fields.get("port", 22), 1)
    if port > 65535:
        raise ClusterError(f"{where} has port={port}; give the host's sshd port (1-65535)")
    return Host(
        target=target,
        gpus=gpus,
        port=port,
        python=str(fields.get("python") or "python3"),
        address=str(fields.get("address") or ""),
    )


def _whole(where: str, key: str, value: Any, least: int) -> int:
    try:
        number = int(str(value))
    except ValueError:
        number = least - 1
    if number < least:
        raise ClusterError(f"{where} has {key}={value}; give a whole number of at least {least}")
    return number


def price_per_gpu_hour() -> float:
    """``burst.ssh.price-per-gpu-hour``: the internal (chargeback) price of one GPU for an hour."""
    value = config.get("ssh.price-per-gpu-hour", 0) or 0
    try:
        price = float(value)
    except (TypeError, ValueError):
        price = -1.0
    if price < 0:
        raise ClusterError(
            f"burst.ssh.price-per-gpu-hour={value} is not a price; give USD per GPU-hour, e.g. 1.5"
        )
    return price
