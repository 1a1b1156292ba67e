"""The ``aws`` provider: a cluster of EC2 instances, over TLS, that switches itself off and grows.

A launch: pick the cheapest offer; make the cluster's TLS certificates here; put the
node's key bundle in S3 behind a presigned URL that expires in minutes; a security group
that opens the scheduler's port to this machine's address only; the head instance
(on-demand: losing it loses the cluster) with its boot script as user data; wait for the
head to announce its scheduler through a write-only presigned URL; then the key bundle
is deleted. The instances carry their cluster's tags, their lifetime, and terminate on
shutdown: the node's watchdog ends them when the cluster is idle.

A cell that needs more GPUs than the running cluster has (or GPUs with more memory) gets
worker nodes added to it (``grow``): the cheapest plan in the cluster's region, quoted in one
line and checked against the daily budget first; they join the head's scheduler, and the head
powers each off once it has been idle for the cluster's idle time.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters import records, start_phases, tls
from jupyter_burst.clusters.aws import env_store, gc, images, prices, provision, sdk, userdata
from jupyter_burst.clusters.aws.provision import owner
from jupyter_burst.clusters.aws.sdk import ec2_clients
from jupyter_burst.clusters.client_cidr import client_cidr
from jupyter_burst.clusters.env import lock as env_lock
from jupyter_burst.clusters.launch_checks import check_daily_budget, check_hourly_cap
from jupyter_burst.clusters.offers import Offer, OfferRequest, Plan
from jupyter_burst.clusters.plans import fits
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.clusters.quotes import Quotes
from jupyter_burst.clusters.start_phases import BOOTING, ENVIRONMENT, LAUNCHING, WORKERS
from jupyter_burst.errors import ClusterError
from jupyter_burst.store.ledger import shared_ledger

# A node's one-time URLs (its key bundle, its environment) last the boot timeout and this
# much more: a boot may use all of it, and the key is fetched first, but never much later.
_URL_MARGIN_SECONDS = 120
_ANNOUNCE_SECONDS = 1800
_GROUP_WAIT_SECONDS = 90
# What a booting head said of itself: a few short lines ("<its clock> <phase words>").
_PROGRESS_BYTES = 4096
_PROGRESS_LINES = 32


class AwsProvider:
    name = "aws"

    def __init__(self) -> None:
        self.prices_note = ""
        self._quotes = Quotes()

    # offers -------------------------------------------------------------------------

    def offers(self, request: OfferRequest) -> list[Offer]:
        found, self.prices_note = prices.current(list(request.regions))
        return found

    # launching ----------------------------------------------------------------------

    def plan(self, request: ClusterRequest) -> Plan:
        """The plan chosen across providers as it is, else the cheapest offer for the request.

        On-demand unless the user said spot=yes: today the head is the cluster, and losing a
        spot head loses the cell; with spot=yes everything is spot, the user's call on price.
        The daily budget's quote and the launch right after it ask for the same request:
        the prices are looked up once for both (without credentials, a failed lookup costs
        its retries each time).
        """
        return self._quotes.plan(self.name, request, self.offers)

    def price_per_hour(self, request: ClusterRequest) -> float:
        """What a launch for ``request`` would cost an hour: the daily budget asks first."""
        return self.plan(request).price_per_hour

    def launch(self, request: ClusterRequest) -> dict[str, Any]:
        plan = self.plan(request)
        offer = plan.offer
        phases = start_phases.of(request)
        print(f"burst: launching {plan.describe()}", flush=True)
        cluster_id = f"{request.name}-{uuid.uuid4().hex[:8]}"
        region = offer.region
        s3 = sdk.client("s3", region)
        ec2 = sdk.client("ec2", region)
        # Every setting is checked before anything is made, uploaded or launched.
        cidr, image = client_cidr("aws"), _image(offer, request.state_dir, cluster_id)
        bucket = _bucket(s3, region)
        # The pre-flight: what the nodes cannot have is refused here, before any machine.
        lock = _node_environment(request.state_dir, offer)
        environment = env_store.env_boot(s3, bucket, lock, _url_seconds(), upload=True)
        certs = tls.make(request.state_dir / "tls" / cluster_id, cluster_id)
        prefix = f"jupyter-burst/{cluster_id}"
        keys_key = f"{prefix}/{secrets.token_hex(16)}.tar"
        announce_key = f"{prefix}/head.json"
        progress_key = f"{prefix}/head-progress"
        clients = ec2_clients()
        spot_ok = True if _wants_spot(request) else None
        s3.put_object(Bucket=bucket, Key=keys_key, Body=certs.node_bundle())

        def boot(role: str, **where: Any) -> userdata.NodeBoot:
            return userdata.NodeBoot(
                cluster=request.name,
                cluster_id=cluster_id,
                role=role,
                slots=offer.gpus,
                idle_minutes=request.idle_minutes,
                max_lifetime_minutes=float(config.get("aws.max-lifetime", 720)),
                gpu_mem_gib=offer.gpu_mem_gib,
                keys_url=s3.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": bucket, "Key": keys_key},
                    ExpiresIn=_url_seconds(),
                ),
                environment=environment,
                **where,
            )

        def spec(node: userdata.NodeBoot, count: int) -> provision.LaunchSpec:
            return provision.LaunchSpec(
                cluster_id=cluster_id,
                role=node.role,
                count=count,
                image_id=image,
                user_data=userdata.render(node),
                owner=owner(),
                max_lifetime_minutes=node.max_lifetime_minutes,
                security_group_ids=(group,),
                spot_ok=spot_ok,
                instance_profile=config.get("aws.instance-profile", None) or None,
            )

        try:
            group = _security_group(ec2, cluster_id, cidr)
            head_boot = boot(
                "head",
                expect_slots=plan.gpus,
                announce_url=s3.generate_presigned_url(
                    "put_object",
                    Params={"Bucket": bucket, "Key": announce_key},
                    ExpiresIn=_ANNOUNCE_SECONDS,
                ),
                progress_url=s3.generate_presigned_url(
                    "put_object",
                    Params={"Bucket": bucket, "Key": progress_key},
                    ExpiresIn=_url_seconds(),
                ),
            )
            choices = self._same_shape(request, plan)
            phases.enter(LAUNCHING, done=0, total=plan.nodes)
            (head,) = provision.launch(clients, spec(head_boot, 1), choices, on_note=print)
            phases.enter(LAUNCHING, done=1, total=plan.nodes)
            phases.enter(BOOTING)
            scheduler = _wait_for_announcement(
                s3, bucket, announce_key, head, clients, progress_key=progress_key,
                on_progress=lambda said: _boot_phase(phases, said),
            )  # fmt: skip
            workers: list[provision.Instance] = []
            if plan.nodes > 1:
                # Further nodes join the head's scheduler, in its region (one network, one group).
                nearby = [o for o in choices if o.region == head.region]
                workers = provision.launch(
                    clients, spec(boot("worker", scheduler=scheduler), plan.nodes - 1), nearby,
                    on_note=print,
                )  # fmt: skip
                _wait_for_workers(scheduler, certs, plan.gpus, workers, clients, phases=phases)
        except BaseException:
            # A cluster that did not come up must not leave a machine behind.
            found = provision.find(clients, region, cluster_id=cluster_id)
            if found:
                provision.terminate(clients, found)
            raise
        finally:
            s3.delete_object(Bucket=bucket, Key=keys_key)  # the key never outlives the boot
            s3.delete_object(Bucket=bucket, Key=progress_key)
        instances = [head, *workers]
        record = {
            "id": cluster_id,
            "name": request.name,
            "provider": self.name,
            "scheduler": scheduler,
            "region": region,
            "instances": [i.id for i in instances],
            "instance_type": head.instance_type,
            "price_per_hour": sum(i.price_per_hour for i in instances),
            "tls": str(certs.folder),
            "bucket": bucket,
            "security_group": group,
            "slots": plan.gpus,
            "devices": [f"cuda:{i}" for i in range(offer.gpus)],
            "gpu_mem_gib": offer.gpu_mem_gib,
            "idle": request.idle_minutes,
            "started": head.launched,
            "state_dir": str(request.state_dir),  # whose ledger records the node's end
            "env": lock.hash,  # the environment its nodes run (%burst env)
        }
        ledger = shared_ledger(request.state_dir)
        ledger.cluster_started(
            cluster_id, request.name, self.name, scheduler, plan.gpus, record["devices"],
            request.idle_minutes,
        )  # fmt: skip
        _bill(ledger, cluster_id, instances, record["devices"])
        records.write_record(request.state_dir, request.name, record)
        return record

    # growing -------------------------------------------------------------------------

    def grow(self, record: dict[str, Any], request: ClusterRequest, have: int) -> dict[str, Any]:
        """Add worker nodes to the running cluster until it has ``request.slots`` slots; its
        record, updated (and written).

        The cheapest plan for the GPUs it lacks, in the cluster's region (one network, one
        security group), is quoted in one line and checked against the daily budget before
        anything is launched. The nodes are tagged as the cluster's (role ``worker``; a launch
        counts the worker nodes already there, so a retry starts only the shortfall), boot
        with ``--extra`` and report to the head, which powers each off once it has been idle
        for the cluster's idle time. Each is billed from its own launch time, at its price.
        A node that does not join is terminated, the cluster left as it was.
        """
        state_dir = pathlib.Path(record.get("state_dir") or request.state_dir)
        region = record["region"]
        # Chosen as a launch's plan is, for the GPUs it lacks, in the cluster's own region.
        plan = self.plan(replace(request, slots=request.slots - have, regions=(region,), plan=None))
        kind = "" if request.gpu_mem_gib is None else f" with >= {request.gpu_mem_gib:g} GiB"
        print(
            f"burst: cluster '{record['name']}' has {have} GPU{'s' if have != 1 else ''}{kind} "
            f"and the cell needs {request.slots}: adding {plan.describe()}",
            flush=True,
        )
        check_hourly_cap(self, request, price=plan.price_per_hour)
        check_daily_budget(state_dir, self, request, price=plan.price_per_hour)
        offer = plan.offer
        clients = ec2_clients()
        s3 = sdk.client("s3", region)
        bucket = _bucket(s3, region)
        certs = tls.ClusterCerts(pathlib.Path(record["tls"]))
        # The nodes it adds run the environment this kernel has now; the pre-flight first.
        lock = _node_environment(state_dir, offer)
        environment = env_store.env_boot(s3, bucket, lock, _url_seconds(), upload=True)
        keys_key = f"jupyter-burst/{record['id']}/{secrets.token_hex(16)}.tar"
        before = {
            i.id
            for i in provision.find(clients, region, cluster_id=record["id"])
            if i.role == "worker"
        }
        s3.put_object(Bucket=bucket, Key=keys_key, Body=certs.node_bundle())
        try:
            node = userdata.NodeBoot(
                cluster=record["name"],
                cluster_id=record["id"],
                role="worker",
                slots=offer.gpus,
                idle_minutes=float(record.get("idle", request.idle_minutes)),
                max_lifetime_minutes=float(config.get("aws.max-lifetime", 720)),
                keys_url=s3.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": bucket, "Key": keys_key},
                    ExpiresIn=_url_seconds(),
                ),
                environment=environment,
                scheduler=record["scheduler"],
                extra=True,
                gpu_mem_gib=offer.gpu_mem_gib,
            )
            spec = provision.LaunchSpec(
                cluster_id=record["id"],
                role="worker",
                count=len(before) + plan.nodes,
                image_id=_image(offer, state_dir, record["id"]),
                user_data=userdata.render(node),
                owner=owner(),
                max_lifetime_minutes=node.max_lifetime_minutes,
                security_group_ids=(record["security_group"],),
                spot_ok=True if _wants_spot(request) else None,
                instance_profile=config.get("aws.instance-profile", None) or None,
            )
            added: list[provision.Instance] = []
            try:
                # Where EC2 has no capacity: the next cheapest of the same shape, same region.
                nearby = [o for o in self._same_shape(request, plan) if o.region == region]
                launched = provision.launch(clients, spec, nearby, on_note=print)
                added = [i for i in launched if i.id not in before]
                total = int(record.get("slots", have)) + len(added) * offer.gpus
                _wait_for_workers(record["scheduler"], certs, total, added, clients)
            except BaseException:
                # Nodes that did not join must not run on: the cluster stays as it was.
                found = [
                    i
                    for i in provision.find(clients, region, cluster_id=record["id"])
                    if i.role == "worker" and i.id not in before
                ]
                if found:
                    provision.terminate(clients, found)
                raise
        finally:
            s3.delete_object(Bucket=bucket, Key=keys_key)  # the key never outlives the boot
        devices = [f"cuda:{g}" for g in range(offer.gpus)]
        ledger = shared_ledger(state_dir)
        _bill(ledger, record["id"], added, devices)
        grown = dict(
            record,
            instances=[*record.get("instances", []), *(i.id for i in added)],
            price_per_hour=float(record.get("price_per_hour", 0))
            + sum(i.price_per_hour for i in added),
            slots=int(record.get("slots", have)) + len(added) * offer.gpus,
            devices=[*record.get("devices", []), *(devices * len(added))],
        )
        ledger.cluster_resized(record["id"], grown["slots"], grown["devices"])
        records.write_record(state_dir, record["name"], grown)
        return grown

    def _same_shape(self, request: ClusterRequest, plan: Plan) -> list[Offer]:
        """The plan's offer, then the next cheapest with as many GPUs a node: where a launch
        moves on to when EC2 has no capacity (the cluster keeps its number of nodes)."""
        spot = _wants_spot(request)
        wanted = OfferRequest(
            gpus=plan.offer.gpus,
            gpu_mem_gib=getattr(request, "gpu_mem_gib", None),
            spot=None if spot else False,
        )
        others = [
            o for o in self.offers(wanted)
            if o.gpus == plan.offer.gpus and fits(o, wanted) and o != plan.offer
        ]  # fmt: skip
        # Spot asked for: where spot runs out, the same type on-demand first, then the rest.
        others.sort(
            key=lambda o: (
                (o.instance_type != plan.offer.instance_type, o.price_per_hour)
                if spot
                else (o.price_per_hour,)
            )
        )
        return [plan.offer, *others]

    def settle(self, record: dict[str, Any]) -> None:
        """Record in the ledger when each of the cluster's instances stopped, as EC2 says.

        A node ended by its own watchdog (the kernel long gone) is billed to the second EC2
        reports, not to when this kernel happened to notice.
        """
        state_dir = record.get("state_dir")
        if not state_dir:
            return
        ledger = shared_ledger(pathlib.Path(state_dir))
        found = provision.find(
            ec2_clients(), record["region"], cluster_id=record["id"], states=provision.ANY_STATE
        )
        for instance in found:
            if instance.ended is not None:
                ledger.node_stopped(instance.id, instance.ended, instance.state)

    def is_alive(self, record: dict[str, Any]) -> bool:
        if record.get("provider") != self.name:
            return False
        found = provision.find(ec2_clients(), record["region"], cluster_id=record["id"])
        return any(i.state in ("pending", "running") for i in found)

    def terminate(self, record: dict[str, Any]) -> None:
        clients = ec2_clients()
        found = provision.find(clients, record["region"], cluster_id=record["id"])
        if found:
            provision.terminate(clients, found)  # returns once EC2 confirms
        state_dir = record.get("state_dir")
        if state_dir:
            self.settle(record)
            # Any node EC2 gave no time for ends now (a cluster's other rows with it).
            shared_ledger(pathlib.Path(state_dir)).cluster_stopped(record["id"], "stopped")
        # Its security group goes with its last instance. EC2 releases a group only once the
        # instances are fully terminated (up to a minute or so): a down waits that long at
        # most, and a group still in use then (it costs nothing) is left to %burst gc.
        _, left = gc.delete_cluster_groups(
            clients, record["region"], record["id"], timeout=_GROUP_WAIT_SECONDS
        )
        if left:
            print(
                f"burst: security group {', '.join(left)} is still in use; %burst gc deletes it later"
            )


def _bill(ledger, cluster_id: str, instances: list, devices: list[str]) -> None:
    """Each instance in the ledger as EC2 bills it: from its own launch time, at the price it
    was launched at (``devices``: one node's)."""
    for instance in instances:
        ledger.node_started(
            instance.id, cluster_id, AwsProvider.name, instance.role, len(devices), devices, None,
            price_per_hour=instance.price_per_hour, notional=False, billing_minimum=60,
            started=instance.launched,
        )  # fmt: skip


def _boot_phase(phases: start_phases.StartPhases, said: str) -> None:
    """The booting head's own words ("environment building") as the start's phase."""
    words = said.split(" ", 1)
    if words[0] == ENVIRONMENT:
        phases.enter(ENVIRONMENT, words[1] if len(words) > 1 else "")
    elif words[0] == "node":
        phases.enter(BOOTING, "node starting")


def _boot_progress(s3, bucket: str, key: str) -> list[str]:
    """What the booting node said of itself so far, in order ("environment building", ...)."""
    if not key:
        return []
    try:
        said = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:
        if sdk.error_code(exc) in ("NoSuchKey", "404"):
            return []
        raise
    # The node writes it ("<its clock> <words>" a line), so it is read as a few short lines.
    lines = said[:_PROGRESS_BYTES].decode("utf-8", "replace").splitlines()[:_PROGRESS_LINES]
    return [words[:200] for _, _, words in (ln.partition(" ") for ln in lines) if words.strip()]


def _url_seconds() -> int:
    return int(float(config.get("aws.boot-timeout", 900))) + _URL_MARGIN_SECONDS


def _node_environment(state_dir: pathlib.Path, offer: Offer) -> env_lock.NodeLock:
    """This kernel's environment as the nodes will have it, each difference said in one line
    (the pre-flight every provider runs: clusters/env/lock.py)."""
    return env_lock.preflight(state_dir, gpu=offer.gpus > 0)


def _wants_spot(request: ClusterRequest) -> bool:
    """spot=yes on the cell: every node spot, the head too (the user's call: a lost head
    restarts the cell from its checkpoint on a new cluster)."""
    return bool(getattr(request, "spot", None))


def _bucket(s3, region: str) -> str:
    """``burst.aws.bucket``; created (private) if missing."""
    bucket = config.get("aws.bucket")
    if not bucket:
        raise ClusterError(
            "the aws provider needs an S3 bucket for the nodes' keys and checkpoints; "
            "set burst.aws.bucket (e.g. DASK_BURST__AWS__BUCKET=my-burst-bucket)"
        )
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception:
        arguments: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**arguments)
    return bucket


