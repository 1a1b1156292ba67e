"""The ``lambda`` provider: a cluster of Lambda Cloud GPU machines, reached over SSH and TLS.

A launch: the cheapest Lambda plan (live prices and capacity with the user's API key); the
user's word on how an idle machine stops billing (:mod:`.node_key`), the pre-flight of the
notebook's environment and ``burst.lambda.client-cidr``, all before anything is made; our
SSH key registered in the account once; a firewall ruleset of the cluster's own, open to
the notebook's address only (:mod:`.firewall`); the machines launched, with the next offer
of the same type where Lambda has no capacity after all (:mod:`.machines`), each with a
boot script that proves its SSH host key (:mod:`.host_keys`: nothing else is in user data,
no key of any kind); then, over ssh as for on-prem hosts, the notebook's environment built
on each machine and the nodes started with their TLS keys on ssh's stdin
(clusters/ssh/nodes.py). Any failure on the way terminates what was launched.

Lambda bills from the launch until the API's terminate, and only that ends it. The ledger
bills each machine from the moment its launch was sent to the moment its termination was
confirmed (by this kernel, or seen by the next look: :meth:`LambdaProvider.settle`).
"""

from __future__ import annotations

import pathlib
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters import records, start_phases
from jupyter_burst.clusters.client_cidr import client_cidr
from jupyter_burst.clusters.env import lock as env_lock
from jupyter_burst.clusters.lambda_cloud import (
    api,
    firewall,
    host_keys,
    login,
    machines,
    node_key,
    prices,
)
from jupyter_burst.clusters.offers import Offer, OfferRequest, Plan
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.clusters.quotes import Quotes
from jupyter_burst.clusters.shipped_catalog import load_catalog
from jupyter_burst.clusters.ssh import keys
from jupyter_burst.clusters.ssh.hosts import Host
from jupyter_burst.clusters.ssh.machines import head_python, start_cluster
from jupyter_burst.clusters.ssh.nodes import head_alive
from jupyter_burst.clusters.start_phases import BOOTING, LAUNCHING
from jupyter_burst.errors import ClusterError
from jupyter_burst.store.ledger import shared_ledger

# Capacity moves by the minute; a quote and the launch right after it share one answer.
_LIVE_SECONDS = 60.0
# Lambda keeps a ruleset "in use" until its machines are fully gone: a down waits this long.
_RULESET_WAIT_SECONDS = 60.0


