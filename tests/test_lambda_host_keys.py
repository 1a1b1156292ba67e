"""A Lambda machine proves its SSH host key with the one-time secret of its boot script
(jupyter_burst/clusters/lambda_cloud/host_keys.py): the boot lines run as written, over real
host keys made by ssh-keygen; the key ssh was shown is kept only when the machine MACed it."""

from __future__ import annotations

import subprocess

import pytest

from jupyter_burst.clusters.lambda_cloud import host_keys
from jupyter_burst.errors import ClusterError


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
