"""EC2 instances for a cluster: launched idempotently, found by their tags, terminated for sure.

The cloud is the source of truth (as in SkyPilot's ``run_instances``): every instance
carries the cluster's id in a tag; a launch first asks what already runs and starts only the
shortfall; offers are tried in order (spot first where asked, then on-demand), moving on
when one has no capacity; a throttled call is retried with backoff. What a crash leaves
behind (instances launched, never recorded) is found by :func:`reconcile` through the same
tags, so no instance is ever left running unaccounted for.
"""

from __future__ import annotations

import datetime
import getpass
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters.aws.sdk import CAPACITY_CODES, error_code, error_message, with_backoff
from jupyter_burst.clusters.offers import Offer
from jupyter_burst.errors import ClusterError

TAG_CLUSTER = "jupyter-burst:cluster"
TAG_OWNER = "jupyter-burst:owner"
TAG_ROLE = "jupyter-burst:role"
TAG_LIFETIME = "jupyter-burst:max-lifetime-minutes"
TAG_EXPIRES = "jupyter-burst:expires"
# Every state in which an instance may still cost money (a stopped one keeps its disks).
HELD_STATES = ("pending", "running", "stopping", "stopped")
ANY_STATE = (*HELD_STATES, "shutting-down", "terminated")
# EC2 says when an instance stopped or terminated only in this free-text field, to the second:
# "User initiated (2026-11-25 10:33:18 GMT)"; moto writes UTC for GMT.
_TRANSITION_TIME = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?:GMT|UTC)\)")

Clients = Callable[[str], Any]  # region -> EC2 client (sdk.ec2_clients)


def owner() -> str:
    """Whose instances and groups ours are (the owner tag): ``burst.aws.owner``, else user@host."""
    return str(config.get("aws.owner") or f"{getpass.getuser()}@{socket.gethostname()}")


class CapacityShortfall(ClusterError):
    """Fewer instances than asked could be launched; ``launched`` are running and must go."""

    def __init__(self, message: str, launched: list[Instance]):
        super().__init__(message)
        self.launched = launched


@dataclass(frozen=True)
class LaunchSpec:
    """What to launch for one role of a cluster; the offers are tried apart from it."""

    cluster_id: str
    role: str  # "head" (scheduler and workers) or "worker"
    count: int
    image_id: str
    user_data: str
    owner: str
    max_lifetime_minutes: float
    security_group_ids: tuple[str, ...] = ()
    subnet_id: str | None = None
    # None: the role decides (the head is never spot: losing it loses the cluster). True: the
    # user asked for spot everywhere (spot=yes), the head included.
    spot_ok: bool | None = None
    # An IAM instance profile's name (burst.aws.instance-profile): the nodes carry no AWS
    # credentials of their own, and this is how a cell there reaches S3 (its checkpoints).
    instance_profile: str | None = None


@dataclass(frozen=True)
class Instance:
    id: str
    region: str
    zone: str | None
    instance_type: str
    spot: bool
    price_per_hour: float  # in force at launch: the offer it was launched from
    launched: float  # EC2's own launch time, seconds since the epoch
    role: str
    cluster_id: str
    state: str = "pending"
    ended: float | None = None  # when EC2 says it stopped running (terminated ones), to the second


def describe(offer: Offer) -> str:
    market = "spot" if offer.spot else "on-demand"
    where = offer.zone or offer.region
    return f"{offer.instance_type} {market} in {where}"


def run_instances_arguments(
    spec: LaunchSpec, offer: Offer, count: int, token: str, now: float
) -> dict[str, Any]:
    """The exact ``run_instances`` call: tagged, terminating on shutdown, with its lifetime."""
    expires = datetime.datetime.fromtimestamp(now + spec.max_lifetime_minutes * 60, tz=datetime.UTC)
    tags = [
        {"Key": TAG_CLUSTER, "Value": spec.cluster_id},
        {"Key": TAG_OWNER, "Value": spec.owner},
        {"Key": TAG_ROLE, "Value": spec.role},
        {"Key": TAG_LIFETIME, "Value": f"{spec.max_lifetime_minutes:g}"},
        {"Key": TAG_EXPIRES, "Value": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
        {"Key": "Name", "Value": f"jupyter-burst {spec.cluster_id} {spec.role}"},
    ]
    arguments: dict[str, Any] = {
        "ImageId": spec.image_id,
        "InstanceType": offer.instance_type,
        "MinCount": 1,
        "MaxCount": count,
        "UserData": spec.user_data,
        # `shutdown -h` on the node (its watchdog, its dead-man timer) ends the bill.
        "InstanceInitiatedShutdownBehavior": "terminate",
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tags},
            {"ResourceType": "volume", "Tags": tags},
        ],
        "ClientToken": token,
        # IMDSv2 only: user data and credentials are not one plain GET away.
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
    }
    if offer.zone:
        arguments["Placement"] = {"AvailabilityZone": offer.zone}
    if offer.spot:
        arguments["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            },
        }
    if spec.security_group_ids:
        arguments["SecurityGroupIds"] = list(spec.security_group_ids)
    if spec.subnet_id:
        arguments["SubnetId"] = spec.subnet_id
    if spec.instance_profile:
        arguments["IamInstanceProfile"] = {"Name": spec.instance_profile}
    return arguments