class LambdaProvider:
    name = "lambda"

    def __init__(self) -> None:
        self.prices_note = ""
        self._live: tuple[float, list[Offer]] | None = None
        self._quotes = Quotes()
        # Clusters found ended and settled: never asked about again (a terminated machine's
        # ssh waits out its connect timeout, and Lambda's API is paced).
        self._settled: set[str] = set()

    # offers -------------------------------------------------------------------------

    def offers(self, request: OfferRequest) -> list[Offer]:
        key = api.api_key()
        if key is None:
            when = load_catalog(prices.PROVIDER)[0].isoformat()
            self.prices_note = (
                f"list prices from the shipped catalog of {when}; capacity is known only "
                f"with an API key ({api.KEY_ENV})"
            )
            return prices.for_request(prices.catalog_offers(), request)
        if self._live is None or time.monotonic() - self._live[0] > _LIVE_SECONDS:
            self._live = (time.monotonic(), prices.live_offers(api.LambdaApi(key)))
        self.prices_note = "live prices and the regions with capacity now, from Lambda's API"
        return prices.for_request(self._live[1], request)

    def plan(self, request: ClusterRequest) -> Plan:
        """The plan chosen across providers as it is, else the cheapest Lambda plan."""
        return self._quotes.plan(self.name, request, self.offers)

    def price_per_hour(self, request: ClusterRequest) -> float:
        """What a launch for ``request`` would cost an hour: the daily budget asks first."""
        return self.plan(request).price_per_hour

    # launching ----------------------------------------------------------------------

    def launch(self, request: ClusterRequest) -> dict[str, Any]:
        client = api.LambdaApi(api.require_key())
        plan = self.plan(request)
        offer = plan.offer
        # Everything the user must have said, and the pre-flight, before anything is made.
        node_api_key = node_key.node_key()
        cidr = client_cidr("lambda")
        lock = env_lock.preflight(request.state_dir, gpu=offer.gpus > 0)
        phases = start_phases.of(request)
        print(f"burst: launching {plan.describe()}", flush=True)
        cluster_id = f"{request.name}-{uuid.uuid4().hex[:8]}"
        lifetime = float(config.get("lambda.max-lifetime", 720))
        private, public = keys.key_pair(request.state_dir / "lambda")
        key_name = login.registered_name(client, public)
        secret = host_keys.new_secret()
        rulesets: dict[str, str | None] = {}
        now = time.time()
        tags = machines.tags(cluster_id, machines.owner(), "node", now, now + lifetime * 60)

        def body(choice: Offer) -> dict[str, Any]:
            if choice.region not in rulesets:
                rulesets[choice.region] = firewall.create(client, cluster_id, choice.region, cidr)
                if rulesets[choice.region] is None:
                    print(
                        f"burst: Lambda applies no firewall rules in {choice.region}: the "
                        "machines' ports are reachable from anywhere (the scheduler still "
                        "takes only this cluster's TLS certificates, ssh only its key)",
                        flush=True,
                    )
            ruleset = rulesets[choice.region]
            return {
                "name": machines.NAME_PREFIX + cluster_id,
                "ssh_key_names": [key_name],
                "user_data": boot_script(secret),
                "tags": tags,
                **({"firewall_rulesets": [{"id": ruleset}]} if ruleset else {}),
            }

        launched: machines.Launched | None = None
        try:
            phases.enter(LAUNCHING, done=0, total=plan.nodes)
            launched = machines.launch(client, _same_type(self, request, plan), plan.nodes, body)
            offer = launched.offer
            phases.enter(BOOTING)
            timeout = float(config.get("lambda.boot-timeout", 900))
            found = machines.wait_active(client, launched.ids, timeout)
            ruleset = rulesets.get(offer.region)
            if ruleset:
                firewall.admit(client, ruleset, cidr, [m["ip"] for m in found])
            hosts = _logged_in(found, offer, private, secret, request.state_dir, timeout)
            ids = list(launched.ids)

            def power_off(pythons: dict[tuple[str, int], str]) -> str:
                if node_api_key is None:
                    return ""  # the nodes end their processes; the reapers the machines
                return node_key.place(
                    hosts[0], request.state_dir, f"{_remote_dir()}/{cluster_id}",
                    head_python(pythons, hosts[0]),
                    {"url": client.url, "key": node_api_key, "instances": ids}, lifetime,
                )  # fmt: skip

            scheduler, nodes, certs = start_cluster(
                hosts, request, lock, provider=self.name, cluster_id=cluster_id,
                lifetime_minutes=lifetime, power_off=power_off,
            )  # fmt: skip
        except BaseException:
            _abandon(client, cluster_id, launched, rulesets)
            raise
        for region, ruleset in rulesets.items():  # regions tried and left: their rulesets go
            if ruleset and region != offer.region:
                try:
                    firewall.delete(client, ruleset)
                except ClusterError as exc:  # it costs nothing; the cluster is up
                    print(f"{exc}; %burst gc deletes ruleset {ruleset} later", file=sys.stderr)
        by_address = {m["ip"]: m["id"] for m in found}
        for node in nodes:
            node["instance"] = by_address[node["target"].rpartition("@")[2]]
        record = {
            "id": cluster_id,
            "name": request.name,
            "provider": self.name,
            "scheduler": scheduler,
            "region": offer.region,
            "instance_type": offer.instance_type,
            "instances": [n["instance"] for n in nodes],
            "nodes": nodes,
            "firewall_ruleset": rulesets.get(offer.region),
            "tls": str(certs.folder),
            "slots": sum(n["gpus"] for n in nodes),
            "devices": [d for n in nodes for d in n["devices"]],
            "gpu_mem_gib": offer.gpu_mem_gib,
            "price_per_hour": offer.price_per_hour * len(nodes),
            "idle": request.idle_minutes,
            "started": launched.at,
            "state_dir": str(request.state_dir),  # whose ledger records the nodes' end
            "env": lock.hash,  # the environment its nodes run (%burst env)
        }
        _record_start(record, offer, launched.at)
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
        """A cluster whose head has ended: its machines terminated (they bill until then) and
        the ledger told when. A head that cannot be reached is left alone (it may be back):
        the machines' expiry tag lets ``%burst gc`` end them in any case."""
        key = api.api_key()
        state_dir = record.get("state_dir")
        if key is None or not state_dir or record.get("provider") != self.name:
            return
        if record["id"] in self._settled:
            return
        head = head_alive(record["nodes"][0], pathlib.Path(state_dir))
        if head:
            return  # it runs: nothing to settle (and no request to Lambda's paced API)
        client = api.LambdaApi(key)
        ids = list(record.get("instances") or [])
        billing = [i for i in ids if client_status(client, i) not in machines.ENDED]
        if billing and head is False:  # its processes ended (idle, lifetime): so does the bill
            machines.terminate(client, billing)
            billing = []
        if billing:
            return
        ledger = shared_ledger(pathlib.Path(state_dir))
        now = time.time()
        for i in ids:
            ledger.node_stopped(i, now, "terminated")
        ledger.cluster_stopped(record["id"], "ended by itself")
        if record.get("firewall_ruleset"):
            firewall.delete(client, record["firewall_ruleset"])
        self._settled.add(record["id"])

    def terminate(self, record: dict[str, Any]) -> None:
        """Terminate every machine of the cluster (the bill ends), then its ruleset."""
        client = api.LambdaApi(api.require_key())
        machines.terminate(client, record.get("instances") or [])
        now = time.time()
        state_dir = record.get("state_dir")
        if state_dir:
            ledger = shared_ledger(pathlib.Path(state_dir))
            for i in record.get("instances") or []:
                ledger.node_stopped(i, now, "terminated")
            ledger.cluster_stopped(record["id"], "stopped")
        ruleset = record.get("firewall_ruleset")
        if ruleset and not firewall.delete(client, ruleset, wait=_RULESET_WAIT_SECONDS):
            print(f"burst: firewall ruleset {ruleset} is still in use; %burst gc deletes it later")


