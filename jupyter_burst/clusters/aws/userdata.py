"""The user-data script an EC2 node boots with: its keys, the notebook's environment, its node process.

User data is readable by anything on the instance through the metadata service, so it holds
no secret: the node's TLS key arrives through a presigned S3 URL that expires once the boot
timeout is over (fetched first, before the environment, which may take minutes; the object
is deleted once the node is up), and the head announces its scheduler address through
another, write-only, presigned URL. No AWS credential is ever on a node. The environment is
the notebook's own (:mod:`jupyter_burst.clusters.env`): unpacked from its archive in S3, or
built with uv and stored there for the next node. The workers are told where the spot
interruption notice appears (the metadata service), so ``burst.on_preempt`` fires.

A few environment variables let the test suite's VM emulator run the very same script as
local processes: ``JUPYTER_BURST_IMDS`` (the metadata service), ``JUPYTER_BURST_ROOT`` (the
node's folder) and ``JUPYTER_BURST_SCHEDULER_PORT`` (machines that share one address need
ports of their own); uv's own variables (``UV_PYTHON_PREFERENCE``...) reach uv.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from jupyter_burst.clusters.env.boot import EnvBoot
from jupyter_burst.clusters.env.boot import render as render_environment

SCHEDULER_PORT = 8786
# The head's HTTP server, Dask's default; it serves the dashboard (node/dashboard.py).
DASHBOARD_PORT = 8787


@dataclass(frozen=True)
class NodeBoot:
    cluster: str
    cluster_id: str
    role: str  # "head" or "worker"
    slots: int
    idle_minutes: float
    max_lifetime_minutes: float
    keys_url: str
    environment: EnvBoot
    announce_url: str = ""  # head: where it writes its scheduler address
    scheduler: str = ""  # worker: the head's scheduler
    port: int = SCHEDULER_PORT
    expect_slots: int = 0  # head: the whole cluster's slots (it stays up while nodes join)
    extra: bool = False  # worker: added to fit a cell; the head powers it off when it is idle
    gpu_mem_gib: float = 0.0  # GiB per GPU of its instance type (0: not said)
    progress_url: str = ""  # PUT: the boot's phase, for the kernel that waits on it


def render(boot: NodeBoot) -> str:
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
# A boot that fails ends its machine at once (it is never billed waiting for the dead man),
# after saying where it failed, for the kernel that waits on it.
trap 'code=$?; if [ "$code" -ne 0 ]; then burst_phase failed "(exit $code, line $LINENO)" 2>/dev/null || true; shutdown -h now; fi' EXIT
IMDS="${{JUPYTER_BURST_IMDS:-http://169.254.169.254}}"
ROOT="${{JUPYTER_BURST_ROOT:-/var/lib/jupyter-burst}}"
TOKEN=$(curl -fsS -X PUT "$IMDS/latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
HOST=$(curl -fsS -H "X-aws-ec2-metadata-token: $TOKEN" "$IMDS/latest/meta-data/local-ipv4")
mkdir -p -m 700 "$ROOT" "$ROOT/state" "$ROOT/tls"
# The key bundle first: its URL is short-lived, and the environment may take minutes.
(umask 077 && curl -fsS --retry 3 {shlex.quote(boot.keys_url)} -o "$ROOT/keys.tar")
PROGRESS={shlex.quote(boot.progress_url)}
burst_phase() {{  # the boot log and the kernel waiting for this node read where its boot is
    echo "burst-phase: $(date +%s.%N) $*"
    echo "$(date +%s.%N) $*" >> "$ROOT/phases"
    if [ -n "$PROGRESS" ]; then  # every phase so far: a short one between two looks is not lost
        curl -fsS -X PUT -H "Content-Type: text/plain" --data-binary "@$ROOT/phases" "$PROGRESS" >/dev/null 2>&1 || true
    fi
}}
{render_environment(boot.environment).strip()}
"$PY" -m jupyter_burst.clusters.tls unpack "$ROOT/keys.tar" "$ROOT/tls"
rm -f "$ROOT/keys.tar"
# The spot interruption notice appears in the metadata service: the workers watch it.
export DASK_BURST__PREEMPTION__URL="$IMDS"
burst_phase node starting
exec "$PY" -m jupyter_burst.node {args} \\
    --state-dir "$ROOT/state" --tls-dir "$ROOT/tls" --host "$HOST" --power-off "shutdown -h now" \\
    --port "${{JUPYTER_BURST_SCHEDULER_PORT:-{boot.port}}}"
"""
