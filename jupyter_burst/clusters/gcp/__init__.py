"""The ``gcp`` provider: a cluster of Compute Engine GPU instances, reached over SSH and TLS.

A launch: the cheapest GCP plan (the shipped catalog's list prices); ``burst.gcp.client-cidr``
and the pre-flight of the notebook's environment before anything is made; a firewall rule of
the cluster's own (its network tag: the notebook's address and the cluster's own instances
let in, nothing else); the instances, zone by zone where one has no room or quota
(:mod:`.machines`: labels, Spot or standard, ``max_run_duration`` with ``DELETE`` as the
dead-man, our SSH public key in metadata and nothing secret); their host keys read through
the API (guest attributes) and only those trusted; then, over ssh as for on-prem hosts, the
notebook's environment built and the nodes started with their TLS keys on ssh's standard
input. Any failure on the way deletes what was launched.

A guest shutdown only stops a GCP instance, and a stopped one's disk still bills: so each
idle node's shutdown stops its machine's bill at once, and the instance itself is deleted by
whichever comes first: this notebook (any kernel's or the server's look at a cluster whose
head ended), ``%burst gc``, or Google at the cluster's ``max_run_duration`` (for one still
running). The ledger bills each instance from its start to its stop or deletion, by Compute
Engine's own times.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shlex
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters import records, start_phases
from jupyter_burst.clusters.client_cidr import client_cidr
from jupyter_burst.clusters.env import lock as env_lock
from jupyter_burst.clusters.gcp import machines, prices, sdk
from jupyter_burst.clusters.gcp.shapes import shape
from jupyter_burst.clusters.offers import Offer, OfferRequest, Plan
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.clusters.quotes import Quotes
from jupyter_burst.clusters.shipped_catalog import load_catalog
from jupyter_burst.clusters.ssh import channel, keys
from jupyter_burst.clusters.ssh.hosts import Host
from jupyter_burst.clusters.ssh.machines import head_python, start_cluster
from jupyter_burst.clusters.ssh.nodes import head_alive
from jupyter_burst.clusters.start_phases import BOOTING, LAUNCHING
from jupyter_burst.errors import ClusterError
from jupyter_burst.store.ledger import shared_ledger


class GcpProvider:
    name = "gcp"

    def __init__(self) -> None:
        self.prices_note = ""
        self._quotes = Quotes()
        self._settled: set[str] = set()

    # offers -------------------------------------------------------------------------

    def offers(self, request: OfferRequest) -> list[Offer]:
        """Live on-demand and Spot prices where GCP is configured (``burst.gcp.project``),
        else, or when they cannot be had, the shipped catalog's on-demand list prices."""
        when = load_catalog(prices.PROVIDER)[0].isoformat()
        why = "burst.gcp.project is not set"
        if config.get("gcp.project", None):
            try:
                found = prices.cached_live_offers(sdk.billing_fetch())
            except ClusterError as exc:
                why = str(exc).removeprefix("burst: ")
            else:
                self.prices_note = "live on-demand and Spot prices from the Cloud Billing Catalog"
                return prices.for_request(found, request)
        self.prices_note = (
            f"on-demand list prices from the shipped catalog of {when}, no Spot ({why})"
        )
        return prices.for_request(prices.catalog_offers(), request)

    def plan(self, request: ClusterRequest) -> Plan:
        """The plan chosen across providers as it is, else the cheapest GCP plan."""
        return self._quotes.plan(self.name, request, self.offers)

    def price_per_hour(self, request: ClusterRequest) -> float:
        return self.plan(request).price_per_hour

    # launching ----------------------------------------------------------------------

    def launch(self, request: ClusterRequest) -> dict[str, Any]:
        compute = sdk.compute()
        plan = self.plan(request)
        cidr, _ = client_cidr("gcp"), machines.image()  # settings before anything is made
        lock = env_lock.preflight(request.state_dir, gpu=plan.offer.gpus > 0)
        phases = start_phases.of(request)
        print(f"burst: launching {plan.describe()}", flush=True)
        cluster_id = f"{request.name}-{uuid.uuid4().hex[:8]}"
        lifetime = float(config.get("gcp.max-lifetime", 720))
        user = str(config.get("gcp.ssh-user") or "burst")
        private, public = keys.key_pair(request.state_dir / "gcp")
        tag = machines.network_tag(cluster_id)
        expires = time.time() + lifetime * 60
        launched: machines.Launched | None = None
        firewall = ""

        account = str(config.get("gcp.node-service-account") or "") or None

        def name(i: int) -> str:
            return f"{tag}-{i}"[:63]

        def body(offer: Offer, zone: str, instance: str) -> dict[str, Any]:
            return machines.instance(
                instance, zone, shape(offer.instance_type), spot=offer.spot,
                lifetime_minutes=lifetime,
                labels=machines.labels(cluster_id, "node", expires), tag=tag, ssh_user=user,
                public_key=public, service_account=account if instance == name(0) else None,
            )  # fmt: skip

        try:
            firewall = _firewall(compute, tag, cidr)
            phases.enter(LAUNCHING, done=0, total=plan.nodes)
            choices = [(plan.offer, zone) for zone in prices.zones(plan.offer.region)]
            launched = machines.launch(compute, choices, plan.nodes, body, name=name)
            phases.enter(BOOTING)
            timeout = float(config.get("gcp.boot-timeout", 900))
            found = machines.wait_running(compute, launched.zone, launched.names, timeout)
            hosts = _logged_in(compute, launched.zone, found, plan.offer, user, private,
                               request.state_dir, timeout)  # fmt: skip
            # A guest shutdown: the GPU's bill stops; the reapers or Google delete the instance.
            power_off = str(config.get("gcp.power-off") or "")
            ending = launched  # the head's account deletes them all, disks and all

            def head_power_off(pythons: dict[tuple[str, int], str]) -> str:
                if account is None:
                    return power_off
                return _delete_command(
                    head_python(pythons, hosts[0]), compute.project, ending.zone,
                    [*ending.names[1:], ending.names[0]], power_off,
                )  # fmt: skip

            scheduler, nodes, certs = start_cluster(
                hosts, request, lock, provider=self.name, cluster_id=cluster_id,
                lifetime_minutes=lifetime, power_off=head_power_off,
                worker_power_off=power_off,  # a worker left running would bill its GPU on
                settings=_spot_settings() if launched.offer.spot else None,
            )  # fmt: skip
        except BaseException:
            _abandon(compute, cluster_id, launched, firewall)
            raise
        offer, zone = launched.offer, launched.zone
        by_address = {machines.external_ip(one): one for one in found}
        for node in nodes:
            one = by_address[node["target"].rpartition("@")[2]]
            node["instance"], node["started"] = one.name, machines.started_at(one)
        record = {
            "id": cluster_id,
            "name": request.name,
            "provider": self.name,
            "scheduler": scheduler,
            "region": offer.region,
            "zone": zone,
            "instance_type": offer.instance_type,
            "instances": [n["instance"] for n in nodes],
            "nodes": nodes,
            "firewall": firewall,
            "tls": str(certs.folder),
            "slots": sum(n["gpus"] for n in nodes),
            "devices": [d for n in nodes for d in n["devices"]],
            "gpu_mem_gib": offer.gpu_mem_gib,
            "price_per_hour": offer.price_per_hour * len(nodes),
            "idle": request.idle_minutes,
            "started": min(n["started"] for n in nodes),
            "state_dir": str(request.state_dir),
            "env": lock.hash,
        }
        _record_start(record, offer)
        records.write_record(request.state_dir, request.name, record)
        return record

    # watching and ending ---------------------------------------------------------------

    def is_alive(self, record: dict[str, Any]) -> bool:
        """Whether the head node's processes still run (one ssh round trip)."""
        nodes = record.get("nodes") or []
        if record.get("provider") != self.name or not nodes or record["id"] in self._settled:
            return False
        state_dir = pathlib.Path(record.get("state_dir") or config.state_dir())
        return bool(head_alive(nodes[0], state_dir))

    def settle(self, record: dict[str, Any]) -> None:
        """A cluster whose head has ended (or cannot be reached) and whose instances are not
        running: every instance deleted (a stopped one's disk still bills), the ledger told
        when, the firewall rule deleted. A head unreachable while its instance still runs is
        left alone (it may be back); Google deletes it at its lifetime in any case."""
        state_dir = record.get("state_dir")
        if not state_dir or record.get("provider") != self.name or record["id"] in self._settled:
            return
        head = head_alive(record["nodes"][0], pathlib.Path(state_dir))
        if head:
            return
        compute = sdk.compute()
        left = {
            one.name: one
            for one in machines.ours(compute)
            if one.name in set(record.get("instances") or ())
        }
        if head is None and any(one.status == "RUNNING" for one in left.values()):
            return
        ended = machines.delete(compute, record["zone"], left)
        ledger = shared_ledger(pathlib.Path(state_dir))
        for name in record.get("instances") or []:
            # A stopped instance's machine billed until it stopped (its disk until now).
            stopped = machines.stopped_at(left[name]) if name in left else 0.0
            ledger.node_stopped(name, stopped or ended.get(name, time.time()), "deleted")
        ledger.cluster_stopped(record["id"], "ended by itself")
        _delete_firewall(compute, record.get("firewall") or "")
        self._settled.add(record["id"])

    def terminate(self, record: dict[str, Any]) -> None:
        """Delete every instance of the cluster (disks with them), then its firewall rule."""
        compute = sdk.compute()
        ended = machines.delete(compute, record["zone"], record.get("instances") or [])
        state_dir = record.get("state_dir")
        if state_dir:
            ledger = shared_ledger(pathlib.Path(state_dir))
            for name in record.get("instances") or []:
                ledger.node_stopped(name, ended.get(name, time.time()), "deleted")
            ledger.cluster_stopped(record["id"], "stopped")
        _delete_firewall(compute, record.get("firewall") or "")