def _abandon(
    client: api.LambdaApi,
    cluster_id: str,
    launched: machines.Launched | None,
    rulesets: dict[str, str | None],
) -> None:
    """A cluster that did not come up must not leave a machine billing: its machines (also
    ones whose launch answer was lost: found by their cluster tag) terminated, its rulesets
    deleted. Best effort: what cannot be ended now is said, and the start's own error
    stays the one raised."""
    try:
        ids = set(launched.ids if launched is not None else ())
        ids |= {
            str(m["id"])
            for m in machines.ours(client)
            if machines.tag(m, "burst-cluster") == cluster_id
        }
        machines.terminate(client, sorted(ids))
        for ruleset in rulesets.values():
            if ruleset:
                firewall.delete(client, ruleset, wait=_RULESET_WAIT_SECONDS)
    except ClusterError as exc:
        print(
            f"burst: the failed start's machines could not all be ended "
            f"({str(exc).removeprefix('burst: ')}); "
            "%burst gc --yes ends what is left",
            file=sys.stderr,
            flush=True,
        )


def boot_script(secret: str) -> str:
    """A machine's user data: its host keys proven, nothing else (no key, no address)."""
    return (
        "#!/bin/bash\n# jupyter-burst: this machine proves its SSH host key to the notebook "
        "that launched it\nset -eu\n" + host_keys.boot_lines(secret)
    )


def client_status(client: api.LambdaApi, instance: str) -> str:
    try:
        return str((client.get(f"/instances/{instance}") or {}).get("status") or "")
    except api.LambdaApiError as exc:
        if exc.code == machines.MISSING:
            return "terminated"
        raise


def _same_type(provider: LambdaProvider, request: ClusterRequest, plan: Plan) -> list[Offer]:
    """The plan's offer, then the same type in the request's other regions, cheapest first."""
    wanted = OfferRequest(gpus=plan.offer.gpus, regions=request.regions)
    others = [
        o
        for o in provider.offers(wanted)
        if o.instance_type == plan.offer.instance_type and o.region != plan.offer.region
    ]
    return [plan.offer, *sorted(others, key=lambda o: o.price_per_hour)]


def _remote_dir() -> str:
    return str(config.get("ssh.remote-dir") or ".cache/jupyter-burst").rstrip("/")


def _logged_in(
    found: list[dict[str, Any]],
    offer: Offer,
    private: pathlib.Path,
    secret: str,
    state_dir: pathlib.Path,
    timeout: float,
) -> list[Host]:
    """Each machine as a host whose proven key alone is trusted (the first is the head)."""
    user = str(config.get("lambda.ssh-user") or "ubuntu")
    port = int(config.get("lambda.ssh-port") or 22)
    folder = state_dir / "lambda" / "known_hosts"

    def one(machine: dict[str, Any]) -> Host:
        host = Host(
            target=f"{user}@{machine['ip']}", gpus=offer.gpus, port=port, python="python3",
            address=str(machine["ip"]), identity=str(private),
        )  # fmt: skip
        return host_keys.first_login(host, secret, folder / str(machine["id"]), timeout)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, found))


def _record_start(record: dict[str, Any], offer: Offer, launched_at: float) -> None:
    ledger = shared_ledger(pathlib.Path(record["state_dir"]))
    ledger.cluster_started(
        record["id"], record["name"], LambdaProvider.name, record["scheduler"], record["slots"],
        record["devices"], record["idle"],
    )  # fmt: skip
    for node in record["nodes"]:
        # Lambda bills from the launch: the moment it was sent, never later.
        ledger.node_started(
            node["instance"], record["id"], LambdaProvider.name, node["role"], node["gpus"],
            node["devices"], node["pid"], price_per_hour=offer.price_per_hour, notional=False,
            billing_minimum=0, started=launched_at,
        )  # fmt: skip