def _security_group(ec2, cluster_id: str, cidr: str) -> str:
    """The scheduler's and the dashboard's ports open to ``cidr`` only (both ask for the
    cluster's client certificate); the cluster's nodes open to each other."""
    group = ec2.create_security_group(
        GroupName=f"jupyter-burst-{cluster_id}",
        Description=f"jupyter-burst cluster {cluster_id}",
        TagSpecifications=[
            {
                "ResourceType": "security-group",
                "Tags": [
                    {"Key": provision.TAG_CLUSTER, "Value": cluster_id},
                    {"Key": provision.TAG_OWNER, "Value": owner()},
                ],
            }
        ],
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": port,
                "ToPort": port,
                "IpRanges": [{"CidrIp": str(cidr), "Description": "the notebook"}],
            }
            for port in (userdata.SCHEDULER_PORT, userdata.DASHBOARD_PORT)
        ]
        + [
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group}]},
        ],
    )
    return group


def _image(offer: Offer, state_dir: pathlib.Path, cluster_id: str) -> str:
    """The nodes' machine image (``burst.aws.image``, else the latest public one for the
    offer, ``images.resolve``): said once for the launch, and kept in the ledger."""
    image = images.resolve(offer)
    print(image.line(), flush=True)
    shared_ledger(state_dir).image_used(cluster_id, image.id, image.how, image.parameter)
    return image.id


