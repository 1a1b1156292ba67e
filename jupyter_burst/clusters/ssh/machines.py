"""A cluster started on cloud machines we launched and log in to over ssh (Lambda, GCP).

Once each machine is a :class:`Host` whose proven host key alone is trusted: the notebook's
environment built on each (:mod:`.environment`), the cluster's TLS certificates made here,
and the nodes started with their keys on ssh's standard input (:mod:`.nodes`). What the
head's watchdog runs at the end may depend on the environment's python (a provider's
``power_off(pythons)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jupyter_burst.clusters import start_phases, tls
from jupyter_burst.clusters.env.lock import NodeLock
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.clusters.ssh import environment
from jupyter_burst.clusters.ssh.hosts import Host
from jupyter_burst.clusters.ssh.nodes import start_nodes
from jupyter_burst.clusters.tls import ClusterCerts


def start_cluster(
    hosts: list[Host],
    request: ClusterRequest,
    lock: NodeLock,
    *,
    provider: str,
    cluster_id: str,
    lifetime_minutes: float,
    power_off: Callable[[dict[tuple[str, int], str]], str],
    worker_power_off: str = "",
    settings: dict[str, str] | None = None,
) -> tuple[str, list[dict[str, Any]], ClusterCerts]:
    """The head's scheduler address, the started nodes (the head first) and the certificates.
    ``worker_power_off``: what a worker node's watchdog runs at its end ("": nothing);
    ``settings``: the ``DASK_BURST__...`` variables the nodes start with."""
    pythons = environment.ensure(hosts, lock, request.state_dir, start_phases.of(request))
    certs = tls.make(request.state_dir / "tls" / cluster_id, cluster_id)
    scheduler, nodes = start_nodes(
        hosts, request, pythons, provider=provider, cluster_id=cluster_id, certs=certs,
        lifetime_minutes=lifetime_minutes, power_off=power_off(pythons),
        worker_power_off=worker_power_off, settings=settings,
    )  # fmt: skip
    return scheduler, nodes, certs


def head_python(pythons: dict[tuple[str, int], str], head: Host) -> str:
    """The environment's python on the head."""
    return pythons[environment.host_key(head)]
