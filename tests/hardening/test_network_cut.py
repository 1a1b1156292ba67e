"""The laptop's network is cut mid-cell: the cloud nodes switch themselves off, unasked.

A TLS head node and a worker node (the code an EC2 machine runs) in one network namespace,
the client in another, a cell's task running; then the client's link goes down. Nobody
tells the cluster: it must notice the silent client, count itself idle and end both
machines while the laptop is still cut off.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from jupyter_burst.clusters import tls
from tests.aws_fakes import free_port
from tests.harness import REPO, wait_for
from tests.netns import CLOUD_ADDRESS, inside
from tests.node_machines import Machine

# The laptop: a client with the cluster's certificate whose cell runs for an hour.
CLIENT = textwrap.dedent(
    """
    import pathlib, sys, time
    from distributed import Client
    from jupyter_burst.clusters import tls

    certs_dir, address, marker = sys.argv[1:]

    def cell(marker):
        import pathlib, time
        pathlib.Path(marker).write_text('running')
        time.sleep(3600)

    certs = tls.ClusterCerts(pathlib.Path(certs_dir))
    client = Client(address, security=certs.client_security(), timeout=60, set_as_default=False)
    future = client.submit(cell, marker, pure=False)
    print('submitted', flush=True)
    time.sleep(3600)
    """
)


def test_a_laptop_cut_off_mid_cell_leaves_no_cloud_machine_running(tmp_path, two_hosts, machines):
    certs = tls.make(tmp_path / "certs", "remote-1")
    node_dir = tls.unpack_bundle(certs.node_bundle(), tmp_path / "node-tls")
    address = f"tls://{CLOUD_ADDRESS}:{free_port()}"
    port = address.rsplit(":", 1)[1]
    common = ("--tls-dir", str(node_dir), "--slots", "1", "--host", CLOUD_ADDRESS)
    head = Machine(
        tmp_path, "head", *common, "--port", port, "--idle", "0.1", netns=two_hosts.cloud
    )
    machines.append(head)
    worker = Machine(
        tmp_path, "worker", *common, "--role", "worker", "--scheduler", address,
        netns=two_hosts.cloud,
    )  # fmt: skip
    machines.append(worker)

    marker = tmp_path / "cell-running"
    laptop_log = open(tmp_path / "laptop.log", "wb")  # noqa: SIM115 - closed below
    laptop = subprocess.Popen(
        [
            *inside(two_hosts.laptop),
            sys.executable,
            "-c",
            CLIENT,
            str(certs.folder),
            address,
            str(marker),
        ],  # fmt: skip
        stdout=laptop_log,
        stderr=subprocess.STDOUT,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    try:
        wait_for(marker.exists, 90, "the laptop's cell to run on the cluster")
        assert not head.off and not worker.off
        two_hosts.cut()
        wait_for(
            lambda: head.off and worker.off,
            120,
            "both cloud machines to switch themselves off after the laptop was cut off",
        )
        assert "idle" in head.log_path.read_text(), head.log_path.read_text()[-2000:]
        assert laptop.poll() is None  # the laptop never said goodbye: it is only cut off
    finally:
        laptop.kill()
        laptop.wait(10)
        laptop_log.close()
