"""Two hosts on one machine: network namespaces joined by a veth pair, made by the test.

'cloud' and 'laptop' each have their loopback and one end of the link; no address outside
the pair is routed, so nothing leaves them. Needs root and iproute2 (`make test` installs it);
elsewhere the tests that use it are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.harness import needs

# TEST-NET-1 (RFC 5737): documentation addresses, never a real host.
CLOUD_ADDRESS = "192.0.2.1"
LAPTOP_ADDRESS = "192.0.2.2"


def inside(netns: str) -> list[str]:
    """The command prefix that runs a program inside ``netns`` (it execs: the same pid)."""
    return ["ip", "netns", "exec", netns]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass
class TwoHosts:
    cloud: str
    laptop: str
    laptop_link: str

    def cut(self) -> None:
        """The laptop's link goes down: its packets stop, and nobody is told."""
        _ip("-n", self.laptop, "link", "set", self.laptop_link, "down")


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2's ip (apt-get install iproute2)"
    return None


@pytest.fixture
def two_hosts() -> Iterator[TwoHosts]:
    needs(_unavailable())
    tag = uuid.uuid4().hex[:8]  # parallel tests each get their own pair
    hosts = TwoHosts(f"burst-cloud-{tag}", f"burst-laptop-{tag}", f"bl{tag}")
    cloud_link = f"bc{tag}"
    made: list[str] = []
    try:
        for netns in (hosts.cloud, hosts.laptop):
            _ip("netns", "add", netns)
            made.append(netns)
            _ip("-n", netns, "link", "set", "lo", "up")
        _ip("link", "add", cloud_link, "type", "veth", "peer", "name", hosts.laptop_link)
        _ip("link", "set", cloud_link, "netns", hosts.cloud)
        _ip("link", "set", hosts.laptop_link, "netns", hosts.laptop)
        for netns, link, address in (
            (hosts.cloud, cloud_link, CLOUD_ADDRESS),
            (hosts.laptop, hosts.laptop_link, LAPTOP_ADDRESS),
        ):
            _ip("-n", netns, "addr", "add", f"{address}/30", "dev", link)
            _ip("-n", netns, "link", "set", link, "up")
        yield hosts
    finally:
        for netns in made:  # deleting a namespace deletes its end of the pair, and so both
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30)