def launch(
    clients: Clients,
    spec: LaunchSpec,
    offers: Iterable[Offer],
    on_note: Callable[[str], None] = lambda text: None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Instance]:
    """``spec.count`` instances of the cluster's ``spec.role``, from the first offers that have them.

    Idempotent: instances of this cluster and role that already run count towards
    ``spec.count``. Spot offers are skipped for the head node (losing it loses the cluster)
    unless ``spec.spot_ok`` says otherwise. Raises :class:`CapacityShortfall` (holding what was
    launched) when the offers run out first.
    """
    spot_ok = spec.role != "head" if spec.spot_ok is None else spec.spot_ok
    offers = [o for o in offers if spot_ok or not o.spot]
    regions = sorted({o.region for o in offers})
    have = [
        i
        for region in regions
        for i in find(clients, region, cluster_id=spec.cluster_id)
        if i.role == spec.role
    ]
    nonce = uuid.uuid4().hex[:10]  # one launch's retries share their ClientToken, no other
    unavailable: list[str] = []
    for n, offer in enumerate(offers):
        need = spec.count - len(have)
        if need <= 0:
            break
        ec2 = clients(offer.region)
        token = f"jb-{spec.cluster_id[:32]}-{nonce}-{n}"
        arguments = run_instances_arguments(spec, offer, need, token, time.time())
        try:
            reply = with_backoff(lambda: ec2.run_instances(**arguments), sleep=sleep)  # noqa: B023
        except Exception as exc:
            code = error_code(exc)
            if code not in CAPACITY_CODES:
                if code is None:
                    raise
                raise ClusterError(
                    f"launching {describe(offer)} failed ({code}: {error_message(exc)})"
                ) from None
            unavailable.append(f"{describe(offer)}: {code}")
            on_note(f"burst: {describe(offer)} cannot be had now ({code}); trying the next offer")
            continue
        got = [_instance(raw, offer, spec) for raw in reply.get("Instances", [])]
        have += got
        if len(got) < need:
            on_note(
                f"burst: {describe(offer)} gave {len(got)} of {need} instances; "
                "the rest from the next offer"
            )
    if len(have) < spec.count:
        tried = "; ".join(unavailable) or "no offer was left to try"
        raise CapacityShortfall(
            f"only {len(have)} of the {spec.count} {spec.role} instances could be launched "
            f"({tried}); try other regions (region=...), on-demand (spot=no) or fewer GPUs",
            launched=have,
        )
    return have


def _instance(raw: dict[str, Any], offer: Offer, spec: LaunchSpec) -> Instance:
    launched = raw.get("LaunchTime")
    return Instance(
        id=raw["InstanceId"],
        region=offer.region,
        zone=raw.get("Placement", {}).get("AvailabilityZone") or offer.zone,
        instance_type=raw.get("InstanceType", offer.instance_type),
        spot=offer.spot,
        price_per_hour=offer.price_per_hour,
        launched=launched.timestamp() if launched is not None else time.time(),
        role=spec.role,
        cluster_id=spec.cluster_id,
        state=raw.get("State", {}).get("Name", "pending"),
    )