_LISTING_DELAY_SECONDS = 120  # EC2 may list a just-launched instance only after a while


def _ended(clients, launched: list) -> list[str]:
    """Those of the ``launched`` instances that have ended (or, past the listing delay, that
    EC2 still does not list); a new instance EC2 does not list yet is not taken for gone."""
    first = launched[0]
    listed = {
        i.id: i.state
        for i in provision.find(
            clients, first.region, cluster_id=first.cluster_id, states=provision.ANY_STATE
        )
    }
    now = time.time()
    return [
        i.id for i in launched
        if listed.get(i.id) in ("shutting-down", "terminated", "stopping", "stopped")
        or (i.id not in listed and now - i.launched > _LISTING_DELAY_SECONDS)
    ]  # fmt: skip


def _wait_for_workers(
    scheduler: str,
    certs: tls.ClusterCerts,
    slots: int,
    nodes: list,
    clients,
    phases: start_phases.StartPhases = start_phases.NOT_RECORDED,
) -> None:
    """Until the worker nodes' workers have joined the head's scheduler (``slots`` in all)."""
    from distributed import Client

    timeout = float(config.get("aws.boot-timeout", 900))
    deadline = time.monotonic() + timeout
    client = Client(scheduler, security=certs.client_security(), timeout=30, set_as_default=False)
    try:
        while time.monotonic() < deadline:
            # Right after connecting, the client may not have the scheduler's identity yet.
            joined = len(client.scheduler_info(n_workers=-1).get("workers", {}))
            phases.enter(WORKERS, done=min(joined, slots), total=slots)
            if joined >= slots:
                return
            gone = _ended(clients, nodes)
            if gone:
                raise ClusterError(
                    f"the worker instance {gone[0]} stopped before it joined the cluster; "
                    "its console output (EC2 console) says why"
                )
            time.sleep(1.0)
    finally:
        with contextlib.suppress(Exception):  # closing must not hide why the wait ended
            client.close(timeout=5)
    raise ClusterError(
        f"the worker nodes did not join within {timeout:g} s; the cluster was terminated "
        "(raise burst.aws.boot-timeout if the image installs a lot)"
    )


