"""The local provider is reachable by this user only: every socket its scheduler, nannies and
workers listen on is bound to 127.0.0.1, and speaks mutual TLS with the cluster's own
certificates, so another user of a shared machine who finds the ports cannot connect. (TLS
for the other providers: tests/test_remote_nodes.py, tests/test_aws_cluster.py,
tests/test_ssh_provider.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import psutil

from tests.harness import REPO, burst_processes, needs

NOBODY = 65534

# Another user's script: the ports it can see listening on 127.0.0.1 (/proc/net/tcp is
# readable by all), and, for each port it was given, what a connection and a submission did.
STRANGER = textwrap.dedent(
    """
    import asyncio, ssl, sys, urllib.request
    from distributed import Client
    from distributed.core import rpc
    from distributed.security import Security

    marker, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
    seen = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and local.startswith("0100007F:"):  # LISTEN on 127.0.0.1
            seen.add(int(local.split(":")[1], 16))
    print("seen", sum(p in seen for p in ports), flush=True)

    # Its own certificate, and no check of the server's: the strongest TLS it can bring.
    mine = Security.temporary()
    loose = mine.get_connection_args("client")
    loose["ssl_context"].check_hostname = False
    loose["ssl_context"].verify_mode = ssl.CERT_NONE

    def run_as_the_victim(path):
        open(path, "w").write("ran")
        return "ran"

    async def submit(address):
        security = mine if address.startswith("tls") else None
        async with Client(address, asynchronous=True, timeout=3, security=security) as client:
            return await client.submit(run_as_the_victim, marker)

    async def identity(address):
        args = loose if address.startswith("tls") else {}
        async with rpc(address, timeout=3, connection_args=args) as remote:
            return await remote.identity()

    async def attempt(what, how, address):
        try:  # a port that never answers is no way in either
            return f"{what} {address} {await asyncio.wait_for(how(address), 5)}"
        except BaseException as exc:
            return f"refused {address} {type(exc).__name__}"

    def page(port, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as reply:
                return f"LEAKED {port}{path} {reply.status}"
        except Exception as exc:
            return f"no page {port}{path} {type(exc).__name__}"

    async def main():
        tries = [
            attempt(what, how, f"{scheme}://127.0.0.1:{port}")
            for port in ports
            for scheme in ("tcp", "tls")
            for what, how in (("CONNECTED", submit), ("ANSWERED", identity))
        ]
        tries += [
            asyncio.to_thread(page, port, path)
            for port in ports
            for path in ("/info/main/workers.html", "/json/identity.json", "/metrics")
        ]
        for said in await asyncio.gather(*tries):
            print(said, flush=True)

    asyncio.run(main())
    """
)


def _listening(state_dir) -> dict[int, list[tuple[str, int]]]:
    """Each cluster process's listening sockets, by pid: (address, port)."""
    found: dict[int, list[tuple[str, int]]] = {}
    for process in burst_processes(state_dir):
        try:
            sockets = process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        for s in sockets:
            if s.status == psutil.CONN_LISTEN:
                found.setdefault(process.pid, []).append((s.laddr.ip, s.laddr.port))
    return found


def test_a_local_cluster_listens_on_127_0_0_1_only(kernel, state_dir):
    kernel.ok("%%burst gpus=2\nx = 1\n")  # a head node with two worker processes
    listening = _listening(state_dir)
    assert len(listening) >= 3, listening  # the head and both workers were looked at
    addresses = {ip for sockets in listening.values() for ip, _ in sockets}
    assert addresses == {"127.0.0.1"}, listening


def test_another_user_finds_a_local_clusters_ports_and_can_neither_connect_nor_submit(
    kernel, state_dir
):
    needs(None if os.geteuid() == 0 else "running a script as another user needs root")
    needs(None if shutil.which("setpriv") else "setpriv (util-linux) is missing")
    kernel.ok("%%burst gpus=2\nx = 1\n")  # scheduler, two nannies, two workers
    ports = sorted({port for found in _listening(state_dir).values() for _, port in found})
    assert len(ports) >= 5, ports
    # A folder the other user can write in: its script, its home, the marker it must not make.
    shared = tempfile.mkdtemp(prefix="burst-stranger-")
    try:
        os.chmod(shared, 0o777)
        script = os.path.join(shared, "stranger.py")
        with open(script, "w") as file:
            file.write(STRANGER)
        marker = os.path.join(shared, "ran")
        done = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             sys.executable, script, marker, *map(str, ports)],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=shared,
            env={"PATH": os.environ["PATH"], "HOME": shared, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        said = done.stdout
        assert done.returncode == 0, said + done.stderr
        assert f"seen {len(ports)}" in said, said  # it found every port ...
        assert "CONNECTED" not in said and "ANSWERED" not in said, said  # ... and got nowhere
        assert said.count("refused") == 4 * len(ports), said
        assert "LEAKED" not in said and said.count("no page") == 3 * len(ports), said
        assert not os.path.exists(marker)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_clusters_keys_go_with_its_record_and_expired_ones_with_the_next_cluster(tmp_path):
    from jupyter_burst.clusters import records, tls

    state = tmp_path / "state"
    certs = tls.make(state / "tls" / "gpu-1234", "gpu-1234")
    record = {"id": "gpu-1234", "name": "gpu", "provider": "aws", "tls": str(certs.folder)}
    records.write_record(state, "gpu", record)
    records.remove_record(state, "gpu", "gpu-1234", "aws")
    assert not certs.folder.exists()
    # A cluster whose record stayed (its machine ended while no kernel watched): its keys
    # go once its certificates have expired, when the next cluster is made.
    old = tls.make(state / "tls" / "old-1", "old-1").folder
    os.utime(old, (0, 0))
    tls.make(state / "tls" / "new-1", "new-1")
    assert sorted(p.name for p in (state / "tls").iterdir()) == ["new-1"]