def _delete_command(python: str, project: str, zone: str, names: list[str], fallback: str) -> str:
    """The head's power-off with a service account: its cluster's instances deleted (its own
    last), a guest shutdown if that cannot be done."""
    return shlex.join([
        python, "-m", "jupyter_burst.node.gcp_delete",
        "--api", sdk.endpoint() or "https://compute.googleapis.com",
        "--metadata", _metadata_url(), "--project", project, "--zone", zone,
        "--fallback", fallback or "true", *names,
    ])  # fmt: skip


def _metadata_url() -> str:
    return str(config.get("gcp.metadata-url") or "http://metadata.google.internal")


def _spot_settings() -> dict[str, str]:
    """A Spot node's workers watch its metadata server for the preemption (burst.preempting)."""
    return {
        "DASK_BURST__PREEMPTION__URL": _metadata_url(),
        "DASK_BURST__PREEMPTION__KIND": "gcp",
    }


def _firewall(compute: sdk.Compute, tag: str, cidr: str) -> str:
    """The cluster's rule: its instances open to the notebook's range and to each other."""
    module = sdk.compute_v1()
    rule = module.Firewall(
        name=tag,
        network="global/networks/default",
        direction="INGRESS",
        source_ranges=[cidr],
        source_tags=[tag],
        target_tags=[tag],
        allowed=[module.Allowed(I_p_protocol="tcp")],
        description="jupyter-burst: the notebook and the cluster's own instances only",
    )
    operation = sdk.call(
        "a firewall rule", compute.firewalls.insert_unary, project=compute.project,
        firewall_resource=rule,
    )  # fmt: skip
    sdk.wait(compute, operation, "a firewall rule")
    return tag


