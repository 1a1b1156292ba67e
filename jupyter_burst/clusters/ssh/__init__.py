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
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters import records, start_phases, tls
from jupyter_burst.clusters.env import lock as env_lock
from jupyter_burst.clusters.offers import Offer, OfferRequest
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.clusters.ssh import channel, environment
from jupyter_burst.clusters.ssh.hosts import Host, configured_hosts, price_per_gpu_hour
from jupyter_burst.clusters.start_phases import LAUNCHING
from jupyter_burst.errors import ClusterError
from jupyter_burst.store.ledger import shared_ledger

_STOP_GRACE = 20.0  # seconds a node gets to close its workers before what is left is killed


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
        phases = start_phases.of(request)
        pythons = environment.ensure(hosts, lock, request.state_dir, phases)
        cluster_id = f"{request.name}-{uuid.uuid4().hex[:8]}"
        certs = tls.make(request.state_dir / "tls" / cluster_id, cluster_id)
        base = str(config.get("ssh.remote-dir") or ".cache/jupyter-burst")
        timeout = float(config.get("start-timeout", 60))
        lifetime = float(config.get("ssh.max-lifetime", 720))
        started: list[dict[str, Any]] = []
        # launching k/N: a host counts once its node runs (the head's once its scheduler
        # listens); the driver then counts the workers as they join the head.
        phases.enter(LAUNCHING, done=0, total=len(hosts))
        counting = threading.Lock()  # hosts answer from several threads: counts stay in order

        def start(i: int, host: Host, role: str, scheduler: str = "") -> dict[str, Any]:
            node_args = [
                "--cluster", request.name, "--cluster-id", cluster_id, "--provider", self.name,
                "--role", role, "--slots", str(host.gpus), "--idle", f"{request.idle_minutes:g}",
                "--max-lifetime", f"{lifetime:g}", "--host", host.listen,
                "--node-name", f"{request.name}-{i}-{host.listen}",
                "--power-off", "",  # on-prem: the watchdog ends the node's processes, not the host
            ]  # fmt: skip
            if role == "head":
                node_args += ["--port", str(port)]
            else:
                node_args += ["--scheduler", scheduler]
            root = f"{base.rstrip('/')}/{cluster_id}/{i}"
            python = pythons[environment.host_key(host)]  # the environment's, built or cached
            answer = channel.helper(
                host,
                request.state_dir,
                ["start", root, request.name, role, f"{timeout:g}", python, "--", *node_args],
                stdin=certs.node_bundle(),
                timeout=timeout + 30,
            )
            node = {
                "target": host.target, "port": host.port, "python": host.python,
                "role": role, "gpus": host.gpus, "pid": answer["pid"], "root": answer["root"],
                "devices": [
                    f"{host.listen} {'cuda:' + str(g) if g < answer['gpus'] else 'cpu'}"
                    for g in range(host.gpus)
                ],
            }  # fmt: skip
            with counting:
                started.append(node)
                phases.enter(LAUNCHING, done=len(started), total=len(hosts))
            return dict(node, scheduler=answer.get("scheduler", ""))

        port = int(config.get("ssh.scheduler-port", 0) or 0)
        workers = list(enumerate(hosts))[1:]
        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                if port:
                    # The address is known before the head is up: the worker nodes start
                    # alongside it (their workers retry until its scheduler listens).
                    scheduler = f"tls://{hosts[0].listen}:{port}"
                    joined = [pool.submit(start, i, h, "worker", scheduler) for i, h in workers]
                    head = start(0, hosts[0], "head")
                    for future in joined:
                        future.result()
                else:
                    head = start(0, hosts[0], "head")
                    list(pool.map(lambda pair: start(*pair, "worker", head["scheduler"]), workers))
            scheduler = head.pop("scheduler")
        except BaseException:
            # A cluster that did not come up must not leave a node running on any host.
            _stop_nodes(started, request.state_dir, quiet=True)
            raise
        nodes = sorted(started, key=lambda n: n["role"] != "head")
        record = {
            "id": cluster_id,
            "name": request.name,
            "provider": self.name,
            "scheduler": scheduler,
            "pid": head["pid"],
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
        head = nodes[0]
        try:
            answer = channel.helper(
                _host(head), state_dir, ["alive", head["root"], str(head["pid"])], timeout=30
            )
        except channel.Unreachable:
            return False  # its scheduler cannot be reached either: not a usable cluster
        if not answer.get("alive"):
            shared_ledger(state_dir).cluster_stopped(record["id"], "ended on its host")
            return False
        return True

    def terminate(self, record: dict[str, Any]) -> None:
        """End every node's processes over ssh; returns once each host says they are gone."""
        state_dir = pathlib.Path(record.get("state_dir") or config.state_dir())
        _stop_nodes(record.get("nodes") or [], state_dir, quiet=False)
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


def _host(node: dict[str, Any]) -> Host:
    return Host(target=node["target"], gpus=node["gpus"], port=node["port"], python=node["python"])


def _stop_nodes(nodes: list[dict[str, Any]], state_dir: pathlib.Path, quiet: bool) -> None:
    """Stop the nodes in parallel; unless ``quiet``, a node that may still run is an error."""

    def stop(node: dict[str, Any]) -> str:
        try:
            answer = channel.helper(
                _host(node),
                state_dir,
                ["stop", node["root"], str(node["pid"]), f"{_STOP_GRACE:g}"],
                timeout=_STOP_GRACE + 30,
            )
        except ClusterError as exc:
            return str(exc)
        return "" if answer.get("stopped") else f"{node['target']}: pid {node['pid']} still runs"

    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = [p for p in pool.map(stop, nodes) if p]
    if problems and not quiet:
        raise ClusterError(
            f"could not confirm the cluster's nodes stopped: {problems[0]}; "
            "run %burst down again, or end them on the host"
        )


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
