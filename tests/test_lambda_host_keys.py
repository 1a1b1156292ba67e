"""A Lambda machine proves its SSH host key with the one-time secret of its boot script
(jupyter_burst/clusters/lambda_cloud/host_keys.py): the boot lines run as written, over real
host keys made by ssh-keygen; the key ssh was shown is kept only when the machine MACed it."""

from __future__ import annotations

import os
import subprocess

import pytest

from jupyter_burst.clusters.lambda_cloud import host_keys
from jupyter_burst.clusters.ssh import channel
from jupyter_burst.clusters.ssh.hosts import Host
from jupyter_burst.errors import ClusterError
from tests.harness import wait_for
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
    where = {host_keys.PROOF_ENV: str(proof_file), host_keys.KEYS_ENV: str(etc / "*.pub"),
             "PATH": os.environ["PATH"]}  # fmt: skip
    subprocess.run(["bash", "-euc", host_keys.boot_lines(secret)], check=True, env=where)
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
    proof = tmp_path / "proof"  # the impostor serves the same file: the machine's, replayed
    login = {host_keys.PROOF_ENV: str(proof)}
    with (
        running_sshd(tmp_path / "machine", login) as machine,
        running_sshd(tmp_path / "impostor", login) as impostor,
    ):
        secret = host_keys.new_secret()
        keys = str(machine.folder / "host_key.pub")
        where = {**login, host_keys.KEYS_ENV: keys, "PATH": os.environ["PATH"]}
        subprocess.run(["bash", "-euc", host_keys.boot_lines(secret)], check=True, env=where)
        ours = str(machine.identity)
        host = Host(f"{machine.user}@127.0.0.1", gpus=1, port=machine.port, identity=ours)
        known = tmp_path / "state" / "known_hosts"
        kept = host_keys.first_login(host, secret, known, timeout=30)
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
            host_keys.first_login(between, secret, elsewhere, timeout=30)
        assert not elsewhere.exists()
        # And with the kept key, the impostor is no machine of ours either.
        swapped = Host(f"{machine.user}@127.0.0.1", 1, impostor.port, identity=ours,
                       known_hosts=str(known))  # fmt: skip
        refused = subprocess.run(
            [*channel.ssh_command(swapped, tmp_path), "echo in"], capture_output=True
        )
        assert refused.returncode == 255 and refused.stdout == b""


def test_a_launched_machine_is_logged_in_to_by_its_proven_key_and_ends_when_terminated(
    tmp_path, monkeypatch
):
    from jupyter_burst.clusters.lambda_cloud import api, login
    from jupyter_burst.clusters.ssh import keys
    from tests.lambda_fake import KEY, LambdaFake
    from tests.lambda_machines import LambdaMachines

    fake = LambdaFake(request_spacing=0.0, launch_spacing=0.0)
    fake.machines = LambdaMachines(tmp_path / "machines")
    fake.start()
    monkeypatch.setattr(api, "REQUEST_SPACING", 0.0)
    monkeypatch.setattr(api, "LAUNCH_SPACING", 0.0)
    try:
        client = api.LambdaApi(KEY, fake.url)
        private, public = keys.key_pair(tmp_path / "state" / "lambda")
        secret = host_keys.new_secret()
        launched = client.post(
            api.LAUNCH_PATH,
            {
                "region_name": "us-east-1", "instance_type_name": "gpu_1x_a10",
                "ssh_key_names": [login.registered_name(client, public)],
                "user_data": "#!/bin/bash\nset -eu\n" + host_keys.boot_lines(secret),
            },
        )  # fmt: skip
        (instance_id,) = launched["instance_ids"]
        ip = client.get(f"/instances/{instance_id}")["ip"]
        assert ip.startswith("127.0.0.") and ip != "127.0.0.1"
        user = fake.machines.machines[instance_id].sshd.user
        host = Host(f"{user}@{ip}", 1, fake.machines.port, identity=str(private))
        known = tmp_path / "state" / "known_hosts"
        kept = host_keys.first_login(host, secret, known, timeout=30)
        said = subprocess.run(
            [*channel.ssh_command(kept, tmp_path), "echo in"], capture_output=True
        )
        assert said.stdout == b"in\n", said.stderr
        assert secret not in (tmp_path / "state").joinpath("known_hosts").read_text()
        client.post("/instance-operations/terminate", {"instance_ids": [instance_id]})

        def gone() -> bool:  # its machine is off: nothing answers at its address
            run = subprocess.run(
                [*channel.ssh_command(kept, tmp_path), "echo in"], capture_output=True
            )
            return run.returncode == 255

        wait_for(gone, 30, "the terminated machine to power off")
    finally:
        fake.stop()
