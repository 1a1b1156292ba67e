"""A Lambda machine proves its SSH host key with the one-time secret of its boot script
(jupyter_burst/clusters/lambda_cloud/host_keys.py): the boot lines run as written, over real
host keys made by ssh-keygen; the key ssh was shown is kept only when the machine MACed it."""

from __future__ import annotations

import subprocess

import pytest

from jupyter_burst.clusters.lambda_cloud import host_keys
from jupyter_burst.clusters.ssh import channel
from jupyter_burst.clusters.ssh.hosts import Host
from jupyter_burst.errors import ClusterError
from tests.sshd_server import running_sshd


def _host_key(folder, name):
    path = folder / f"ssh_host_{name}_key"
    subprocess.run(["ssh-keygen", "-q", "-t", name, "-N", "", "-f", str(path)], check=True)
    kind, blob = path.with_suffix(".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def test_the_machine_proves_the_key_it_booted_with_and_an_impostors_key_is_refused(tmp_path):
    etc = tmp_path / "etc-ssh"
    etc.mkdir()
    ed25519, ecdsa = _host_key(etc, "ed25519"), _host_key(etc, "ecdsa")
    impostor = _host_key(tmp_path, "ed25519")
    secret = host_keys.new_secret()
    proof_file = tmp_path / "var" / "host-keys"
    boot = host_keys.boot_lines(secret, str(proof_file), str(etc / "ssh_host_*_key.pub"))
    subprocess.run(["bash", "-euc", boot], check=True)
    proof = proof_file.read_text()
    assert oct(proof_file.stat().st_mode & 0o777) == "0o644"  # the login user reads it
    assert secret not in proof  # MACs only: the secret stays on the machine's boot record
    # What ssh wrote to its own known_hosts file on the first login: "<host> <type> <base64>".
    assert host_keys.proven_key(secret, [f"203.0.113.7 {ecdsa}"], proof, "203.0.113.7") == ecdsa
    assert host_keys.proven_key(secret, [f"203.0.113.7 {ed25519}"], proof, "x") == ed25519
    with pytest.raises(ClusterError, match="did not prove its SSH host key .* nothing was sent"):
        host_keys.proven_key(secret, [f"203.0.113.7 {impostor}"], proof, "203.0.113.7")
    # Someone in between who replays the machine's own proof file without the secret: no key
    # of theirs is in it; and a proof made with another secret proves nothing.
    with pytest.raises(ClusterError):
        host_keys.proven_key(host_keys.new_secret(), [f"203.0.113.7 {ed25519}"], proof, "x")
    forged = f"{impostor} {host_keys.mac(host_keys.new_secret(), impostor)}\n"
    with pytest.raises(ClusterError):
        host_keys.proven_key(secret, [f"203.0.113.7 {impostor}"], proof + forged, "x")


def test_the_first_login_keeps_the_proven_key_alone_and_an_impostor_replaying_the_proof_is_refused(
    tmp_path,
):
    with (
        running_sshd(tmp_path / "machine") as machine,
        running_sshd(tmp_path / "impostor") as impostor,
    ):
        secret = host_keys.new_secret()
        proof = tmp_path / "proof"
        boot = host_keys.boot_lines(secret, str(proof), str(machine.folder / "host_key.pub"))
        subprocess.run(["bash", "-euc", boot], check=True)
        ours = str(machine.identity)
        host = Host(f"{machine.user}@127.0.0.1", gpus=1, port=machine.port, identity=ours)
        known = tmp_path / "state" / "known_hosts"
        kept = host_keys.first_login(host, secret, known, timeout=30, proof_file=str(proof))
        machine_key = (machine.folder / "host_key.pub").read_text().split()[:2]
        assert known.read_text().split() == [f"[127.0.0.1]:{machine.port}", *machine_key]
        # Every later login: strictly against that one key.
        later = subprocess.run(
            [*channel.ssh_command(kept, tmp_path), "echo in"], capture_output=True
        )
        assert later.stdout == b"in\n", later.stderr
        # Someone in between: they let any key in and hand back the machine's own proof (same
        # file here), but show their host key, which the proof does not MAC.
        (impostor.folder / "authorized_keys").write_text(
            (machine.folder / "client_key.pub").read_text()
        )
        between = Host(f"{machine.user}@127.0.0.1", gpus=1, port=impostor.port, identity=ours)
        elsewhere = tmp_path / "other" / "known_hosts"
        with pytest.raises(ClusterError, match="did not prove its SSH host key"):
            host_keys.first_login(between, secret, elsewhere, timeout=30, proof_file=str(proof))
        assert not elsewhere.exists()
        # And with the kept key, the impostor is no machine of ours either.
        swapped = Host(f"{machine.user}@127.0.0.1", 1, impostor.port, identity=ours,
                       known_hosts=str(known))  # fmt: skip
        refused = subprocess.run(
            [*channel.ssh_command(swapped, tmp_path), "echo in"], capture_output=True
        )
        assert refused.returncode == 255 and refused.stdout == b""
