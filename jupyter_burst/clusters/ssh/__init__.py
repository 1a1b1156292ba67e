"""The ``ssh`` provider: a cluster on on-prem hosts reached over SSH, at an internal price.

A launch: the hosts of ``burst.ssh.hosts`` in order until they have the GPUs asked for (the
first is the head: the scheduler and its own workers; the others are worker nodes, one worker
per GPU); the cluster's TLS certificates made here; on each host, over ssh, the node's key
bundle on stdin and ``python -m jupyter_burst.node`` started in a session of its own, so it
outlives the connection. The head's answer carries its scheduler's address.

Before any of that, the pre-flight (the notebook's lock, said in lines: clusters/env/) and
the environment on each host (:mod:`.environment`): built there once per hash with uv,
cached after; a node runs that environment's python, never the host's own packages.

The node's watchdog is the same as on a cloud machine, but with no power-off command: on a
shared host it ends the node's processes, never the machine. ``terminate`` ends them over
ssh and returns once they are gone.
"""

from __future__ import annotations

import pathlib
import time
import uuid
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters import records, start_phases, tls
from jupyter_burst.clusters.env import lock as env_lock
from jupyter_burst.clusters.offers import Offer, OfferRequest
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.clusters.ssh import environment
from jupyter_burst.clusters.ssh.hosts import Host, configured_hosts, price_per_gpu_hour
from jupyter_burst.clusters.ssh.nodes import head_alive, start_nodes, stop_nodes
from jupyter_burst.errors import ClusterError
from jupyter_burst.store.ledger import shared_ledger


class SshProvider:
    name = "ssh"

    # offers and prices --------------------------------------------------------------

    def offers(self, request: OfferRequest) -> list[Offer]:
        """One offer per set of hosts with the same GPU count that together have enough GPUs."""
        if not config.get("ssh.hosts"):
            return []  # enabled but not configured: nothing to offer (launch says how)
        price = price_per_gpu_hour()
        by_gpus: dict[int, list[Host]] = {}
        for host in configured_hosts():
            by_gpus.setdefault(host.gpus, []).append(host)
        return [
            Offer(
                provider=self.name,
                instance_type=f"on-prem ({len(hosts)} host{'s' if len(hosts) > 1 else ''})",
                gpus=gpus,
                gpu_model=str(config.get("ssh.gpu-model") or "GPU"),
                gpu_mem_gib=float(config.get("ssh.gpu-mem-gib") or 0),
                vcpus=0,
                ram_gib=0.0,
                region="on-prem",
                spot=False,
                price_per_hour=price * gpus,
                notional=True,  # a chargeback price someone configured, not a bill
            )
            for gpus, hosts in sorted(by_gpus.items())
            if gpus * len(hosts) >= request.gpus
        ]

    def price_per_hour(self, request: ClusterRequest) -> float:
        """What a launch for ``request`` counts an hour (the daily budget asks first)."""
        return price_per_gpu_hour() * sum(h.gpus for h in _choose(request.slots))

    # launching ----------------------------------------------------------------------

    def launch(self, request: ClusterRequest) -> dict[str, Any]:
        hosts = _choose(request.slots)
        price = price_per_gpu_hour()
        gpus = sum(h.gpus for h in hosts)
        print(
            f"burst: starting on {', '.join(h.target for h in hosts)} "
            f"({gpus} GPUs at ${price * gpus:.2f}/h notional)",
            flush=True,
        )
        # The pre-flight, then the environment on every host: what cannot be had is refused
        # before any node starts.
        lock = env_lock.preflight(request.state_dir, gpu=gpus > 0)
        pythons = environment.ensure(hosts, lock, request.state_dir, start_phases.of(request))
        cluster_id = f"{request.name}-{uuid.uuid4().hex[:8]}"
        certs = tls.make(request.state_dir / "tls" / cluster_id, cluster_id)
        scheduler, nodes = start_nodes(
            hosts, request, pythons, provider=self.name, cluster_id=cluster_id, certs=certs,
            lifetime_minutes=float(config.get("ssh.max-lifetime", 720)),
            power_off="",  # on-prem: the watchdog ends the node's processes, not the host
            scheduler_port=int(config.get("ssh.scheduler-port", 0) or 0),
        )  # fmt: skip
        record = {
            "id": cluster_id,
            "name": request.name,
            "provider": self.name,
            "scheduler": scheduler,
            "pid": nodes[0]["pid"],
            "nodes": nodes,
            "tls": str(certs.folder),
            "slots": sum(n["gpus"] for n in nodes),
            "devices": [d for n in nodes for d in n["devices"]],
            "price_per_hour": price * sum(n["gpus"] for n in nodes),
            "idle": request.idle_minutes,
            "started": time.time(),
            "state_dir": str(request.state_dir),  # whose ledger records the nodes' end
            "env": lock.hash,  # the environment its nodes run (%burst env)
        }
        _record_start(record, price)
        records.write_record(request.state_dir, request.name, record)
        return record

    def is_alive(self, record: dict[str, Any]) -> bool:
        """Whether the head node's processes still run (one ssh round trip).

        A head found gone (its watchdog ended it) is recorded as stopped in the ledger here:
        no one else on this side would notice.
        """
        nodes = record.get("nodes") or []
        if record.get("provider") != self.name or not nodes:
            return False
        state_dir = pathlib.Path(record.get("state_dir") or config.state_dir())
        alive = head_alive(nodes[0], state_dir)
        if alive is None:
            return False  # its scheduler cannot be reached either: not a usable cluster
        if not alive:
            shared_ledger(state_dir).cluster_stopped(record["id"], "ended on its host")
            return False
        return True

    def terminate(self, record: dict[str, Any]) -> None:
        """End every node's processes over ssh; returns once each host says they are gone."""
        state_dir = pathlib.Path(record.get("state_dir") or config.state_dir())
        stop_nodes(record.get("nodes") or [], state_dir, quiet=False)
        shared_ledger(state_dir).cluster_stopped(record["id"], "stopped")


def _choose(slots: int) -> list[Host]:
    """The configured hosts, in order, until they have ``slots`` GPUs (the first is the head)."""
    hosts = configured_hosts()
    chosen: list[Host] = []
    for host in hosts:
        if sum(h.gpus for h in chosen) >= slots:
            break
        chosen.append(host)
    have = sum(h.gpus for h in chosen)
    if have < slots:
        raise ClusterError(
            f"the ssh hosts have {have} GPUs and the cell asks for {slots}; "
            "ask for fewer gpus= or add hosts to burst.ssh.hosts"
        )
    return chosen


def _record_start(record: dict[str, Any], price: float) -> None:
    ledger = shared_ledger(pathlib.Path(record["state_dir"]))
    ledger.cluster_started(
        record["id"], record["name"], "ssh", record["scheduler"], record["slots"],
        record["devices"], record["idle"],
    )  # fmt: skip
    for i, node in enumerate(record["nodes"]):
        # Notional: on-prem hosts send no bill; the price is the configured chargeback rate,
        # which costs and budgets count (cost.py). No billing minimum: nobody rounds it up.
        ledger.node_started(
            f"{record['id']}-{i}", record["id"], "ssh", node["role"], node["gpus"],
            node["devices"], node["pid"], price_per_hour=price * node["gpus"],
            notional=True, billing_minimum=0,
        )  # fmt: skip