def _delete_firewall(compute: sdk.Compute, name: str) -> None:
    if not name:
        return
    try:
        operation = sdk.call(
            "a firewall rule's deletion", compute.firewalls.delete_unary,
            project=compute.project, firewall=name,
        )  # fmt: skip
        sdk.wait(compute, operation, "a firewall rule's deletion")
    except sdk.GcpError as exc:
        if exc.code != "notFound":
            raise


def _abandon(
    compute: sdk.Compute, cluster_id: str, launched: machines.Launched | None, firewall: str
) -> None:
    """A cluster that did not come up must leave nothing billing: its instances (also ones
    whose insert answer was lost: found by their label) deleted, its rule too. Best effort:
    what cannot be ended now is said, and the start's own error stays the one raised."""
    try:
        label = machines.safe(cluster_id)
        for one in machines.ours(compute):
            if one.labels.get("burst-cluster") == label:
                machines.delete(compute, one.zone.rsplit("/", 1)[-1], [one.name])
        if launched is not None:
            machines.delete(compute, launched.zone, launched.names)
        _delete_firewall(compute, firewall)
    except ClusterError as exc:
        print(
            "burst: the failed start's instances could not all be deleted "
            f"({str(exc).removeprefix('burst: ')}); %burst gc --yes ends what is left",
            file=sys.stderr,
            flush=True,
        )


def _logged_in(
    compute: sdk.Compute,
    zone: str,
    found: list[Any],
    offer: Offer,
    user: str,
    private: pathlib.Path,
    state_dir: pathlib.Path,
    timeout: float,
) -> list[Host]:
    """Each instance as a host whose published host keys alone are trusted (the head first)."""
    port = int(config.get("gcp.ssh-port") or 22)
    folder = state_dir / "gcp" / "known_hosts"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def one(instance: Any) -> Host:
        address = machines.external_ip(instance)
        host = Host(
            target=f"{user}@{address}", gpus=offer.gpus, port=port, python="python3",
            address=address, identity=str(private),
        )  # fmt: skip
        known = folder / instance.name
        name = channel.known_hosts_name(host)
        shown = machines.host_keys(compute, zone, instance.name, timeout)
        known.write_text("".join(f"{name} {key}\n" for key in shown))
        known.chmod(0o600)
        return dataclasses.replace(host, known_hosts=str(known))

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, found))


def _record_start(record: dict[str, Any], offer: Offer) -> None:
    ledger = shared_ledger(pathlib.Path(record["state_dir"]))
    ledger.cluster_started(
        record["id"], record["name"], GcpProvider.name, record["scheduler"], record["slots"],
        record["devices"], record["idle"],
    )  # fmt: skip
    for node in record["nodes"]:
        # Compute Engine bills from the instance's start, by the second after the first minute.
        ledger.node_started(
            node["instance"], record["id"], GcpProvider.name, node["role"], node["gpus"],
            node["devices"], node["pid"], price_per_hour=offer.price_per_hour, notional=False,
            billing_minimum=60, started=node["started"],
        )  # fmt: skip