def find(
    clients: Clients,
    region: str,
    cluster_id: str | None = None,
    owner: str | None = None,
    states: Iterable[str] = HELD_STATES,
) -> list[Instance]:
    """Instances of ours in ``region`` (of one cluster, of one owner), as EC2 lists them."""
    filters = [{"Name": "instance-state-name", "Values": list(states)}]
    if cluster_id is not None:
        filters.append({"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_id]})
    else:
        filters.append({"Name": "tag-key", "Values": [TAG_CLUSTER]})
    if owner is not None:
        filters.append({"Name": f"tag:{TAG_OWNER}", "Values": [owner]})
    ec2 = clients(region)
    found = []
    token = None
    while True:
        kwargs: dict[str, Any] = {"Filters": filters}
        if token:
            kwargs["NextToken"] = token
        page = with_backoff(lambda: ec2.describe_instances(**kwargs))  # noqa: B023
        for reservation in page.get("Reservations", []):
            for raw in reservation.get("Instances", []):
                found.append(_listed(raw, region))
        token = page.get("NextToken")
        if not token:
            return found


def _listed(raw: dict[str, Any], region: str) -> Instance:
    tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
    launched = raw.get("LaunchTime")
    return Instance(
        id=raw["InstanceId"],
        region=region,
        zone=raw.get("Placement", {}).get("AvailabilityZone"),
        instance_type=raw.get("InstanceType", "?"),
        spot=raw.get("InstanceLifecycle") == "spot",
        price_per_hour=0.0,  # not EC2's to say: the ledger holds the price in force at launch
        launched=launched.timestamp() if launched is not None else 0.0,
        role=tags.get(TAG_ROLE, "?"),
        cluster_id=tags.get(TAG_CLUSTER, "?"),
        state=raw.get("State", {}).get("Name", "?"),
        ended=transition_time(raw),
    )


def transition_time(raw: dict[str, Any]) -> float | None:
    """When a terminated (or stopped) instance stopped running, as EC2 reports it; None if it runs."""
    if raw.get("State", {}).get("Name") not in ("shutting-down", "terminated", "stopped"):
        return None
    found = _TRANSITION_TIME.search(raw.get("StateTransitionReason") or "")
    if found is None:
        return None
    when = datetime.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S")
    return when.replace(tzinfo=datetime.UTC).timestamp()


def terminate(
    clients: Clients,
    instances: Iterable[Instance],
    confirm_seconds: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Terminate ``instances`` and wait until EC2 confirms each is going; their ids.

    Local state about them may be deleted only after this returns: an instance we forget
    while it still runs is the surprise bill this project exists to prevent.
    """
    by_region: dict[str, list[str]] = {}
    for instance in instances:
        by_region.setdefault(instance.region, []).append(instance.id)
    done: list[str] = []
    for region, ids in sorted(by_region.items()):
        ec2 = clients(region)
        for start in range(0, len(ids), 500):  # the API's limit per call
            batch = ids[start : start + 500]
            with_backoff(lambda: ec2.terminate_instances(InstanceIds=batch), sleep=sleep)  # noqa: B023
        deadline = time.monotonic() + confirm_seconds
        pending = set(ids)
        while pending:
            reply = with_backoff(
                lambda: ec2.describe_instances(InstanceIds=sorted(pending)),  # noqa: B023
                sleep=sleep,
            )
            for reservation in reply.get("Reservations", []):
                for raw in reservation.get("Instances", []):
                    if raw.get("State", {}).get("Name") in ("shutting-down", "terminated"):
                        pending.discard(raw["InstanceId"])
            if not pending:
                break
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"EC2 has not confirmed the termination of {', '.join(sorted(pending))} in "
                    f"{region} after {confirm_seconds:g} s; check the EC2 console and run %burst gc"
                )
            sleep(1.0)
        done += ids
    return done


def stale(
    clients: Clients,
    regions: Iterable[str],
    live_clusters: set[str],
    owner: str | None,
    now: float | None = None,
    grace_seconds: float = 120.0,
) -> list[Instance]:
    """Our instances whose cluster is not live: what :func:`reconcile` and ``gc`` terminate.

    An instance younger than ``grace_seconds`` is spared: its cluster may be forming right
    now and not yet recorded as live (EC2 also lists a new instance with a short delay).
    """
    now = time.time() if now is None else now
    out = []
    for region in sorted(set(regions)):
        for instance in find(clients, region, owner=owner):
            if instance.cluster_id in live_clusters:
                continue
            if instance.launched and now - instance.launched < grace_seconds:
                continue
            out.append(instance)
    return out


def reconcile(
    clients: Clients,
    regions: Iterable[str],
    live_clusters: set[str],
    owner: str | None,
    now: float | None = None,
    grace_seconds: float = 120.0,
) -> list[str]:
    """Terminate every instance of ours that belongs to no live cluster; their ids."""
    found = stale(clients, regions, live_clusters, owner, now=now, grace_seconds=grace_seconds)
    return terminate(clients, found) if found else []
