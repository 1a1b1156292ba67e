"""The SSH key pair a provider logs in to the machines it launched with (Lambda, GCP).

An ed25519 pair made once in the state folder (``<state>/<provider>/id_ed25519``, the folder
0700): its public half goes to the cloud (Lambda's registered keys, GCP's instance
metadata), its private half never leaves this machine.
"""

from __future__ import annotations

import pathlib
import subprocess

from jupyter_burst.errors import ClusterError


def key_pair(folder: pathlib.Path) -> tuple[pathlib.Path, str]:
    """(private key file, public key line) in ``folder``, made on first use."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = folder / "id_ed25519"
    if not private.exists():
        try:
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "jupyter-burst",
                 "-f", str(private)],
                check=True, capture_output=True,
            )  # fmt: skip
        except FileNotFoundError:
            raise ClusterError(
                "this provider needs the ssh client to reach its machines; install it "
                "(apt-get install openssh-client)"
            ) from None
        except subprocess.CalledProcessError as exc:
            last = (exc.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
            raise ClusterError(f"could not make the SSH key {private}: {last}") from None
    public = private.with_suffix(".pub").read_text().split()
    return private, " ".join(public[:2])
