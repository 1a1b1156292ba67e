"""The node code a cloud machine runs: a TLS head and a worker node, each its own process.

Each switches its machine off by itself (here the power-off command writes a file):
the cluster idle, its scheduler gone, its lifetime reached. A client without the
cluster's certificate cannot connect.
"""

from __future__ import annotations

import pathlib
import signal
import time

import pytest

from jupyter_burst.clusters import tls
from jupyter_burst.node.idle import LifetimePolicy, ReachabilityPolicy
from tests.aws_fakes import free_port
from tests.harness import wait_for
from tests.node_machines import Machine


def _connect(address: str, security, timeout: float = 5):
    from distributed import Client

    return Client(address, security=security, timeout=timeout, set_as_default=False)


def _close_quietly(client) -> None:
    """Close a client whose scheduler may have just vanished (distributed then races its reconnect)."""
    try:
        client.close(timeout=2)
    except Exception:
        pass


def _start(tmp_path, machines, idle: str = "20", lifetime: str = "0", unreachable: str = "2"):
    certs = tls.make(tmp_path / "certs", "remote-1")
    node_dir = tls.unpack_bundle(certs.node_bundle(), tmp_path / "node-tls")
    port = free_port()
    head = Machine(
        tmp_path,
        "head",
        *("--tls-dir", str(node_dir), "--port", str(port), "--slots", "1"),
        *("--idle", idle, "--max-lifetime", lifetime),
    )
    machines.append(head)
    address = f"tls://127.0.0.1:{port}"
    worker = Machine(
        tmp_path,
        "worker",
        *("--role", "worker", "--scheduler", address, "--tls-dir", str(node_dir)),
        *("--slots", "1", "--unreachable", unreachable, "--max-lifetime", lifetime),
    )
    machines.append(worker)
    return certs, address, head, worker


def _workers(address: str, certs) -> int:
    try:
        with _connect(address, certs.client_security(), timeout=2) as client:
            return len(client.scheduler_info()["workers"])
    except OSError:
        return 0


@pytest.mark.hardening
def test_a_tls_cluster_forms_from_a_head_and_a_worker_node_and_refuses_strangers(
    tmp_path, machines
):
    certs, address, head, worker = _start(tmp_path, machines)
    wait_for(lambda: _workers(address, certs) == 2, 60, "both nodes' workers to join")
    with _connect(address, certs.client_security()) as client:
        names = sorted(w["name"] for w in client.scheduler_info()["workers"].values())
        assert names[0].startswith("remote-") and names[1] == "slot-0", names
        assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
    assert "PRIVATE KEY" not in (tmp_path / "node-tls" / "node.pem").read_text()
    assert oct((tmp_path / "certs" / "ca.key").stat().st_mode & 0o777) == "0o600"

    # Another cluster's certificate, none at all, or no TLS: no connection, nothing submitted.
    another_clusters = tls.make(tmp_path / "other", "remote-2").client_security()
    with pytest.raises((OSError, TimeoutError)):
        _connect(address, another_clusters, timeout=3).close()
    assert not _tls_handshake_accepted(address, certs.cert(tls.CA))
    from distributed.security import Security

    with pytest.raises((OSError, TimeoutError)):
        _connect(address.replace("tls://", "tcp://"), Security(), timeout=3).close()


def _tls_handshake_accepted(address: str, ca: pathlib.Path) -> bool:
    """Whether the scheduler talks to a TLS client that trusts it but shows no certificate."""
    import socket
    import ssl

    host, port = address.removeprefix("tls://").split(":")
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with context.wrap_socket(raw) as conn:
                conn.sendall(b"\0" * 8)
                return bool(conn.recv(1))  # TLS 1.3 reports the refusal on the first read
    except TimeoutError:
        return True  # it waited for more: the connection was taken
    except (ssl.SSLError, ConnectionError):
        return False


def test_an_idle_cluster_switches_off_both_machines(tmp_path, machines):
    certs, address, head, worker = _start(tmp_path, machines, idle="0.1")
    wait_for(lambda: head.off and worker.off, 60, "both machines to switch themselves off")
    assert head.process.wait(30) == 0 and worker.process.wait(30) == 0


def test_a_worker_node_whose_head_is_gone_switches_itself_off(tmp_path, machines):
    certs, address, head, worker = _start(tmp_path, machines, unreachable="0.1")
    wait_for(lambda: _workers(address, certs) == 2, 60, "both nodes' workers to join")
    head.process.send_signal(signal.SIGKILL)  # the head machine vanishes, telling nobody
    wait_for(lambda: worker.off, 60, "the orphaned worker node to switch itself off")
    assert not head.off


def test_every_machine_stops_at_its_maximum_lifetime_even_when_busy(tmp_path, machines):
    certs, address, head, worker = _start(tmp_path, machines, lifetime="0.25")
    wait_for(lambda: _workers(address, certs) == 2, 60, "both nodes' workers to join")
    client = _connect(address, certs.client_security())
    try:
        busy = client.submit(time.sleep, 600, pure=False)
        wait_for(lambda: head.off and worker.off, 60, "the lifetime to end both machines")
        del busy
    finally:
        _close_quietly(client)


def test_the_lifetime_and_reachability_policies_on_a_fake_clock():
    lifetime = LifetimePolicy(60, started=100)
    assert not lifetime.expired(159.9) and lifetime.expired(160)
    assert not LifetimePolicy(0, started=0).expired(10**9)
    reach = ReachabilityPolicy(120, last_ok=0)
    assert not reach.observe(False, 119) and not reach.observe(True, 150)
    assert not reach.observe(False, 269) and reach.observe(False, 270)


def test_a_worker_node_that_cannot_join_its_scheduler_switches_itself_off(tmp_path, machines):
    """Its scheduler is gone before it joins: the machine must not be left running."""
    certs = tls.make(tmp_path / "certs", "remote-1")
    node_dir = tls.unpack_bundle(certs.node_bundle(), tmp_path / "node-tls")
    nobody = f"tls://127.0.0.1:{free_port()}"
    worker = Machine(
        tmp_path,
        "worker",
        *("--role", "worker", "--scheduler", nobody, "--tls-dir", str(node_dir), "--slots", "1"),
        env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "5s"},  # give up joining sooner
    )
    machines.append(worker)
    wait_for(lambda: worker.off, 90, "the worker node that could not join to switch itself off")