def _wait_for_announcement(
    s3,
    bucket: str,
    key: str,
    head,
    clients,
    progress_key: str = "",
    on_progress: Callable[[str], None] = lambda said: None,
) -> str:
    """The head's scheduler address, once it announced it; where its boot is, said meanwhile."""
    timeout = float(config.get("aws.boot-timeout", 900))
    deadline = time.monotonic() + timeout
    progress: list[str] = []
    while time.monotonic() < deadline:
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            return json.loads(body)["scheduler"]
        except (ValueError, KeyError):
            raise ClusterError(
                f"the head instance {head.id} announced something unreadable at s3://{bucket}/{key}"
            ) from None
        except Exception as exc:
            if sdk.error_code(exc) not in ("NoSuchKey", "404"):
                raise
        now = _boot_progress(s3, bucket, progress_key)
        for said in now[len(progress) :]:  # each phase once, in order, the short ones too
            print(f"burst: head {head.id}: {said}", flush=True)
            on_progress(said)
        progress = now if len(now) > len(progress) else progress
        if _ended(clients, [head]):
            # Its last words may have come after the look above.
            progress = _boot_progress(s3, bucket, progress_key) or progress
            said = f" (its boot said: {progress[-1]})" if progress else ""
            raise ClusterError(
                f"the head instance {head.id} stopped before its scheduler came up{said}; "
                "its console output (EC2 console) says why"
            )
        time.sleep(1.0)
    raise ClusterError(
        f"the head instance {head.id} did not bring its scheduler up within {timeout:g} s; "
        "it was terminated (raise burst.aws.boot-timeout if the image installs a lot)"
    )
