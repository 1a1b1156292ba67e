"""A new Lambda machine's SSH host key, proven to be its own before anything is sent to it.

Lambda's API does not say a machine's host key, and the first login to it carries its
node's TLS key, so trusting whatever answers first would let anyone in between take the
cluster. Instead the launch gives the machine a one-time secret in its boot script (user
data travels to Lambda's API over HTTPS, never past the network between us and the
machine); at boot, the machine writes each of its host public keys with an HMAC of that key
under the secret. The kernel's first ssh login trusts the key it is shown only for a
``cat`` of that file, and keeps the key only if the machine's MAC over that very key is
right: someone in between shows their own key, and without the secret cannot MAC it (nor can
they log in to the machine to read its file: an SSH login cannot be relayed). Every later
connection checks host keys strictly against the kept key alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import pathlib
import secrets
import subprocess
import tempfile
import time

from jupyter_burst.clusters.ssh import channel
from jupyter_burst.clusters.ssh.hosts import Host
from jupyter_burst.errors import ClusterError

# Where the boot script writes "<type> <base64> <hmac>" per host key (readable by the login),
# and which host keys it MACs. Two variables move them for the tests' machine emulator
# (tests/lambda_fake.py), which runs this very script as a machine of its own.
PROOF_FILE = "/var/lib/jupyter-burst/host-keys"
HOST_KEYS = "/etc/ssh/ssh_host_*_key.pub"
PROOF_ENV = "JUPYTER_BURST_HOST_KEY_PROOF"
KEYS_ENV = "JUPYTER_BURST_HOST_KEYS"
# What the first login runs: the proof, as the login finds it.
PROOF_COMMAND = f'cat "${{{PROOF_ENV}:-{PROOF_FILE}}}"'
_RETRY_SECONDS = 1.0  # between two logins to a machine still booting


def new_secret() -> str:
    return secrets.token_hex(32)


def boot_lines(secret: str) -> str:
    """Shell lines of the boot script that write the machine's proof (runs as root at boot)."""
    return f"""proof="${{{PROOF_ENV}:-{PROOF_FILE}}}"
install -d -m 0755 "$(dirname "$proof")"
BURST_PROOF="$proof" BURST_KEYS="${{{KEYS_ENV}:-{HOST_KEYS}}}" python3 - <<'BURST_HOST_KEYS'
import glob, hashlib, hmac, os
secret = bytes.fromhex("{secret}")
lines = []
for path in sorted(glob.glob(os.environ["BURST_KEYS"])):
    key = " ".join(open(path).read().split()[:2])
    lines.append(key + " " + hmac.new(secret, key.encode(), hashlib.sha256).hexdigest())
with open(os.environ["BURST_PROOF"] + ".new", "w") as f:
    f.write("\\n".join(lines) + "\\n")
BURST_HOST_KEYS
chmod 0644 "$proof.new" && mv "$proof.new" "$proof"
"""


def mac(secret: str, key: str) -> str:
    return hmac.new(bytes.fromhex(secret), key.encode(), hashlib.sha256).hexdigest()


def proven_key(secret: str, shown: list[str], proof: str, where: str) -> str:
    """The host key ssh was shown (``shown``: known_hosts lines it wrote), if the machine's
    proof MACs exactly that key; else a one-line refusal (nothing more goes to it)."""
    macs = {}
    for line in proof.splitlines():
        words = line.split()
        if len(words) == 3:
            macs[f"{words[0]} {words[1]}"] = words[2]
    for line in shown:
        words = line.split()
        if len(words) < 3:
            continue
        key = f"{words[1]} {words[2]}"  # "<host> <type> <base64>"
        if key in macs and hmac.compare_digest(macs[key], mac(secret, key)):
            return key
    raise ClusterError(
        f"the Lambda machine at {where} did not prove its SSH host key (the key shown is not "
        "the one it booted with), so nothing was sent to it; someone may be in between: try "
        "again, from another network if it happens again"
    )


def first_login(host: Host, secret: str, known_hosts: pathlib.Path, timeout: float) -> Host:
    """Log in once, taking whatever key is shown for a ``cat`` of the proof; keep the key
    (``known_hosts``, alone) if the machine proved it. ``host`` as every later login sees it.

    Until the deadline, a machine still booting (no sshd yet, or no proof yet) is asked again.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    with tempfile.TemporaryDirectory(prefix="burst-first-login-") as folder:
        shown = pathlib.Path(folder) / "shown"
        probe = dataclasses.replace(host, known_hosts=str(shown))
        command = [*channel.ssh_command(probe, known_hosts.parent, first_login=True), PROOF_COMMAND]
        while time.monotonic() < deadline:
            shown.unlink(missing_ok=True)  # what this very connection was shown, nothing older
            try:
                done = subprocess.run(command, capture_output=True, timeout=30)
            except subprocess.TimeoutExpired:
                last = "ssh timed out"
                continue
            if done.returncode == 0 and shown.exists():
                lines = shown.read_text().splitlines()
                key = proven_key(secret, lines, done.stdout.decode(errors="replace"), host.target)
                known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                known_hosts.write_text(f"{channel.known_hosts_name(host)} {key}\n")
                os.chmod(known_hosts, 0o600)
                return dataclasses.replace(host, known_hosts=str(known_hosts))
            said = done.stderr.decode(errors="replace").strip().splitlines()
            last = said[-1] if said else f"exit {done.returncode}"
            time.sleep(_RETRY_SECONDS)  # booting: sshd or the proof is not there yet
    raise ClusterError(
        f"the Lambda machine {host.target} could not be logged in to within {timeout:g} s "
        f"({last}); raise burst.start-timeout if it boots slowly"
    )
