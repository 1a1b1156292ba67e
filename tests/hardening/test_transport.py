"""The local provider is reachable from this machine only: every socket its scheduler,
nannies and workers listen on is bound to 127.0.0.1. (TLS for the other providers:
tests/test_remote_nodes.py, tests/test_aws_cluster.py, tests/test_ssh_provider.py.)"""

from __future__ import annotations

import psutil

from tests.harness import burst_processes


def test_a_local_cluster_listens_on_127_0_0_1_only(kernel, state_dir):
    kernel.ok("%%burst gpus=2\nx = 1\n")  # a head node with two worker processes
    listening: dict[int, list[str]] = {}
    for process in burst_processes(state_dir):
        try:
            sockets = process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        for s in sockets:
            if s.status == psutil.CONN_LISTEN:
                listening.setdefault(process.pid, []).append(s.laddr.ip)
    assert len(listening) >= 3, listening  # the head and both workers were looked at
    addresses = {ip for ips in listening.values() for ip in ips}
    assert addresses == {"127.0.0.1"}, listening
