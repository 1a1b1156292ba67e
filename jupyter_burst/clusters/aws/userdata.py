"""The user-data script an EC2 node boots with: the same packages, its keys, its node process.

User data is readable by anything on the instance through the metadata service, so it holds
no secret: the node's TLS key arrives through a presigned S3 URL that expires in minutes
(and whose object is deleted once the node is up), and the head announces its scheduler
address through another, write-only, presigned URL. No AWS credential is ever on a node.

A few environment variables let the test suite's VM emulator run the very same script as
local processes: ``JUPYTER_BURST_IMDS`` (the metadata service), ``JUPYTER_BURST_ROOT`` (the
node's folder), ``JUPYTER_BURST_PYTHON`` and ``JUPYTER_BURST_SCHEDULER_PORT`` (machines that
share one address need ports of their own).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from jupyter_burst.clusters.node_versions import notebook_versions

SCHEDULER_PORT = 8786


@dataclass(frozen=True)
class NodeBoot:
    cluster: str
    cluster_id: str
    role: str  # "head" or "worker"
    slots: int
    idle_minutes: float
    max_lifetime_minutes: float
    keys_url: str
    announce_url: str = ""  # head: where it writes its scheduler address
    scheduler: str = ""  # worker: the head's scheduler
    port: int = SCHEDULER_PORT
    expect_slots: int = 0  # head: the whole cluster's slots (it stays up while nodes join)
    extra: bool = False  # worker: added to fit a cell; the head powers it off when it is idle
    gpu_mem_gib: float = 0.0  # GiB per GPU of its instance type (0: not said)


def render(boot: NodeBoot, versions: dict[str, str] | None = None) -> str:
    versions = notebook_versions() if versions is None else versions
    wanted = " ".join(shlex.quote(f"{k}=={v}") for k, v in sorted(versions.items()))
    check = (
        "import importlib.metadata as m, sys; "
        f"want = {dict(sorted(versions.items()))!r}; "
        "sys.exit(any(m.version(k) != v for k, v in want.items()))"
    )
    node = [
        "--cluster", boot.cluster, "--cluster-id", boot.cluster_id, "--provider", "aws",
        "--role", boot.role, "--slots", str(boot.slots), "--idle", f"{boot.idle_minutes:g}",
        "--max-lifetime", f"{boot.max_lifetime_minutes:g}",
    ]  # fmt: skip
    if boot.role == "head":
        node += ["--announce", boot.announce_url]
        if boot.expect_slots:
            node += ["--expect-slots", str(boot.expect_slots)]
    else:
        node += ["--scheduler", boot.scheduler]
        if boot.extra:
            node += ["--extra"]
    if boot.gpu_mem_gib:
        node += ["--gpu-mem", f"{boot.gpu_mem_gib:g}"]
    args = " ".join(shlex.quote(a) for a in node)
    return f"""#!/bin/bash
# jupyter-burst node: cluster {boot.cluster} ({boot.cluster_id}), {boot.role}
set -euo pipefail
# The dead-man timer: whatever becomes of the node's watchdog, the machine ends at its lifetime
# (launched with InstanceInitiatedShutdownBehavior=terminate, a shutdown ends the instance).
shutdown -h +{max(1, round(boot.max_lifetime_minutes))} || true
IMDS="${{JUPYTER_BURST_IMDS:-http://169.254.169.254}}"
ROOT="${{JUPYTER_BURST_ROOT:-/var/lib/jupyter-burst}}"
PY="${{JUPYTER_BURST_PYTHON:-python3}}"
TOKEN=$(curl -fsS -X PUT "$IMDS/latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
HOST=$(curl -fsS -H "X-aws-ec2-metadata-token: $TOKEN" "$IMDS/latest/meta-data/local-ipv4")
mkdir -p -m 700 "$ROOT/state" "$ROOT/tls"
# The same versions as the notebook's environment, or pickles would not travel.
if ! "$PY" -c {shlex.quote(check)} 2>/dev/null; then
    "$PY" -m pip install --quiet {wanted}
fi
curl -fsS {shlex.quote(boot.keys_url)} -o "$ROOT/keys.tar"
"$PY" -m jupyter_burst.clusters.tls unpack "$ROOT/keys.tar" "$ROOT/tls"
rm -f "$ROOT/keys.tar"
exec "$PY" -m jupyter_burst.node {args} \\
    --state-dir "$ROOT/state" --tls-dir "$ROOT/tls" --host "$HOST" --power-off "shutdown -h now" \\
    --port "${{JUPYTER_BURST_SCHEDULER_PORT:-{boot.port}}}"
"""
